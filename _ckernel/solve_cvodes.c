/*
 * solve_cvodes.c - the BDF solver: CVODES with a dense Jacobian built from
 * the model's exact tangent code.
 *
 * A solver owns one SUNContext, the model workspaces, the state vector, a
 * dense matrix and linear solver, and one CVODES memory; all are created in
 * dsk_solver_create and reused (CVodeReInit) by every solve.  CVODES errors
 * are routed to a handler that stores the last message in the solver, so
 * nothing is printed.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sundials/sundials_context.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>

#include "dsk.h"
#include "model.h"

#if !defined(SUNDIALS_DOUBLE_PRECISION)
#error "the kernel needs SUNDIALS built with double precision"
#endif

struct dsk_solver {
  const dsk_model *model;
  const dsk_gen_table *tab;
  dsk_solver_options opt; /* opt.atol_vec is not kept; see atolv */
  int n;                  /* nstates */

  SUNContext ctx;
  double *ws;   /* model workspace (nws), init'ed once */
  double *dws;  /* tangent workspace (nws) */
  double *jwork;/* 3 * nstates, for dsk_model_jac_values */
  double *jvals;/* values of the Jacobian pattern */
  double *yout; /* one column of outputs (nout) */
  N_Vector y;
  N_Vector atolv; /* copy of the per-state absolute tolerances, or NULL */
  SUNMatrix A;
  SUNLinearSolver LS;
  void *cvode;

  dsk_stats stats;     /* of the last solve */
  char sun_msg[1024];  /* last CVODES error message */
  const char *fn_name; /* first model function that failed in this solve */
  int fn_rc;
  double fn_t;
};

/* ---- callbacks ------------------------------------------------------------ */

/* Stores CVODES error messages (error_code < 0) instead of printing them;
   warnings are dropped. */
static void err_handler(int error_code, const char *module, const char *function, char *msg,
                        void *data) {
  dsk_solver *s = data;
  (void)module;
  if (error_code >= 0 || !s) return;
  snprintf(s->sun_msg, sizeof s->sun_msg, "%s: %s", function ? function : "CVODES",
           msg ? msg : "");
}

/* Remembers the first failing model function of a solve; returns -1 so that
   CVODES treats the failure as unrecoverable. */
static int model_failed(dsk_solver *s, const char *fn, int rc, double t) {
  if (!s->fn_name) {
    s->fn_name = fn;
    s->fn_rc = rc;
    s->fn_t = t;
  }
  return -1;
}

static int rhs_fn(realtype t, N_Vector y, N_Vector ydot, void *data) {
  dsk_solver *s = data;
  int rc = s->tab->eval[DSK_FN_RHS](t, NV_DATA_S(y), s->ws, NV_DATA_S(ydot));
  return rc ? model_failed(s, "rhs", rc, t) : 0;
}

/* Dense Jacobian J = dF/du, column j from one tangent sweep with v = e_j.
   tmp1 holds the seed and tmp2 receives the (unused) value of F. */
/* Dense Jacobian from the model's coloured tangent sweeps (jac.c): ncolors
   calls of the generated tangent code, scattered into the columns. */
static int jac_fn(realtype t, N_Vector y, N_Vector fy, SUNMatrix J, void *data, N_Vector tmp1,
                  N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  const dsk_sparsity *P = dsk_model_jac_pattern(s->model);
  (void)fy, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_model_jac_values(s->model, t, NV_DATA_S(y), s->ws, s->dws, s->jwork, s->jvals);
  if (rc) return model_failed(s, "rhs_jvp", rc, t);
  SUNMatZero(J);
  for (int j = 0; j < s->n; j++) {
    double *col = SM_COLUMN_D(J, j);
    for (int k = P->colptr[j]; k < P->colptr[j + 1]; k++) col[P->rowidx[k]] = s->jvals[k];
  }
  return 0;
}

/* ---- errors ---------------------------------------------------------------- */

/* Fills st for a negative CVODES flag returned by `call`:
   "<call> failed at t = <t> (<FLAG>): <last CVODES message>".  A failure
   caused by a model function is reported as DSK_E_MODELFN instead. */
static int solver_error(dsk_solver *s, int flag, const char *call, dsk_status *st) {
  realtype t = s->opt.t0;
  if (s->cvode && CVodeGetCurrentTime(s->cvode, &t) != CV_SUCCESS) t = s->opt.t0;
  if (s->fn_name) {
    int rc = dsk_status_set(st, DSK_E_MODELFN, "model function %s returned %d at t = %.6g",
                            s->fn_name, s->fn_rc, s->fn_t);
    if (st) st->t = s->fn_t;
    return rc;
  }
  char *name = CVodeGetReturnFlagName(flag); /* malloc'd in SUNDIALS 6 */
  char flagbuf[64];
  snprintf(flagbuf, sizeof flagbuf, "%s", name ? name : "CV_UNKNOWN");
  free(name);
  int rc = dsk_status_set(st, DSK_E_SOLVER, "%s failed at t = %.6g (%s)%s%s", call, (double)t,
                          flagbuf, s->sun_msg[0] ? ": " : "", s->sun_msg);
  if (st) {
    st->t = t;
    memcpy(st->flag, flagbuf, sizeof st->flag);
  }
  return rc;
}

/* DSK_OK for a non-negative flag, else solver_error. */
static int cv_check(dsk_solver *s, int flag, const char *call, dsk_status *st) {
  return flag >= 0 ? DSK_OK : solver_error(s, flag, call, st);
}

static int model_error(dsk_solver *s, const char *fn, int rc, double t, dsk_status *st) {
  model_failed(s, fn, rc, t);
  int code = dsk_status_set(st, DSK_E_MODELFN, "model function %s returned %d at t = %.6g",
                            fn, rc, t);
  if (st) st->t = t;
  return code;
}

/* ---- options ---------------------------------------------------------------- */

void dsk_solver_options_default(dsk_solver_options *o) {
  if (!o) return;
  memset(o, 0, sizeof *o);
  o->method = DSK_BDF;
  o->rtol = 1e-6;
  o->atol = 1e-6;
  o->atol_vec = NULL;
  o->t0 = 0.0;
  o->h0 = 0.0;
  o->max_steps = 100000;
}

static int check_options(const dsk_solver_options *o, int n, dsk_status *st) {
  if (o->method != DSK_BDF)
    return dsk_status_set(st, DSK_E_ARG, "unknown solver method %d", o->method);
  if (!(isfinite(o->rtol) && o->rtol >= 0))
    return dsk_status_set(st, DSK_E_ARG, "rtol must be finite and >= 0 (got %g)", o->rtol);
  if (!o->atol_vec && !(isfinite(o->atol) && o->atol >= 0))
    return dsk_status_set(st, DSK_E_ARG, "atol must be finite and >= 0 (got %g)", o->atol);
  if (o->atol_vec) {
    for (int i = 0; i < n; i++)
      if (!(isfinite(o->atol_vec[i]) && o->atol_vec[i] >= 0))
        return dsk_status_set(st, DSK_E_ARG, "atol[%d] must be finite and >= 0 (got %g)", i,
                              o->atol_vec[i]);
  }
  if (!isfinite(o->t0)) return dsk_status_set(st, DSK_E_ARG, "t0 must be finite");
  if (!(isfinite(o->h0) && o->h0 >= 0))
    return dsk_status_set(st, DSK_E_ARG, "h0 must be finite and >= 0 (got %g)", o->h0);
  if (o->max_steps < 1)
    return dsk_status_set(st, DSK_E_ARG, "max_steps must be >= 1 (got %ld)", o->max_steps);
  return DSK_OK;
}

/* ---- create / free ----------------------------------------------------------- */

void dsk_solver_free(dsk_solver *s) {
  if (!s) return;
  if (s->cvode) CVodeFree(&s->cvode);
  if (s->LS) SUNLinSolFree(s->LS);
  if (s->A) SUNMatDestroy(s->A);
  if (s->atolv) N_VDestroy(s->atolv);
  if (s->y) N_VDestroy(s->y);
  free(s->yout);
  free(s->dws);
  free(s->jwork);
  free(s->jvals);
  free(s->ws);
  if (s->ctx) SUNContext_Free(&s->ctx);
  free(s);
}

/* Creates the SUNDIALS objects of s (context, vectors, matrix, linear solver,
   CVODES memory) in order; on failure the caller frees s. */
static int create_sundials(dsk_solver *s, dsk_status *st) {
  if (SUNContext_Create(NULL, &s->ctx) != 0 || !s->ctx)
    return dsk_status_set(st, DSK_E_NOMEM, "SUNContext_Create failed");
  s->y = N_VNew_Serial((sunindextype)s->n, s->ctx);
  if (!s->y) return dsk_status_set(st, DSK_E_NOMEM, "N_VNew_Serial failed");
  N_VConst(0.0, s->y);
  if (s->opt.atol_vec) {
    s->atolv = N_VNew_Serial((sunindextype)s->n, s->ctx);
    if (!s->atolv) return dsk_status_set(st, DSK_E_NOMEM, "N_VNew_Serial failed");
    memcpy(NV_DATA_S(s->atolv), s->opt.atol_vec, (size_t)s->n * sizeof(double));
    s->opt.atol_vec = NULL; /* never read the caller's array after create */
  }
  s->A = SUNDenseMatrix((sunindextype)s->n, (sunindextype)s->n, s->ctx);
  if (!s->A) return dsk_status_set(st, DSK_E_NOMEM, "SUNDenseMatrix failed");
  s->LS = SUNLinSol_Dense(s->y, s->A, s->ctx);
  if (!s->LS) return dsk_status_set(st, DSK_E_NOMEM, "SUNLinSol_Dense failed");
  s->cvode = CVodeCreate(CV_BDF, s->ctx);
  if (!s->cvode) return dsk_status_set(st, DSK_E_NOMEM, "CVodeCreate failed");

  int rc = cv_check(s, CVodeSetErrHandlerFn(s->cvode, err_handler, s), "CVodeSetErrHandlerFn", st);
  if (rc == DSK_OK) rc = cv_check(s, CVodeSetUserData(s->cvode, s), "CVodeSetUserData", st);
  if (rc == DSK_OK)
    rc = cv_check(s, CVodeInit(s->cvode, rhs_fn, s->opt.t0, s->y), "CVodeInit", st);
  if (rc == DSK_OK)
    rc = cv_check(s, CVodeSetLinearSolver(s->cvode, s->LS, s->A), "CVodeSetLinearSolver", st);
  if (rc == DSK_OK) rc = cv_check(s, CVodeSetJacFn(s->cvode, jac_fn), "CVodeSetJacFn", st);
  return rc;
}

int dsk_solver_create(const dsk_model *m, const dsk_solver_options *o, dsk_solver **out,
                      dsk_status *st) {
  dsk_status_clear(st);
  if (!out) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_create: out is NULL");
  *out = NULL;
  const dsk_gen_table *tab = dsk_model_table(m);
  if (!tab) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_create: no model");
  if (tab->nstates < 1)
    return dsk_status_set(st, DSK_E_ARG, "the model has no states (nstates = %d)", tab->nstates);
  if (tab->nparams < 0 || tab->nout < 0 || tab->nws < 0)
    return dsk_status_set(st, DSK_E_ARG, "the model table has negative sizes");
  if (tab->has_mass)
    return dsk_status_set(st, DSK_E_ARG,
                          "the model has a mass matrix (M): DAE solving with IDAS is not "
                          "available yet; the CVODES BDF solver needs M = I");
  if (tab->nstop > 0)
    return dsk_status_set(st, DSK_E_ARG,
                          "the model has events (stop): event handling is not available yet");
  dsk_solver_options defaults;
  dsk_solver_options_default(&defaults);
  if (!o) o = &defaults;
  int rc = check_options(o, tab->nstates, st);
  if (rc != DSK_OK) return rc;

  dsk_solver *s = calloc(1, sizeof *s);
  if (!s) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  s->model = m;
  s->tab = tab;
  s->opt = *o;
  s->n = tab->nstates;
  size_t nws = tab->nws > 0 ? (size_t)tab->nws : 1;
  size_t nout = tab->nout > 0 ? (size_t)tab->nout : 1;
  s->ws = calloc(nws, sizeof(double));
  s->dws = calloc(nws, sizeof(double));
  s->jwork = calloc(3 * (size_t)s->n, sizeof(double));
  s->jvals = calloc((size_t)dsk_model_jac_pattern(m)->nnz + 1, sizeof(double));
  s->yout = calloc(nout, sizeof(double));
  if (!s->ws || !s->dws || !s->yout || !s->jwork || !s->jvals) {
    dsk_solver_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  }
  int frc = tab->init(s->ws);
  if (frc) {
    rc = model_error(s, "init", frc, o->t0, st);
    dsk_solver_free(s);
    return rc;
  }
  rc = create_sundials(s, st);
  if (rc != DSK_OK) {
    dsk_solver_free(s);
    return rc;
  }
  *out = s;
  return DSK_OK;
}

/* ---- solve --------------------------------------------------------------------- */

static int check_times(const dsk_solver *s, const double *times, int nt, dsk_status *st) {
  if (nt < 1) return dsk_status_set(st, DSK_E_ARG, "need at least one output time (nt = %d)", nt);
  if (!times) return dsk_status_set(st, DSK_E_ARG, "times is NULL");
  for (int j = 0; j < nt; j++) {
    if (!isfinite(times[j]))
      return dsk_status_set(st, DSK_E_ARG, "times[%d] is not finite", j);
    if (j > 0 && times[j] < times[j - 1])
      return dsk_status_set(st, DSK_E_ARG,
                            "times must be non-decreasing: times[%d] = %g < times[%d] = %g", j,
                            times[j], j - 1, times[j - 1]);
  }
  if (times[0] < s->opt.t0)
    return dsk_status_set(st, DSK_E_ARG, "times[0] = %g is before t0 = %g", times[0], s->opt.t0);
  return DSK_OK;
}

static void collect_stats(dsk_solver *s) {
  long v;
  memset(&s->stats, 0, sizeof s->stats);
  if (CVodeGetNumSteps(s->cvode, &v) == CV_SUCCESS) s->stats.steps = v;
  if (CVodeGetNumRhsEvals(s->cvode, &v) == CV_SUCCESS) s->stats.rhs_evals = v;
  if (CVodeGetNumJacEvals(s->cvode, &v) == CV_SUCCESS) s->stats.jac_evals = v;
  if (CVodeGetNumLinSolvSetups(s->cvode, &v) == CV_SUCCESS) s->stats.lin_setups = v;
  if (CVodeGetNumErrTestFails(s->cvode, &v) == CV_SUCCESS) s->stats.err_test_fails = v;
  if (CVodeGetNumNonlinSolvIters(s->cvode, &v) == CV_SUCCESS) s->stats.nonlin_iters = v;
  if (CVodeGetNumNonlinSolvConvFails(s->cvode, &v) == CV_SUCCESS) s->stats.nonlin_fails = v;
}

/* Parameters, initial state, ReInit and per-solve settings. */
static int start_solve(dsk_solver *s, const double *p, dsk_status *st) {
  int frc = s->tab->set_inputs(p, s->ws);
  if (frc) return model_error(s, "set_inputs", frc, s->opt.t0, st);
  s->ws[s->tab->n_slot] = 0.0; /* the model index N starts at 0 */
  frc = s->tab->eval[DSK_FN_U0](s->opt.t0, NULL, s->ws, NV_DATA_S(s->y));
  if (frc) return model_error(s, "u0", frc, s->opt.t0, st);
  int rc = cv_check(s, CVodeReInit(s->cvode, s->opt.t0, s->y), "CVodeReInit", st);
  if (rc != DSK_OK) return rc;
  if (s->atolv)
    rc = cv_check(s, CVodeSVtolerances(s->cvode, s->opt.rtol, s->atolv), "CVodeSVtolerances", st);
  else
    rc = cv_check(s, CVodeSStolerances(s->cvode, s->opt.rtol, s->opt.atol), "CVodeSStolerances",
                  st);
  if (rc == DSK_OK)
    rc = cv_check(s, CVodeSetMaxNumSteps(s->cvode, s->opt.max_steps), "CVodeSetMaxNumSteps", st);
  if (rc == DSK_OK)
    rc = cv_check(s, CVodeSetInitStep(s->cvode, s->opt.h0), "CVodeSetInitStep", st);
  return rc;
}

/* Integrates (or interpolates) to tout.  max_steps bounds the steps of this
   call and of the whole solve: the per-call limit is lowered to what is left
   of the total, and when nothing is left and tout lies beyond the current
   time, the solve stops with CV_TOO_MUCH_WORK. */
static int advance(dsk_solver *s, double tout, dsk_status *st) {
  long nst = 0;
  realtype tcur = s->opt.t0, tret = tout;
  int rc = cv_check(s, CVodeGetNumSteps(s->cvode, &nst), "CVodeGetNumSteps", st);
  if (rc == DSK_OK) rc = cv_check(s, CVodeGetCurrentTime(s->cvode, &tcur), "CVodeGetCurrentTime", st);
  if (rc != DSK_OK) return rc;
  long left = s->opt.max_steps - nst;
  if (left <= 0 && tout > tcur) {
    snprintf(s->sun_msg, sizeof s->sun_msg,
             "max_steps = %ld steps taken in total before reaching tout = %g", s->opt.max_steps,
             tout);
    return solver_error(s, CV_TOO_MUCH_WORK, "CVODES", st);
  }
  if (left > 0 && left < s->opt.max_steps) {
    rc = cv_check(s, CVodeSetMaxNumSteps(s->cvode, left), "CVodeSetMaxNumSteps", st);
    if (rc != DSK_OK) return rc;
  }
  int flag = CVode(s->cvode, tout, s->y, &tret, CV_NORMAL);
  return flag < 0 ? solver_error(s, flag, "CVODES", st) : DSK_OK;
}

/* Writes out(t, y) into column j of the row-major nout x nt array. */
static int store_output(dsk_solver *s, double t, double *y, int nt, int j, dsk_status *st) {
  int frc = s->tab->eval[DSK_FN_OUT](t, NV_DATA_S(s->y), s->ws, s->yout);
  if (frc) return model_error(s, "out", frc, t, st);
  for (int i = 0; i < s->tab->nout; i++) y[(size_t)i * (size_t)nt + (size_t)j] = s->yout[i];
  return DSK_OK;
}

int dsk_solver_solve_dense(dsk_solver *s, const double *p, const double *times, int nt,
                           double *y, dsk_status *st) {
  dsk_status_clear(st);
  if (!s) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_solve_dense: solver is NULL");
  int rc = check_times(s, times, nt, st);
  if (rc != DSK_OK) return rc;
  if (!y && s->tab->nout > 0) return dsk_status_set(st, DSK_E_ARG, "output array y is NULL");
  if (!p && s->tab->nparams > 0)
    return dsk_status_set(st, DSK_E_ARG, "the model needs %d parameters but p is NULL",
                          s->tab->nparams);
  s->sun_msg[0] = '\0';
  s->fn_name = NULL;
  memset(&s->stats, 0, sizeof s->stats);

  rc = start_solve(s, p, st);
  for (int j = 0; rc == DSK_OK && j < nt; j++) {
    if (times[j] > s->opt.t0) rc = advance(s, times[j], st);
    if (rc == DSK_OK) rc = store_output(s, times[j], y, nt, j, st);
  }
  collect_stats(s);
  return rc;
}

void dsk_solver_stats(const dsk_solver *s, dsk_stats *out) {
  if (!out) return;
  if (!s) {
    memset(out, 0, sizeof *out);
    return;
  }
  *out = s->stats;
}
