/*
 * solve.c - the dsk_solver interface: options, the choice of integrator and
 * linear solver, the output loops, events and error reports.  The
 * integrators themselves are behind dsk_backend (solve_cvodes.c,
 * solve_idas.c, solve_arkode.c).
 *
 *   method   model without M        model with M
 *   bdf      CVODES BDF             IDAS (algebraic states from M's zero columns)
 *   adams    CVODES Adams           refused (use bdf)
 *   tsit45,  ARKODE explicit        ARKODE explicit with a mass solver;
 *   dopri5                          a singular M is refused (use bdf)
 *   tr_bdf2, ARKODE implicit        ARKODE implicit with a mass solver;
 *   esdirk34                        a singular M is refused (use bdf)
 *
 * Events: at a root of stop element k (each integrator's root finding), with
 * reset the model index N becomes k, u = reset(t, u), the integrator restarts
 * at the root and the solve continues; an output time equal to the root
 * (within the root-finding tolerance) gets the value after the reset.
 * Without reset the solve ends at the root: dense outputs after it are NaN
 * and dsk_solver_last_stop says when and which.
 */
#define _POSIX_C_SOURCE 200809L

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "solve.h"

/* ---- callbacks' helpers ------------------------------------------------------- */

void dsk_solver_err_handler(int error_code, const char *module, const char *function, char *msg,
                            void *data) {
  dsk_solver *s = data;
  if (error_code >= 0 || !s) return;
  snprintf(s->sun_msg, sizeof s->sun_msg, "%s: %s", function ? function : (module ? module : "?"),
           msg ? msg : "");
}

int dsk_solver_model_failed(dsk_solver *s, const char *fn, int rc, double t) {
  if (!s->fn_name || (rc < 0 && s->fn_rc > 0)) {
    s->fn_name = fn;
    s->fn_rc = rc;
    s->fn_t = t;
  }
  return rc > 0 ? 1 : -1;
}

int dsk_solver_eval_stop(dsk_solver *s, double t, const double *y, double *g) {
  int rc = s->tab->eval[DSK_FN_STOP](t, y, s->ws, g);
  return rc ? dsk_solver_model_failed(s, "stop", rc, t) : 0;
}

/* ---- options -------------------------------------------------------------------- */

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
  o->linear_solver = DSK_LS_AUTO;
}

static int check_options(const dsk_solver_options *o, int n, dsk_status *st) {
  if (o->method < 0 || o->method >= DSK_NMETHODS)
    return dsk_status_set(st, DSK_E_ARG, "unknown solver method %d", o->method);
  if (o->linear_solver < DSK_LS_AUTO || o->linear_solver > DSK_LS_FIXEDPOINT)
    return dsk_status_set(st, DSK_E_ARG, "unknown linear solver %d", o->linear_solver);
  if (!(isfinite(o->adjoint_rtol) && o->adjoint_rtol >= 0 && isfinite(o->adjoint_atol) &&
        o->adjoint_atol >= 0))
    return dsk_status_set(st, DSK_E_ARG, "adjoint_rtol and adjoint_atol must be finite and >= 0");
  if (!(isfinite(o->sens_rtol) && o->sens_rtol >= 0 && isfinite(o->sens_atol) &&
        o->sens_atol >= 0))
    return dsk_status_set(st, DSK_E_ARG, "sens_rtol and sens_atol must be finite and >= 0");
  if (o->checkpoint_steps < 0)
    return dsk_status_set(st, DSK_E_ARG, "checkpoint_steps must be >= 0 (got %d)",
                          o->checkpoint_steps);
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

static const char *const method_names[DSK_NMETHODS] = {"bdf",    "adams",   "tsit45",
                                                      "dopri5", "tr_bdf2", "esdirk34"};

const char *dsk_solver_integrator_name(const dsk_solver *s) {
  if (!s) return "";
  switch (s->opt.method) {
  case DSK_BDF: return s->has_mass ? "IDAS BDF" : "CVODES BDF";
  case DSK_ADAMS: return "CVODES Adams";
  case DSK_TSIT45: return "ARKODE ERK Tsitouras 5(4)";
  case DSK_DOPRI5: return "ARKODE ERK Dormand-Prince 5(4)";
  case DSK_TR_BDF2: return "ARKODE DIRK TR-BDF2";
  case DSK_ESDIRK34: return "ARKODE ESDIRK 3(2) ESDIRK324L2SA";
  default: return "";
  }
}

const char *dsk_solver_linsol_name(const dsk_solver *s) {
  if (!s) return "";
  switch (s->linsol) {
  case DSK_LS_SUNDENSE: return "dense";
  case DSK_LS_LAPACK: return "lapack";
  case DSK_LS_KLU: return "klu";
  case DSK_LS_SPGMR: return "spgmr";
  case DSK_LS_FIXEDPOINT: return "fixedpoint";
  default: return "none";
  }
}

/* ---- create / free ----------------------------------------------------------------- */

void dsk_solver_free(dsk_solver *s) {
  if (!s) return;
  dsk_adjoint_free(s); /* before the integrator memory it refers to */
  dsk_forward_free(s);
  if (s->be && s->mem) s->be->free(s);
  dsk_lin_free(s);
  if (s->id) N_VDestroy(s->id);
  if (s->atolv) N_VDestroy(s->atolv);
  if (s->yp) N_VDestroy(s->yp);
  if (s->y) N_VDestroy(s->y);
  free(s->yout), free(s->gout), free(s->rootsfound);
  free(s->dws), free(s->jwork), free(s->jvals), free(s->ws);
  free(s->traj_t), free(s->traj_y);
  if (s->ctx) SUNContext_Free(&s->ctx);
  free(s);
}

/* KLU when asked, or (auto) for a large enough sparse Newton matrix; else
   SUNDIALS' dense LU for small systems and LAPACK's above. */
static int choose_linsol(dsk_solver *s, dsk_status *st) {
  int n = s->n, want = s->opt.linear_solver;
  double density = (double)s->U.nnz / ((double)n * (double)n);
  int cb_no_jac = dsk_model_callbacks(s->model) && !dsk_model_cb_has_jac(s->model);
  if (want == DSK_LS_FIXEDPOINT) {
    if (s->opt.method != DSK_ADAMS || s->has_mass)
      return dsk_status_set(st, DSK_E_ARG,
                            "linear_solver='fixedpoint' (functional iteration, no Jacobian) is "
                            "for method='adams' on ODEs without M; method '%s'%s",
                            method_names[s->opt.method], s->has_mass ? " with M" : "");
    s->linsol = want;
    return DSK_OK;
  }
  if (want == DSK_LS_AUTO && cb_no_jac) want = DSK_LS_SPGMR;
  if (cb_no_jac && want != DSK_LS_SPGMR)
    return dsk_status_set(st, DSK_E_ARG, "a callback model without jac takes the matrix-free "
                                         "linear solver only (linear_solver='spgmr')");
  if (want == DSK_LS_SPGMR) {
    if (s->has_mass)
      return dsk_status_set(st, DSK_E_ARG,
                            "linear_solver='spgmr' is not available for models with M");
    if (!s->tab->jvp_x[DSK_FN_RHS])
      return dsk_status_set(st, DSK_E_ARG, "linear_solver='spgmr' needs Jacobian-vector products");
    s->linsol = want;
    return DSK_OK;
  }
  if (want == DSK_LS_AUTO)
    want = (n >= DSK_LS_KLU_MIN && density <= DSK_LS_KLU_DENSITY) ? DSK_LS_KLU : DSK_LS_DENSE;
  if (want == DSK_LS_DENSE) want = n >= DSK_LS_LAPACK_MIN ? DSK_LS_LAPACK : DSK_LS_SUNDENSE;
  if (want != DSK_LS_KLU && (double)n * (double)n > 5e7)
    return dsk_status_set(st, DSK_E_ARG,
                          "a dense Newton matrix of %d states would need %.0f MB: use "
                          "linear_solver='klu' (or 'auto')",
                          n, (double)n * n * 8e-6);
  s->linsol = want;
  return DSK_OK;
}

/* For the ARKODE methods: M at t0 with the default parameters must be
   non-singular; DSK_E_ARG with a message that suggests bdf otherwise. */
static int check_mass(dsk_solver *s, dsk_status *st) {
  int frc = s->tab->set_inputs(s->tab->default_params, s->ws);
  if (frc == 0) frc = dsk_lin_eval_mass(s, s->opt.t0);
  if (frc)
    return dsk_status_set(st, DSK_E_MODELFN,
                          "model function M returned %d at t0 = %g with the default parameters",
                          frc, s->opt.t0);
  int algebraic = 0;
  if (dsk_lin_mass_singular(s, &algebraic)) {
    if (algebraic)
      return dsk_status_set(st, DSK_E_ARG,
                            "method '%s' cannot solve a DAE: the mass matrix M is singular "
                            "(%d algebraic state%s); use method='bdf' (IDAS)",
                            method_names[s->opt.method], algebraic, algebraic == 1 ? "" : "s");
    return dsk_status_set(st, DSK_E_ARG,
                          "method '%s' needs a non-singular mass matrix M, but M is singular at "
                          "t0 with the default parameters; use method='bdf' (IDAS)",
                          method_names[s->opt.method]);
  }
  return DSK_OK;
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
  if (tab->nparams < 0 || tab->nout < 0 || tab->nws < 0 || tab->nstop < 0)
    return dsk_status_set(st, DSK_E_ARG, "the model table has negative sizes");
  if (tab->has_mass && !tab->eval[DSK_FN_MASS])
    return dsk_status_set(st, DSK_E_ARG, "the model table has M but no mass function");
  if (tab->nstop > 0 && !tab->eval[DSK_FN_STOP])
    return dsk_status_set(st, DSK_E_ARG, "the model table has stop but no stop function");
  dsk_solver_options defaults;
  dsk_solver_options_default(&defaults);
  if (!o) o = &defaults;
  int rc = check_options(o, tab->nstates, st);
  if (rc != DSK_OK) return rc;
  if (tab->nstop > 0 && o->method == DSK_TR_BDF2)
    return dsk_status_set(st, DSK_E_ARG,
                          "method 'tr_bdf2' cannot locate events (stop) accurately: ARKODE's "
                          "dense output for it is linear between steps; use method='esdirk34' "
                          "or 'bdf'");
  if (tab->has_mass && o->method == DSK_ADAMS)
    return dsk_status_set(st, DSK_E_ARG,
                          "method 'adams' (CVODES) cannot take a mass matrix M; use "
                          "method='bdf' (IDAS)");

  if ((o->method == DSK_BDF || o->method == DSK_ADAMS || o->method == DSK_TR_BDF2 ||
       o->method == DSK_ESDIRK34) &&
      !tab->jvp_x[DSK_FN_RHS] && !dsk_model_cb_has_jac(m))
    return dsk_status_set(st, DSK_E_ARG,
                          "an implicit method needs the Jacobian: the callback model has "
                          "neither jac nor jvp; use an explicit method (tsit45, dopri5)");

  dsk_solver *s = calloc(1, sizeof *s);
  if (!s) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  s->model = m;
  s->tab = tab;
  s->opt = *o;
  s->n = tab->nstates;
  s->has_mass = tab->has_mass != 0;
  s->nstop = tab->nstop;
  s->has_reset = tab->eval[DSK_FN_RESET] != NULL;
  s->implicit = o->method == DSK_BDF || o->method == DSK_ADAMS || o->method == DSK_TR_BDF2 ||
                o->method == DSK_ESDIRK34;
  s->linsol = -1;
  if (o->method == DSK_BDF || o->method == DSK_ADAMS)
    s->be = s->has_mass ? &dsk_backend_idas : &dsk_backend_cvodes;
  else
    s->be = &dsk_backend_arkode;

  size_t nws = tab->nws > 0 ? (size_t)tab->nws : 1;
  size_t nout = tab->nout > 0 ? (size_t)tab->nout : 1;
  s->ws = calloc(nws, sizeof(double));
  s->dws = calloc(nws, sizeof(double));
  s->jwork = calloc(3 * (size_t)s->n, sizeof(double));
  s->jvals = calloc((size_t)dsk_model_jac_pattern(m)->nnz + 1, sizeof(double));
  s->yout = calloc(nout, sizeof(double));
  s->gout = calloc((size_t)s->nstop + 1, sizeof(double));
  s->rootsfound = calloc((size_t)s->nstop + 1, sizeof(int));
  if (!s->ws || !s->dws || !s->yout || !s->jwork || !s->jvals || !s->gout || !s->rootsfound) {
    dsk_solver_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  }
  int frc = tab->init(s->ws);
  dsk_model_bind_ws(m, s->ws);
  if (frc) {
    dsk_solver_free(s);
    rc = dsk_status_set(st, DSK_E_MODELFN, "model function init returned %d", frc);
    return rc;
  }
  if (SUNContext_Create(NULL, &s->ctx) != 0 || !s->ctx) {
    dsk_solver_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "SUNContext_Create failed");
  }
  s->y = N_VNew_Serial((sunindextype)s->n, s->ctx);
  dsk_nvec_tune(s->y); /* before the integrator clones it */
  if (s->y) N_VConst(0.0, s->y);
  if (s->y && s->be == &dsk_backend_idas) {
    s->yp = N_VNew_Serial((sunindextype)s->n, s->ctx);
    s->id = N_VNew_Serial((sunindextype)s->n, s->ctx);
    dsk_nvec_tune(s->yp);
    if (s->yp) N_VConst(0.0, s->yp);
    if (s->id) N_VConst(1.0, s->id);
  }
  if (s->y && o->atol_vec) {
    s->atolv = N_VNew_Serial((sunindextype)s->n, s->ctx);
    if (s->atolv) memcpy(NV_DATA_S(s->atolv), o->atol_vec, (size_t)s->n * sizeof(double));
  }
  s->opt.atol_vec = NULL; /* never read the caller's array after create */
  if (!s->y || (s->be == &dsk_backend_idas && (!s->yp || !s->id)) || (o->atol_vec && !s->atolv)) {
    dsk_solver_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "N_VNew_Serial failed");
  }
  rc = dsk_lin_patterns(s, st);
  if (rc == DSK_OK && s->has_mass && s->be == &dsk_backend_arkode) rc = check_mass(s, st);
  if (rc == DSK_OK && (s->implicit || s->has_mass)) rc = choose_linsol(s, st);
  if (rc == DSK_OK) rc = s->be->create(s, st);
  if (rc != DSK_OK) {
    dsk_solver_free(s);
    return rc;
  }
  *out = s;
  return DSK_OK;
}

/* ---- errors ------------------------------------------------------------------------ */

static int explicit_method(const dsk_solver *s) {
  return s->opt.method == DSK_TSIT45 || s->opt.method == DSK_DOPRI5;
}

/* A suggestion for a failure with the given flag name. */
static const char *suggestion(const dsk_solver *s, const char *flag, char *buf, size_t len) {
  const char *bdf = s->opt.method == DSK_BDF ? "" : ", or try method='bdf'";
  if (strstr(flag, "TOO_MUCH_WORK"))
    snprintf(buf, len,
             "raise max_steps (now %ld)%s, or check that the solution does not blow up",
             s->opt.max_steps,
             explicit_method(s) ? "; if the problem is stiff use method='bdf'" : "");
  else if (strstr(flag, "TOO_MUCH_ACC"))
    snprintf(buf, len, "rtol/atol are too small for double precision: loosen them");
  else if (strstr(flag, "ERR_FAIL"))
    snprintf(buf, len,
             "repeated error-test failures: check the model for a singularity or a "
             "discontinuity (use stop/reset for jumps), loosen rtol/atol%s",
             bdf);
  else if (strstr(flag, "CONV_FAIL"))
    snprintf(buf, len,
             "the Newton iteration failed repeatedly: check the model (Jacobian, a DAE that "
             "is not index 1), loosen rtol/atol%s",
             bdf);
  else if (strstr(flag, "LSETUP") || strstr(flag, "LSOLVE") || strstr(flag, "MASSSETUP") ||
           strstr(flag, "MASSSOLVE"))
    snprintf(buf, len,
             "the linear solver failed (a singular Newton or mass matrix?): check the model%s",
             bdf);
  else if (strstr(flag, "NO_RECOVERY") || strstr(flag, "LINESEARCH") || strstr(flag, "BAD_EWT") ||
           strstr(flag, "CONSTR"))
    snprintf(buf, len,
             "consistent initial values could not be computed: check u and dudt, and that "
             "the algebraic equations can be solved for the algebraic states");
  else
    snprintf(buf, len, "check the model and the solver options");
  return buf;
}

/* Fills st for a negative flag of the integrator:
   "<BE> failed at t = <t> (<FLAG>): <SUNDIALS message>. [model note] Suggestion: ..."
   DSK_E_MODELFN when a model function failed in this solve (and the flag is
   not about the step budget or accuracy), else DSK_E_SOLVER. */
int dsk_solver_fail(dsk_solver *s, int flag, dsk_status *st) {
  double t = s->t_cur;
  if (s->mem && s->be->current_time(s, &t) != 0) t = s->t_cur;
  char *name = s->be->flag_name(flag);
  char flagbuf[64], sug[320], note[200];
  snprintf(flagbuf, sizeof flagbuf, "%s", name ? name : "UNKNOWN_FLAG");
  free(name);
  int code = DSK_E_SOLVER;
  note[0] = '\0';
  if (s->fn_name && !strstr(flagbuf, "TOO_MUCH")) {
    code = DSK_E_MODELFN;
    snprintf(note, sizeof note, " The model function %s returned %d%s at t = %.6g.", s->fn_name,
             s->fn_rc,
             s->fn_rc == 1 ? " (NaN or Inf)" : (s->fn_rc == -2 ? " (index N out of range)" : ""),
             s->fn_t);
    t = s->fn_rc < 0 ? s->fn_t : t;
    snprintf(sug, sizeof sug, "check the model and the parameters (divisions, logs, powers, "
                              "N in reset)");
  } else {
    suggestion(s, flagbuf, sug, sizeof sug);
  }
  int rc = dsk_status_set(st, code, "%s failed at t = %.6g (%s)%s%s.%s Suggestion: %s.",
                          s->be->name, t, flagbuf, s->sun_msg[0] ? ": " : "", s->sun_msg, note,
                          sug);
  if (st) {
    st->t = t;
    memcpy(st->flag, flagbuf, sizeof st->flag);
  }
  return rc;
}

static int model_error(dsk_solver *s, const char *fn, int rc, double t, dsk_status *st) {
  dsk_solver_model_failed(s, fn, rc, t);
  int code = dsk_status_set(st, DSK_E_MODELFN, "model function %s returned %d at t = %.6g%s", fn,
                            rc, t, rc == 1 ? " (NaN or Inf)" : "");
  if (st) st->t = t;
  return code;
}

/* ---- statistics -------------------------------------------------------------------- */

void dsk_stats_add(dsk_stats *a, const dsk_stats *b) {
  a->steps += b->steps, a->rhs_evals += b->rhs_evals, a->jac_evals += b->jac_evals;
  a->lin_setups += b->lin_setups, a->err_test_fails += b->err_test_fails;
  a->nonlin_iters += b->nonlin_iters, a->nonlin_fails += b->nonlin_fails;
  a->events += b->events;
  a->backward_steps += b->backward_steps, a->backward_restarts += b->backward_restarts;
}

static void collect_stats(dsk_solver *s) {
  dsk_stats cur;
  memset(&cur, 0, sizeof cur);
  if (s->mem) s->be->stats(s, &cur);
  s->stats = s->acc;
  dsk_stats_add(&s->stats, &cur);
}

void dsk_solver_bank_stats(dsk_solver *s) {
  dsk_stats cur;
  memset(&cur, 0, sizeof cur);
  s->be->stats(s, &cur);
  dsk_stats_add(&s->acc, &cur);
}

static long total_steps(dsk_solver *s) {
  dsk_stats cur;
  memset(&cur, 0, sizeof cur);
  s->be->stats(s, &cur);
  return s->acc.steps + cur.steps;
}

void dsk_solver_stats(const dsk_solver *s, dsk_stats *out) {
  if (!out) return;
  if (!s) {
    memset(out, 0, sizeof *out);
    return;
  }
  *out = s->stats;
}

int dsk_solver_last_stop(const dsk_solver *s, double *t, int *index) {
  if (!s || !s->stopped) return 0;
  if (t) *t = s->stop_t;
  if (index) *index = s->stop_index;
  return 1;
}

/* ---- the solve ------------------------------------------------------------------------ */

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

/* Restart the integrator at t from s->y (s->yp), integrating towards tend. */
static int restart(dsk_solver *s, double t, double tend, dsk_status *st) {
  int rc = s->be->reinit(s, t, tend, st);
  if (rc != DSK_OK) return rc;
  s->t_cur = t;
  if (tend > t) {
    int flag = s->be->set_stop_time(s, tend);
    if (flag < 0) return dsk_solver_fail(s, flag, st);
  }
  return DSK_OK;
}

/* Parameters, N = 0, the initial state (and du/dt guess), restart at t0. */
static int start_solve(dsk_solver *s, const double *p, double tend, dsk_status *st) {
  s->generation++;
  s->sun_msg[0] = '\0';
  s->fn_name = NULL;
  s->stopped = 0;
  memset(&s->stats, 0, sizeof s->stats);
  memset(&s->acc, 0, sizeof s->acc);
  s->t_cur = s->opt.t0;
  int frc = s->tab->set_inputs(p, s->ws);
  if (frc) return model_error(s, "set_inputs", frc, s->opt.t0, st);
  s->ws[s->tab->n_slot] = 0.0; /* the model index N starts at 0 */
  frc = s->tab->eval[DSK_FN_U0](s->opt.t0, NULL, s->ws, NV_DATA_S(s->y));
  if (frc) return model_error(s, "u0", frc, s->opt.t0, st);
  if (s->yp) {
    N_VConst(0.0, s->yp);
    if (s->tab->eval[DSK_FN_DUDT0]) {
      frc = s->tab->eval[DSK_FN_DUDT0](s->opt.t0, NULL, s->ws, NV_DATA_S(s->yp));
      if (frc) return model_error(s, "dudt", frc, s->opt.t0, st);
    }
  }
  return restart(s, s->opt.t0, tend, st);
}

double dsk_solver_event_tol(dsk_solver *s, double tr) {
  double h = 0.0;
  if (s->be->last_step(s, &h) != 0) h = 0.0;
  return 1000.0 * DBL_EPSILON * (fabs(tr) + fabs(h) + 1e-300);
}

/* Applies the resets of the roots found at tr (N = k, u = reset(t, u), in
   the order of k) and restarts the integrator there. */
static int apply_resets(dsk_solver *s, double tr, double tend, dsk_status *st) {
  int flag = s->be->root_info(s, s->rootsfound);
  if (flag < 0) return dsk_solver_fail(s, flag, st);
  double *u = NV_DATA_S(s->y), *tmp = s->jwork; /* jwork is free between Jacobians */
  int fired = 0;
  for (int k = 0; k < s->nstop; k++) {
    if (!s->rootsfound[k]) continue;
    fired++;
    s->ws[s->tab->n_slot] = (double)k;
    int frc = s->tab->eval[DSK_FN_RESET](tr, u, s->ws, tmp);
    if (frc) return model_error(s, "reset", frc, tr, st);
    memcpy(u, tmp, (size_t)s->n * sizeof *u);
  }
  dsk_solver_bank_stats(s);
  s->acc.events += fired ? fired : 1;
  return restart(s, tr, tend, st);
}

void dsk_solver_note_stop(dsk_solver *s, double t) {
  s->stopped = 1;
  s->stop_t = t;
  s->stop_index = 0;
  for (int k = 0; k < s->nstop; k++)
    if (s->rootsfound[k]) {
      s->stop_index = k;
      break;
    }
  s->acc.events += 1;
}

/* Records a stop root at tr (no reset). */
static int record_stop(dsk_solver *s, double tr, dsk_status *st) {
  int flag = s->be->root_info(s, s->rootsfound);
  if (flag < 0) return dsk_solver_fail(s, flag, st);
  dsk_solver_note_stop(s, tr);
  return DSK_OK;
}

/* out(t, y) into s->yout (the states when the model has no out). */
static int eval_out(dsk_solver *s, double t, dsk_status *st) {
  if (!s->tab->eval[DSK_FN_OUT]) {
    memcpy(s->yout, NV_DATA_S(s->y), (size_t)s->n * sizeof(double));
    return DSK_OK;
  }
  int frc = s->tab->eval[DSK_FN_OUT](t, NV_DATA_S(s->y), s->ws, s->yout);
  return frc ? model_error(s, "out", frc, t, st) : DSK_OK;
}

/* Writes out(t, y) into column j of the row-major nout x nt array. */
static int store_output(dsk_solver *s, double t, double *y, int nt, int j, dsk_status *st) {
  int rc = eval_out(s, t, st);
  if (rc != DSK_OK) return rc;
  for (int i = 0; i < s->tab->nout; i++) y[(size_t)i * (size_t)nt + (size_t)j] = s->yout[i];
  return DSK_OK;
}

int dsk_solver_step_to(dsk_solver *s, double tout, int one_step, double *tret, int *flag,
                   dsk_status *st) {
  long left = s->opt.max_steps - total_steps(s);
  if (left <= 0) {
    snprintf(s->sun_msg, sizeof s->sun_msg,
             "max_steps = %ld steps taken in total before reaching t = %g", s->opt.max_steps,
             tout);
    return dsk_solver_fail(s, -1 /* *_TOO_MUCH_WORK in CVODES, IDAS and ARKODE */, st);
  }
  if (!one_step) {
    int f = s->be->set_max_steps(s, left);
    if (f < 0) return dsk_solver_fail(s, f, st);
  }
  *flag = s->be->step(s, tout, one_step, tret);
  if (*flag < 0) return dsk_solver_fail(s, *flag, st);
  s->t_cur = *tret;
  return DSK_OK;
}

static int check_solve_args(dsk_solver *s, const double *p, dsk_status *st) {
  if (!p && s->tab->nparams > 0)
    return dsk_status_set(st, DSK_E_ARG, "the model needs %d parameters but p is NULL",
                          s->tab->nparams);
  return DSK_OK;
}

int dsk_solver_solve_dense(dsk_solver *s, const double *p, const double *times, int nt,
                           double *y, dsk_status *st) {
  dsk_status_clear(st);
  if (!s) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_solve_dense: solver is NULL");
  int rc = check_times(s, times, nt, st);
  if (rc != DSK_OK) return rc;
  if (!y && s->tab->nout > 0) return dsk_status_set(st, DSK_E_ARG, "output array y is NULL");
  rc = check_solve_args(s, p, st);
  if (rc != DSK_OK) return rc;

  rc = start_solve(s, p, times[nt - 1], st);
  double tol = 0.0; /* > 0 right after an event restart */
  int j = 0;
  while (rc == DSK_OK && j < nt) {
    double tout = times[j], tret = s->t_cur;
    int flag = 0;
    if (tout <= s->t_cur || tout - s->t_cur <= tol) {
      rc = store_output(s, tout, y, nt, j++, st);
      continue;
    }
    rc = dsk_solver_step_to(s, tout, 0, &tret, &flag, st);
    if (rc != DSK_OK) break;
    if (flag == DSK_STEP_ROOT) {
      tol = dsk_solver_event_tol(s, tret);
      if (!s->has_reset) {
        rc = record_stop(s, tret, st);
        for (; rc == DSK_OK && j < nt && times[j] <= tret + tol; j++)
          rc = store_output(s, times[j], y, nt, j, st);
        for (; j < nt; j++)
          for (int i = 0; i < s->tab->nout; i++) y[(size_t)i * (size_t)nt + (size_t)j] = NAN;
        break;
      }
      rc = apply_resets(s, tret, times[nt - 1], st);
      /* outputs already stored at the event time get the value after it */
      for (int q = j - 1; rc == DSK_OK && q >= 0 && times[q] >= tret - tol; q--)
        rc = store_output(s, times[q], y, nt, q, st);
      continue;
    }
    tol = 0.0;
    rc = store_output(s, tout, y, nt, j++, st);
  }
  collect_stats(s);
  return rc;
}

/* Appends (t, out(t, y)) to the trajectory. */
static int push_point(dsk_solver *s, double t, dsk_status *st) {
  int rc = eval_out(s, t, st);
  if (rc != DSK_OK) return rc;
  size_t nout = (size_t)s->tab->nout;
  if (s->traj_n == s->traj_cap) {
    size_t cap = s->traj_cap ? 2 * s->traj_cap : 256;
    double *nt_ = realloc(s->traj_t, cap * sizeof(double));
    if (nt_) s->traj_t = nt_;
    double *ny = realloc(s->traj_y, cap * (nout ? nout : 1) * sizeof(double));
    if (ny) s->traj_y = ny;
    if (!nt_ || !ny) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the trajectory");
    s->traj_cap = cap;
  }
  s->traj_t[s->traj_n] = t;
  memcpy(s->traj_y + s->traj_n * nout, s->yout, nout * sizeof(double));
  s->traj_n++;
  return DSK_OK;
}

int dsk_solver_solve(dsk_solver *s, const double *p, double t_final, int *nt, const double **ts,
                     const double **ys, dsk_status *st) {
  dsk_status_clear(st);
  if (!s) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_solve: solver is NULL");
  if (!nt || !ts || !ys) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_solve: NULL output");
  *nt = 0;
  *ts = *ys = NULL;
  if (!isfinite(t_final) || t_final < s->opt.t0)
    return dsk_status_set(st, DSK_E_ARG, "t_final = %g must be finite and >= t0 = %g", t_final,
                          s->opt.t0);
  int rc = check_solve_args(s, p, st);
  if (rc != DSK_OK) return rc;
  s->traj_n = 0;
  rc = start_solve(s, p, t_final, st);
  if (rc == DSK_OK) rc = push_point(s, s->opt.t0, st);
  while (rc == DSK_OK && s->t_cur < t_final) {
    double tret = s->t_cur;
    int flag = 0;
    rc = dsk_solver_step_to(s, t_final, 1, &tret, &flag, st);
    if (rc == DSK_OK) rc = push_point(s, tret, st);
    if (rc != DSK_OK) break;
    if (flag == DSK_STEP_ROOT) {
      if (!s->has_reset) {
        rc = record_stop(s, tret, st);
        break;
      }
      rc = apply_resets(s, tret, t_final, st);
      if (rc == DSK_OK) rc = push_point(s, tret, st);
      if (t_final - tret <= dsk_solver_event_tol(s, tret)) break;
      continue;
    }
    if (flag == DSK_STEP_TSTOP || tret >= t_final) break;
  }
  collect_stats(s);
  if (rc == DSK_OK || s->traj_n > 0) {
    *nt = (int)s->traj_n;
    *ts = s->traj_t;
    *ys = s->traj_y;
  }
  return rc;
}

/* ---- for sens_forward.c and sens_adjoint.c ---------------------------------------- */

int dsk_solver_begin(dsk_solver *s, const double *p, double tend, dsk_status *st) {
  return start_solve(s, p, tend, st);
}

int dsk_solver_check_times(const dsk_solver *s, const double *times, int nt, dsk_status *st) {
  return check_times(s, times, nt, st);
}

int dsk_solver_check_params(dsk_solver *s, const double *p, dsk_status *st) {
  return check_solve_args(s, p, st);
}

void dsk_solver_collect_stats(dsk_solver *s) { collect_stats(s); }

long dsk_solver_generation(const dsk_solver *s) { return s ? s->generation : -1; }

int dsk_solver_store_output(dsk_solver *s, double t, double *y, int nt, int j, dsk_status *st) {
  return store_output(s, t, y, nt, j, st);
}
