/*
 * solve_idas.c - the IDAS back end: BDF for models with a mass matrix,
 *
 *     0 = F(t, u) - M(t) u'        (residual form, M may be singular),
 *
 * with the Newton matrix dres/du + cj dres/du' = J - cj M from the model's
 * Jacobian and mass values (linsol.c).  A state whose column of M is zero at
 * t0 is algebraic (IDASetId); before the first step, and after every event
 * reset, IDACalcIC(IDA_YA_YDP_INIT) makes the algebraic states and u'
 * consistent, starting from the model's dudt (or 0) as the guess of u'.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include <idas/idas.h>

#include "solve.h"

/* IDASetDeltaCjLSetup with SUNDIALS' dense LU (below DSK_LS_LAPACK_MIN
   states); SUNDIALS' default is 0.25. */
#define DSK_IDA_DCJ_DENSE 0.05

static int ida_res(realtype t, N_Vector y, N_Vector yp, N_Vector r, void *data) {
  dsk_solver *s = data;
  double *rv = NV_DATA_S(r), *mv = s->mwork + s->n;
  int rc = s->tab->eval[DSK_FN_RHS](t, NV_DATA_S(y), s->ws, rv);
  if (rc) return dsk_solver_model_failed(s, "rhs", rc, t);
  rc = s->tab->eval[DSK_FN_MASS](t, NV_DATA_S(yp), s->ws, mv);
  if (rc) return dsk_solver_model_failed(s, "M", rc, t);
  for (int i = 0; i < s->n; i++) rv[i] -= mv[i];
  return 0;
}

static int ida_jac(realtype t, realtype cj, N_Vector y, N_Vector yp, N_Vector r, SUNMatrix J,
                   void *data, N_Vector tmp1, N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  (void)yp, (void)r, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_lin_eval_jac(s, t, NV_DATA_S(y));
  if (rc) return dsk_solver_model_failed(s, "rhs (Jacobian)", rc, t);
  rc = dsk_lin_eval_mass(s, t);
  if (rc) return dsk_solver_model_failed(s, "M", rc, t);
  dsk_lin_assemble(s, J, 1.0, -cj);
  return 0;
}

static int ida_root(realtype t, N_Vector y, N_Vector yp, realtype *g, void *data) {
  (void)yp;
  return dsk_solver_eval_stop(data, t, NV_DATA_S(y), g);
}

static int ida_create(dsk_solver *s, dsk_status *st) {
  int rc = dsk_lin_create(s, 0, st);
  if (rc != DSK_OK) return rc;
  s->mem = IDACreate(s->ctx);
  if (!s->mem) return dsk_status_set(st, DSK_E_NOMEM, "IDACreate failed");
  const char *call = "IDASetErrHandlerFn";
  int flag = IDASetErrHandlerFn(s->mem, dsk_solver_err_handler, s);
  if (flag == IDA_SUCCESS) call = "IDASetUserData", flag = IDASetUserData(s->mem, s);
  if (flag == IDA_SUCCESS)
    call = "IDAInit", flag = IDAInit(s->mem, ida_res, s->opt.t0, s->y, s->yp);
  if (flag == IDA_SUCCESS) call = "IDASetLinearSolver", flag = IDASetLinearSolver(s->mem, s->LS, s->A);
  if (flag == IDA_SUCCESS) call = "IDASetJacFn", flag = IDASetJacFn(s->mem, ida_jac);
  /* Small dense systems: a new Newton matrix (IDAS always evaluates the
     Jacobian with it) when cj has changed by more than 5% instead of 25%.
     The Jacobian is cheap there and an outdated one costs steps: on the
     Robertson DAE (rtol 1e-6, 1e-8) 8-11% fewer steps, 13-21% less time;
     over rtol 1e-5 ... 1e-8 the same or a smaller error at every tolerance
     but 1e-6 (1.7e-8 against 1.1e-8) in 0.69-0.84x the time
     (docs/performance_comparison.md). */
  if (flag == IDA_SUCCESS && s->linsol == DSK_LS_SUNDENSE)
    call = "IDASetDeltaCjLSetup", flag = IDASetDeltaCjLSetup(s->mem, DSK_IDA_DCJ_DENSE);
  if (flag == IDA_SUCCESS && s->nstop > 0)
    call = "IDARootInit", flag = IDARootInit(s->mem, s->nstop, ida_root);
  if (flag == IDA_SUCCESS && s->nstop > 0)
    call = "IDASetNoInactiveRootWarn", flag = IDASetNoInactiveRootWarn(s->mem);
  if (flag != IDA_SUCCESS)
    return dsk_status_set(st, DSK_E_SOLVER, "%s failed (%d): %s", call, flag, s->sun_msg);
  return DSK_OK;
}

/* Restart at t0: algebraic states from M's zero columns at t0, tolerances,
   limits, then consistent initial values written back into s->y, s->yp. */
static int ida_reinit(dsk_solver *s, double t0, double tout1, dsk_status *st) {
  int frc = dsk_lin_eval_mass(s, t0);
  if (frc) {
    dsk_solver_model_failed(s, "M", frc, t0);
    return dsk_status_set(st, DSK_E_MODELFN, "model function M returned %d at t = %g", frc, t0);
  }
  const dsk_sparsity *M = s->Mp;
  double *id = NV_DATA_S(s->id);
  int algebraic = 0;
  for (int j = 0; j < s->n; j++) {
    id[j] = 0.0;
    for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++)
      if (s->mvals[k] != 0.0) id[j] = 1.0;
    algebraic += id[j] == 0.0;
  }
  int flag = IDAReInit(s->mem, t0, s->y, s->yp);
  if (flag == IDA_SUCCESS)
    flag = s->atolv ? IDASVtolerances(s->mem, s->opt.rtol, s->atolv)
                    : IDASStolerances(s->mem, s->opt.rtol, s->opt.atol);
  if (flag == IDA_SUCCESS) flag = IDASetMaxNumSteps(s->mem, s->opt.max_steps);
  if (flag == IDA_SUCCESS) flag = IDASetInitStep(s->mem, s->opt.h0);
  if (flag == IDA_SUCCESS) flag = IDASetId(s->mem, s->id);
  /* Without algebraic states IDACalcIC only solves M u' = F, linear in u': its
     first Newton step is exact and the convergence test then measures
     roundoff, which SUNDIALS' coefficient (0.01 * 0.33) can put out of reach at a
     tiny atol (u' ~ 1e3, atol 1e-13: IDA_LINESEARCH_FAIL); 0.1 accepts it.
     DAEs keep SUNDIALS' default. */
  if (flag == IDA_SUCCESS) flag = IDASetNonlinConvCoefIC(s->mem, algebraic ? 0.01 * 0.33 : 0.1);
  if (flag == IDA_SUCCESS)
    flag = IDACalcIC(s->mem, IDA_YA_YDP_INIT, tout1 > t0 ? tout1 : t0 + 1.0);
  if (flag == IDA_SUCCESS) flag = IDAGetConsistentIC(s->mem, s->y, s->yp);
  return flag == IDA_SUCCESS ? DSK_OK : dsk_solver_fail(s, flag, st);
}

static int ida_set_stop_time(dsk_solver *s, double tstop) { return IDASetStopTime(s->mem, tstop); }

static int ida_set_max_steps(dsk_solver *s, long n) { return IDASetMaxNumSteps(s->mem, n); }

static int ida_step(dsk_solver *s, double tout, int one_step, double *tret) {
  realtype tr = tout;
  int flag = IDASolve(s->mem, tout, &tr, s->y, s->yp, one_step ? IDA_ONE_STEP : IDA_NORMAL);
  *tret = tr;
  return flag;
}

static int ida_root_info(dsk_solver *s, int *found) { return IDAGetRootInfo(s->mem, found); }

static int ida_current_time(dsk_solver *s, double *t) {
  realtype tc;
  int flag = IDAGetCurrentTime(s->mem, &tc);
  if (flag == IDA_SUCCESS) *t = tc;
  return flag;
}

static int ida_last_step(dsk_solver *s, double *h) {
  realtype hl;
  int flag = IDAGetLastStep(s->mem, &hl);
  if (flag == IDA_SUCCESS) *h = hl;
  return flag;
}

static void ida_stats(dsk_solver *s, dsk_stats *o) {
  long v;
  memset(o, 0, sizeof *o);
  if (IDAGetNumSteps(s->mem, &v) == IDA_SUCCESS) o->steps = v;
  if (IDAGetNumResEvals(s->mem, &v) == IDA_SUCCESS) o->rhs_evals = v;
  if (IDAGetNumJacEvals(s->mem, &v) == IDA_SUCCESS) o->jac_evals = v;
  if (IDAGetNumLinSolvSetups(s->mem, &v) == IDA_SUCCESS) o->lin_setups = v;
  if (IDAGetNumErrTestFails(s->mem, &v) == IDA_SUCCESS) o->err_test_fails = v;
  if (IDAGetNumNonlinSolvIters(s->mem, &v) == IDA_SUCCESS) o->nonlin_iters = v;
  if (IDAGetNumNonlinSolvConvFails(s->mem, &v) == IDA_SUCCESS) o->nonlin_fails = v;
}

static char *ida_flag_name(int flag) { return IDAGetReturnFlagName(flag); }

static void ida_free(dsk_solver *s) { IDAFree(&s->mem); }

const dsk_backend dsk_backend_idas = {
    "IDAS",        ida_create,    ida_reinit,       ida_set_stop_time, ida_set_max_steps,
    ida_step,      ida_root_info, ida_current_time, ida_last_step,     ida_stats,
    ida_flag_name, ida_free,
};
