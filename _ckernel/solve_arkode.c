/*
 * solve_arkode.c - the ARKODE back end (ARKStep) for the Runge-Kutta methods:
 *
 *   tsit45    explicit, Tsitouras 5(4) (Tsitouras 2011), our own Butcher table
 *   dopri5    explicit, Dormand-Prince 5(4), ARKODE_DORMAND_PRINCE_7_4_5
 *   tr_bdf2   implicit, TR-BDF2 (gamma = 2 - sqrt 2), ARKODE_TRBDF2_3_3_2
 *   esdirk34  implicit, 4-stage ESDIRK of order 3 with an order-2 embedding,
 *             stiffly accurate and L-stable, ARKODE_ESDIRK324L2SA_4_2_3
 *
 * ARKStep rather than ERKStep runs the explicit tables too: it is the same
 * explicit Runge-Kutta step, and it accepts a (non-singular) mass matrix M
 * through ARKStepSetMassLinearSolver, which ERKStep does not.  A singular M
 * is refused by solve.c before this back end is created.
 *
 * Implicit stages solve with the Newton matrix M - gamma J (or I - gamma J):
 * the Jacobian and mass matrices share the pattern U of linsol.c so ARKODE
 * combines them in place.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>

#include "solve.h"

/* Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the
   first column simplifying assumption", Comput. Math. Appl. 62, 770-775;
   the 7th stage is FSAL (its row of A is b).  The embedding is
   bhat = b - btilde with the published error weights btilde. */
static const double tsit_c[7] = {0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0};
static const double tsit_a[7][7] = {
    {0, 0, 0, 0, 0, 0, 0},
    {0.161, 0, 0, 0, 0, 0, 0},
    {-0.008480655492356989, 0.335480655492357, 0, 0, 0, 0, 0},
    {2.8971530571054935, -6.359448489975075, 4.3622954328695815, 0, 0, 0, 0},
    {5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525, 0, 0, 0},
    {5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
     -0.028269050394068383, 0, 0},
    {0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
     2.324710524099774, 0}};
static const double tsit_btilde[7] = {-0.00178001105222577714, -0.0008164344596567469,
                                      0.007880878010261995,    -0.1447110071732629,
                                      0.5823571654525552,      -0.45808210592918697,
                                      1.0 / 66.0};

/* The Tsitouras 5(4) table (caller frees with ARKodeButcherTable_Free). */
ARKodeButcherTable dsk_tsit5_table(void);
ARKodeButcherTable dsk_tsit5_table(void) {
  double A[49], b[7], d[7];
  for (int i = 0; i < 7; i++) {
    for (int j = 0; j < 7; j++) A[i * 7 + j] = tsit_a[i][j];
    b[i] = tsit_a[6][i];
    d[i] = b[i] - tsit_btilde[i];
  }
  return ARKodeButcherTable_Create(7, 5, 4, (realtype *)tsit_c, A, b, d);
}

static int ark_rhs(realtype t, N_Vector y, N_Vector ydot, void *data) {
  dsk_solver *s = data;
  int rc = s->tab->eval[DSK_FN_RHS](t, NV_DATA_S(y), s->ws, NV_DATA_S(ydot));
  return rc ? dsk_solver_model_failed(s, "rhs", rc, t) : 0;
}

static int ark_jac(realtype t, N_Vector y, N_Vector fy, SUNMatrix J, void *data, N_Vector tmp1,
                   N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  (void)fy, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_lin_eval_jac(s, t, NV_DATA_S(y));
  if (rc) return dsk_solver_model_failed(s, "rhs (Jacobian)", rc, t);
  dsk_lin_assemble(s, J, 1.0, 0.0);
  return 0;
}

static int ark_mass(realtype t, SUNMatrix M, void *data, N_Vector tmp1, N_Vector tmp2,
                    N_Vector tmp3) {
  dsk_solver *s = data;
  (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_lin_eval_mass(s, t);
  if (rc) return dsk_solver_model_failed(s, "M", rc, t);
  dsk_lin_assemble(s, M, 0.0, 1.0);
  return 0;
}

static int ark_root(realtype t, N_Vector y, realtype *g, void *data) {
  return dsk_solver_eval_stop(data, t, NV_DATA_S(y), g);
}

/* The Butcher tables of an ARKODE method on ARKStep memory `mem` (the
   forward problem, the augmented sensitivity system and the adjoint all use
   the same); returns the ARKODE flag (ARK_MEM_FAIL when our table could not be
   built). */
int dsk_arkode_set_tables(void *mem, int method) {
  switch (method) {
    case DSK_TSIT45: {
      ARKodeButcherTable B = dsk_tsit5_table();
      if (!B) return ARK_MEM_FAIL;
      int flag = ARKStepSetTables(mem, 5, 4, NULL, B); /* copies B */
      ARKodeButcherTable_Free(B);
      return flag;
    }
    case DSK_DOPRI5: return ARKStepSetTableNum(mem, ARKODE_DIRK_NONE, ARKODE_DORMAND_PRINCE_7_4_5);
    case DSK_TR_BDF2: return ARKStepSetTableNum(mem, ARKODE_TRBDF2_3_3_2, ARKODE_ERK_NONE);
    default: return ARKStepSetTableNum(mem, ARKODE_ESDIRK324L2SA_4_2_3, ARKODE_ERK_NONE);
  }
}

static int ark_create(dsk_solver *s, dsk_status *st) {
  int rc = DSK_OK;
  if (s->implicit || s->has_mass) rc = dsk_lin_create(s, s->has_mass, st);
  if (rc != DSK_OK) return rc;
  int expl = !s->implicit;
  s->mem = ARKStepCreate(expl ? ark_rhs : NULL, expl ? NULL : ark_rhs, s->opt.t0, s->y, s->ctx);
  if (!s->mem) return dsk_status_set(st, DSK_E_NOMEM, "ARKStepCreate failed");
  const char *call = "ARKStepSetErrHandlerFn";
  int flag = ARKStepSetErrHandlerFn(s->mem, dsk_solver_err_handler, s);
  if (flag == ARK_SUCCESS) call = "ARKStepSetUserData", flag = ARKStepSetUserData(s->mem, s);
  if (flag == ARK_SUCCESS) {
    call = "ARKStepSetTables";
    flag = dsk_arkode_set_tables(s->mem, s->opt.method);
  }
  if (flag == ARK_SUCCESS && s->implicit) {
    call = "ARKStepSetLinearSolver";
    flag = ARKStepSetLinearSolver(s->mem, s->LS, s->A);
    if (flag == ARK_SUCCESS && s->linsol == DSK_LS_SPGMR)
      call = "ARKStepSetJacTimes", flag = ARKStepSetJacTimes(s->mem, NULL, dsk_lin_jtimes);
    else if (flag == ARK_SUCCESS)
      call = "ARKStepSetJacFn", flag = ARKStepSetJacFn(s->mem, ark_jac);
    /* With ARKODE's default Newton tolerance (0.1 of the error tolerance)
       both DIRK tables fail the error test repeatedly on Robertson at
       rtol 1e-8 (step size collapse around t = 100); a tighter Newton
       tolerance and more error-test failures per step make them robust
       (and TR-BDF2 takes 2.5x fewer steps). */
    if (flag == ARK_SUCCESS)
      call = "ARKStepSetNonlinConvCoef", flag = ARKStepSetNonlinConvCoef(s->mem, 1e-4);
    if (flag == ARK_SUCCESS)
      call = "ARKStepSetMaxErrTestFails", flag = ARKStepSetMaxErrTestFails(s->mem, 20);
  }
  if (flag == ARK_SUCCESS && s->has_mass) {
    call = "ARKStepSetMassLinearSolver";
    flag = ARKStepSetMassLinearSolver(s->mem, s->MLS, s->Mmat, SUNTRUE);
    if (flag == ARK_SUCCESS) call = "ARKStepSetMassFn", flag = ARKStepSetMassFn(s->mem, ark_mass);
  }
  /* Dense output: ARKODE's Hermite interpolant of degree q - 1.  With a mass matrix
     the Hermite data f(t, y) is M u', not u', so ARKODE 6.4's Hermite
     interpolant is wrong there: use the Lagrange interpolant (states only). */
  if (flag == ARK_SUCCESS && s->has_mass)
    call = "ARKStepSetInterpolantType",
    flag = ARKStepSetInterpolantType(s->mem, ARK_INTERP_LAGRANGE);
  if (flag == ARK_SUCCESS && s->nstop > 0)
    call = "ARKStepRootInit", flag = ARKStepRootInit(s->mem, s->nstop, ark_root);
  if (flag == ARK_SUCCESS && s->nstop > 0)
    call = "ARKStepSetNoInactiveRootWarn", flag = ARKStepSetNoInactiveRootWarn(s->mem);
  if (flag != ARK_SUCCESS)
    return dsk_status_set(st, DSK_E_SOLVER, "%s failed (%d): %s", call, flag, s->sun_msg);
  return DSK_OK;
}

static int ark_reinit(dsk_solver *s, double t0, double tout1, dsk_status *st) {
  (void)tout1;
  int expl = !s->implicit;
  int flag = ARKStepReInit(s->mem, expl ? ark_rhs : NULL, expl ? NULL : ark_rhs, t0, s->y);
  if (flag == ARK_SUCCESS)
    flag = s->atolv ? ARKStepSVtolerances(s->mem, s->opt.rtol, s->atolv)
                    : ARKStepSStolerances(s->mem, s->opt.rtol, s->opt.atol);
  if (flag == ARK_SUCCESS) flag = ARKStepSetMaxNumSteps(s->mem, s->opt.max_steps);
  if (flag == ARK_SUCCESS) flag = ARKStepSetInitStep(s->mem, s->opt.h0);
  return flag == ARK_SUCCESS ? DSK_OK : dsk_solver_fail(s, flag, st);
}

int dsk_arkode_set_roots(dsk_solver *s, int on) {
  int flag = ARKStepRootInit(s->mem, on ? s->nstop : 0, on ? ark_root : NULL);
  if (flag == ARK_SUCCESS && on) flag = ARKStepSetNoInactiveRootWarn(s->mem);
  return flag;
}

static int ark_set_stop_time(dsk_solver *s, double tstop) {
  return ARKStepSetStopTime(s->mem, tstop);
}

static int ark_set_max_steps(dsk_solver *s, long n) { return ARKStepSetMaxNumSteps(s->mem, n); }

static int ark_step(dsk_solver *s, double tout, int one_step, double *tret) {
  realtype tr = tout;
  int flag = ARKStepEvolve(s->mem, tout, s->y, &tr, one_step ? ARK_ONE_STEP : ARK_NORMAL);
  *tret = tr;
  return flag;
}

static int ark_root_info(dsk_solver *s, int *found) { return ARKStepGetRootInfo(s->mem, found); }

static int ark_current_time(dsk_solver *s, double *t) {
  realtype tc;
  int flag = ARKStepGetCurrentTime(s->mem, &tc);
  if (flag == ARK_SUCCESS) *t = tc;
  return flag;
}

static int ark_last_step(dsk_solver *s, double *h) {
  realtype hl;
  int flag = ARKStepGetLastStep(s->mem, &hl);
  if (flag == ARK_SUCCESS) *h = hl;
  return flag;
}

static void ark_stats(dsk_solver *s, dsk_stats *o) {
  long v, v2;
  memset(o, 0, sizeof *o);
  if (ARKStepGetNumSteps(s->mem, &v) == ARK_SUCCESS) o->steps = v;
  if (ARKStepGetNumRhsEvals(s->mem, &v, &v2) == ARK_SUCCESS) o->rhs_evals = v + v2;
  if (ARKStepGetNumErrTestFails(s->mem, &v) == ARK_SUCCESS) o->err_test_fails = v;
  if (!s->implicit) return;
  if (ARKStepGetNumJacEvals(s->mem, &v) == ARK_SUCCESS) o->jac_evals = v;
  if (ARKStepGetNumLinSolvSetups(s->mem, &v) == ARK_SUCCESS) o->lin_setups = v;
  if (ARKStepGetNumNonlinSolvIters(s->mem, &v) == ARK_SUCCESS) o->nonlin_iters = v;
  if (ARKStepGetNumNonlinSolvConvFails(s->mem, &v) == ARK_SUCCESS) o->nonlin_fails = v;
}

static char *ark_flag_name(int flag) { return ARKStepGetReturnFlagName(flag); }

static void ark_free(dsk_solver *s) { ARKStepFree(&s->mem); }

const dsk_backend dsk_backend_arkode = {
    "ARKODE",      ark_create,    ark_reinit,       ark_set_stop_time, ark_set_max_steps,
    ark_step,      ark_root_info, ark_current_time, ark_last_step,     ark_stats,
    ark_flag_name, ark_free,
};
