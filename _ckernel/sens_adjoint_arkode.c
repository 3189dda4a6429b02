/*
 * sens_adjoint_arkode.c - reverse mode for the ARKODE methods (tsit45, dopri5,
 * tr_bdf2, esdirk34) on models without M and without events.
 *
 * The same gradient as sens_adjoint.c (continuous adjoint):
 *   dL/dp = sum_j (d out/dp)^T g_j + lambda(t0)^T du0/dp + int_t0^T lambda^T dF/dp dt,
 *   lambda' = -(dF/du)^T lambda, lambda jumping by (d out/du)^T g_j at each t_j.
 *
 * Forward pass (dsk_arkode_forward_checkpointed): the solver's own ARKStep
 * memory in one-step mode, with the stop time at each output time; a
 * checkpoint (t, u) is stored at t0, every DSK_ARK_CK_STEPS-th internal step
 * and at every output time (so output times are always checkpoint
 * boundaries and the adjoint's jumps fall at interval ends).
 *
 * Backward pass (dsk_arkode_backward): for each checkpoint interval
 * [c_i, c_{i+1}], last to first, the forward trajectory is recomputed from
 * the checkpoint with the same method (the solver's ARKStep memory
 * re-initialised there), storing every step's (t, u, F(t, u)); u(t) inside
 * the interval is the cubic Hermite interpolant of those (ARKODE's own
 * interpolant only covers the last step).  For the explicit (order-5)
 * tables the cubic's O(h^4) error showed in the gradient (up to 7e-7
 * relative at rtol 1e-10), so their recomputation also stores u at each
 * step's midpoint from ARKODE's interpolant (degree 4) and the interpolant
 * becomes the quartic matching it too (3e-9).  Then a second ARKStep
 * memory with the same Butcher table integrates Y = [lambda; q] (n + nparams)
 * backward in time (decreasing tout, stop time at c_i):
 *   lambda' = -(dF/du)^T lambda  (generated vjp_x of F),
 *   q'      = (dF/dp)^T lambda   (generated vjp_p of F),
 * so q(t0) = -int_t0^T lambda^T F_p.  The implicit tables use a dense
 * (n + np) Newton matrix with Jacobian [-(dF/du)^T 0; 0 0]: the q rows'
 * dependence on lambda is left out (q does not feed back, so the modified
 * Newton iteration still converges, the q part one iteration after lambda).
 * The backward integrator carries on across checkpoint boundaries and is
 * re-initialised only where lambda jumps (output times with a non-zero g).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>

#include "solve.h"

#define DSK_ARK_CK_STEPS 20 /* internal forward steps between checkpoints */


struct dsk_adjoint_ark {
  long generation; /* solver generation of the recorded forward pass, -1: none */
  int n, np;
  int nt;          /* recorded output times */
  /* checkpoints: time, state, index of the output time there (or -1) */
  int nck, ckcap;
  double *ck_t, *ck_u;
  int *ck_j;
  /* the recomputed interval: times, states and F at every step */
  int nrec, reccap, seg;
  double *rt, *ru, *rf;
  /* explicit tables: the state at each step's midpoint from ARKODE's
     interpolant (degree 4 for the order-5 tables), or NULL */
  double *rm;
  N_Vector vmid;
  /* the backward problem */
  void *bmem;
  int bmem_ready; /* bmem created */
  N_Vector Y;
  SUNMatrix A;
  SUNLinearSolver LS;
  double *bws, *gj, *ubar, *pbar, *uf;
};

/* Frees the backward problem's memory and linear solver (re-created by start_b). */
static void free_bmem(struct dsk_adjoint_ark *a) {
  if (a->bmem) ARKStepFree(&a->bmem);
  if (a->LS) SUNLinSolFree(a->LS);
  if (a->A) SUNMatDestroy(a->A);
  a->bmem = NULL, a->LS = NULL, a->A = NULL;
  a->bmem_ready = 0;
}

void dsk_adjoint_arkode_free(dsk_solver *s) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  if (!a) return;
  free_bmem(a);
  if (a->Y) N_VDestroy(a->Y);
  if (a->vmid) N_VDestroy(a->vmid);
  free(a->rm);
  free(a->ck_t), free(a->ck_u), free(a->ck_j);
  free(a->rt), free(a->ru), free(a->rf);
  free(a->bws), free(a->gj), free(a->ubar), free(a->pbar), free(a->uf);
  free(a);
  s->adj_ark = NULL;
}

static int ark_state(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint_ark *a;
  if (s->adj_ark) return DSK_OK;
  a = calloc(1, sizeof *a);
  if (!a) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  s->adj_ark = a;
  a->generation = -1;
  a->n = s->n;
  a->np = s->tab->nparams;
  a->Y = N_VNew_Serial((sunindextype)(a->n + a->np), s->ctx);
  a->bws = calloc((size_t)s->tab->nws + 1, sizeof(double));
  a->gj = calloc((size_t)s->tab->nout + 1, sizeof(double));
  a->ubar = calloc((size_t)a->n + 1, sizeof(double));
  a->pbar = calloc((size_t)a->np + 1, sizeof(double));
  a->uf = calloc((size_t)a->n + 1, sizeof(double));
  if (!s->implicit) a->vmid = N_VNew_Serial((sunindextype)a->n, s->ctx);
  if ((!s->implicit && !a->vmid) || !a->Y || !a->bws || !a->gj || !a->ubar || !a->pbar || !a->uf) {
    dsk_adjoint_arkode_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint");
  }
  return DSK_OK;
}

static int check_supported(const dsk_solver *s, dsk_status *st) {
  if (!s->tab->vjp_x[DSK_FN_RHS] || !s->tab->vjp_p[DSK_FN_RHS])
    return dsk_status_set(st, DSK_E_ARG, "reverse mode needs the model's vector-Jacobian "
                                         "products (a callback model without vjp)");
  if (s->linsol == DSK_LS_SPGMR)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode of the implicit ARKODE methods with the matrix-free "
                          "linear solver (spgmr) is not available; use method 'bdf'");
  if (s->has_mass)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode with method '%s' (ARKODE) is not available for models "
                          "with a mass matrix M yet; use method 'bdf'",
                          s->opt.method == DSK_TSIT45   ? "tsit45"
                          : s->opt.method == DSK_DOPRI5 ? "dopri5"
                          : s->opt.method == DSK_TR_BDF2 ? "tr_bdf2"
                                                         : "esdirk34");
  if (s->nstop > 0)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode through events (stop/reset) is not available yet");
  return DSK_OK;
}

/* Appends checkpoint (t, u) for output j (-1: none); merges with the last one
   at the same time. */
static int push_ck(struct dsk_adjoint_ark *a, double t, const double *u, int j, dsk_status *st) {
  if (a->nck > 0 && a->ck_t[a->nck - 1] == t) {
    if (j >= 0) a->ck_j[a->nck - 1] = j;
    return DSK_OK;
  }
  if (a->nck == a->ckcap) {
    int cap = a->ckcap ? 2 * a->ckcap : 64;
    double *tt = realloc(a->ck_t, (size_t)cap * sizeof *tt);
    if (tt) a->ck_t = tt;
    double *uu = tt ? realloc(a->ck_u, (size_t)cap * (size_t)a->n * sizeof *uu + 1) : NULL;
    if (uu) a->ck_u = uu;
    int *jj = uu ? realloc(a->ck_j, (size_t)cap * sizeof *jj) : NULL;
    if (jj) a->ck_j = jj;
    if (!tt || !uu || !jj) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for checkpoints");
    a->ckcap = cap;
  }
  a->ck_t[a->nck] = t;
  memcpy(a->ck_u + (size_t)a->nck * (size_t)a->n, u, (size_t)a->n * sizeof *u);
  a->ck_j[a->nck] = j;
  a->nck++;
  return DSK_OK;
}

int dsk_arkode_forward_checkpointed(dsk_solver *s, const double *p, const double *times, int nt,
                                    double *y, dsk_status *st) {
  struct dsk_adjoint_ark *a;
  int rc;
  long steps = 0;
  long ck_every = s->opt.checkpoint_steps > 0 ? s->opt.checkpoint_steps : DSK_ARK_CK_STEPS;
  dsk_status_clear(st);
  rc = dsk_solver_check_times(s, times, nt, st);
  if (rc == DSK_OK) rc = dsk_solver_check_params(s, p, st);
  if (rc == DSK_OK) rc = check_supported(s, st);
  if (rc == DSK_OK) rc = ark_state(s, st);
  if (rc != DSK_OK) return rc;
  a = s->adj_ark;
  a->generation = -1;
  a->nck = 0;
  rc = dsk_solver_begin(s, p, times[nt - 1], st);
  if (rc == DSK_OK) rc = push_ck(a, s->t_cur, NV_DATA_S(s->y), -1, st);
  for (int j = 0; j < nt && rc == DSK_OK; j++) {
    double *u = NV_DATA_S(s->y);
    if (times[j] > s->t_cur) {
      int flag = s->be->set_stop_time(s, times[j]);
      if (flag < 0) {
        rc = dsk_solver_fail(s, flag, st);
        break;
      }
    }
    while (times[j] > s->t_cur && rc == DSK_OK) {
      double tret = s->t_cur;
      int flag = s->be->step(s, times[j], 1, &tret);
      if (flag < 0) {
        rc = dsk_solver_fail(s, flag, st);
        break;
      }
      s->t_cur = tret;
      steps++;
      if (steps % ck_every == 0 && tret < times[j]) rc = push_ck(a, tret, u, -1, st);
    }
    if (rc != DSK_OK) break;
    rc = push_ck(a, times[j], u, j, st);
    if (rc == DSK_OK && y) rc = dsk_solver_store_output(s, times[j], y, nt, j, st);
    if (rc != DSK_OK) break;
  }
  dsk_solver_collect_stats(s);
  if (rc != DSK_OK) return rc;
  a->nt = nt;
  a->generation = s->generation;
  return DSK_OK;
}

/* ---- the recomputed forward trajectory ------------------------------------------ */

static int push_rec(dsk_solver *s, double t, const double *u, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  size_t n = (size_t)a->n;
  if (a->nrec == a->reccap) {
    int cap = a->reccap ? 2 * a->reccap : 64;
    double *tt = realloc(a->rt, (size_t)cap * sizeof *tt);
    if (tt) a->rt = tt;
    double *uu = tt ? realloc(a->ru, (size_t)cap * n * sizeof *uu + 1) : NULL;
    if (uu) a->ru = uu;
    double *ff = uu ? realloc(a->rf, (size_t)cap * n * sizeof *ff + 1) : NULL;
    if (ff) a->rf = ff;
    double *mm = ff && !s->implicit ? realloc(a->rm, (size_t)cap * n * sizeof *mm + 1) : NULL;
    if (mm) a->rm = mm;
    if (!tt || !uu || !ff || (!s->implicit && !mm))
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
    a->reccap = cap;
  }
  a->rt[a->nrec] = t;
  memcpy(a->ru + (size_t)a->nrec * n, u, n * sizeof *u);
  int frc = s->tab->eval[DSK_FN_RHS](t, u, s->ws, a->rf + (size_t)a->nrec * n);
  if (frc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "model function rhs returned %d at t = %g", frc, t);
  }
  a->nrec++;
  return DSK_OK;
}

/* Recomputes the forward trajectory over checkpoint interval [c_i, c_{i+1}]. */
static int recompute(dsk_solver *s, int i, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  double t0 = a->ck_t[i], t1 = a->ck_t[i + 1];
  int rc;
  memcpy(NV_DATA_S(s->y), a->ck_u + (size_t)i * (size_t)a->n, (size_t)a->n * sizeof(double));
  a->nrec = 0;
  a->seg = 0;
  rc = s->be->reinit(s, t0, t1, st);
  if (rc != DSK_OK) return rc;
  int flag = s->be->set_stop_time(s, t1);
  if (flag < 0) return dsk_solver_fail(s, flag, st);
  s->t_cur = t0;
  rc = push_rec(s, t0, NV_DATA_S(s->y), st);
  while (rc == DSK_OK && s->t_cur < t1) {
    double tret = s->t_cur;
    flag = s->be->step(s, t1, 1, &tret);
    if (flag < 0) return dsk_solver_fail(s, flag, st);
    s->t_cur = tret;
    rc = push_rec(s, tret, NV_DATA_S(s->y), st);
    if (rc == DSK_OK && a->rm) {
      /* the midpoint of the step [rt[nrec-2], tret] from ARKODE's interpolant */
      flag = ARKStepGetDky(s->mem, 0.5 * (a->rt[a->nrec - 2] + tret), 0, a->vmid);
      if (flag < 0) return dsk_solver_fail(s, flag, st);
      memcpy(a->rm + (size_t)(a->nrec - 2) * (size_t)a->n, NV_DATA_S(a->vmid),
             (size_t)a->n * sizeof(double));
    }
  }
  return rc;
}

/* u(t) from the cubic Hermite interpolant of the recomputed steps; with the
   midpoint values (explicit tables) the quartic one that also matches u at
   the middle of the step: H + 16 (u_mid - H(1/2)) th^2 (1 - th)^2. */
static void interp(struct dsk_adjoint_ark *a, double t, double *u) {
  int k = a->seg, last = a->nrec - 1, n = a->n;
  if (last < 1) {
    memcpy(u, a->ru, (size_t)n * sizeof *u);
    return;
  }
  if (k > last - 1) k = last - 1;
  while (k > 0 && t < a->rt[k]) k--;
  while (k < last - 1 && t > a->rt[k + 1]) k++;
  a->seg = k;
  double t0 = a->rt[k], h = a->rt[k + 1] - t0, th = (t - t0) / h;
  double th2 = th * th, th3 = th2 * th;
  double h00 = 2 * th3 - 3 * th2 + 1, h10 = (th3 - 2 * th2 + th) * h;
  double h01 = -2 * th3 + 3 * th2, h11 = (th3 - th2) * h;
  const double *u0 = a->ru + (size_t)k * (size_t)n, *u1 = u0 + n;
  const double *f0 = a->rf + (size_t)k * (size_t)n, *f1 = f0 + n;
  for (int i = 0; i < n; i++) u[i] = h00 * u0[i] + h10 * f0[i] + h01 * u1[i] + h11 * f1[i];
  if (a->rm) {
    const double *um = a->rm + (size_t)k * (size_t)n;
    double w = 16.0 * th2 * (1 - th) * (1 - th);
    for (int i = 0; i < n; i++) {
      double hm = 0.5 * (u0[i] + u1[i]) + 0.125 * h * (f0[i] - f1[i]);
      u[i] += w * (um[i] - hm);
    }
  }
}

/* ---- the backward problem ------------------------------------------------------ */

static int rhs_b(realtype t, N_Vector Yv, N_Vector Ydot, void *data) {
  dsk_solver *s = data;
  struct dsk_adjoint_ark *a = s->adj_ark;
  double *Y = NV_DATA_S(Yv), *out = NV_DATA_S(Ydot);
  interp(a, t, a->uf);
  int rc = s->tab->vjp_x[DSK_FN_RHS](t, a->uf, Y, s->ws, a->bws, out);
  if (rc) return dsk_solver_model_failed(s, "rhs (adjoint)", rc, t);
  for (int i = 0; i < a->n; i++) out[i] = -out[i];
  if (a->np > 0) {
    rc = s->tab->vjp_p[DSK_FN_RHS](t, a->uf, Y, s->ws, a->bws, out + a->n);
    if (rc) return dsk_solver_model_failed(s, "rhs (adjoint quadrature)", rc, t);
  }
  return 0;
}

/* [-(dF/du)^T 0; 0 0] (the q rows' dependence on lambda left out). */
static int jac_b(realtype t, N_Vector Yv, N_Vector fy, SUNMatrix J, void *data, N_Vector tmp1,
                 N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  struct dsk_adjoint_ark *a = s->adj_ark;
  (void)Yv, (void)fy, (void)tmp1, (void)tmp2, (void)tmp3;
  interp(a, t, a->uf);
  int rc = dsk_model_jac_values(s->model, t, a->uf, s->ws, s->dws, s->jwork, s->jvals);
  if (rc) return dsk_solver_model_failed(s, "rhs_jvp (adjoint)", rc, t);
  dsk_adjoint_dense_jt(s, J);
  return 0;
}

#define ark_fail dsk_adjoint_fail

/* Creates (first use) or re-initialises the backward problem at tB0 from a->Y. */
static int start_b(dsk_solver *s, double tB0, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  int expl = !s->implicit, flag;
  const char *call = "ARKStepReInit";
  double atol = DSK_ADJ_ATOL(s);
  if (!a->bmem_ready) {
    a->bmem = ARKStepCreate(expl ? rhs_b : NULL, expl ? NULL : rhs_b, tB0, a->Y, s->ctx);
    if (!a->bmem) return dsk_status_set(st, DSK_E_NOMEM, "ARKStepCreate failed (adjoint)");
    call = "ARKStepSetErrHandlerFn";
    flag = ARKStepSetErrHandlerFn(a->bmem, dsk_solver_err_handler, s);
    if (flag == ARK_SUCCESS) call = "ARKStepSetUserData", flag = ARKStepSetUserData(a->bmem, s);
    if (flag == ARK_SUCCESS) {
      call = "ARKStepSetTables";
      flag = dsk_arkode_set_tables(a->bmem, s->opt.method);
    }
    if (flag == ARK_SUCCESS && s->implicit) {
      sunindextype N = (sunindextype)(a->n + a->np);
      a->A = SUNDenseMatrix(N, N, s->ctx);
      a->LS = a->A ? SUNLinSol_Dense(a->Y, a->A, s->ctx) : NULL;
      if (!a->A || !a->LS) return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
      call = "ARKStepSetLinearSolver", flag = ARKStepSetLinearSolver(a->bmem, a->LS, a->A);
      if (flag == ARK_SUCCESS) call = "ARKStepSetJacFn", flag = ARKStepSetJacFn(a->bmem, jac_b);
      if (flag == ARK_SUCCESS)
        call = "ARKStepSetNonlinConvCoef", flag = ARKStepSetNonlinConvCoef(a->bmem, 1e-4);
      if (flag == ARK_SUCCESS)
        call = "ARKStepSetMaxErrTestFails", flag = ARKStepSetMaxErrTestFails(a->bmem, 20);
    }
    if (flag != ARK_SUCCESS)
      return dsk_status_set(st, DSK_E_SOLVER, "%s failed (%d) for the adjoint: %s", call, flag,
                            s->sun_msg);
    a->bmem_ready = 1;
    flag = ARK_SUCCESS;
  } else {
    flag = ARKStepReInit(a->bmem, expl ? rhs_b : NULL, expl ? NULL : rhs_b, tB0, a->Y);
  }
  if (flag == ARK_SUCCESS) call = "ARKStepSStolerances",
                           flag = ARKStepSStolerances(a->bmem, DSK_ADJ_RTOL(s), atol);
  if (flag == ARK_SUCCESS)
    call = "ARKStepSetMaxNumSteps", flag = ARKStepSetMaxNumSteps(a->bmem, s->opt.max_steps);
  return ark_fail(s, flag, call, st);
}

/* Column j of g into a->gj; returns 1 when it has a non-zero. */
static int column(struct dsk_adjoint_ark *a, int nout, const double *g, int j) {
  int any = 0;
  for (int i = 0; i < nout; i++) {
    a->gj[i] = g[(size_t)i * (size_t)a->nt + (size_t)j];
    any |= a->gj[i] != 0.0;
  }
  return any;
}

/* lambda += (d out/du)^T g_j, grad += (d out/dp)^T g_j, at checkpoint c. */
static int add_output_term(dsk_solver *s, int c, double *grad, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  const double *u = a->ck_u + (size_t)c * (size_t)a->n;
  double t = a->ck_t[c], *lam = NV_DATA_S(a->Y);
  int rc = s->tab->vjp_x[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, a->ubar);
  if (rc == 0) rc = s->tab->vjp_p[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, a->pbar);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of out returned %d at t = %g", rc, t);
  }
  for (int i = 0; i < a->n; i++) lam[i] += a->ubar[i];
  for (int k = 0; k < a->np; k++) grad[k] += a->pbar[k];
  return DSK_OK;
}

int dsk_arkode_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  int np, nout, jlast = -1, clast = -1, rc = DSK_OK, restart = 1;
  dsk_status_clear(st);
  if (!a || a->generation < 0 || a->generation != s->generation)
    return dsk_status_set(st, DSK_E_ARG,
                          "no checkpointed forward pass to go back over: the solver has not run "
                          "one, or has solved again since; run the forward pass again");
  np = a->np;
  nout = s->tab->nout;
  for (int k = 0; k < np; k++) grad[k] = 0.0;
  for (int j = a->nt - 1; j >= 0 && jlast < 0; j--)
    if (column(a, nout, g, j)) jlast = j;
  if (jlast < 0) return DSK_OK;
  for (int c = a->nck - 1; c >= 0 && clast < 0; c--)
    if (a->ck_j[c] == jlast) clast = c;
  if (clast < 0) return dsk_status_set(st, DSK_E_ARG, "internal: no checkpoint at output time");
  N_VConst(0.0, a->Y);
  column(a, nout, g, jlast);
  rc = add_output_term(s, clast, grad, st);
  for (int c = clast - 1; c >= 0 && rc == DSK_OK; c--) {
    double tb = a->ck_t[c + 1], ta = a->ck_t[c], tret = tb;
    rc = recompute(s, c, st);
    if (rc == DSK_OK && restart) rc = start_b(s, tb, st);
    if (rc != DSK_OK) break;
    restart = 0;
    int flag = ARKStepSetStopTime(a->bmem, ta);
    if (flag >= 0) flag = ARKStepEvolve(a->bmem, ta, a->Y, &tret, ARK_NORMAL);
    if (flag < 0) {
      rc = ark_fail(s, flag, "ARKStepEvolve", st);
      break;
    }
    if (a->ck_j[c] >= 0 && column(a, nout, g, a->ck_j[c])) {
      rc = add_output_term(s, c, grad, st);
      restart = 1;
    }
  }
  if (rc != DSK_OK) {
    /* ARKStepReInit keeps some state of an aborted integration (the step
       direction): the next pass starts from a fresh backward memory */
    free_bmem(a);
    return rc;
  }
  /* the integral: q(t0) = -int_t0^T lambda^T F_p */
  for (int k = 0; k < np; k++) grad[k] -= NV_Ith_S(a->Y, a->n + k);
  /* the initial state: lambda(t0)^T du0/dp */
  if (np > 0) {
    int frc = s->tab->vjp_p[DSK_FN_U0](s->opt.t0, NULL, NV_DATA_S(a->Y), s->ws, a->bws, a->pbar);
    if (frc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of u0 returned %d", frc);
    for (int k = 0; k < np; k++) grad[k] += a->pbar[k];
  }
  return DSK_OK;
}
