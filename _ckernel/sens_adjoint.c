/*
 * sens_adjoint.c - reverse mode: the checkpointed adjoint of CVODES (models
 * without M) and of IDAS (models with a mass matrix M, bdf).
 *
 * For L = sum_j g_j . out(t_j, u(t_j), p) the gradient is
 *   dL/dp = sum_j (d out/dp)^T g_j + lambda(t0)^T du0/dp + int_t0^T lambda^T dF/dp dt
 * where lambda' = -(dF/du)^T lambda runs backward from the last time with a
 * non-zero g, and jumps by (d out/du)^T g_j as it crosses each t_j.
 *
 * The forward pass (CVodeF) stores checkpoints every `nd` steps and the
 * state at each output time; the backward problem (CVodeCreateB, BDF with
 * the transposed Jacobian) integrates lambda with the generated adjoint code
 * (vjp_x of F), and the integral is a backward quadrature of vjp_p of F.  At
 * each output time the backward problem is re-initialised with the jump.  A
 * forward pass can be followed by any number of backward passes (different
 * g) until the solver solves again.  All SUNDIALS objects of the backward
 * problem are created once and re-initialised.
 *
 * DAEs (IDAS): the forward problem is M(p) u' = F(t, u, p), with M
 * independent of t and u (a t-dependent M is refused: the adjoint would need
 * (dM/dt)^T lambda, which the generated code does not give; the ARKODE
 * adjoint, sens_adjoint_arkode.c, integrates M^T lambda instead, which needs
 * no dM/dt, but only for a non-singular M).  With the
 * sensitivities s = du/dp, M s' = F_u s + F_p - M_p u' (M_p u' = d(M v)/dp
 * at v = u'), and lambda solving the backward DAE
 *     M^T lambda' + F_u^T lambda = 0                                  (A)
 * one has d/dt (lambda^T M s) = lambda^T (F_p - M_p u'), hence
 *   dL/dp = sum_j [(d out/dp)^T g_j + mu_j^T (F_p - M_p u')(t_j)]
 *         + int_t0^T lambda^T (F_p - M_p u') dt + lambda(t0)^T M du0/dp.
 * (A) is IDAS' backward residual resB = M^T lambda' + F_u^T lambda, i.e. the
 * example idasRoberts_ASAi_dns's (F_y'^T lambda)' - F_y^T lambda = 0 for the
 * IDAS residual F - M u' with lambda_IDAS = -lambda.  Its Newton matrix is
 * F_u^T + cj M^T = (J + cj M)^T.  The differential components of lambda are
 * the non-zero rows of M (IDASetIdB); the algebraic rows of (A),
 * (F_u^T lambda)_A = 0, fix the rest (IDACalcICB, with lambda' of the
 * differential part, at the start and after every jump).
 * Jump at t_j, index 1: split the equations into R_D (non-zero rows of M)
 * and R_A (zero rows).  Only s's differential part is free; its algebraic
 * part follows from the linearised constraints 0 = (F_u s + F_p)_{R_A}.
 * Hence g_j^T out_u s = (M^T dlam)^T s + mu^T F_p with dlam on R_D and mu on
 * R_A solving   M^T dlam - F_u^T mu = (d out/du)^T g_j,  i.e. one n x n
 * system K^T v = (d out/du)^T g_j, K = [M on rows R_D; -F_u on rows R_A]
 * (non-singular exactly for index-1 DAEs), v = dlam on R_D, mu on R_A:
 * lambda_{R_D} jumps by v_{R_D} (so M^T lambda jumps by (d out/du)^T g_j
 * plus F_u^T mu), grad gets mu^T (F_p - M_p u')(t_j), and IDACalcICB makes
 * lambda_{R_A} consistent again.  Initial state: u0's differential part is
 * du0/dp (IDACalcIC recomputes the algebraic part, which M does not see):
 * the term is (M^T lambda(t0))^T du0/dp.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <sunnonlinsol/sunnonlinsol_fixedpoint.h>
#include <sunlinsol/sunlinsol_spgmr.h>
#include <idas/idas.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "solve.h"

/* Integration steps between two CVODES/IDAS checkpoints (opt.checkpoint_steps,
   or by default as many as DSK_ADJ_MEMORY allows, between DSK_ADJ_STEPS_MIN and
   DSK_ADJ_STEPS_MAX).  The interpolation data of that many steps is allocated at
   the first checkpointed pass, two state-sized vectors per step (Hermite) plus
   SUNDIALS' bookkeeping per vector; the steps of the last interval are kept
   from the forward pass and every earlier interval is integrated again during
   the backward pass.  So a solve of fewer steps than the spacing is never
   recomputed (Lotka-Volterra's reverse/solve went from 4.0 to 3.1 with this
   default instead of 100), and memory stays near the budget for large states. */
#define DSK_ADJ_MEMORY (8L << 20)
#define DSK_ADJ_STEPS_MIN 100L
#define DSK_ADJ_STEPS_MAX 20000L
#define DSK_NVEC_OVERHEAD 600L /* bytes of a serial N_Vector besides its data */

/* The sketched quadrature.  CVODES' backward quadrature of nparams components
   costs O(nparams) vector operations per step (Nordsieck history, error
   weights, norms).  With SUNDIALS' own -O0 vector operations that was about
   60 ns per parameter and step (18x a solve at 100 parameters against 5x at
   1); with nvec_ops.c's it is a few ns, and the sketch below, which costs 3
   evaluations of vjp_p per step and runs CVODES one step at a time, only pays
   off from a few hundred parameters (measured on bench_gradients.py's
   many-parameter models, reverse/solve sketch against CVODES: ODE 7.8 / 5.3 at
   16 parameters, 9.1 / 7.7 at 100, 10.6 / 10.3 at 200, 13.3 / 16.2 at 400,
   27 / 36 at 1000; DAE 13.0 / 12.5 at 400, 23 / 28 at 1000).  Above
   DSK_SKETCH_MIN parameters (opt.sketch_min when set) the gradient
   integral is instead accumulated here, step by step: the backward problem
   runs in CV_ONE_STEP (IDA_ONE_STEP) mode and each step [t_n, t_n-1] gets a
   3-point Gauss-Legendre rule (exact to degree 5, the BDF's highest order) on
   lambda's dense output (CVodeGetDky / IDAGetDky) and the forward state's
   interpolant (CVodeGetAdjY / IDAGetAdjY, with u' for IDAS).  The step sizes still see the integrand: CVODES integrates,
   with error control, a count sketch of the quadrature: DSK_SKETCH_DIM sums
   r_i = sum_{k in bucket i} sign_k q_k over a fixed pseudo-random split of the
   parameters into buckets with random signs, whose local errors are those of
   the whole quadrature projected (errors of all the buckets cancelling is
   improbable); so the gradient is accurate in norm (rtol relative to the
   largest components) rather than component by component.  At an output time
   with a jump the last step may overshoot it; lambda there comes from the
   dense output and the part beyond is never integrated (the problem restarts
   at the output time), and without a jump it is integrated at the next call. */
#define DSK_SKETCH_MIN 256
#define DSK_SKETCH_DIM 4

/* The sketch's bucket and sign of parameter k: a fixed hash of k, the same in
   every pass. */
static unsigned sketch_hash(int k) {
  unsigned h = (unsigned)k * 2654435761u + 0x9e3779b9u;
  h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
  return h;
}

static long ck_steps(const dsk_solver *s) {
  if (s->opt.checkpoint_steps > 0) return s->opt.checkpoint_steps;
  long per_step = 2L * (DSK_NVEC_OVERHEAD + 8L * (long)s->n) + 64L;
  long nd = DSK_ADJ_MEMORY / per_step;
  return nd < DSK_ADJ_STEPS_MIN ? DSK_ADJ_STEPS_MIN : nd > DSK_ADJ_STEPS_MAX ? DSK_ADJ_STEPS_MAX : nd;
}

struct adj_events;
static int idas_jump(dsk_solver *s, double t, const double *u, const double *up, double *grad,
                     dsk_status *st);
static void adj_events_free(struct adj_events *ev);
static int forward_events(dsk_solver *s, const double *p, const double *times, int nt,
                          const double *ck, int nck, double *y, dsk_status *st);
static int backward_events(dsk_solver *s, const double *g, int jlast, double *grad,
                           dsk_status *st);
static int back_to(dsk_solver *s, double target, dsk_status *st);
static int transposed_pair(dsk_solver *s, SUNMatrix *A, SUNLinearSolver *LS, dsk_status *st);

struct dsk_adjoint {
  int initialised;   /* CVodeAdjInit done */
  int which;         /* index of the backward problem, -1 before it exists */
  long generation;   /* solver generation of the recorded forward pass, -1: none */
  int nt;            /* recorded output times */
  int cap;           /* capacity of times / us */
  double *times;     /* nt */
  double *us;        /* nstates x nt: the state at each output time (column j) */
  N_Vector yB, qB;   /* lambda and the quadrature */
  SUNMatrix AB;
  SUNLinearSolver LSB;
  SUNNonlinearSolver NLSB; /* linear_solver fixedpoint: lambda's fixed-point iteration */
  double *bws;       /* adjoint workspace (nws) */
  double *gj;        /* nout: one column of g */
  double *ubar;      /* nstates */
  double *pbar;      /* nparams */
  /* with KLU: the transposed Newton pattern U^T (CSC) and where each entry
     of U lands in it */
  int *tcolptr, *trowidx, *tpos;
  /* IDAS: u' at each output time, lambda', the differential components of
     lambda (non-zero rows of M), the jump system K^T v = b and scratch */
  double *yps;       /* nstates x nt */
  N_Vector ypB, idB, vJ, bJ;
  SUNMatrix AJ;
  SUNLinearSolver LSJ;
  int lsj_ready;     /* SUNLinSolInitialize done on LSJ */
  double *m0;        /* M's values at t0 (t-dependence check) */
  double *tmp, *mu, *pbar2;
  struct adj_events *ev; /* with stop/reset or checkpoint times: segments and events */
  int segmented;         /* the last forward pass recorded segments (forward_events) */
  /* CVODES with many parameters (sketch, see quad_sketch below): CVODES integrates
     only DSK_SKETCH_DIM random projections of the quadrature (its error test),
     the gradient itself is accumulated here step by step */
  int sketch;        /* 1: the sketched quadrature is in use */
  int nq;            /* length of qB: nparams, or DSK_SKETCH_DIM */
  double *gq;        /* nparams: int lambda^T F_p dt over [tb, end] so far */
  double *phi;       /* nparams: lambda^T F_p at one time */
  int *bucket;       /* nparams: the sketch's bucket of each parameter */
  double *sign;      /* nparams: and its sign */
  N_Vector yq, lq;   /* forward state and lambda at a quadrature node */
  N_Vector ypq;      /* IDAS: the forward u' there */
  double tb, tn;     /* lambda (a->yB) and gq are at tb; CVODES' backward problem is at
                        tn <= tb, with [tn, tb] still covered by its last step */
  long bsteps, brestarts; /* this backward pass (s->stats.backward_*) */
  int b_live;             /* the backward problem has run since its last (re)start */
};

void dsk_adjoint_free(dsk_solver *s) {
  struct dsk_adjoint *a = s->adj;
  dsk_adjoint_arkode_free(s);
  dsk_discrete_free(s);
  if (!a) return;
  if (a->LSB) SUNLinSolFree(a->LSB);
  if (a->NLSB) SUNNonlinSolFree(a->NLSB);
  if (a->AB) SUNMatDestroy(a->AB);
  if (a->yB) N_VDestroy(a->yB);
  if (a->qB) N_VDestroy(a->qB);
  if (a->yq) N_VDestroy(a->yq);
  if (a->ypq) N_VDestroy(a->ypq);
  if (a->lq) N_VDestroy(a->lq);
  free(a->gq), free(a->phi), free(a->bucket), free(a->sign);
  if (a->LSJ) SUNLinSolFree(a->LSJ);
  if (a->AJ) SUNMatDestroy(a->AJ);
  if (a->ypB) N_VDestroy(a->ypB);
  if (a->idB) N_VDestroy(a->idB);
  if (a->vJ) N_VDestroy(a->vJ);
  if (a->bJ) N_VDestroy(a->bJ);
  free(a->yps), free(a->m0), free(a->tmp), free(a->mu), free(a->pbar2);
  free(a->times), free(a->us), free(a->bws), free(a->gj), free(a->ubar), free(a->pbar);
  free(a->tcolptr), free(a->trowidx), free(a->tpos);
  adj_events_free(a->ev);
  free(a);
  s->adj = NULL;
}

static int adjoint_state(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint *a;
  int n = s->n, np = s->tab->nparams;
  if (s->adj) return DSK_OK;
  a = calloc(1, sizeof *a);
  if (!a) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  s->adj = a;
  a->which = -1;
  a->generation = -1;
  a->yB = N_VNew_Serial(n, s->ctx);
  /* the sketch: CVODES, a compiled model (a callback model's vjp_p is a Python call,
     too dear for the extra quadrature nodes) and more than DSK_SKETCH_MIN parameters */
  a->sketch = (s->be == &dsk_backend_cvodes || s->be == &dsk_backend_idas) && !s->model->cb &&
              np > (s->opt.sketch_min > 0 ? s->opt.sketch_min : DSK_SKETCH_MIN);
  a->nq = a->sketch ? DSK_SKETCH_DIM : np;
  a->qB = np > 0 ? N_VNew_Serial(a->nq, s->ctx) : NULL;
  if (a->sketch) {
    a->gq = calloc((size_t)np, sizeof(double));
    a->phi = calloc((size_t)np, sizeof(double));
    a->bucket = malloc((size_t)np * sizeof(int));
    a->sign = malloc((size_t)np * sizeof(double));
    a->yq = N_VNew_Serial(n, s->ctx);
    a->lq = N_VNew_Serial(n, s->ctx);
    if (s->be == &dsk_backend_idas) a->ypq = N_VNew_Serial(n, s->ctx);
    if (!a->gq || !a->phi || !a->bucket || !a->sign || !a->yq || !a->lq ||
        (s->be == &dsk_backend_idas && !a->ypq)) {
      dsk_adjoint_free(s);
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint");
    }
    for (int k = 0; k < np; k++) { /* every bucket non-empty: k < DIM in bucket k */
      unsigned h = sketch_hash(k);
      a->bucket[k] = k < DSK_SKETCH_DIM ? k : (int)((h >> 1) % DSK_SKETCH_DIM);
      a->sign[k] = (h & 1u) ? 1.0 : -1.0;
    }
  }
  a->bws = calloc((size_t)s->tab->nws + 1, sizeof(double));
  a->gj = calloc((size_t)s->tab->nout + 1, sizeof(double));
  a->ubar = calloc((size_t)n + 1, sizeof(double));
  a->pbar = calloc((size_t)np + 1, sizeof(double));
  if (s->be == &dsk_backend_idas) {
    a->ypB = N_VNew_Serial(n, s->ctx);
    a->idB = N_VNew_Serial(n, s->ctx);
    a->vJ = N_VNew_Serial(n, s->ctx);
    a->bJ = N_VNew_Serial(n, s->ctx);
    a->m0 = calloc((size_t)s->Mp->nnz + 1, sizeof(double));
    a->tmp = calloc((size_t)n + 1, sizeof(double));
    a->mu = calloc((size_t)n + 1, sizeof(double));
    a->pbar2 = calloc((size_t)np + 1, sizeof(double));
    if (!a->ypB || !a->idB || !a->vJ || !a->bJ || !a->m0 || !a->tmp || !a->mu || !a->pbar2) {
      dsk_adjoint_free(s);
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint");
    }
  }
  if (!a->yB || (np > 0 && !a->qB) || !a->bws || !a->gj || !a->ubar || !a->pbar) {
    dsk_adjoint_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint");
  }
  /* plain-loop vector operations (nvec_ops.c), before the integrators clone them */
  dsk_nvec_tune(a->yB);
  if (a->qB) dsk_nvec_tune(a->qB);
  if (a->ypB) dsk_nvec_tune(a->ypB);
  return DSK_OK;
}

/* Reverse mode runs on CVODES (bdf and adams on models without M) and IDAS
   (bdf on models with M), with or without events (see the end of the file). */
static int check_supported(const dsk_solver *s, dsk_status *st) {
  if (!s->tab->vjp_x[DSK_FN_RHS] || !s->tab->vjp_p[DSK_FN_RHS])
    return dsk_status_set(st, DSK_E_ARG, "reverse mode needs the model's vector-Jacobian "
                                         "products (a callback model without vjp)");
  if (s->nstop > 0 && !s->tab->vjp_x[DSK_FN_STOP])
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode through events needs the derivatives of stop and "
                          "reset (not available for callback models)");
  if (s->be != &dsk_backend_cvodes && s->be != &dsk_backend_idas)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode is available for method 'bdf' or 'adams' (CVODES, or "
                          "IDAS for models with M); this solver uses %s",
                          s->be->name);
  if (s->nstop > 0 && s->be != &dsk_backend_cvodes && s->be != &dsk_backend_idas)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode through events (stop/reset) is available for method "
                          "'bdf' or 'adams' (CVODES, or IDAS for models with M), not yet for %s",
                          s->be->name);
  return DSK_OK;
}

/* ---- the backward problem's callbacks --------------------------------------- */

/* lambda' = -(dF/du)^T lambda */
static int rhs_b(realtype t, N_Vector y, N_Vector yB, N_Vector yBdot, void *data) {
  dsk_solver *s = data;
  double *out = NV_DATA_S(yBdot);
  int rc = s->tab->vjp_x[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(yB), s->ws, s->adj->bws, out);
  if (rc) return dsk_solver_model_failed(s, "rhs (adjoint)", rc, t);
  for (int i = 0; i < s->n; i++) out[i] = -out[i];
  return 0;
}

/* The sketch's bucket sums q[i] = sum_{k in bucket i} sign_k phi[k]. */
static void sketch_project(const struct dsk_adjoint *a, int np, const double *phi, double *q) {
  for (int i = 0; i < DSK_SKETCH_DIM; i++) q[i] = 0.0;
  for (int k = 0; k < np; k++) q[a->bucket[k]] += a->sign[k] * phi[k];
}

/* q' = lambda^T dF/dp; with the sketch, its bucket sums */
static int quad_b(realtype t, N_Vector y, N_Vector yB, N_Vector qBdot, void *data) {
  dsk_solver *s = data;
  struct dsk_adjoint *a = s->adj;
  double *out = a->sketch ? a->phi : NV_DATA_S(qBdot);
  int rc = s->tab->vjp_p[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(yB), s->ws, a->bws, out);
  if (rc) return dsk_solver_model_failed(s, "rhs (adjoint quadrature)", rc, t);
  if (a->sketch) sketch_project(a, s->tab->nparams, out, NV_DATA_S(qBdot));
  return 0;
}

/* U^T in CSC (the rows of U), and pos[k]: where entry k of U sits in it. */
int dsk_pattern_transpose(const dsk_sparsity *U, int n, int **colptr, int **rowidx, int **pos) {
  int *cp = calloc((size_t)n + 1, sizeof(int));
  int *ri = malloc(((size_t)U->nnz + 1) * sizeof(int));
  int *ps = malloc(((size_t)U->nnz + 1) * sizeof(int));
  int *next = malloc(((size_t)n + 1) * sizeof(int));
  if (!cp || !ri || !ps || !next) {
    free(cp), free(ri), free(ps), free(next);
    return -1;
  }
  for (int k = 0; k < U->nnz; k++) cp[U->rowidx[k] + 1]++;
  for (int i = 0; i < n; i++) cp[i + 1] += cp[i];
  memcpy(next, cp, (size_t)n * sizeof(int));
  for (int j = 0; j < n; j++) /* columns of U in order: rows of U^T sorted */
    for (int k = U->colptr[j]; k < U->colptr[j + 1]; k++) {
      int q = next[U->rowidx[k]]++;
      ri[q] = j;
      ps[k] = q;
    }
  free(next);
  *colptr = cp, *rowidx = ri, *pos = ps;
  return 0;
}

static int transpose_pattern(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  if (dsk_pattern_transpose(&s->U, s->n, &a->tcolptr, &a->trowidx, &a->tpos))
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint's pattern");
  return DSK_OK;
}

/* d(lambda')/d(lambda) = -(dF/du)^T, from the coloured Jacobian. */
static int jac_b(realtype t, N_Vector y, N_Vector yB, N_Vector fyB, SUNMatrix JB, void *data,
                 N_Vector tmp1, N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  const dsk_sparsity *P = dsk_model_jac_pattern(s->model);
  (void)yB, (void)fyB, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_model_jac_values(s->model, t, NV_DATA_S(y), s->ws, s->dws, s->jwork, s->jvals);
  if (rc) return dsk_solver_model_failed(s, "rhs_jvp (adjoint)", rc, t);
  if (SUNMatGetID(JB) == SUNMATRIX_SPARSE) {
    struct dsk_adjoint *a = s->adj;
    sunindextype *cp = SM_INDEXPTRS_S(JB), *ri = SM_INDEXVALS_S(JB);
    double *x = SM_DATA_S(JB);
    for (int j = 0; j <= s->n; j++) cp[j] = (sunindextype)a->tcolptr[j];
    for (int k = 0; k < s->U.nnz; k++) {
      ri[k] = (sunindextype)a->trowidx[k];
      x[k] = 0.0;
    }
    for (int k = 0; k < P->nnz; k++) x[a->tpos[s->jmap[k]]] = -s->jvals[k];
    return 0;
  }
  dsk_adjoint_dense_jt(s, JB);
  return 0;
}

/* JvB = -(dF/du)^T vB (matrix-free backward problem), from the adjoint code. */
static int jtimes_b(N_Vector vB, N_Vector JvB, realtype t, N_Vector y, N_Vector yB, N_Vector fyB,
                    void *data, N_Vector tmpB) {
  dsk_solver *s = data;
  double *out = NV_DATA_S(JvB);
  (void)yB, (void)fyB, (void)tmpB;
  int rc = s->tab->vjp_x[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(vB), s->ws, s->adj->bws, out);
  if (rc) return dsk_solver_model_failed(s, "rhs_vjp (adjoint)", rc, t);
  for (int i = 0; i < s->n; i++) out[i] = -out[i];
  return 0;
}

int dsk_adjoint_fail(dsk_solver *s, int flag, const char *call, dsk_status *st) {
  if (flag >= 0) return DSK_OK;
  int rc = dsk_solver_fail(s, flag, st);
  size_t len = strlen(st->msg);
  if (len + strlen(call) + 24 < sizeof st->msg)
    snprintf(st->msg + len, sizeof st->msg - len, " (in %s, adjoint)", call);
  return rc;
}

void dsk_adjoint_dense_jt(const dsk_solver *s, SUNMatrix JB) {
  const dsk_sparsity *P = dsk_model_jac_pattern(s->model);
  SUNMatZero(JB);
  for (int j = 0; j < s->n; j++)
    for (int k = P->colptr[j]; k < P->colptr[j + 1]; k++)
      SM_ELEMENT_D(JB, j, P->rowidx[k]) = -s->jvals[k];
}

#define cv_fail dsk_adjoint_fail

void dsk_adjoint_scale(dsk_solver *s, const double *lam, int n) {
  for (int i = 0; i < n; i++)
    if (isfinite(lam[i]) && fabs(lam[i]) > s->adj_scale) s->adj_scale = fabs(lam[i]);
}

/* The backward problem's tolerances (CVODES or IDAS), lambda's scale updated
   first (DSK_ADJ_ATOL). */
static int tolerances_b(dsk_solver *s) {
  struct dsk_adjoint *a = s->adj;
  double rtol, atol;
  int flag, quad = s->tab->nparams > 0;
  dsk_adjoint_scale(s, NV_DATA_S(a->yB), s->n);
  rtol = DSK_ADJ_RTOL(s), atol = DSK_ADJ_ATOL(s);
  if (s->be == &dsk_backend_idas) {
    flag = IDASStolerancesB(s->mem, a->which, rtol, atol);
    if (flag == IDA_SUCCESS && quad) flag = IDAQuadSStolerancesB(s->mem, a->which, rtol, atol);
  } else {
    flag = CVodeSStolerancesB(s->mem, a->which, rtol, atol);
    if (flag == CV_SUCCESS && quad) flag = CVodeQuadSStolerancesB(s->mem, a->which, rtol, atol);
  }
  return flag;
}

/* Steps of the backward problem since its last (re)start (0 when not running). */
static long live_steps_b(dsk_solver *s) {
  struct dsk_adjoint *a = s->adj;
  long ns = 0;
  if (!a->b_live || a->which < 0) return 0;
  if (s->be == &dsk_backend_idas) {
    void *bm = IDAGetAdjIDABmem(s->mem, a->which);
    if (bm) IDAGetNumSteps(bm, &ns);
  } else {
    void *bm = CVodeGetAdjCVodeBmem(s->mem, a->which);
    if (bm) CVodeGetNumSteps(bm, &ns);
  }
  return ns;
}

/* Before a (re)start of the backward problem: its steps since the last one
   into the pass's count, and a restart counted when it had run. */
static void count_b(dsk_solver *s) {
  struct dsk_adjoint *a = s->adj;
  if (!a->b_live || a->which < 0) return;
  a->bsteps += live_steps_b(s);
  a->brestarts++;
  a->b_live = 0;
}

void dsk_solver_set_backward_budget(dsk_solver *s, double ratio) {
  if (s) s->adj_budget = ratio > 0 && isfinite(ratio) ? ratio : 0.0;
}

int dsk_adjoint_over_budget(const dsk_solver *s, long steps, dsk_status *st) {
  if (s->adj_budget_steps <= 0 || steps <= s->adj_budget_steps) return DSK_OK;
  return dsk_status_set(st, DSK_E_BUDGET,
                        "the backward pass stopped after %ld steps, over its budget of %ld "
                        "(%g per forward step)",
                        steps, s->adj_budget_steps, s->adj_budget);
}

/* Restart the backward problem at t with the current lambda, keeping the
   quadrature accumulated so far. */
static int reinit_b(dsk_solver *s, double t, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  count_b(s);
  a->b_live = 1;
  int flag = CVodeReInitB(s->mem, a->which, t, a->yB);
  if (flag == CV_SUCCESS && s->tab->nparams > 0) flag = CVodeQuadReInitB(s->mem, a->which, a->qB);
  if (flag == CV_SUCCESS) flag = tolerances_b(s);
  a->tb = a->tn = t;
  return cv_fail(s, flag, "CVodeReInitB", st);
}

/* The gradient's integral so far into grad: CVODES' quadrature q(t) =
   int_T^t lambda^T F_p (so -q), or the sketch's own sum. */
static void quad_into_grad(const dsk_solver *s, double *grad) {
  const struct dsk_adjoint *a = s->adj;
  int np = s->tab->nparams;
  if (a->sketch)
    for (int k = 0; k < np; k++) grad[k] += a->gq[k];
  else
    for (int k = 0; k < np; k++) grad[k] -= NV_Ith_S(a->qB, k);
}

/* Sketch: add int_lo^hi lambda^T F_p dt to gq (3-point Gauss-Legendre on the
   dense output of the backward problem's last step, which covers [lo, hi]). */
static int sketch_step(dsk_solver *s, void *bm, double lo, double hi, dsk_status *st) {
  static const double x[3] = {-0.77459666924148337704, 0.0, 0.77459666924148337704};
  static const double w[3] = {5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0};
  struct dsk_adjoint *a = s->adj;
  int np = s->tab->nparams;
  double mid = 0.5 * (lo + hi), half = 0.5 * (hi - lo);
  int dae = s->be == &dsk_backend_idas;
  for (int i = 0; i < 3; i++) {
    double tau = mid + half * x[i];
    int flag, rc;
    if (dae) {
      flag = IDAGetDky(bm, tau, 0, a->lq);
      if (flag >= 0) flag = IDAGetAdjY(s->mem, tau, a->yq, a->ypq);
      if (flag < 0) return dsk_adjoint_fail(s, flag, "IDAGetDky", st);
    } else {
      flag = CVodeGetDky(bm, tau, 0, a->lq);
      if (flag >= 0) flag = CVodeGetAdjY(s->mem, tau, a->yq);
      if (flag < 0) return cv_fail(s, flag, "CVodeGetDky", st);
    }
    rc = s->tab->vjp_p[DSK_FN_RHS](tau, NV_DATA_S(a->yq), NV_DATA_S(a->lq), s->ws, a->bws, a->phi);
    if (rc == 0 && dae && s->tab->vjp_p[DSK_FN_MASS]) { /* - lambda^T M_p u' */
      rc = s->tab->vjp_p[DSK_FN_MASS](tau, NV_DATA_S(a->ypq), NV_DATA_S(a->lq), s->ws, a->bws,
                                       a->pbar2);
      for (int k = 0; rc == 0 && k < np; k++) a->phi[k] -= a->pbar2[k];
    }
    if (rc) {
      st->t = tau;
      return dsk_status_set(st, DSK_E_MODELFN,
                            "the adjoint of F (gradient quadrature) returned %d at t = %g", rc, tau);
    }
    for (int k = 0; k < np; k++) a->gq[k] += w[i] * half * a->phi[k];
  }
  return DSK_OK;
}

/* Sketch: integrate lambda back to target one CVODES step at a time, each
   step's part of the integral into gq; lambda at target from the dense output
   when the last step went past it (module comment at DSK_SKETCH_MIN). */
static int sketch_back_to(dsk_solver *s, double target, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int dae = s->be == &dsk_backend_idas;
  void *bm = dae ? IDAGetAdjIDABmem(s->mem, a->which) : CVodeGetAdjCVodeBmem(s->mem, a->which);
  int rc = DSK_OK, stall = 0;
  if (!bm) return dsk_status_set(st, DSK_E_SOLVER, "the adjoint's backward problem is missing");
  if (a->tn < a->tb) { /* the rest of the last step, past an earlier target */
    double lo = fmax(a->tn, target);
    rc = sketch_step(s, bm, lo, a->tb, st);
    if (rc != DSK_OK) return rc;
    a->tb = lo;
  }
  while (a->tb > target) {
    double tret = a->tb;
    int flag;
    if (dae) {
      flag = IDASolveB(s->mem, target, IDA_ONE_STEP);
      if (flag >= 0) flag = IDAGetB(s->mem, a->which, &tret, a->yB, a->ypB);
      if (flag < 0) return dsk_adjoint_fail(s, flag, "IDASolveB", st);
    } else {
      flag = CVodeB(s->mem, target, CV_ONE_STEP);
      if (flag >= 0) flag = CVodeGetB(s->mem, a->which, &tret, a->yB);
      if (flag < 0) return cv_fail(s, flag, "CVodeB", st);
    }
    if (!(tret < a->tb)) { /* a checkpoint boundary: CVodeB moves on without a step */
      if (++stall > 4)
        return dsk_status_set(st, DSK_E_SOLVER, "the backward problem made no progress at t = %g",
                              a->tb);
      continue;
    }
    stall = 0;
    a->tn = tret;
    double lo = fmax(tret, target);
    rc = sketch_step(s, bm, lo, a->tb, st);
    if (rc != DSK_OK) return rc;
    a->tb = lo;
  }
  /* the sketch's quadrature so far: its error weights at a restart scale with it */
  double tq;
  int flag;
  if (dae) {
    flag = IDAGetQuadB(s->mem, a->which, &tq, a->qB);
    if (flag >= 0 && a->tn < a->tb) flag = IDAGetDky(bm, a->tb, 0, a->yB);
    if (flag >= 0 && a->tn < a->tb) flag = IDAGetDky(bm, a->tb, 1, a->ypB);
  } else {
    flag = CVodeGetQuadB(s->mem, a->which, &tq, a->qB);
    if (flag >= 0 && a->tn < a->tb) flag = CVodeGetDky(bm, a->tb, 0, a->yB);
  }
  return flag < 0 ? cv_fail(s, flag, "GetDky", st) : DSK_OK;
}

/* Create the backward problem at tB0 with yB (first use) or restart it, the
   quadrature from zero. */
static int start_backward(dsk_solver *s, double tB0, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int np = s->tab->nparams, flag;
  if (a->qB) N_VConst(0.0, a->qB);
  a->tb = a->tn = tB0;
  if (a->which >= 0) return reinit_b(s, tB0, st);
  a->b_live = 1;
  flag = CVodeCreateB(s->mem, s->opt.method == DSK_ADAMS ? CV_ADAMS : CV_BDF, &a->which);
  if (flag < 0) return cv_fail(s, flag, "CVodeCreateB", st);
  /* the linear solver of the forward problem, on the transposed pattern */
  if (s->linsol == DSK_LS_FIXEDPOINT) { /* non-stiff: lambda by fixed-point iteration too */
    a->AB = NULL, a->LSB = NULL;
    a->NLSB = SUNNonlinSol_FixedPoint(a->yB, 0, s->ctx);
    if (!a->NLSB) return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
  } else if (s->linsol == DSK_LS_SPGMR) {
    a->AB = NULL;
    a->LSB = SUNLinSol_SPGMR(a->yB, SUN_PREC_NONE, 0, s->ctx);
    if (!a->LSB) return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
  } else {
    int rc = transposed_pair(s, &a->AB, &a->LSB, st);
    if (rc != DSK_OK) return rc;
  }
  const char *call = "CVodeInitB";
  flag = CVodeInitB(s->mem, a->which, rhs_b, tB0, a->yB);
  if (flag == CV_SUCCESS) call = "CVodeSetUserDataB", flag = CVodeSetUserDataB(s->mem, a->which, s);
  if (flag == CV_SUCCESS)
    call = "CVodeSetMaxNumStepsB", flag = CVodeSetMaxNumStepsB(s->mem, a->which, s->opt.max_steps);
  if (flag == CV_SUCCESS && a->NLSB)
    call = "CVodeSetNonlinearSolverB", flag = CVodeSetNonlinearSolverB(s->mem, a->which, a->NLSB);
  else if (flag == CV_SUCCESS)
    call = "CVodeSetLinearSolverB", flag = CVodeSetLinearSolverB(s->mem, a->which, a->LSB, a->AB);
  if (flag == CV_SUCCESS && s->linsol == DSK_LS_SPGMR)
    call = "CVodeSetJacTimesB", flag = CVodeSetJacTimesB(s->mem, a->which, NULL, jtimes_b);
  else if (flag == CV_SUCCESS && !a->NLSB)
    call = "CVodeSetJacFnB", flag = CVodeSetJacFnB(s->mem, a->which, jac_b);
  if (flag == CV_SUCCESS && np > 0) {
    call = "CVodeQuadInitB", flag = CVodeQuadInitB(s->mem, a->which, quad_b, a->qB);
    if (flag == CV_SUCCESS)
      call = "CVodeSetQuadErrConB", flag = CVodeSetQuadErrConB(s->mem, a->which, SUNTRUE);
  }
  if (flag == CV_SUCCESS) call = "CVodeSStolerancesB", flag = tolerances_b(s);
  return cv_fail(s, flag, call, st);
}

/* ---- IDAS: the backward DAE of models with M ------------------------------------ */

/* A = (cj J + cm M)^T (jump = 0), or for the jump system K^T with
   K = [cm M on the rows R_D; cj J on the rows R_A] (jump = 1), from s->jvals
   and s->mvals; dense, or sparse on the transposed pattern U^T. */
static void assemble_t(dsk_solver *s, SUNMatrix A, double cj, double cm, int jump) {
  struct dsk_adjoint *a = s->adj;
  const dsk_sparsity *J = dsk_model_jac_pattern(s->model), *M = s->Mp;
  const double *id = NV_DATA_S(a->idB);
  if (SUNMatGetID(A) == SUNMATRIX_SPARSE) {
    sunindextype *cp = SM_INDEXPTRS_S(A), *ri = SM_INDEXVALS_S(A);
    double *x = SM_DATA_S(A);
    for (int j = 0; j <= s->n; j++) cp[j] = (sunindextype)a->tcolptr[j];
    for (int k = 0; k < s->U.nnz; k++) {
      ri[k] = (sunindextype)a->trowidx[k];
      x[k] = 0.0;
    }
    for (int k = 0; k < J->nnz; k++)
      if (!jump || id[J->rowidx[k]] == 0.0) x[a->tpos[s->jmap[k]]] += cj * s->jvals[k];
    for (int k = 0; k < M->nnz; k++)
      if (!jump || id[M->rowidx[k]] != 0.0) x[a->tpos[s->mmap[k]]] += cm * s->mvals[k];
    return;
  }
  SUNMatZero(A);
  for (int j = 0; j < s->n; j++) {
    for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++)
      if (!jump || id[J->rowidx[k]] == 0.0) SM_ELEMENT_D(A, j, J->rowidx[k]) += cj * s->jvals[k];
    for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++)
      if (!jump || id[M->rowidx[k]] != 0.0) SM_ELEMENT_D(A, j, M->rowidx[k]) += cm * s->mvals[k];
  }
}

/* resB = M^T lambda' + F_u^T lambda */
static int res_idas_b(realtype t, N_Vector y, N_Vector yp, N_Vector yB, N_Vector ypB, N_Vector rB,
                      void *data) {
  dsk_solver *s = data;
  struct dsk_adjoint *a = s->adj;
  double *r = NV_DATA_S(rB);
  int rc = s->tab->vjp_x[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(yB), s->ws, a->bws, r);
  if (rc) return dsk_solver_model_failed(s, "rhs (adjoint)", rc, t);
  rc = s->tab->vjp_x[DSK_FN_MASS](t, NV_DATA_S(yp), NV_DATA_S(ypB), s->ws, a->bws, a->tmp);
  if (rc) return dsk_solver_model_failed(s, "M (adjoint)", rc, t);
  for (int i = 0; i < s->n; i++) r[i] += a->tmp[i];
  return 0;
}

/* q' = lambda^T (F_p - M_p u') */
static int quad_idas_b(realtype t, N_Vector y, N_Vector yp, N_Vector yB, N_Vector ypB,
                       N_Vector qBdot, void *data) {
  dsk_solver *s = data;
  struct dsk_adjoint *a = s->adj;
  double *q = a->sketch ? a->phi : NV_DATA_S(qBdot);
  (void)ypB;
  int rc = s->tab->vjp_p[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(yB), s->ws, a->bws, q);
  if (rc) return dsk_solver_model_failed(s, "rhs (adjoint quadrature)", rc, t);
  if (s->tab->vjp_p[DSK_FN_MASS]) {
    rc = s->tab->vjp_p[DSK_FN_MASS](t, NV_DATA_S(yp), NV_DATA_S(yB), s->ws, a->bws, a->pbar2);
    if (rc) return dsk_solver_model_failed(s, "M (adjoint quadrature)", rc, t);
    for (int k = 0; k < s->tab->nparams; k++) q[k] -= a->pbar2[k];
  }
  if (a->sketch) sketch_project(a, s->tab->nparams, q, NV_DATA_S(qBdot));
  return 0;
}

/* d resB / d lambda + cj d resB / d lambda' = (J + cj M)^T */
static int jac_idas_b(realtype t, realtype cj, N_Vector y, N_Vector yp, N_Vector yB, N_Vector ypB,
                      N_Vector rB, SUNMatrix JB, void *data, N_Vector tmp1, N_Vector tmp2,
                      N_Vector tmp3) {
  dsk_solver *s = data;
  (void)yp, (void)yB, (void)ypB, (void)rB, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_lin_eval_jac(s, t, NV_DATA_S(y));
  if (rc) return dsk_solver_model_failed(s, "rhs_jvp (adjoint)", rc, t);
  rc = dsk_lin_eval_mass(s, t);
  if (rc) return dsk_solver_model_failed(s, "M (adjoint)", rc, t);
  assemble_t(s, JB, 1.0, cj, 0);
  return 0;
}

static int ida_fail(dsk_solver *s, int flag, const char *call, dsk_status *st) {
  return cv_fail(s, flag, call, st); /* the same flag conventions */
}

/* A matrix and linear solver of the forward's kind on the transposed
   pattern (KLU) or dense. */
int dsk_adjoint_klu_t(dsk_solver *s, N_Vector y, const int *tcolptr, const int *trowidx,
                      SUNMatrix *A, SUNLinearSolver *LS, dsk_status *st) {
  *A = SUNSparseMatrix(s->n, s->n, s->U.nnz, CSC_MAT, s->ctx);
  if (*A) {
    sunindextype *cp = SM_INDEXPTRS_S((*A)), *ri = SM_INDEXVALS_S((*A));
    for (int j = 0; j <= s->n; j++) cp[j] = (sunindextype)tcolptr[j];
    for (int k = 0; k < s->U.nnz; k++) ri[k] = (sunindextype)trowidx[k];
  }
  *LS = *A ? SUNLinSol_KLU(y, *A, s->ctx) : NULL;
  /* AMD, as the forward's (linsol.c) */
  if (*LS && SUNLinSol_KLUSetOrdering(*LS, 0) != SUNLS_SUCCESS)
    return dsk_status_set(st, DSK_E_SOLVER, "SUNLinSol_KLUSetOrdering failed (adjoint)");
  if (!*A || !*LS) return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
  return DSK_OK;
}

static int transposed_pair(dsk_solver *s, SUNMatrix *A, SUNLinearSolver *LS, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  if (s->linsol == DSK_LS_KLU) {
    if (!a->tcolptr) {
      int rc = transpose_pattern(s, st);
      if (rc != DSK_OK) return rc;
    }
    int rc = dsk_adjoint_klu_t(s, a->yB, a->tcolptr, a->trowidx, A, LS, st);
    if (rc != DSK_OK) return rc;
  } else {
    *A = SUNDenseMatrix(s->n, s->n, s->ctx);
    *LS = !*A ? NULL
          : s->linsol == DSK_LS_LAPACK ? dsk_linsol_lapack(a->yB, *A, s->ctx)
                                       : SUNLinSol_Dense(a->yB, *A, s->ctx);
  }
  if (!*A || !*LS) return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
  dsk_mat_tune(*A); /* nvec_ops.c */
  return DSK_OK;
}

/* (Re)start the backward DAE at tB0 from lambda, lambda' in yB, ypB (made
   consistent by add_output_term_idas), with the quadrature accumulated so
   far. */
static int start_backward_idas(dsk_solver *s, double tB0, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int np = s->tab->nparams, flag;
  const char *call = "IDAReInitB";
  count_b(s);
  a->b_live = 1;
  a->tb = a->tn = tB0;
  if (a->which >= 0) {
    flag = IDAReInitB(s->mem, a->which, tB0, a->yB, a->ypB);
    if (flag == IDA_SUCCESS && np > 0)
      call = "IDAQuadReInitB", flag = IDAQuadReInitB(s->mem, a->which, a->qB);
    if (flag == IDA_SUCCESS) call = "IDASStolerancesB", flag = tolerances_b(s);
  } else {
    flag = IDACreateB(s->mem, &a->which);
    if (flag < 0) return ida_fail(s, flag, "IDACreateB", st);
    int rc = transposed_pair(s, &a->AB, &a->LSB, st);
    if (rc != DSK_OK) return rc;
    call = "IDAInitB", flag = IDAInitB(s->mem, a->which, res_idas_b, tB0, a->yB, a->ypB);
    if (flag == IDA_SUCCESS) call = "IDASetUserDataB", flag = IDASetUserDataB(s->mem, a->which, s);
    if (flag == IDA_SUCCESS)
      call = "IDASetMaxNumStepsB", flag = IDASetMaxNumStepsB(s->mem, a->which, s->opt.max_steps);
    if (flag == IDA_SUCCESS)
      call = "IDASetLinearSolverB", flag = IDASetLinearSolverB(s->mem, a->which, a->LSB, a->AB);
    if (flag == IDA_SUCCESS) call = "IDASetJacFnB", flag = IDASetJacFnB(s->mem, a->which, jac_idas_b);
    /* lambda's algebraic components (zero rows of M) out of the error test: they
       follow the differential ones (as the forward problem's algebraic states) */
    if (flag == IDA_SUCCESS) call = "IDASetIdB", flag = IDASetIdB(s->mem, a->which, a->idB);
    if (flag == IDA_SUCCESS)
      call = "IDASetSuppressAlgB", flag = IDASetSuppressAlgB(s->mem, a->which, SUNTRUE);
    if (flag == IDA_SUCCESS && np > 0) {
      call = "IDAQuadInitB", flag = IDAQuadInitB(s->mem, a->which, quad_idas_b, a->qB);
      if (flag == IDA_SUCCESS)
        call = "IDASetQuadErrConB", flag = IDASetQuadErrConB(s->mem, a->which, SUNTRUE);
    }
    if (flag == IDA_SUCCESS) call = "IDASStolerancesB", flag = tolerances_b(s);
  }
  return ida_fail(s, flag, call, st);
}

/* The jump at output j of a DAE, then consistent lambda and lambda' there.
   K2 = [M on the rows R_D; F_u on the rows R_A] (K with the rows R_A
   negated), factored once at (t_j, u_j):
   - jump: K2^T v = (d out/du)^T g_j; lambda_{R_D} += v_{R_D}, mu = -v_{R_A};
     grad += (d out/dp)^T g_j + mu^T (F_p - M_p u');
   - consistency, analytic (index 1): the backward DAE
     M^T lambda' + F_u^T lambda = 0 with lambda_{R_D} given is
     K2^T w = -F_u^T lambda~ (lambda~: lambda with its R_A part zeroed) for
     w = (lambda'_{R_D}, lambda_{R_A}); lambda'_{R_A} = 0 (not used). */
static int add_output_term_idas(dsk_solver *s, int j, double *grad, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const double *u = a->us + (size_t)j * (size_t)s->n, *up = a->yps + (size_t)j * (size_t)s->n;
  double t = a->times[j], *b = NV_DATA_S(a->bJ);
  int np = s->tab->nparams;
  int rc = s->tab->vjp_x[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, b);
  if (rc == 0) rc = s->tab->vjp_p[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, a->pbar);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of out returned %d at t = %g", rc, t);
  }
  for (int k = 0; k < np; k++) grad[k] += a->pbar[k];
  return idas_jump(s, t, u, up, grad, st);
}

/* The jump of an index-1 DAE's lambda for a loss term b^T s(t) (b in a->bJ,
   s consistent) at state u, u' (see the top of the file). */
static int idas_jump(dsk_solver *s, double t, const double *u, const double *up, double *grad,
                     dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const double *id = NV_DATA_S(a->idB);
  double *lam = NV_DATA_S(a->yB), *lamp = NV_DATA_S(a->ypB);
  double *v = NV_DATA_S(a->vJ), *b = NV_DATA_S(a->bJ);
  int np = s->tab->nparams, any_mu = 0, flag;
  int rc = dsk_lin_eval_jac(s, t, u);
  if (rc == 0) rc = dsk_lin_eval_mass(s, t);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the Jacobian or M returned %d at t = %g", rc, t);
  }
  if (!a->AJ) {
    rc = transposed_pair(s, &a->AJ, &a->LSJ, st);
    if (rc != DSK_OK) return rc;
  }
  assemble_t(s, a->AJ, 1.0, 1.0, 1);
  if (!a->lsj_ready) {
    flag = SUNLinSolInitialize(a->LSJ);
    if (flag != SUNLS_SUCCESS)
      return dsk_status_set(st, DSK_E_SOLVER, "the adjoint's jump solver failed to start (%d)",
                            flag);
    a->lsj_ready = 1;
  }
  flag = SUNLinSolSetup(a->LSJ, a->AJ);
  if (flag == SUNLS_SUCCESS) flag = SUNLinSolSolve(a->LSJ, a->AJ, a->vJ, a->bJ, 0.0);
  for (int i = 0; i < s->n && flag == SUNLS_SUCCESS; i++) {
    if (!isfinite(v[i])) flag = -1;
    if (id[i] != 0.0) {
      lam[i] += v[i];
      a->mu[i] = 0.0;
    } else {
      a->mu[i] = -v[i];
      any_mu |= v[i] != 0.0;
    }
  }
  if (flag != SUNLS_SUCCESS) {
    st->t = t;
    return dsk_status_set(st, DSK_E_SOLVER,
                          "reverse mode at t = %g: the matrix [M on its non-zero rows; dF/du on "
                          "M's zero rows] is singular (%d): the adjoint needs an index-1 DAE",
                          t, flag);
  }
  if (any_mu && np > 0) {
    rc = s->tab->vjp_p[DSK_FN_RHS](t, u, a->mu, s->ws, a->bws, a->pbar);
    if (rc == 0 && s->tab->vjp_p[DSK_FN_MASS])
      rc = s->tab->vjp_p[DSK_FN_MASS](t, up, a->mu, s->ws, a->bws, a->pbar2);
    else
      memset(a->pbar2, 0, (size_t)np * sizeof *a->pbar2);
    if (rc) {
      st->t = t;
      return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of F or M returned %d at t = %g", rc,
                            t);
    }
    for (int k = 0; k < np; k++) grad[k] += a->pbar[k] - a->pbar2[k];
  }
  /* consistent lambda_{R_A} and lambda' */
  for (int i = 0; i < s->n; i++) a->tmp[i] = id[i] != 0.0 ? lam[i] : 0.0;
  rc = s->tab->vjp_x[DSK_FN_RHS](t, u, a->tmp, s->ws, a->bws, b);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of F returned %d at t = %g", rc, t);
  }
  for (int i = 0; i < s->n; i++) b[i] = -b[i];
  flag = SUNLinSolSolve(a->LSJ, a->AJ, a->vJ, a->bJ, 0.0);
  if (flag != SUNLS_SUCCESS) {
    st->t = t;
    return dsk_status_set(st, DSK_E_SOLVER, "reverse mode at t = %g: linear solve failed (%d)", t,
                          flag);
  }
  for (int i = 0; i < s->n; i++) {
    if (id[i] != 0.0) {
      lamp[i] = v[i];
    } else {
      lam[i] = v[i];
      lamp[i] = 0.0;
    }
  }
  return DSK_OK;
}

/* At t0 after the forward restart: M's values (kept to check that M does not
   change with t) and the differential components of lambda (non-zero rows). */
static int idas_record_mass(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const dsk_sparsity *M = s->Mp;
  double *id = NV_DATA_S(a->idB);
  int rc = dsk_lin_eval_mass(s, s->opt.t0);
  if (rc) return dsk_status_set(st, DSK_E_MODELFN, "model function M returned %d at t0", rc);
  memcpy(a->m0, s->mvals, (size_t)M->nnz * sizeof *a->m0);
  for (int i = 0; i < s->n; i++) id[i] = 0.0;
  for (int k = 0; k < M->nnz; k++)
    if (s->mvals[k] != 0.0) id[M->rowidx[k]] = 1.0;
  return DSK_OK;
}

static int idas_check_mass(dsk_solver *s, double t, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int rc = dsk_lin_eval_mass(s, t);
  if (rc) return dsk_status_set(st, DSK_E_MODELFN, "model function M returned %d at t = %g", rc, t);
  for (int k = 0; k < s->Mp->nnz; k++)
    if (s->mvals[k] != a->m0[k])
      return dsk_status_set(st, DSK_E_ARG,
                            "reverse mode with IDAS (method 'bdf' with M) needs M independent "
                            "of t; M changes between t = %g and t = %g (gradient_method="
                            "'forward' handles a t-dependent M, and so does reverse mode with "
                            "an ARKODE method when M is non-singular)",
                            s->opt.t0, t);
  return DSK_OK;
}

/* ---- public ------------------------------------------------------------------- */

int dsk_solver_forward_checkpointed(dsk_solver *s, const double *p, const double *times, int nt,
                                    double *y, dsk_status *st) {
  return dsk_solver_forward_checkpointed_at(s, p, times, nt, NULL, 0, y, st);
}

/* Checkpoint times: finite, strictly increasing, inside (t0, times[nt-1]]. */
static int check_ck(const dsk_solver *s, const double *times, int nt, const double *ck, int nck,
                    dsk_status *st) {
  if (nck < 0 || (nck > 0 && !ck))
    return dsk_status_set(st, DSK_E_ARG, "checkpoint times: NULL or negative count");
  for (int c = 0; c < nck; c++) {
    if (!isfinite(ck[c]))
      return dsk_status_set(st, DSK_E_ARG, "checkpoint_times[%d] is not finite", c);
    if (c > 0 && ck[c] <= ck[c - 1])
      return dsk_status_set(st, DSK_E_ARG,
                            "checkpoint_times must be strictly increasing: "
                            "checkpoint_times[%d] = %g <= checkpoint_times[%d] = %g",
                            c, ck[c], c - 1, ck[c - 1]);
    if (ck[c] <= s->opt.t0 || ck[c] > times[nt - 1])
      return dsk_status_set(st, DSK_E_ARG,
                            "checkpoint_times[%d] = %g is outside (t0, last output time] = "
                            "(%g, %g]",
                            c, ck[c], s->opt.t0, times[nt - 1]);
  }
  return DSK_OK;
}

int dsk_solver_forward_checkpointed_at(dsk_solver *s, const double *p, const double *times,
                                       int nt, const double *ck, int nck, double *y,
                                       dsk_status *st) {
  struct dsk_adjoint *a;
  int n, rc, dae;
  dsk_status_clear(st);
  if (!s) return dsk_status_set(st, DSK_E_ARG, "solver is NULL");
  if (s->be == &dsk_backend_arkode) {
    if (nck > 0)
      return dsk_status_set(st, DSK_E_ARG,
                            "checkpoint_times are available for method 'bdf' or 'adams'; the "
                            "%s methods place their own checkpoints (pass None)",
                            s->be->name);
    return dsk_arkode_forward_checkpointed(s, p, times, nt, y, st);
  }
  rc = dsk_solver_check_times(s, times, nt, st);
  if (rc == DSK_OK) rc = check_ck(s, times, nt, ck, nck, st);
  if (rc == DSK_OK) rc = dsk_solver_check_params(s, p, st);
  if (rc == DSK_OK) rc = check_supported(s, st);
  if (rc == DSK_OK) rc = adjoint_state(s, st);
  if (rc != DSK_OK) return rc;
  a = s->adj;
  n = s->n;
  dae = s->be == &dsk_backend_idas;
  if (nt > a->cap) {
    double *tt = realloc(a->times, (size_t)nt * sizeof *tt);
    if (tt) a->times = tt;
    double *uu = tt ? realloc(a->us, (size_t)nt * (size_t)n * sizeof *uu) : NULL;
    if (uu) a->us = uu;
    uu = tt && uu && dae ? realloc(a->yps, (size_t)nt * (size_t)n * sizeof *uu) : uu;
    if (dae && uu) a->yps = uu;
    if (!tt || !uu) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for %d states", nt);
    a->cap = nt;
  }
  a->generation = -1;
  a->segmented = s->nstop > 0 || nck > 0;
  if (s->opt.adjoint_discrete && nck == 0 && dsk_discrete_supported(s)) {
    rc = dsk_discrete_forward(s, p, times, nt, y, st);
    if (rc != DSK_DISC_FALLBACK) return rc;
    dsk_status_clear(st); /* a step it does not reproduce: the continuous adjoint */
  }
  if (a->segmented) return forward_events(s, p, times, nt, ck, nck, y, st);
  rc = dsk_solver_begin(s, p, times[nt - 1], st);
  if (rc == DSK_OK && dae) rc = idas_record_mass(s, st);
  if (rc != DSK_OK) return rc;
  {
    int flag = dae ? (a->initialised ? IDAAdjReInit(s->mem)
                                     : IDAAdjInit(s->mem, ck_steps(s), IDA_HERMITE))
                   : (a->initialised ? CVodeAdjReInit(s->mem)
                                     : CVodeAdjInit(s->mem, ck_steps(s), CV_HERMITE));
    if (flag < 0) return cv_fail(s, flag, dae ? "IDAAdjInit" : "CVodeAdjInit", st);
    a->initialised = 1;
  }
  for (int j = 0; j < nt && rc == DSK_OK; j++) {
    double *u = NV_DATA_S(s->y);
    if (times[j] > s->t_cur) {
      double tret = s->t_cur, tprev = s->t_cur;
      int ncheck = 0;
      int flag = dae ? IDASolveF(s->mem, times[j], &tret, s->y, s->yp, IDA_NORMAL, &ncheck)
                     : CVodeF(s->mem, times[j], s->y, &tret, CV_NORMAL, &ncheck);
      if (flag < 0) {
        rc = dsk_solver_fail(s, flag, st);
        break;
      }
      s->t_cur = tret;
      /* the DAE adjoint assumes M(t) constant: check it over the interval */
      if (dae) rc = idas_check_mass(s, 0.5 * (tprev + tret), st);
      if (rc == DSK_OK && dae) rc = idas_check_mass(s, tret, st);
      if (rc != DSK_OK) break;
    }
    memcpy(a->us + (size_t)j * (size_t)n, u, (size_t)n * sizeof *u);
    if (dae) memcpy(a->yps + (size_t)j * (size_t)n, NV_DATA_S(s->yp), (size_t)n * sizeof *u);
    a->times[j] = times[j];
    if (y && (rc = dsk_solver_store_output(s, times[j], y, nt, j, st)) != DSK_OK) break;
  }
  dsk_solver_collect_stats(s);
  if (rc != DSK_OK) return rc;
  a->nt = nt;
  a->generation = s->generation;
  return DSK_OK;
}

/* lambda += (d out/du)^T g_j and grad += (d out/dp)^T g_j at output j. */
static int add_output_term(dsk_solver *s, int j, double *grad, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const double *u = a->us + (size_t)j * (size_t)s->n;
  double t = a->times[j], *lam = NV_DATA_S(a->yB);
  int rc = s->tab->vjp_x[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, a->ubar);
  if (rc == 0) rc = s->tab->vjp_p[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, a->pbar);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of out returned %d at t = %g", rc, t);
  }
  for (int i = 0; i < s->n; i++) lam[i] += a->ubar[i];
  for (int k = 0; k < s->tab->nparams; k++) grad[k] += a->pbar[k];
  return DSK_OK;
}

/* Column j of g into a->gj; returns 1 when it has a non-zero. */
static int column(const dsk_solver *s, const double *g, int j) {
  int nt = s->adj->nt, any = 0;
  for (int i = 0; i < s->tab->nout; i++) {
    s->adj->gj[i] = g[(size_t)i * (size_t)nt + (size_t)j];
    any |= s->adj->gj[i] != 0.0;
  }
  return any;
}

/* The backward pass of a DAE (see the top of the file). */
static int backward_idas(dsk_solver *s, const double *g, int jlast, double *grad,
                         dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int np = s->tab->nparams, rc;
  double t0 = s->opt.t0, t_cur;
  N_VConst(0.0, a->yB);
  N_VConst(0.0, a->ypB);
  if (a->qB) N_VConst(0.0, a->qB);
  column(s, g, jlast);
  rc = add_output_term_idas(s, jlast, grad, st);
  t_cur = a->times[jlast];
  int restart = 1; /* lambda jumped at t_cur */
  for (int j = jlast - 1; j >= -1 && rc == DSK_OK; j--) {
    double target = j >= 0 ? a->times[j] : t0;
    int jump = j >= 0 && column(s, g, j);
    if (target < t_cur) {
      /* (re)start at t_cur after a jump there, then integrate to target */
      if (restart) rc = start_backward_idas(s, t_cur, st);
      if (rc == DSK_OK) rc = back_to(s, target, st);
      if (rc != DSK_OK) break;
      restart = 0;
      t_cur = target;
    }
    if (jump) {
      rc = add_output_term_idas(s, j, grad, st);
      restart = 1;
    }
  }
  if (rc != DSK_OK) return rc;
  /* the integral: q(t0) = int_T^t0 lambda^T (F_p - M_p u') */
  if (np > 0 && a->which >= 0 && a->times[jlast] > t0) quad_into_grad(s, grad);
  /* the initial state: (M^T lambda(t0))^T du0/dp */
  if (np > 0) {
    int frc = s->tab->vjp_x[DSK_FN_MASS](t0, a->yps, NV_DATA_S(a->yB), s->ws, a->bws, a->tmp);
    if (frc == 0)
      frc = s->tab->vjp_p[DSK_FN_U0](t0, NULL, a->tmp, s->ws, a->bws, a->pbar);
    if (frc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of M or u0 returned %d", frc);
    for (int k = 0; k < np; k++) grad[k] += a->pbar[k];
  }
  return DSK_OK;
}

static int backward_plain(dsk_solver *s, const double *g, int jlast, double *grad,
                          dsk_status *st);

int dsk_solver_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st) {
  struct dsk_adjoint *a;
  int np, jlast = -1, rc = DSK_OK;
  dsk_status_clear(st);
  if (!s || !g || (!grad && s->tab->nparams > 0))
    return dsk_status_set(st, DSK_E_ARG, "dsk_solver_backward: NULL argument");
  s->adj_scale = 0.0; /* lambda's scale: set at the (re)starts of this pass */
  s->adj_budget_steps = 0;
  if (s->adj_budget > 0) {
    double lim = ceil(s->adj_budget * (double)(s->stats.steps > 0 ? s->stats.steps : 1));
    s->adj_budget_steps = lim < 1e15 ? (long)lim : 0;
  }
  if (s->be == &dsk_backend_arkode) return dsk_arkode_backward(s, g, grad, st);
  if (dsk_discrete_recorded(s)) return dsk_discrete_backward(s, g, grad, st);
  a = s->adj;
  if (!a || a->generation < 0 || a->generation != s->generation)
    return dsk_status_set(st, DSK_E_ARG,
                          "no checkpointed forward pass to go back over: the solver has not run "
                          "one, or has solved again since; run the forward pass again");
  np = s->tab->nparams;
  for (int k = 0; k < np; k++) grad[k] = 0.0;
  for (int j = a->nt - 1; j >= 0 && jlast < 0; j--)
    if (column(s, g, j)) jlast = j;
  if (jlast < 0) return DSK_OK; /* a zero gradient costs nothing */
  a->bsteps = a->brestarts = 0;
  a->b_live = 0;
  if (a->gq) memset(a->gq, 0, (size_t)np * sizeof *a->gq); /* the sketch's integral */
  if (a->segmented) rc = backward_events(s, g, jlast, grad, st);
  else if (s->be == &dsk_backend_idas) rc = backward_idas(s, g, jlast, grad, st);
  else rc = backward_plain(s, g, jlast, grad, st);
  count_b(s);
  s->stats.backward_steps = a->bsteps;
  s->stats.backward_restarts = a->brestarts > 0 ? a->brestarts - 1 : 0; /* the last count_b */
  return rc;
}

/* dsk_solver_backward without events or checkpoint times (CVODES) */
static int backward_plain(dsk_solver *s, const double *g, int jlast, double *grad,
                          dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int np = s->tab->nparams, rc;
  double t_cur;
  N_VConst(0.0, a->yB);
  column(s, g, jlast);
  rc = add_output_term(s, jlast, grad, st);
  t_cur = a->times[jlast];
  if (rc == DSK_OK && t_cur > s->opt.t0) rc = start_backward(s, t_cur, st);
  for (int j = jlast - 1; j >= -1 && rc == DSK_OK; j--) {
    double target = j >= 0 ? a->times[j] : s->opt.t0;
    int jump = j >= 0 && column(s, g, j);
    if (!jump && j >= 0) continue; /* nothing happens at t_j */
    if (target < t_cur) {
      rc = back_to(s, target, st);
      if (rc != DSK_OK) break;
      t_cur = target;
    }
    if (jump) {
      rc = add_output_term(s, j, grad, st);
      /* restart with the jump, keeping the quadrature accumulated so far */
      if (rc == DSK_OK && t_cur > s->opt.t0) rc = reinit_b(s, t_cur, st);
    }
  }
  if (rc != DSK_OK) return rc;
  if (np > 0 && a->which >= 0 && a->times[jlast] > s->opt.t0) quad_into_grad(s, grad);
  /* the initial state: lambda(t0)^T du0/dp */
  if (np > 0) {
    int frc = s->tab->vjp_p[DSK_FN_U0](s->opt.t0, NULL, NV_DATA_S(a->yB), s->ws, a->bws, a->pbar);
    if (frc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of u0 returned %d", frc);
    for (int k = 0; k < np; k++) grad[k] += a->pbar[k];
  }
  return DSK_OK;
}

int dsk_solver_reverse(dsk_solver *s, const double *p, const double *times, int nt,
                       const double *g, double *grad, dsk_status *st) {
  int last = -1, nout;
  if (!s || !g) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_reverse: NULL argument");
  nout = s->tab->nout;
  for (int j = 0; j < nt && times; j++)
    for (int i = 0; i < nout; i++)
      if (g[(size_t)i * (size_t)nt + (size_t)j] != 0.0) last = j;
  if (last < 0) { /* nothing to differentiate: check the arguments, return zeros */
    int rc = dsk_solver_check_times(s, times, nt, st);
    if (rc == DSK_OK) rc = dsk_solver_check_params(s, p, st);
    for (int k = 0; rc == DSK_OK && k < s->tab->nparams; k++) grad[k] = 0.0;
    return rc;
  }
  /* the forward pass stops at the last time with a non-zero g */
  int rc = dsk_solver_forward_checkpointed(s, p, times, last + 1, NULL, st);
  if (rc != DSK_OK) return rc;
  {
    /* g restricted to the first last+1 columns */
    double *gs = malloc((size_t)nout * (size_t)(last + 1) * sizeof *gs + 1);
    if (!gs) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
    for (int i = 0; i < nout; i++)
      memcpy(gs + (size_t)i * (size_t)(last + 1), g + (size_t)i * (size_t)nt,
             (size_t)(last + 1) * sizeof *gs);
    rc = dsk_solver_backward(s, gs, grad, st);
    free(gs);
  }
  return rc;
}

/* ---- events (CVODES and IDAS): reverse mode through stop/reset ----------------------
 *
 * Forward (forward_events): a plain solve with root finding, exactly as
 * dsk_solver_solve_dense, recording the segments between events (start time,
 * N, state after the resets), each event (time tau, stop element k, N and
 * state u- before its reset) and the segment of each output.  CVODES' adjoint
 * module cannot carry one checkpointed run across the CVodeReInit of an
 * event, so the backward pass (backward_events) recomputes: for each segment,
 * last first, it re-runs that segment alone with CVodeF (root finding off,
 * stop time at the segment's end) to lay down its checkpoints, integrates
 * lambda and the quadrature backward over it (output jumps as without
 * events), then applies the event's jump to lambda and the gradient.  Memory:
 * one segment's checkpoints at a time, plus n values per segment and event;
 * cost: one extra forward integration per backward pass.
 *
 * Jump at an event (transpose of sens_forward.c's): with D = g_u f- + g_t,
 * c = R_u f- + R_t - f+, the forward jump is
 *   s+ = R_u s- + R_p - c (g_u s- + g_p) / D,
 * so with lambda+ = dL/du(tau+) and w = lambda+ . c / D,
 *   lambda- = R_u^T lambda+ - w g_u^T,     grad += R_p^T lambda+ - w g_p^T.
 * g_t and R_t are central differences in t (as sens_forward.c).  Several
 * roots at one time are separate events (in the order of k), undone in
 * reverse.  Without reset the solve ends at the root: outputs after it are
 * NaN and must have a zero g.
 *
 * IDAS (same scheme, IDASolveF / IDASolveB): lambda pairs with s through
 * M^T lambda, so the jump uses nu+ = M^T lambda+ in place of lambda+, f-/f+
 * are the consistent u' before and after the reset (after: IDACalcIC in the
 * restart), and b = R_u^T nu+ - w g_u^T is dL/ds- for a consistent s- (its
 * algebraic part follows from the constraints): lambda restarts from zero
 * and takes the jump of a loss term b^T s- exactly as at an output time
 * (idas_jump: K^T v = b, mu^T (F_p - M_p u') into grad, consistent lambda_A
 * and lambda').
 */
struct adj_events {
  int nseg, segcap, nev, evcap, outcap;
  double *seg_t, *seg_u; /* start time and state (after the resets) of each segment */
  int *seg_N;
  double *ev_t, *ev_u;   /* time and state before the reset of each event */
  int *ev_k, *ev_N, *ev_seg; /* stop element, N before, segment it ends */
  int *seg_of;           /* segment of each output, -1: after a stop (NaN) */
  double *w, *g12, *ek, *pg;
  double *seg_yp, *ev_yp; /* IDAS: u' at each segment start (consistent) and before each event */
};

static void adj_events_free(struct adj_events *ev) {
  if (!ev) return;
  free(ev->seg_t), free(ev->seg_u), free(ev->seg_N), free(ev->ev_t), free(ev->ev_u);
  free(ev->ev_k), free(ev->ev_N), free(ev->ev_seg), free(ev->seg_of);
  free(ev->w), free(ev->g12), free(ev->ek), free(ev->pg);
  free(ev->seg_yp), free(ev->ev_yp);
  free(ev);
}

static int ev_nomem(dsk_status *st) {
  return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint's events");
}

static int push_seg(dsk_solver *s, double t, dsk_status *st) {
  struct adj_events *ev = s->adj->ev;
  int n = s->n;
  if (ev->nseg == ev->segcap) {
    int cap = ev->segcap ? 2 * ev->segcap : 8;
    double *tt = realloc(ev->seg_t, (size_t)cap * sizeof *tt);
    if (tt) ev->seg_t = tt;
    double *uu = tt ? realloc(ev->seg_u, (size_t)cap * (size_t)n * sizeof *uu) : NULL;
    if (uu) ev->seg_u = uu;
    int *nn = uu ? realloc(ev->seg_N, (size_t)cap * sizeof *nn) : NULL;
    if (nn) ev->seg_N = nn;
    if (nn && s->yp) {
      uu = realloc(ev->seg_yp, (size_t)cap * (size_t)n * sizeof *uu);
      if (uu) ev->seg_yp = uu;
      else nn = NULL;
    }
    if (!nn) return ev_nomem(st);
    ev->segcap = cap;
  }
  ev->seg_t[ev->nseg] = t;
  ev->seg_N[ev->nseg] = (int)s->ws[s->tab->n_slot];
  memcpy(ev->seg_u + (size_t)ev->nseg * (size_t)n, NV_DATA_S(s->y), (size_t)n * sizeof(double));
  if (s->yp)
    memcpy(ev->seg_yp + (size_t)ev->nseg * (size_t)n, NV_DATA_S(s->yp), (size_t)n * sizeof(double));
  ev->nseg++;
  return DSK_OK;
}

static int push_ev(dsk_solver *s, double t, int k, dsk_status *st) {
  struct adj_events *ev = s->adj->ev;
  int n = s->n;
  if (ev->nev == ev->evcap) {
    int cap = ev->evcap ? 2 * ev->evcap : 8;
    double *tt = realloc(ev->ev_t, (size_t)cap * sizeof *tt);
    if (tt) ev->ev_t = tt;
    double *uu = tt ? realloc(ev->ev_u, (size_t)cap * (size_t)n * sizeof *uu) : NULL;
    if (uu) ev->ev_u = uu;
    int *k1 = uu ? realloc(ev->ev_k, (size_t)cap * sizeof *k1) : NULL;
    if (k1) ev->ev_k = k1;
    int *k2 = k1 ? realloc(ev->ev_N, (size_t)cap * sizeof *k2) : NULL;
    if (k2) ev->ev_N = k2;
    int *k3 = k2 ? realloc(ev->ev_seg, (size_t)cap * sizeof *k3) : NULL;
    if (k3) ev->ev_seg = k3;
    if (k3 && s->yp) {
      uu = realloc(ev->ev_yp, (size_t)cap * (size_t)n * sizeof *uu);
      if (uu) ev->ev_yp = uu;
      else k3 = NULL;
    }
    if (!k3) return ev_nomem(st);
    ev->evcap = cap;
  }
  ev->ev_t[ev->nev] = t;
  ev->ev_k[ev->nev] = k;
  ev->ev_N[ev->nev] = (int)s->ws[s->tab->n_slot];
  ev->ev_seg[ev->nev] = ev->nseg - 1;
  memcpy(ev->ev_u + (size_t)ev->nev * (size_t)n, NV_DATA_S(s->y), (size_t)n * sizeof(double));
  if (s->yp)
    memcpy(ev->ev_yp + (size_t)ev->nev * (size_t)n, NV_DATA_S(s->yp), (size_t)n * sizeof(double));
  ev->nev++;
  return DSK_OK;
}

/* State, output (into y) and segment of output j. */
static int ev_store(dsk_solver *s, const double *times, int nt, int j, double *y,
                    dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const double *u = NV_DATA_S(s->y);
  memcpy(a->us + (size_t)j * (size_t)s->n, u, (size_t)s->n * sizeof *u);
  if (s->be == &dsk_backend_idas)
    memcpy(a->yps + (size_t)j * (size_t)s->n, NV_DATA_S(s->yp), (size_t)s->n * sizeof *u);
  a->times[j] = times[j];
  a->ev->seg_of[j] = a->ev->nseg - 1;
  return y ? dsk_solver_store_output(s, times[j], y, nt, j, st) : DSK_OK;
}

static int forward_events(dsk_solver *s, const double *p, const double *times, int nt,
                          const double *ck, int nck, double *y, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const dsk_gen_table *tab = s->tab;
  struct adj_events *ev = a->ev;
  int n = s->n, rc, dae = s->be == &dsk_backend_idas, c = 0;
  if (s->nstop > 0 && (!tab->vjp_x[DSK_FN_STOP] || !tab->vjp_p[DSK_FN_STOP] || !tab->jvp_x[DSK_FN_STOP] ||
      (s->has_reset && (!tab->vjp_x[DSK_FN_RESET] || !tab->vjp_p[DSK_FN_RESET] ||
                        !tab->jvp_x[DSK_FN_RESET]))))
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode through events needs the derivatives of stop and reset "
                          "(recompile the model)");
  if (!ev) {
    ev = a->ev = calloc(1, sizeof *ev);
    if (ev) {
      ev->w = calloc(8 * (size_t)n + 1, sizeof(double));
      ev->g12 = calloc(2 * (size_t)s->nstop + 1, sizeof(double));
      ev->ek = calloc((size_t)s->nstop + 1, sizeof(double));
      ev->pg = calloc((size_t)tab->nparams + 1, sizeof(double));
    }
    if (!ev || !ev->w || !ev->g12 || !ev->ek || !ev->pg) return ev_nomem(st);
  }
  if (nt > ev->outcap) {
    int *so = realloc(ev->seg_of, (size_t)nt * sizeof *so);
    if (!so) return ev_nomem(st);
    ev->seg_of = so;
    ev->outcap = nt;
  }
  ev->nseg = ev->nev = 0;
  rc = dsk_solver_begin(s, p, times[nt - 1], st);
  if (rc == DSK_OK && dae) rc = idas_record_mass(s, st);
  if (rc == DSK_OK) rc = push_seg(s, s->opt.t0, st);
  double tol = 0.0; /* > 0 right after an event restart */
  int j = 0;
  while (rc == DSK_OK && j < nt) {
    double tout = times[j], tret = s->t_cur;
    while (c < nck && ck[c] <= s->t_cur) c++; /* passed (an event restarted beyond it) */
    if (c < nck && ck[c] <= tout) { /* a checkpoint first (before an output at its time) */
      tout = ck[c];
    } else if (tout <= s->t_cur || tout - s->t_cur <= tol) {
      rc = ev_store(s, times, nt, j++, y, st);
      continue;
    }
    int flag = s->be->step(s, tout, 0, &tret);
    if (flag < 0) {
      rc = dsk_solver_fail(s, flag, st);
      break;
    }
    /* the DAE adjoint assumes M(t) constant: check it over the interval */
    if (dae) rc = idas_check_mass(s, 0.5 * (s->t_cur + tret), st);
    if (rc == DSK_OK && dae) rc = idas_check_mass(s, tret, st);
    if (rc != DSK_OK) break;
    s->t_cur = tret;
    if (flag == DSK_STEP_ROOT) {
      tol = dsk_solver_event_tol(s, tret);
      flag = s->be->root_info(s, s->rootsfound);
      if (flag < 0) {
        rc = dsk_solver_fail(s, flag, st);
        break;
      }
      if (!s->has_reset) {
        dsk_solver_note_stop(s, tret);
        for (; rc == DSK_OK && j < nt && times[j] <= tret + tol; j++)
          rc = ev_store(s, times, nt, j, y, st);
        for (; j < nt; j++) {
          ev->seg_of[j] = -1;
          a->times[j] = times[j];
          memset(a->us + (size_t)j * (size_t)n, 0, (size_t)n * sizeof(double));
          for (int i = 0; y && i < tab->nout; i++) y[(size_t)i * (size_t)nt + (size_t)j] = NAN;
        }
        break;
      }
      double *u = NV_DATA_S(s->y), *tmp = ev->w;
      dsk_solver_bank_stats(s); /* the segment's, as solve.c's apply_resets */
      int fired = 0;
      for (int k = 0; k < s->nstop && rc == DSK_OK; k++) {
        if (!s->rootsfound[k]) continue;
        fired++;
        rc = push_ev(s, tret, k, st);
        if (rc != DSK_OK) break;
        s->ws[tab->n_slot] = (double)k;
        int frc = tab->eval[DSK_FN_RESET](tret, u, s->ws, tmp);
        if (frc) {
          st->t = tret;
          rc = dsk_status_set(st, DSK_E_MODELFN, "model function reset returned %d at t = %g",
                              frc, tret);
        }
        memcpy(u, tmp, (size_t)n * sizeof *u);
      }
      s->acc.events += fired ? fired : 1;
      /* (IDAS: consistent u, u' after the reset, then recorded) */
      if (rc == DSK_OK) rc = s->be->reinit(s, tret, times[nt - 1], st);
      if (rc == DSK_OK) rc = push_seg(s, tret, st);
      if (rc == DSK_OK && times[nt - 1] > tret) {
        flag = s->be->set_stop_time(s, times[nt - 1]);
        if (flag < 0) rc = dsk_solver_fail(s, flag, st);
      }
      /* outputs already stored at the event time get the value after it */
      for (int q = j - 1; rc == DSK_OK && q >= 0 && times[q] >= tret - tol; q--)
        rc = ev_store(s, times, nt, q, y, st);
      continue;
    }
    tol = 0.0;
    if (c < nck && tout == ck[c]) { /* a new stretch starts here, no restart */
      rc = push_seg(s, tret, st);
      c++;
      continue;
    }
    rc = ev_store(s, times, nt, j++, y, st);
  }
  dsk_solver_collect_stats(s);
  if (rc != DSK_OK) return rc;
  a->nt = nt;
  a->generation = s->generation;
  return DSK_OK;
}

static int ev_root(realtype t, N_Vector y, realtype *g, void *data) {
  return dsk_solver_eval_stop(data, t, NV_DATA_S(y), g);
}

static int ev_root_ida(realtype t, N_Vector y, N_Vector yp, realtype *g, void *data) {
  (void)yp;
  return dsk_solver_eval_stop(data, t, NV_DATA_S(y), g);
}

/* Re-run segment i from its start to t_end with checkpoints (roots off). */
static int rerun_segment(dsk_solver *s, int i, double t_end, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  struct adj_events *ev = a->ev;
  double t0 = ev->seg_t[i], tret = t0;
  int ncheck = 0, flag, rc;
  s->ws[s->tab->n_slot] = (double)ev->seg_N[i];
  memcpy(NV_DATA_S(s->y), ev->seg_u + (size_t)i * (size_t)s->n, (size_t)s->n * sizeof(double));
  if (s->yp)
    memcpy(NV_DATA_S(s->yp), ev->seg_yp + (size_t)i * (size_t)s->n, (size_t)s->n * sizeof(double));
  rc = s->be->reinit(s, t0, t_end, st);
  if (rc != DSK_OK) return rc;
  if (s->be == &dsk_backend_idas) {
    flag = IDARootInit(s->mem, 0, NULL);
    if (flag >= 0) flag = IDASetStopTime(s->mem, t_end);
    if (flag < 0) return ida_fail(s, flag, "IDASetStopTime", st);
    flag = a->initialised ? IDAAdjReInit(s->mem) : IDAAdjInit(s->mem, ck_steps(s), IDA_HERMITE);
    if (flag < 0) return ida_fail(s, flag, "IDAAdjInit", st);
    a->initialised = 1;
    flag = IDASolveF(s->mem, t_end, &tret, s->y, s->yp, IDA_NORMAL, &ncheck);
    return flag < 0 ? dsk_solver_fail(s, flag, st) : DSK_OK;
  }
  flag = CVodeRootInit(s->mem, 0, NULL);
  if (flag >= 0) flag = CVodeSetStopTime(s->mem, t_end);
  if (flag < 0) return cv_fail(s, flag, "CVodeSetStopTime", st);
  flag = a->initialised ? CVodeAdjReInit(s->mem) : CVodeAdjInit(s->mem, ck_steps(s), CV_HERMITE);
  if (flag < 0) return cv_fail(s, flag, "CVodeAdjInit", st);
  a->initialised = 1;
  flag = CVodeF(s->mem, t_end, s->y, &tret, CV_NORMAL, &ncheck);
  return flag < 0 ? dsk_solver_fail(s, flag, st) : DSK_OK;
}

/* The jump of lambda and grad back across event e (see above). */
int dsk_event_adjoint(dsk_solver *s, double t, const double *u, int k, int N, const double *fm,
                      const double *fp_given, const double *lam, double *grad, double *out,
                      const dsk_event_work *w, dsk_status *st) {
  const dsk_gen_table *tab = s->tab;
  int n = s->n, np = tab->nparams, rc;
  double h = 6e-6 * fmax(1.0, fabs(t));
  double *fp = w->w, *up = fp + n, *ra = up + n, *rb = ra + n, *c = rb + n, *gu = c + n;
  double *g1 = w->g12, *g2 = g1 + s->nstop;
  s->ws[tab->n_slot] = (double)N;
  rc = tab->eval[DSK_FN_STOP](t + h, u, s->ws, g1);
  if (rc == 0) rc = tab->eval[DSK_FN_STOP](t - h, u, s->ws, g2);
  double gt = (g1[k] - g2[k]) / (2.0 * h);
  if (rc == 0) rc = tab->jvp_x[DSK_FN_STOP](t, u, fm, s->ws, s->dws, g1, g2);
  double den = g2[k] + gt;
  w->ek[k] = 1.0;
  if (rc == 0) rc = tab->vjp_x[DSK_FN_STOP](t, u, w->ek, s->ws, w->bws, gu);
  if (rc == 0 && np > 0) rc = tab->vjp_p[DSK_FN_STOP](t, u, w->ek, s->ws, w->bws, w->pg);
  w->ek[k] = 0.0;
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "rhs or stop (adjoint) returned %d at t = %g", rc, t);
  }
  s->ws[tab->n_slot] = (double)k;
  rc = tab->eval[DSK_FN_RESET](t + h, u, s->ws, ra);
  if (rc == 0) rc = tab->eval[DSK_FN_RESET](t - h, u, s->ws, rb);
  for (int i = 0; i < n; i++) c[i] = (ra[i] - rb[i]) / (2.0 * h); /* R_t */
  if (rc == 0) rc = tab->jvp_x[DSK_FN_RESET](t, u, fm, s->ws, s->dws, up, rb);
  if (rc == 0 && fp_given)
    memcpy(fp, fp_given, (size_t)n * sizeof *fp);
  else if (rc == 0)
    rc = tab->eval[DSK_FN_RHS](t, up, s->ws, fp);
  if (rc == 0) rc = tab->vjp_x[DSK_FN_RESET](t, u, lam, s->ws, w->bws, out);
  if (rc == 0 && np > 0) rc = tab->vjp_p[DSK_FN_RESET](t, u, lam, s->ws, w->bws, w->pbar);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "reset or rhs (adjoint) returned %d at t = %g", rc,
                          t);
  }
  double lc = 0.0, wgt = 0.0;
  for (int i = 0; i < n; i++) lc += lam[i] * (c[i] + rb[i] - fp[i]);
  if (lc != 0.0) {
    if (den == 0.0 || !isfinite(den)) {
      st->t = t;
      return dsk_status_set(st, DSK_E_SOLVER,
                            "the event time of stop element %d at t = %.6g has no derivative: "
                            "stop touches zero without crossing it (d stop/dt = 0)",
                            k, t);
    }
    wgt = lc / den;
  }
  for (int q = 0; q < np; q++) grad[q] += w->pbar[q] - wgt * w->pg[q];
  for (int i = 0; i < n; i++) out[i] -= wgt * gu[i];
  return DSK_OK;
}

static int event_jump(dsk_solver *s, int e, double *grad, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  struct adj_events *ev = a->ev;
  const dsk_gen_table *tab = s->tab;
  int n = s->n, rc;
  double t = ev->ev_t[e], *lam = NV_DATA_S(a->yB);
  const double *u = ev->ev_u + (size_t)e * (size_t)n;
  double *fm = ev->w + 6 * (size_t)n, *lm = fm + n;
  int dae = s->be == &dsk_backend_idas;
  dsk_event_work w = {ev->w, ev->g12, ev->ek, ev->pg, a->pbar, a->bws};
  s->ws[tab->n_slot] = (double)ev->ev_N[e];
  if (dae) { /* u' before (recorded) and lambda's pairing M^T lambda */
    memcpy(fm, ev->ev_yp + (size_t)e * (size_t)n, (size_t)n * sizeof *fm);
    rc = tab->vjp_x[DSK_FN_MASS](t, fm, lam, s->ws, a->bws, a->tmp);
    if (rc == 0) memcpy(lam, a->tmp, (size_t)n * sizeof *lam);
  } else {
    rc = tab->eval[DSK_FN_RHS](t, u, s->ws, fm);
  }
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "rhs or M (adjoint) returned %d at t = %g", rc, t);
  }
  /* (IDAS: the consistent u' after the reset is the next segment's start) */
  rc = dsk_event_adjoint(s, t, u, ev->ev_k[e], ev->ev_N[e], fm,
                         dae ? ev->seg_yp + (size_t)(ev->ev_seg[e] + 1) * (size_t)n : NULL, lam,
                         grad, lm, &w, st);
  if (rc != DSK_OK) return rc;
  if (!dae) {
    memcpy(lam, lm, (size_t)n * sizeof *lam);
    return DSK_OK;
  }
  /* DAE: b^T s- with b = R_u^T M^T lambda+ - w g_u^T and s- consistent: lambda
     restarts from zero with the jump of a loss term b (as an output's) */
  memcpy(NV_DATA_S(a->bJ), lm, (size_t)n * sizeof *lm);
  N_VConst(0.0, a->yB);
  N_VConst(0.0, a->ypB);
  s->ws[tab->n_slot] = (double)ev->ev_N[e];
  return idas_jump(s, t, u, fm, grad, st);
}

/* (Re)start the backward problem at t with the current lambda, keeping the
   quadrature (first: from zero). */
static int restart_b(dsk_solver *s, double t, int *first, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  if (s->be == &dsk_backend_idas) {
    *first = 0;
    return start_backward_idas(s, t, st); /* keeps a->qB */
  }
  if (*first || a->which < 0) {
    *first = 0;
    return start_backward(s, t, st);
  }
  return reinit_b(s, t, st);
}

/* Integrate lambda (and the quadrature) back to target. */
static int back_to_target(dsk_solver *s, double target, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  double tret = target;
  int np = s->tab->nparams, flag;
  if (a->sketch) return sketch_back_to(s, target, st);
  if (s->be == &dsk_backend_idas) {
    flag = IDASolveB(s->mem, target, IDA_NORMAL);
    if (flag >= 0) flag = IDAGetB(s->mem, a->which, &tret, a->yB, a->ypB);
    if (flag >= 0 && np > 0) flag = IDAGetQuadB(s->mem, a->which, &tret, a->qB);
    return flag < 0 ? ida_fail(s, flag, "IDASolveB", st) : DSK_OK;
  }
  flag = CVodeB(s->mem, target, CV_NORMAL);
  if (flag >= 0) flag = CVodeGetB(s->mem, a->which, &tret, a->yB);
  if (flag >= 0 && np > 0) flag = CVodeGetQuadB(s->mem, a->which, &tret, a->qB);
  return flag < 0 ? cv_fail(s, flag, "CVodeB", st) : DSK_OK;
}

/* back_to_target within the pass's step budget */
static int back_to(dsk_solver *s, double target, dsk_status *st) {
  int rc = back_to_target(s, target, st);
  if (rc == DSK_OK) rc = dsk_adjoint_over_budget(s, s->adj->bsteps + live_steps_b(s), st);
  return rc;
}

static int backward_events(dsk_solver *s, const double *g, int jlast, double *grad,
                           dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int dae = s->be == &dsk_backend_idas;
  struct adj_events *ev = a->ev;
  int np = s->tab->nparams, rc = DSK_OK, first = 1, integrated = 0, j = jlast;
  if (ev->seg_of[jlast] < 0) {
    st->t = a->times[jlast];
    return dsk_status_set(st, DSK_E_ARG,
                          "the gradient has non-zero entries at t = %g, after the solve stopped at "
                          "an event (t = %g) where the outputs are NaN; set g to zero there",
                          a->times[jlast], s->stop_t);
  }
  N_VConst(0.0, a->yB);
  if (dae) N_VConst(0.0, a->ypB);
  if (a->qB) N_VConst(0.0, a->qB);
  double t_end = a->times[jlast];
  for (int i = ev->seg_of[jlast]; i >= 0 && rc == DSK_OK; i--) {
    double t_start = ev->seg_t[i], t_cur = t_end;
    int restart = 1;
    if (t_end > t_start) rc = rerun_segment(s, i, t_end, st);
    for (; rc == DSK_OK && j >= 0 && ev->seg_of[j] == i; j--) {
      double target = fmax(a->times[j], t_start);
      if (target < t_cur) {
        if (restart) rc = restart_b(s, t_cur, &first, st);
        if (rc == DSK_OK) rc = back_to(s, target, st);
        if (rc != DSK_OK) break;
        restart = 0;
        integrated = 1;
        t_cur = target;
      }
      if (column(s, g, j)) {
        rc = dae ? add_output_term_idas(s, j, grad, st) : add_output_term(s, j, grad, st);
        restart = 1;
      }
    }
    if (rc == DSK_OK && t_start < t_cur) {
      if (restart) rc = restart_b(s, t_cur, &first, st);
      if (rc == DSK_OK) rc = back_to(s, t_start, st);
      integrated = 1;
    }
    for (int e = ev->nev - 1; rc == DSK_OK && e >= 0; e--)
      if (ev->ev_seg[e] == i - 1) rc = event_jump(s, e, grad, st);
    t_end = t_start;
  }
  /* root finding back on for the next solve */
  if (s->mem && dae) {
    int flag = IDARootInit(s->mem, s->nstop, ev_root_ida);
    if (flag >= 0) flag = IDASetNoInactiveRootWarn(s->mem);
    if (flag < 0 && rc == DSK_OK) rc = ida_fail(s, flag, "IDARootInit", st);
  } else if (s->mem) {
    int flag = CVodeRootInit(s->mem, s->nstop, ev_root);
    if (flag >= 0) flag = CVodeSetNoInactiveRootWarn(s->mem);
    if (flag < 0 && rc == DSK_OK) rc = cv_fail(s, flag, "CVodeRootInit", st);
  }
  if (rc != DSK_OK) return rc;
  if (np > 0 && integrated) quad_into_grad(s, grad);
  if (np > 0) {
    const double *l0 = NV_DATA_S(a->yB);
    int frc = 0;
    if (dae) { /* (M^T lambda(t0))^T du0/dp */
      frc = s->tab->vjp_x[DSK_FN_MASS](s->opt.t0, ev->seg_yp, l0, s->ws, a->bws, a->tmp);
      l0 = a->tmp;
    }
    if (frc == 0) frc = s->tab->vjp_p[DSK_FN_U0](s->opt.t0, NULL, l0, s->ws, a->bws, a->pbar);
    if (frc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of u0 or M returned %d", frc);
    for (int k = 0; k < np; k++) grad[k] += a->pbar[k];
  }
  return DSK_OK;
}
