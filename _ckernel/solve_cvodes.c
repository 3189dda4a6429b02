/*
 * solve_cvodes.c - the CVODES back end: BDF and Adams-Moulton (both with a
 * Newton iteration) for models without a mass matrix.
 *
 * The Jacobian J = dF/du comes from the model's coloured tangent sweeps
 * (jac.c) and is written into the matrix of the linear solver chosen by
 * solve.c (SUNDIALS dense, LAPACK dense or KLU).  CVODES memory is created
 * once and restarted with CVodeReInit; its errors go to the solver's message
 * buffer (dsk_solver_err_handler), nothing is printed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <sunnonlinsol/sunnonlinsol_fixedpoint.h>

#include "solve.h"

static int cv_rhs(realtype t, N_Vector y, N_Vector ydot, void *data) {
  dsk_solver *s = data;
  int rc = s->tab->eval[DSK_FN_RHS](t, NV_DATA_S(y), s->ws, NV_DATA_S(ydot));
  return rc ? dsk_solver_model_failed(s, "rhs", rc, t) : 0;
}

/* Jacobian reuse by stiffness.  CVODES refreshes J at a linear setup after
   msbj steps (51 by default) or when the Newton iteration fails with a stale
   one.  Where the step is stiff, gamma ||J||_1 > 1 (an explicit method would
   be unstable at this h), a J at least every DSK_CV_STIFF_MSBJ steps makes
   the corrector and with it the error estimate more exact: fewer failed
   steps.  Measured over 13 tolerances (docs/performance.md, "Jacobian reuse
   by stiffness"): Robertson 0.85x the steps at 0.67x the error, Van der Pol
   0.92x at 0.95x, robertson_grid[2] and [10] 0.85x at 0.52-0.69x; the
   non-stiff problems (Lotka-Volterra, the tanh networks: gamma ||J||_1 below
   0.3) keep SUNDIALS' default and their results.  Decided at each Jacobian
   evaluation; CVODES evaluates J at the first step after every (re)start
   (nst == 0), so a solve never depends on the one before. */
#define DSK_CV_STIFF_MSBJ 20
#define DSK_CV_STIFF_GAMMA_J 1.0

static void jac_frequency(dsk_solver *s) {
  realtype gamma;
  if (CVodeGetCurrentGamma(s->mem, &gamma) != CV_SUCCESS) return;
  int stiff = gamma * dsk_lin_jac_norm1(s) > DSK_CV_STIFF_GAMMA_J;
  CVodeSetJacEvalFrequency(s->mem, stiff ? DSK_CV_STIFF_MSBJ : 0); /* 0: SUNDIALS' default */
}

static int cv_jac(realtype t, N_Vector y, N_Vector fy, SUNMatrix J, void *data, N_Vector tmp1,
                  N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  (void)fy, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_lin_eval_jac(s, t, NV_DATA_S(y));
  if (rc) return dsk_solver_model_failed(s, "rhs (Jacobian)", rc, t);
  dsk_lin_assemble(s, J, 1.0, 0.0);
  jac_frequency(s);
  return 0;
}

static int cv_root(realtype t, N_Vector y, realtype *g, void *data) {
  return dsk_solver_eval_stop(data, t, NV_DATA_S(y), g);
}

static int cv_create(dsk_solver *s, dsk_status *st) {
  int rc = dsk_lin_create(s, 0, st);
  if (rc != DSK_OK) return rc;
  s->mem = CVodeCreate(s->opt.method == DSK_ADAMS ? CV_ADAMS : CV_BDF, s->ctx);
  if (!s->mem) return dsk_status_set(st, DSK_E_NOMEM, "CVodeCreate failed");
  const char *call = "CVodeSetErrHandlerFn";
  int flag = CVodeSetErrHandlerFn(s->mem, dsk_solver_err_handler, s);
  if (flag == CV_SUCCESS) call = "CVodeSetUserData", flag = CVodeSetUserData(s->mem, s);
  if (flag == CV_SUCCESS) call = "CVodeInit", flag = CVodeInit(s->mem, cv_rhs, s->opt.t0, s->y);
  if (flag == CV_SUCCESS && s->linsol == DSK_LS_FIXEDPOINT) {
    /* functional iteration: no Jacobian, no linear solve (non-stiff Adams) */
    s->NLS = SUNNonlinSol_FixedPoint(s->y, 0, s->ctx);
    if (!s->NLS) return dsk_status_set(st, DSK_E_NOMEM, "SUNNonlinSol_FixedPoint failed");
    call = "CVodeSetNonlinearSolver", flag = CVodeSetNonlinearSolver(s->mem, s->NLS);
  } else if (flag == CV_SUCCESS) {
    call = "CVodeSetLinearSolver", flag = CVodeSetLinearSolver(s->mem, s->LS, s->A);
  }
  if (flag == CV_SUCCESS && s->linsol == DSK_LS_SPGMR)
    call = "CVodeSetJacTimes", flag = CVodeSetJacTimes(s->mem, NULL, dsk_lin_jtimes);
  else if (flag == CV_SUCCESS && s->linsol != DSK_LS_FIXEDPOINT)
    call = "CVodeSetJacFn", flag = CVodeSetJacFn(s->mem, cv_jac);
  /* How often J is refreshed: jac_frequency above; a fresh J at every linear
     setup (CVodeSetJacEvalFrequency 1) doubles the error at the same rtol on
     Robertson, Van der Pol and Lotka-Volterra and costs 1.5x on heat2d[100];
     the Newton coefficient and iteration limit and the step-size (eta) bounds
     gave nothing or lost steps (docs/performance.md). */
  if (flag == CV_SUCCESS && s->nstop > 0)
    call = "CVodeRootInit", flag = CVodeRootInit(s->mem, s->nstop, cv_root);
  if (flag == CV_SUCCESS && s->nstop > 0)
    call = "CVodeSetNoInactiveRootWarn", flag = CVodeSetNoInactiveRootWarn(s->mem);
  if (flag != CV_SUCCESS)
    return dsk_status_set(st, DSK_E_SOLVER, "%s failed (%d): %s", call, flag, s->sun_msg);
  return DSK_OK;
}

static int cv_reinit(dsk_solver *s, double t0, double tout1, dsk_status *st) {
  (void)tout1;
  const char *call = "CVodeReInit";
  int flag = CVodeReInit(s->mem, t0, s->y);
  if (flag == CV_SUCCESS) {
    call = "CVodeSetTolerances";
    flag = s->atolv ? CVodeSVtolerances(s->mem, s->opt.rtol, s->atolv)
                    : CVodeSStolerances(s->mem, s->opt.rtol, s->opt.atol);
  }
  if (flag == CV_SUCCESS)
    call = "CVodeSetMaxNumSteps", flag = CVodeSetMaxNumSteps(s->mem, s->opt.max_steps);
  if (flag == CV_SUCCESS) call = "CVodeSetInitStep", flag = CVodeSetInitStep(s->mem, s->opt.h0);
  (void)call;
  return flag == CV_SUCCESS ? DSK_OK : dsk_solver_fail(s, flag, st);
}

static int cv_set_stop_time(dsk_solver *s, double tstop) { return CVodeSetStopTime(s->mem, tstop); }

static int cv_set_max_steps(dsk_solver *s, long n) { return CVodeSetMaxNumSteps(s->mem, n); }

static int cv_step(dsk_solver *s, double tout, int one_step, double *tret) {
  realtype tr = tout;
  int flag = CVode(s->mem, tout, s->y, &tr, one_step ? CV_ONE_STEP : CV_NORMAL);
  *tret = tr;
  return flag;
}

static int cv_root_info(dsk_solver *s, int *found) { return CVodeGetRootInfo(s->mem, found); }

static int cv_current_time(dsk_solver *s, double *t) {
  realtype tc;
  int flag = CVodeGetCurrentTime(s->mem, &tc);
  if (flag == CV_SUCCESS) *t = tc;
  return flag;
}

static int cv_last_step(dsk_solver *s, double *h) {
  realtype hl;
  int flag = CVodeGetLastStep(s->mem, &hl);
  if (flag == CV_SUCCESS) *h = hl;
  return flag;
}

static void cv_stats(dsk_solver *s, dsk_stats *o) {
  long v;
  memset(o, 0, sizeof *o);
  if (CVodeGetNumSteps(s->mem, &v) == CV_SUCCESS) o->steps = v;
  if (CVodeGetNumRhsEvals(s->mem, &v) == CV_SUCCESS) o->rhs_evals = v;
  if (CVodeGetNumJacEvals(s->mem, &v) == CV_SUCCESS) o->jac_evals = v;
  if (CVodeGetNumLinSolvSetups(s->mem, &v) == CV_SUCCESS) o->lin_setups = v;
  if (CVodeGetNumErrTestFails(s->mem, &v) == CV_SUCCESS) o->err_test_fails = v;
  if (CVodeGetNumNonlinSolvIters(s->mem, &v) == CV_SUCCESS) o->nonlin_iters = v;
  if (CVodeGetNumNonlinSolvConvFails(s->mem, &v) == CV_SUCCESS) o->nonlin_fails = v;
}

static char *cv_flag_name(int flag) { return CVodeGetReturnFlagName(flag); }

static void cv_free(dsk_solver *s) {
  CVodeFree(&s->mem);
  if (s->NLS) SUNNonlinSolFree(s->NLS); /* after the integrator that uses them */
  if (s->NLSS) SUNNonlinSolFree(s->NLSS);
  s->NLS = s->NLSS = NULL;
}

const dsk_backend dsk_backend_cvodes = {
    "CVODES",         cv_create,    cv_reinit,      cv_set_stop_time, cv_set_max_steps,
    cv_step,          cv_root_info, cv_current_time, cv_last_step,    cv_stats,
    cv_flag_name,     cv_free,
};
