/*
 * sens_adjoint_arkode.c - reverse mode for the ARKODE methods (tsit45, dopri5,
 * tr_bdf2, esdirk34), with or without events, with or without a non-singular
 * mass matrix M (which may depend on t and the parameters).
 *
 * The same gradient as sens_adjoint.c (continuous adjoint):
 *   dL/dp = sum_j (d out/dp)^T g_j + lambda(t0)^T du0/dp + int_t0^T lambda^T dF/dp dt,
 *   lambda' = -(dF/du)^T lambda, lambda jumping by (d out/du)^T g_j at each t_j.
 *
 * Forward pass (dsk_arkode_forward_checkpointed): the solver's own ARKStep
 * memory in one-step mode, with the stop time at each output time; a
 * checkpoint (t, u) is stored at t0, every DSK_ARK_CK_STEPS-th internal step
 * and at every output time (so output times are always checkpoint
 * boundaries and the adjoint's jumps fall at interval ends).  Explicit tables
 * without events or M that keep their steps (below) do not stop at the
 * output times (forward_interpolated): an output inside a step is ARKODE's
 * interpolant there, as in solve_dense, and its checkpoint holds that state
 * and the step's end record, so the backward pass crosses it on the kept
 * steps' interpolant (the forward pass takes a plain solve's steps).
 *
 * Backward pass (dsk_arkode_backward): for each checkpoint interval
 * [c_i, c_{i+1}], last to first, the forward trajectory is recomputed from
 * the checkpoint with the same method (the solver's ARKStep memory
 * re-initialised there), storing every step's (t, u, and for the explicit
 * tables F(t, u)); u(t) inside the interval is the cubic Hermite interpolant
 * of those (ARKODE's own
 * interpolant only covers the last step).  For the explicit (order-5)
 * tables the cubic's O(h^4) error showed in the gradient (up to 7e-7
 * relative at rtol 1e-10), so their recomputation also stores u at each
 * step's midpoint from ARKODE's interpolant (degree 4) and the interpolant
 * becomes the quartic matching it too (3e-9).  The implicit tables, for stiff
 * problems, interpolate the states of four consecutive steps instead, without
 * F (interp_states: F's fast modes made the Hermite cubic swing).  Then a second ARKStep
 * memory with the same Butcher table integrates Y = [lambda; q] (n + nparams)
 * backward in time (decreasing tout, stop time at c_i):
 *   lambda' = -(dF/du)^T lambda  (generated vjp_x of F),
 *   q'      = (dF/dp)^T lambda   (generated vjp_p of F),
 * so q(t0) = -int_t0^T lambda^T F_p.  The implicit tables use an
 * (n + np) Newton matrix with Jacobian [-(dF/du)^T 0; 0 0]: the q rows'
 * dependence on lambda is left out (q does not feed back, so the modified
 * Newton iteration still converges, the q part one iteration after lambda).
 * It is sparse (KLU on the transposed Newton pattern plus q's diagonal) when
 * the solver's linear solver is KLU and M is absent or diagonal, else dense.
 * The backward integrator carries on across checkpoint boundaries and is
 * re-initialised only where lambda jumps (output times with a non-zero g,
 * events).  When the whole forward trajectory's records fit in
 * DSK_ARK_KEEP_MEMORY (and checkpoint_steps is not set), the forward pass
 * keeps them and the backward pass neither recomputes nor stops at
 * checkpoints without a jump: it runs from jump to jump over the kept steps.
 *
 * Events (stop/reset): the forward pass handles a root as solve.c does (the
 * resets in the order of k, N = k, restart there) and records each event
 * (t, u before its reset, k, N before) and a checkpoint with the state after
 * the resets, so events always fall at checkpoint boundaries; outputs within
 * the root-finding tolerance of the event belong to that checkpoint (after
 * the reset, as solve_dense gives them).  Each checkpoint also keeps N for
 * the interval it starts.  Recomputation runs with root finding off (stop
 * time at the interval's end).  Going back over an event checkpoint: the
 * output terms there (after the reset), then each event's jump, last first,
 * from dsk_event_adjoint (sens_adjoint.c, shared with CVODES), then a restart.
 * A stop without reset ends the forward pass; outputs after it are NaN and
 * must have a zero g.
 *
 * Mass matrix (M(t, p) u' = F, M non-singular): lambda solves
 * (M^T lambda)' = -(dF/du)^T lambda (the derivative of lambda^T M s is then
 * lambda^T (F_p - M_p u') for the sensitivities s, M s' + M_p u' = F_u s + F_p),
 * and
 *   dL/dp = sum_j (d out/dp)^T g_j + lambda(t0)^T M(t0) du0/dp
 *         + int_t0^T lambda^T (F_p - M_p u') dt.
 * The backward problem integrates w = M^T lambda:
 *   w' = -(dF/du)^T M^-T w,   q' = (F_p - M_p u')^T M^-T w,
 * so w jumps by (d out/du)^T g_j exactly as lambda does without M, the
 * initial-state term is w(t0)^T du0/dp, and no derivative of M in t is
 * needed.  Only the right-hand side, its Jacobian -(dF/du)^T M^-T =
 * -(M^-1 dF/du)^T and the interpolant's u' = M^-1 F change.  Dense LUs of M
 * and M^T (SUNDIALS' dense LU; for a diagonal M its inverse) are refactorised
 * only when M's values change (once per pass for a t-independent M).  M_p u' (u' = M^-1 F at the
 * interpolated state) is computed only when M depends on the parameters.
 * w is the adjoint of the ODE u' = f = M^-1 F (w' = -f_u^T w, and the
 * gradient integrand w^T f_p is lambda^T (F_p - M_p u')), so an event's jump
 * is dsk_event_adjoint's for that ODE: with u' = M^-1 F before and after the
 * reset.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>
#include <sundials/sundials_dense.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "solve.h"

#define DSK_ARK_CK_STEPS 20 /* internal forward steps between checkpoints */
/* Without checkpoint_steps, the forward pass also keeps every step's record
   (t, u, F, midpoint) while they fit in this many bytes (the CVODES adjoint's
   budget): then the backward pass recomputes nothing and integrates straight
   from one jump (output with a gradient, event) to the next. */
#define DSK_ARK_KEEP_MEMORY (8L << 20)


struct dsk_adjoint_ark {
  long generation; /* solver generation of the recorded forward pass, -1: none */
  int n, np;
  int nt;          /* recorded output times */
  int stop_j;      /* first output after a stop without reset (NaN), else nt */
  /* checkpoints: time, state, the output times there (ck_jn of them from
     ck_j), the model index N of the interval it starts, and the events that
     happened at its time (ck_ne of them from ck_e0; the state is after them) */
  int nck, ckcap;
  double *ck_t, *ck_u;
  int *ck_j, *ck_jn, *ck_N, *ck_e0, *ck_ne;
  /* events: time, state before the reset, stop element k, N before */
  int nev, evcap;
  double *ev_t, *ev_u;
  int *ev_k, *ev_N;
  double *ew, *fm, *lm, *pg, *g12, *ek; /* scratch of dsk_event_adjoint */
  double *fpm;     /* with M: u' after a reset (n), the state after it (n) */
  /* the recomputed interval (or the kept trajectory): times, states and F at
     every step; the interpolant reads records lo..hi */
  int nrec, reccap, seg, lo, hi;
  int lnp;            /* interp_states: the stencil of the cached denominators */
  double lt[4], lden[4];
  int keep;        /* the forward pass kept every step's record */
  int *ck_rec;     /* with keep: the record of each checkpoint (after its events) */
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
  /* implicit tables with KLU: the pattern of the Newton matrix, U^T for
     lambda (U: the forward's Newton pattern, diagonal included) and the
     diagonal for q, and where entry k of U sits in it */
  int *tcolptr, *trowidx, *tpos;
  double *bws, *gj, *ubar, *pbar, *uf;
  long bsteps, bstarts; /* this backward pass (s->stats.backward_*) */
  /* models with M: LUs of M and M^T (SUNDIALS' dense LU, in place, pivots
     mp / mtp) or the inverse of a diagonal M, the values of M they are of (m0,
     in the pattern s->Mp), lambda = M^-T w and u' = M^-1 F at the
     interpolated state */
  int mass_p;      /* M depends on the parameters */
  int mass_ok;     /* mlu, mtlu (or minv) hold the LUs (inverse) of the values in m0 */
  int mdiag;       /* M's pattern is the diagonal: minv = 1 / diag(M), no LUs */
  double *minv;
  SUNMatrix mlu, mtlu;
  double *m0, *lam, *du, *mpbar;
  sunindextype *mp, *mtp;
};

/* The backward problem's steps since its last (re)start into the pass's count. */
static void count_b(struct dsk_adjoint_ark *a) {
  long ns = 0;
  if (a->bmem && ARKStepGetNumSteps(a->bmem, &ns) == ARK_SUCCESS) a->bsteps += ns;
}

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
  free(a->ck_t), free(a->ck_u), free(a->ck_j), free(a->ck_jn), free(a->ck_N), free(a->ck_e0),
      free(a->ck_ne), free(a->ck_rec);
  free(a->ev_t), free(a->ev_u), free(a->ev_k), free(a->ev_N);
  free(a->ew), free(a->fm), free(a->lm), free(a->pg), free(a->g12), free(a->ek), free(a->fpm);
  free(a->rt), free(a->ru), free(a->rf);
  free(a->bws), free(a->gj), free(a->ubar), free(a->pbar), free(a->uf);
  if (a->mlu) SUNMatDestroy(a->mlu);
  if (a->mtlu) SUNMatDestroy(a->mtlu);
  free(a->m0), free(a->lam), free(a->du), free(a->mpbar);
  free(a->mp), free(a->mtp), free(a->minv);
  free(a->tcolptr), free(a->trowidx), free(a->tpos);
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
  if (a->Y) dsk_nvec_tune(a->Y); /* nvec_ops.c, before ARKODE clones it */
  a->bws = calloc((size_t)s->tab->nws + 1, sizeof(double));
  a->gj = calloc((size_t)s->tab->nout + 1, sizeof(double));
  a->ubar = calloc((size_t)a->n + 1, sizeof(double));
  a->pbar = calloc((size_t)a->np + 1, sizeof(double));
  a->uf = calloc((size_t)a->n + 1, sizeof(double));
  if (!s->implicit) a->vmid = N_VNew_Serial((sunindextype)a->n, s->ctx);
  if (s->nstop > 0) {
    a->ew = calloc(6 * (size_t)a->n + 1, sizeof(double));
    a->fm = calloc((size_t)a->n + 1, sizeof(double));
    a->lm = calloc((size_t)a->n + 1, sizeof(double));
    a->pg = calloc((size_t)a->np + 1, sizeof(double));
    a->g12 = calloc(2 * (size_t)s->nstop + 1, sizeof(double));
    a->ek = calloc((size_t)s->nstop + 1, sizeof(double));
    a->fpm = calloc(2 * (size_t)a->n + 1, sizeof(double));
  }
  int mass_ok = 1;
  if (s->has_mass) {
    size_t n = (size_t)a->n;
    const dsk_sparsity *M = s->Mp;
    a->mdiag = M->nnz == a->n;
    for (int j = 0; j < a->n && a->mdiag; j++)
      a->mdiag = M->colptr[j] == j && M->rowidx[j] == j;
    if (a->mdiag) {
      a->minv = calloc(n, sizeof(double));
    } else {
      a->mlu = SUNDenseMatrix((sunindextype)n, (sunindextype)n, s->ctx);
      a->mtlu = SUNDenseMatrix((sunindextype)n, (sunindextype)n, s->ctx);
      a->mp = calloc(n, sizeof(sunindextype));
      a->mtp = calloc(n, sizeof(sunindextype));
    }
    a->m0 = calloc((size_t)s->Mp->nnz + 1, sizeof(double));
    a->lam = calloc(n, sizeof(double));
    a->du = calloc(n, sizeof(double));
    a->mpbar = calloc((size_t)a->np + 1, sizeof(double));
    mass_ok = (a->mdiag ? a->minv != NULL : a->mlu && a->mtlu && a->mp && a->mtp) && a->m0 &&
              a->lam && a->du && a->mpbar;
  }
  if (!mass_ok || (s->nstop > 0 && (!a->ew || !a->fm || !a->lm || !a->pg || !a->g12 || !a->ek || !a->fpm)) ||
      (!s->implicit && !a->vmid) || !a->Y || !a->bws || !a->gj || !a->ubar || !a->pbar || !a->uf) {
    dsk_adjoint_arkode_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint");
  }
  return DSK_OK;
}

static const char *method_name(const dsk_solver *s) {
  return s->opt.method == DSK_TSIT45    ? "tsit45"
         : s->opt.method == DSK_DOPRI5  ? "dopri5"
         : s->opt.method == DSK_TR_BDF2 ? "tr_bdf2"
                                        : "esdirk34";
}

static int check_supported(const dsk_solver *s, dsk_status *st) {
  if (!s->tab->vjp_x[DSK_FN_RHS] || !s->tab->vjp_p[DSK_FN_RHS])
    return dsk_status_set(st, DSK_E_ARG, "reverse mode needs the model's vector-Jacobian "
                                         "products (a callback model without vjp)");
  if (s->linsol == DSK_LS_SPGMR)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode of the implicit ARKODE methods with the matrix-free "
                          "linear solver (spgmr) is not available; use method 'bdf'");
  const dsk_gen_table *tab = s->tab;
  if (s->has_mass && tab->nparams > 0 && !tab->vjp_p[DSK_FN_MASS])
    return dsk_status_set(st, DSK_E_ARG, "reverse mode with a mass matrix needs the adjoint of M "
                                         "(recompile the model)");
  if (s->nstop > 0 && (!tab->vjp_x[DSK_FN_STOP] || !tab->vjp_p[DSK_FN_STOP] ||
                       !tab->jvp_x[DSK_FN_STOP] ||
                       (s->has_reset && (!tab->vjp_x[DSK_FN_RESET] || !tab->vjp_p[DSK_FN_RESET] ||
                                         !tab->jvp_x[DSK_FN_RESET]))))
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode through events needs the derivatives of stop and reset "
                          "(recompile the model)");
  return DSK_OK;
}

static int push_rec(dsk_solver *s, double t, const double *u, dsk_status *st);
static int record_step(dsk_solver *s, double tret, dsk_status *st);

/* ---- the mass matrix ------------------------------------------------------------ */

#define MASS_SINGULAR (-1000) /* mass_at: not a code of the generated functions */

/* M(t) and the LUs of M and M^T, refactorised only when M's values differ
   from those factorised last (a t-independent M is factorised once per
   pass).  0, the model's code of a failed M, or MASS_SINGULAR. */
static int mass_at(dsk_solver *s, double t) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  const dsk_sparsity *M = s->Mp;
  int n = a->n;
  int rc = dsk_lin_eval_mass(s, t);
  if (rc) return rc;
  if (a->mass_ok && memcmp(a->m0, s->mvals, (size_t)M->nnz * sizeof *a->m0) == 0) return 0;
  a->mass_ok = 0;
  memcpy(a->m0, s->mvals, (size_t)M->nnz * sizeof *a->m0);
  if (a->mdiag) {
    for (int j = 0; j < n; j++) {
      if (s->mvals[j] == 0.0) return MASS_SINGULAR;
      a->minv[j] = 1.0 / s->mvals[j];
    }
    a->mass_ok = 1;
    return 0;
  }
  SUNMatZero(a->mlu);
  SUNMatZero(a->mtlu);
  for (int j = 0; j < n; j++)
    for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++) {
      SM_ELEMENT_D(a->mlu, M->rowidx[k], j) = s->mvals[k];
      SM_ELEMENT_D(a->mtlu, j, M->rowidx[k]) = s->mvals[k];
    }
  if (SUNDlsMat_denseGETRF(SM_COLS_D(a->mlu), n, n, a->mp) != 0 ||
      SUNDlsMat_denseGETRF(SM_COLS_D(a->mtlu), n, n, a->mtp) != 0)
    return MASS_SINGULAR;
  a->mass_ok = 1;
  return 0;
}

/* The status of a failed mass_at at t. */
static int mass_fail(dsk_solver *s, int rc, double t, dsk_status *st) {
  st->t = t;
  if (rc == MASS_SINGULAR)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode with method '%s' needs a non-singular mass matrix M, "
                          "but M is singular at t = %g with these parameters",
                          method_name(s), t);
  return dsk_status_set(st, DSK_E_MODELFN, "model function M returned %d at t = %g", rc, t);
}

/* At the start of a forward pass (parameters set): M(t0) factorised, and
   whether M depends on the parameters ((M_p v)^T w at fixed v, w and two
   times is exactly zero when it does not). */
static int mass_start(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  int n = a->n;
  double t0 = s->opt.t0;
  a->mass_ok = 0;
  int rc = mass_at(s, t0);
  if (rc) return mass_fail(s, rc, t0, st);
  a->mass_p = 0;
  for (int q = 0; q < 2 && a->np > 0 && !a->mass_p; q++) {
    double tq = t0 + q * 0.7311;
    for (int i = 0; i < n; i++) {
      a->du[i] = 1.0 + 0.37 * sin(1.0 + i);
      a->lam[i] = 1.0 + 0.29 * cos(2.0 + i);
    }
    rc = s->tab->vjp_p[DSK_FN_MASS](tq, a->du, a->lam, s->ws, a->bws, a->mpbar);
    if (rc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of M returned %d at t = %g", rc, tq);
    for (int k = 0; k < a->np; k++)
      if (a->mpbar[k] != 0.0) a->mass_p = 1;
  }
  return DSK_OK;
}

/* b = M^-1 b (trans = 0) or M^-T b (trans = 1), from the LUs of mass_at. */
static void mass_solve(struct dsk_adjoint_ark *a, int trans, double *b) {
  if (a->mdiag)
    for (int i = 0; i < a->n; i++) b[i] *= a->minv[i];
  else if (trans) SUNDlsMat_denseGETRS(SM_COLS_D(a->mtlu), a->n, a->mtp, b);
  else SUNDlsMat_denseGETRS(SM_COLS_D(a->mlu), a->n, a->mp, b);
}

static int *grow_int(int *p, int cap, int *ok) {
  int *q = *ok ? realloc(p, (size_t)cap * sizeof *q) : NULL;
  if (!q) *ok = 0;
  return q ? q : p;
}

/* Grows a list of times *t and states *u (n each) to cap entries; *ok = 0 on failure. */
static void grow_tu(double **t, double **u, int cap, int n, int *ok) {
  double *tt = realloc(*t, (size_t)cap * sizeof *tt);
  if (tt) *t = tt;
  double *uu = tt ? realloc(*u, (size_t)cap * (size_t)n * sizeof *uu + 1) : NULL;
  if (uu) *u = uu;
  *ok = uu != NULL;
}

/* Appends checkpoint (t, u) of an interval with model index N, for output j
   (-1: none); merges with the last one at the same time. */
static int push_ck(struct dsk_adjoint_ark *a, double t, const double *u, int j, int N,
                   dsk_status *st) {
  if (a->nck > 0 && a->ck_t[a->nck - 1] == t) {
    int c = a->nck - 1;
    memcpy(a->ck_u + (size_t)c * (size_t)a->n, u, (size_t)a->n * sizeof *u);
    a->ck_N[c] = N;
    a->ck_rec[c] = a->keep ? a->nrec - 1 : -1;
    if (j >= 0 && a->ck_jn[c] == 0) a->ck_j[c] = j, a->ck_jn[c] = 1;
    else if (j >= 0) a->ck_jn[c] = j - a->ck_j[c] + 1; /* outputs are consecutive */
    return DSK_OK;
  }
  if (a->nck == a->ckcap) {
    int cap = a->ckcap ? 2 * a->ckcap : 64, ok;
    grow_tu(&a->ck_t, &a->ck_u, cap, a->n, &ok);
    a->ck_j = grow_int(a->ck_j, cap, &ok);
    a->ck_jn = grow_int(a->ck_jn, cap, &ok);
    a->ck_N = grow_int(a->ck_N, cap, &ok);
    a->ck_e0 = grow_int(a->ck_e0, cap, &ok);
    a->ck_ne = grow_int(a->ck_ne, cap, &ok);
    a->ck_rec = grow_int(a->ck_rec, cap, &ok);
    if (!ok) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for checkpoints");
    a->ckcap = cap;
  }
  int c = a->nck++;
  a->ck_t[c] = t;
  memcpy(a->ck_u + (size_t)c * (size_t)a->n, u, (size_t)a->n * sizeof *u);
  a->ck_j[c] = j;
  a->ck_jn[c] = j >= 0;
  a->ck_N[c] = N;
  a->ck_e0[c] = a->nev;
  a->ck_ne[c] = 0;
  a->ck_rec[c] = a->keep ? a->nrec - 1 : -1;
  return DSK_OK;
}

/* Records an event: root of stop element k at t, state u before its reset,
   model index N before. */
static int push_ev(struct dsk_adjoint_ark *a, double t, const double *u, int k, int N,
                   dsk_status *st) {
  if (a->nev == a->evcap) {
    int cap = a->evcap ? 2 * a->evcap : 16, ok;
    grow_tu(&a->ev_t, &a->ev_u, cap, a->n, &ok);
    a->ev_k = grow_int(a->ev_k, cap, &ok);
    a->ev_N = grow_int(a->ev_N, cap, &ok);
    if (!ok) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint's events");
    a->evcap = cap;
  }
  a->ev_t[a->nev] = t;
  memcpy(a->ev_u + (size_t)a->nev * (size_t)a->n, u, (size_t)a->n * sizeof *u);
  a->ev_k[a->nev] = k;
  a->ev_N[a->nev] = N;
  a->nev++;
  return DSK_OK;
}

/* The resets of the roots found at tr (in the order of k, each recorded as an
   event), a restart there, and the checkpoint after them; outputs within tol
   before tr move to it (solve_dense gives them the value after the reset). */
static int forward_event(dsk_solver *s, double tr, double tol, double tend, double *y,
                         const double *times, int nt, int j, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  const dsk_gen_table *tab = s->tab;
  double *u = NV_DATA_S(s->y);
  int fired = 0, rc = DSK_OK, e0 = a->nev;
  dsk_solver_bank_stats(s);
  for (int k = 0; k < s->nstop && rc == DSK_OK; k++) {
    if (!s->rootsfound[k]) continue;
    fired++;
    rc = push_ev(a, tr, u, k, (int)s->ws[tab->n_slot], st);
    if (rc != DSK_OK) break;
    s->ws[tab->n_slot] = (double)k;
    int frc = tab->eval[DSK_FN_RESET](tr, u, s->ws, a->uf);
    if (frc) {
      st->t = tr;
      return dsk_status_set(st, DSK_E_MODELFN, "model function reset returned %d at t = %g", frc,
                            tr);
    }
    memcpy(u, a->uf, (size_t)a->n * sizeof *u);
  }
  s->acc.events += fired ? fired : 1;
  if (rc == DSK_OK) rc = s->be->reinit(s, tr, tend, st);
  if (rc == DSK_OK && a->keep) rc = push_rec(s, tr, u, st); /* the next interval's start */
  if (rc != DSK_OK) return rc;
  s->t_cur = tr;
  /* outputs stored within tol before the event: after the reset, at its checkpoint */
  int jfirst = j, c = a->nck - 1;
  while (jfirst > 0 && times[jfirst - 1] >= tr - tol) jfirst--;
  if (jfirst < j && c > 0 && a->ck_t[c] >= tr - tol && a->ck_ne[c] == 0 && a->ck_j[c] >= jfirst)
    a->nck--; /* a checkpoint for those outputs alone: no interval of length ~tol */
  else if (jfirst < j && c >= 0 && a->ck_jn[c] > 0 && a->ck_t[c] >= tr - tol)
    a->ck_jn[c] = jfirst > a->ck_j[c] ? jfirst - a->ck_j[c] : 0;
  rc = push_ck(a, tr, u, -1, (int)s->ws[tab->n_slot], st);
  if (rc != DSK_OK) return rc;
  a->ck_e0[a->nck - 1] = e0;
  a->ck_ne[a->nck - 1] = a->nev - e0;
  for (int q = jfirst; q < j && rc == DSK_OK; q++) {
    rc = push_ck(a, tr, u, q, (int)s->ws[tab->n_slot], st);
    if (rc == DSK_OK && y) rc = dsk_solver_store_output(s, times[q], y, nt, q, st);
  }
  return rc;
}

/* Bytes of one kept step: t and u, and for the explicit tables F and the
   midpoint state (push_rec). */
static long rec_bytes(const dsk_solver *s) {
  return 8L * (1L + (long)s->n * (s->implicit ? 1L : 3L));
}

/* One step of the checkpointed forward pass toward tout (within max_steps), kept
   (record_step) while the kept steps fit in DSK_ARK_KEEP_MEMORY; beyond, the
   backward pass recomputes from the checkpoints instead. */
static int step_and_keep(dsk_solver *s, double tout, double *tret, int *flag, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  int rc = dsk_solver_step_to(s, tout, 1, tret, flag, st);
  if (rc != DSK_OK || !a->keep) return rc;
  rc = record_step(s, *tret, st);
  if (rc == DSK_OK && (long)a->nrec * rec_bytes(s) > DSK_ARK_KEEP_MEMORY) a->keep = 0;
  return rc;
}

/* The forward pass of dsk_arkode_forward_checkpointed for explicit tables
   without events or M while the steps are kept: one step at a time to the last
   output time (the stop time), each output inside a step from the interpolant
   (a checkpoint with that state and the step's end record), as solve_dense
   does.  If the kept steps outgrow DSK_ARK_KEEP_MEMORY the backward pass
   recomputes from the checkpoints instead, the interpolated ones included. */
static int forward_interpolated(dsk_solver *s, const double *times, int nt, double *y,
                                long ck_every, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  long steps = 0;
  int j = 0, rc = DSK_OK, flag, stop_set = 0;
  double *u = NV_DATA_S(s->y), *keep_u = NV_DATA_S(a->vmid);
  while (rc == DSK_OK && j < nt) {
    double tret = s->t_cur;
    if (times[j] <= s->t_cur) { /* reached (t0, or the end of the last step) */
      rc = push_ck(a, s->t_cur, u, j, 0, st);
      if (rc == DSK_OK && y) rc = dsk_solver_store_output(s, times[j], y, nt, j, st);
      j++;
      continue;
    }
    if (!stop_set++) {
      flag = s->be->set_stop_time(s, times[nt - 1]);
      if (flag < 0) return dsk_solver_fail(s, flag, st);
    }
    rc = step_and_keep(s, times[nt - 1], &tret, &flag, st);
    if (rc != DSK_OK) break;
    steps++;
    /* the outputs strictly inside the step: s->y holds each in turn (then the
       step's end state again, kept in vmid) */
    if (j < nt && times[j] < tret) memcpy(keep_u, u, (size_t)a->n * sizeof *u);
    int inside = 0;
    for (; rc == DSK_OK && j < nt && times[j] < tret; j++, inside = 1) {
      flag = ARKStepGetDky(s->mem, times[j], 0, s->y);
      if (flag < 0) return dsk_solver_fail(s, flag, st);
      rc = push_ck(a, times[j], u, j, 0, st);
      if (rc == DSK_OK && y) rc = dsk_solver_store_output(s, times[j], y, nt, j, st);
    }
    if (inside) memcpy(u, keep_u, (size_t)a->n * sizeof *u);
    if (rc == DSK_OK && steps % ck_every == 0 && j < nt && tret < times[j])
      rc = push_ck(a, tret, u, -1, 0, st);
  }
  return rc;
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
  a->nck = a->nev = 0;
  a->stop_j = nt;
  a->nrec = 0;
  a->keep = s->opt.checkpoint_steps <= 0;
  rc = dsk_solver_begin(s, p, times[nt - 1], st);
  if (rc == DSK_OK && s->has_mass) rc = mass_start(s, st);
  if (rc == DSK_OK && s->nstop > 0) { /* a recomputation may have left them off */
    int flag = dsk_arkode_set_roots(s, 1);
    if (flag < 0) rc = dsk_solver_fail(s, flag, st);
  }
  if (rc == DSK_OK && a->keep) rc = push_rec(s, s->t_cur, NV_DATA_S(s->y), st);
  if (rc == DSK_OK) rc = push_ck(a, s->t_cur, NV_DATA_S(s->y), -1, 0, st);
  double tol = 0.0; /* > 0 right after an event restart */
  int j = 0, N = 0;
  /* Explicit tables without events or M, keeping the steps: no stop at each output
     time.  The outputs inside a step come from ARKODE's interpolant, as in a plain
     solve, and become checkpoints there (the backward pass interpolates the kept
     steps across them); stopping at every output took 28% more steps and 44% more
     right-hand sides on Lotka-Volterra with 41 output times, 2.5x and 3x with 401. */
  if (rc == DSK_OK && a->keep && !s->implicit && s->nstop == 0 && !s->has_mass) {
    rc = forward_interpolated(s, times, nt, y, ck_every, st);
    j = nt;
  }
  while (rc == DSK_OK && j < nt) {
    double *u = NV_DATA_S(s->y), tret = s->t_cur;
    N = (int)s->ws[s->tab->n_slot];
    if (times[j] <= s->t_cur || times[j] - s->t_cur <= tol) { /* reached */
      rc = push_ck(a, s->t_cur, u, j, N, st);
      if (rc == DSK_OK && y) rc = dsk_solver_store_output(s, times[j], y, nt, j, st);
      j++;
      continue;
    }
    int flag = s->be->set_stop_time(s, times[j]);
    if (flag < 0) {
      rc = dsk_solver_fail(s, flag, st);
      break;
    }
    rc = step_and_keep(s, times[j], &tret, &flag, st);
    if (rc != DSK_OK) break;
    steps++;
    if (flag == DSK_STEP_ROOT) {
      tol = dsk_solver_event_tol(s, tret);
      flag = s->be->root_info(s, s->rootsfound);
      if (flag < 0) {
        rc = dsk_solver_fail(s, flag, st);
        break;
      }
      if (!s->has_reset) { /* the solve ends here */
        dsk_solver_note_stop(s, tret);
        for (; rc == DSK_OK && j < nt && times[j] <= tret + tol; j++) {
          rc = push_ck(a, tret, u, j, N, st);
          if (rc == DSK_OK && y) rc = dsk_solver_store_output(s, times[j], y, nt, j, st);
        }
        a->stop_j = j;
        for (; y && j < nt; j++)
          for (int i = 0; i < s->tab->nout; i++) y[(size_t)i * (size_t)nt + (size_t)j] = NAN;
        break;
      }
      rc = forward_event(s, tret, tol, times[nt - 1], y, times, nt, j, st);
      continue;
    }
    tol = 0.0;
    if (steps % ck_every == 0 && tret < times[j]) rc = push_ck(a, tret, u, -1, N, st);
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
    /* F and the midpoint: the Hermite data of the explicit tables only (interp) */
    double *ff = uu && !s->implicit ? realloc(a->rf, (size_t)cap * n * sizeof *ff + 1) : NULL;
    if (ff) a->rf = ff;
    double *mm = ff ? realloc(a->rm, (size_t)cap * n * sizeof *mm + 1) : NULL;
    if (mm) a->rm = mm;
    if (!tt || !uu || (!s->implicit && !mm))
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
    a->reccap = cap;
  }
  a->rt[a->nrec] = t;
  memcpy(a->ru + (size_t)a->nrec * n, u, n * sizeof *u);
  if (s->implicit) {
    a->nrec++;
    return DSK_OK;
  }
  double *f = a->rf + (size_t)a->nrec * n;
  int frc = s->tab->eval[DSK_FN_RHS](t, u, s->ws, f);
  if (frc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "model function rhs returned %d at t = %g", frc, t);
  }
  if (s->has_mass) { /* the interpolant's u' = M(t)^-1 F */
    frc = mass_at(s, t);
    if (frc) return mass_fail(s, frc, t, st);
    mass_solve(a, 0, f);
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
  s->ws[s->tab->n_slot] = (double)a->ck_N[i];
  a->nrec = 0;
  a->seg = 0;
  rc = s->be->reinit(s, t0, t1, st);
  if (rc != DSK_OK) return rc;
  int flag = s->nstop > 0 ? dsk_arkode_set_roots(s, 0) : 0; /* the events are at the ends */
  if (flag >= 0) flag = s->be->set_stop_time(s, t1);
  if (flag < 0) return dsk_solver_fail(s, flag, st);
  s->t_cur = t0;
  rc = push_rec(s, t0, NV_DATA_S(s->y), st);
  while (rc == DSK_OK && s->t_cur < t1) {
    double tret = s->t_cur;
    flag = s->be->step(s, t1, 1, &tret);
    if (flag < 0) return dsk_solver_fail(s, flag, st);
    s->t_cur = tret;
    rc = record_step(s, tret, st);
  }
  a->lo = 0, a->hi = a->nrec - 1;
  return rc;
}

/* The record of the step just taken to tret (the state in s->y), and for the
   explicit tables the state at its midpoint from ARKODE's interpolant. */
static int record_step(dsk_solver *s, double tret, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  int rc = push_rec(s, tret, NV_DATA_S(s->y), st);
  if (rc == DSK_OK && !s->implicit && a->nrec >= 2) {
    int flag = ARKStepGetDky(s->mem, 0.5 * (a->rt[a->nrec - 2] + tret), 0, a->vmid);
    if (flag < 0) return dsk_solver_fail(s, flag, st);
    memcpy(a->rm + (size_t)(a->nrec - 2) * (size_t)a->n, NV_DATA_S(a->vmid),
           (size_t)a->n * sizeof(double));
  }
  return rc;
}

/* Implicit tables: u(t) from the cubic through the states of four consecutive
   records around t's step (fewer near the ends of [lo, hi]), no derivatives.
   A stiff problem's F at a step's end is F's fast modes times the state's
   distance from the slow manifold, which the error control allows at the
   tolerance: as Hermite data it made the interpolant swing by h |J| tol
   across a large step (Robertson with esdirk34, rtol 1e-6: gradients 16-33%
   off, 1e-3 at rtol 1e-8).  The states alone do not carry that amplification. */
static void interp_states(struct dsk_adjoint_ark *a, int k, double t, double *u) {
  int lo = a->lo, last = a->hi, n = a->n;
  int np = last - lo + 1 < 4 ? last - lo + 1 : 4;
  int i0 = k - 1;
  if (i0 > last - np + 1) i0 = last - np + 1;
  if (i0 < lo) i0 = lo;
  const double *ts = a->rt + i0;
  /* the Lagrange denominators depend on the stencil's times only: kept while
     the backward integration stays in a step */
  int same = np == a->lnp;
  for (int m = 0; m < np && same; m++) same = ts[m] == a->lt[m];
  if (!same) {
    for (int m = 0; m < np; m++) {
      double d = 1.0;
      for (int l = 0; l < np; l++)
        if (l != m) d *= ts[m] - ts[l];
      a->lt[m] = ts[m], a->lden[m] = 1.0 / d;
    }
    a->lnp = np;
  }
  double w[4], dt[4];
  for (int m = 0; m < np; m++) dt[m] = t - ts[m];
  for (int m = 0; m < np; m++) {
    double wm = a->lden[m];
    for (int l = 0; l < np; l++)
      if (l != m) wm *= dt[l];
    w[m] = wm;
  }
  for (int i = 0; i < n; i++) {
    double v = 0.0;
    for (int m = 0; m < np; m++) v += w[m] * a->ru[(size_t)(i0 + m) * (size_t)n + (size_t)i];
    u[i] = v;
  }
}

/* u(t) from the cubic Hermite interpolant of the recomputed steps; with the
   midpoint values (explicit tables) the quartic one that also matches u at
   the middle of the step: H + 16 (u_mid - H(1/2)) th^2 (1 - th)^2.  The
   implicit tables: interp_states. */
static void interp(struct dsk_adjoint_ark *a, double t, double *u) {
  int k = a->seg, lo = a->lo, last = a->hi, n = a->n;
  if (last - lo < 1) {
    memcpy(u, a->ru + (size_t)lo * (size_t)n, (size_t)n * sizeof *u);
    return;
  }
  if (k > last - 1) k = last - 1;
  if (k < lo) k = lo;
  while (k > lo && t < a->rt[k]) k--;
  while (k < last - 1 && t > a->rt[k + 1]) k++;
  a->seg = k;
  if (!a->rm) {
    interp_states(a, k, t, u);
    return;
  }
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
  const double *Y = NV_DATA_S(Yv);
  double *out = NV_DATA_S(Ydot);
  interp(a, t, a->uf);
  int rc;
  if (s->has_mass) { /* Y holds w = M(t)^T lambda */
    rc = mass_at(s, t);
    if (rc) return dsk_solver_model_failed(s, "M (adjoint)", rc, t);
    memcpy(a->lam, Y, (size_t)a->n * sizeof *a->lam);
    mass_solve(a, 1, a->lam);
    Y = a->lam;
  }
  if (a->np > 0 && s->tab->vjp_xp[DSK_FN_RHS]) { /* lambda' and q' in one sweep */
    rc = s->tab->vjp_xp[DSK_FN_RHS](t, a->uf, Y, s->ws, a->bws, out, out + a->n);
    if (rc) return dsk_solver_model_failed(s, "rhs (adjoint)", rc, t);
  } else {
    rc = s->tab->vjp_x[DSK_FN_RHS](t, a->uf, Y, s->ws, a->bws, out);
    if (rc) return dsk_solver_model_failed(s, "rhs (adjoint)", rc, t);
    if (a->np > 0) {
      rc = s->tab->vjp_p[DSK_FN_RHS](t, a->uf, Y, s->ws, a->bws, out + a->n);
      if (rc) return dsk_solver_model_failed(s, "rhs (adjoint quadrature)", rc, t);
    }
  }
  if (a->mass_p) { /* q' -= (M_p u')^T lambda, u' = M^-1 F */
    rc = s->tab->eval[DSK_FN_RHS](t, a->uf, s->ws, a->du);
    if (rc == 0) {
      mass_solve(a, 0, a->du);
      rc = s->tab->vjp_p[DSK_FN_MASS](t, a->du, Y, s->ws, a->bws, a->mpbar);
    }
    if (rc) return dsk_solver_model_failed(s, "M (adjoint quadrature)", rc, t);
    for (int k = 0; k < a->np; k++) out[a->n + k] -= a->mpbar[k];
  }
  for (int i = 0; i < a->n; i++) out[i] = -out[i];
  return 0;
}

/* [-(dF/du)^T 0; 0 0] (the q rows' dependence on lambda left out); with M,
   -(dF/du)^T M^-T in the lambda block: row r is (M^-1 (row r)^T)^T. */
static int jac_b(realtype t, N_Vector Yv, N_Vector fy, SUNMatrix J, void *data, N_Vector tmp1,
                 N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  struct dsk_adjoint_ark *a = s->adj_ark;
  (void)Yv, (void)fy, (void)tmp1, (void)tmp2, (void)tmp3;
  interp(a, t, a->uf);
  int rc = dsk_model_jac_values(s->model, t, a->uf, s->ws, s->dws, s->jwork, s->jvals);
  if (rc) return dsk_solver_model_failed(s, "rhs_jvp (adjoint)", rc, t);
  if (s->has_mass && (rc = mass_at(s, t)) != 0) return dsk_solver_model_failed(s, "M (adjoint)", rc, t);
  if (SUNMatGetID(J) == SUNMATRIX_SPARSE) {
    /* KLU (no M, or a diagonal one): -(M^-1 dF/du)^T on U^T, zero q block */
    const dsk_sparsity *P = dsk_model_jac_pattern(s->model);
    sunindextype *cp = SM_INDEXPTRS_S(J), *ri = SM_INDEXVALS_S(J);
    double *x = SM_DATA_S(J);
    int N = a->n + a->np;
    for (int j = 0; j <= N; j++) cp[j] = (sunindextype)a->tcolptr[j];
    for (int k = 0; k < a->tcolptr[N]; k++) {
      ri[k] = (sunindextype)a->trowidx[k];
      x[k] = 0.0;
    }
    for (int k = 0; k < P->nnz; k++)
      x[a->tpos[s->jmap[k]]] = s->has_mass ? -s->jvals[k] * a->minv[P->rowidx[k]] : -s->jvals[k];
    return 0;
  }
  dsk_adjoint_dense_jt(s, J);
  if (s->has_mass)
    for (int r = 0; r < a->n; r++) {
      for (int c = 0; c < a->n; c++) a->du[c] = SM_ELEMENT_D(J, r, c);
      mass_solve(a, 0, a->du);
      for (int c = 0; c < a->n; c++) SM_ELEMENT_D(J, r, c) = a->du[c];
    }
  return 0;
}

#define ark_fail dsk_adjoint_fail

/* The KLU pattern of the backward Newton matrix (first use): U^T for lambda,
   then the q block's diagonal. */
static int sparse_pattern(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  if (a->tcolptr) return DSK_OK;
  int n = a->n, N = a->n + a->np, *cp, *ri;
  if (dsk_pattern_transpose(&s->U, n, &a->tcolptr, &a->trowidx, &a->tpos))
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint's pattern");
  int nnz = a->tcolptr[n];
  cp = realloc(a->tcolptr, ((size_t)N + 1) * sizeof *cp);
  if (cp) a->tcolptr = cp;
  ri = cp ? realloc(a->trowidx, ((size_t)nnz + (size_t)a->np + 1) * sizeof *ri) : NULL;
  if (ri) a->trowidx = ri;
  if (!cp || !ri) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint's pattern");
  for (int k = 0; k < a->np; k++) {
    a->trowidx[nnz + k] = n + k;
    a->tcolptr[n + k + 1] = nnz + k + 1;
  }
  return DSK_OK;
}

/* Creates (first use) or re-initialises the backward problem at tB0 from a->Y. */
static int start_b(dsk_solver *s, double tB0, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  int expl = !s->implicit, flag;
  const char *call = "ARKStepReInit";
  dsk_adjoint_scale(s, NV_DATA_S(a->Y), a->n);
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
      if (s->linsol == DSK_LS_KLU && (!s->has_mass || a->mdiag)) {
        /* KLU on U^T (the lambda block) plus the q block's diagonal, AMD as
           the forward's (with a non-diagonal M the block -(M^-1 dF/du)^T is
           dense: dense LU) */
        int rc = sparse_pattern(s, st);
        if (rc != DSK_OK) return rc;
        a->A = SUNSparseMatrix(N, N, a->tcolptr[N], CSC_MAT, s->ctx);
        a->LS = a->A ? SUNLinSol_KLU(a->Y, a->A, s->ctx) : NULL;
        if (a->LS && SUNLinSol_KLUSetOrdering(a->LS, 0) != SUNLS_SUCCESS)
          return dsk_status_set(st, DSK_E_SOLVER, "SUNLinSol_KLUSetOrdering failed (adjoint)");
      } else {
        a->A = SUNDenseMatrix(N, N, s->ctx);
        a->LS = a->A ? SUNLinSol_Dense(a->Y, a->A, s->ctx) : NULL;
      }
      if (a->A) dsk_mat_tune(a->A);
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
    /* A restart within the pass (lambda jumped) with an explicit table starts
       from the step the controller proposed before the jump instead of a new
       estimate: on the non-stiff problems these tables are for, the jump does
       not change the step the accuracy allows (Lotka-Volterra with 41 output
       times: 347 instead of 494 backward steps; nn_tanh[16] with 21: 347
       instead of 458).  Implicit tables estimate again: on a stiff problem the
       jump starts a fast transient that needs far smaller steps. */
    double h = 0.0;
    if (expl && a->bstarts > 1 && ARKStepGetCurrentStep(a->bmem, &h) != ARK_SUCCESS) h = 0.0;
    flag = ARKStepReInit(a->bmem, expl ? rhs_b : NULL, expl ? NULL : rhs_b, tB0, a->Y);
    if (flag == ARK_SUCCESS) call = "ARKStepSetInitStep", flag = ARKStepSetInitStep(a->bmem, h);
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

/* lambda += (d out/du)^T g_j, grad += (d out/dp)^T g_j, for output j at checkpoint c. */
static int add_output_term(dsk_solver *s, int c, double *grad, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  const double *u = a->ck_u + (size_t)c * (size_t)a->n;
  double t = a->ck_t[c], *lam = NV_DATA_S(a->Y);
  s->ws[s->tab->n_slot] = (double)a->ck_N[c];
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

/* 1 when going back over checkpoint c changes lambda: an output there (up to
   jmax) with a non-zero g, or an event. */
static int has_jump(struct dsk_adjoint_ark *a, int nout, const double *g, int c, int jmax) {
  if (a->ck_ne[c] > 0) return 1;
  for (int j = a->ck_j[c]; j < a->ck_j[c] + a->ck_jn[c] && j <= jmax; j++)
    if (j >= 0 && column(a, nout, g, j)) return 1;
  return 0;
}

/* At checkpoint c going back: the output terms there (up to output jmax),
   then the jumps of its events, last first.  *jumped: lambda changed. */
static int back_over_checkpoint(dsk_solver *s, int c, const double *g, int jmax, double *grad,
                                int *jumped, dsk_status *st) {
  struct dsk_adjoint_ark *a = s->adj_ark;
  int rc = DSK_OK, nout = s->tab->nout;
  for (int j = a->ck_j[c] + a->ck_jn[c] - 1; j >= a->ck_j[c] && j >= 0 && rc == DSK_OK; j--)
    if (j <= jmax && column(a, nout, g, j)) {
      rc = add_output_term(s, c, grad, st);
      *jumped = 1;
    }
  for (int e = a->ck_e0[c] + a->ck_ne[c] - 1; e >= a->ck_e0[c] && rc == DSK_OK; e--) {
    double t = a->ev_t[e], *lam = NV_DATA_S(a->Y);
    const double *u = a->ev_u + (size_t)e * (size_t)a->n;
    dsk_event_work w = {a->ew, a->g12, a->ek, a->pg, a->pbar, a->bws};
    s->ws[s->tab->n_slot] = (double)a->ev_N[e];
    int frc = s->tab->eval[DSK_FN_RHS](t, u, s->ws, a->fm);
    const double *fp = NULL;
    if (frc == 0 && s->has_mass) {
      /* w = M^T lambda is the adjoint of u' = M^-1 F: the jump of that ODE, with
         u' = M^-1 F before and after the reset */
      frc = mass_at(s, t);
      if (frc) return mass_fail(s, frc, t, st);
      mass_solve(a, 0, a->fm);
      s->ws[s->tab->n_slot] = (double)a->ev_k[e];
      frc = s->tab->eval[DSK_FN_RESET](t, u, s->ws, a->fpm + a->n);
      if (frc == 0) frc = s->tab->eval[DSK_FN_RHS](t, a->fpm + a->n, s->ws, a->fpm);
      if (frc == 0) mass_solve(a, 0, a->fpm), fp = a->fpm;
    }
    if (frc) {
      st->t = t;
      return dsk_status_set(st, DSK_E_MODELFN, "rhs or reset (adjoint) returned %d at t = %g",
                            frc, t);
    }
    rc = dsk_event_adjoint(s, t, u, a->ev_k[e], a->ev_N[e], a->fm, fp, lam, grad, a->lm, &w, st);
    if (rc == DSK_OK) memcpy(lam, a->lm, (size_t)a->n * sizeof *lam);
    *jumped = 1;
  }
  return rc;
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
  if (jlast >= a->stop_j) {
    st->t = s->stop_t;
    return dsk_status_set(st, DSK_E_ARG,
                          "the gradient has non-zero entries after the solve stopped at an event "
                          "(t = %g), where the outputs are NaN; set g to zero there",
                          s->stop_t);
  }
  for (int c = a->nck - 1; c >= 0 && clast < 0; c--)
    if (a->ck_jn[c] > 0 && a->ck_j[c] <= jlast && jlast < a->ck_j[c] + a->ck_jn[c]) clast = c;
  if (clast < 0) return dsk_status_set(st, DSK_E_ARG, "internal: no checkpoint at output time");
  N_VConst(0.0, a->Y);
  a->bsteps = a->bstarts = 0;
  rc = back_over_checkpoint(s, clast, g, jlast, grad, &restart, st);
  for (int c1 = clast, c = clast - 1; c >= 0 && rc == DSK_OK; c1 = c, c--) {
    if (a->keep) {
      /* kept trajectory: on to the next checkpoint with a jump (or t0) */
      while (c > 0 && !has_jump(a, nout, g, c, jlast)) c--;
      a->lo = a->ck_rec[c];
      /* an output checkpoint inside a step (forward_interpolated) has the
         step's end record: the step's start one covers it */
      if (a->lo > 0 && a->rt[a->lo] > a->ck_t[c]) a->lo--;
      a->hi = a->ck_ne[c1] > 0 ? a->ck_rec[c1] - 1 : a->ck_rec[c1]; /* before its events */
      a->seg = a->hi;
      s->ws[s->tab->n_slot] = (double)a->ck_N[c];
    } else {
      rc = recompute(s, c, st);
    }
    double tb = a->ck_t[c1], ta = a->ck_t[c], tret = tb;
    if (rc == DSK_OK && restart) {
      if (a->bstarts++ > 0) count_b(a);
      rc = start_b(s, tb, st);
    }
    if (rc != DSK_OK) break;
    restart = 0;
    int flag = ARKStepSetStopTime(a->bmem, ta);
    if (flag >= 0) flag = ARKStepEvolve(a->bmem, ta, a->Y, &tret, ARK_NORMAL);
    if (flag < 0) {
      rc = ark_fail(s, flag, "ARKStepEvolve", st);
      break;
    }
    long ns = 0;
    if (s->adj_budget_steps > 0 && ARKStepGetNumSteps(a->bmem, &ns) == ARK_SUCCESS)
      rc = dsk_adjoint_over_budget(s, a->bsteps + ns, st);
    if (rc == DSK_OK) rc = back_over_checkpoint(s, c, g, jlast, grad, &restart, st);
  }
  if (a->bstarts > 0) count_b(a);
  s->stats.backward_steps = a->bsteps;
  s->stats.backward_restarts = a->bstarts > 0 ? a->bstarts - 1 : 0;
  if (s->nstop > 0 && s->mem) { /* root finding back on for the next solve */
    int flag = dsk_arkode_set_roots(s, 1);
    if (flag < 0 && rc == DSK_OK) rc = ark_fail(s, flag, "ARKStepRootInit", st);
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
    s->ws[s->tab->n_slot] = 0.0; /* u0 is evaluated with N = 0 */
    int frc = s->tab->vjp_p[DSK_FN_U0](s->opt.t0, NULL, NV_DATA_S(a->Y), s->ws, a->bws, a->pbar);
    if (frc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of u0 returned %d", frc);
    for (int k = 0; k < np; k++) grad[k] += a->pbar[k];
  }
  return DSK_OK;
}
