/*
 * sens_discrete.c - reverse mode by the discrete adjoint of CVODES' BDF steps
 * (gradient_method="discrete"; models without M or events, method bdf, a
 * dense or KLU Newton matrix).
 *
 * Why.  The continuous adjoint (sens_adjoint.c) restarts its backward
 * integration at every output time with a gradient, and on a stiff problem
 * the jump (d out/du)^T g_j excites lambda's fast modes: every restart
 * resolves a transient of its own (Robertson: about 200 backward steps at
 * each of 9 output times, heat1d: about 440 at each of 11), against one for
 * the forward solve.  The discrete adjoint instead differentiates the steps
 * CVODES took: one backward step per forward step, whatever the loss.
 *
 * The forward pass runs CVODES one step at a time and records, for step n,
 * t_n, h_n, q_n and y_n.  CVODES' BDF in Nordsieck form (the CVODE theory
 * guide) takes z = [y, h y', h^2 y''/2, ...] from step n-1 to step n by
 *   (a) an order change: up, z_{q+1} = A1 acor_{n-1} and z_j += c_j z_{q+1};
 *       down, z_j -= c_j z_q (both c from the step history),
 *   (b) the rescale z_j *= eta^j (eta = h_n / h_{n-1}),
 *   (c) the prediction z = P z (P: Pascal's triangle),
 *   (d) the corrector: acor = gamma F(t_n, z_0 + acor) - z_1 / l_1,
 *       gamma = h_n / l_1, y_n = z_0 + acor,
 *   (e) z_j += l_j acor (l from the step history),
 * all linear but (d).  The kernel replays (a)-(e) from the observed arrays
 * (CVodeGetDky at t_n) and checks that its replay gives CVODES' array after
 * each step, to rounding; a step it does not reproduce (a path of CVODES
 * this file does not model, e.g. an order reset after repeated error test
 * failures at order 1) ends the pass with DSK_DISC_FALLBACK and the caller
 * runs the continuous adjoint instead.  An output time t_j in (t_{n-1}, t_n]
 * is CVODES' interpolation y(t_j) = sum_k z_k s^k, s = (t_j - t_n) / h_n.
 *
 * The backward pass applies the transposes in reverse order.  Only (d) needs
 * the model: with abar the adjoint of acor,
 *   (I - gamma J)^T w = abar,  zbar_0 += w - abar,  zbar_1 -= w / l_1,
 *   grad += gamma (dF/dp)^T w,
 * one linear solve with the transposed Newton matrix at (t_n, y_n) and one
 * vector-Jacobian product per step.  At t0, z = [u0(p), h_1 F(t0, u0, p)].
 * The gradient is exact for the computed solution (the one solve_dense
 * returns, as the Newton iterations converged) with the step sizes and
 * orders held fixed; it differs from the exact solution's gradient, as the
 * solution does, by the integration error.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "solve.h"

#define QMAX 5 /* CVODES' BDF */
/* the recorded steps: at most this many bytes, else the continuous adjoint */
#define DSK_DISC_MEMORY (512L << 20)

extern void dgetrf_(const int *m, const int *n, double *a, const int *lda, int *ipiv, int *info);
extern void dgetrs_(const char *trans, const int *n, const int *nrhs, const double *a,
                    const int *lda, const int *ipiv, double *b, const int *ldb, int *info,
                    size_t len);

struct dstep {
  double t, h, eta, rl1, gamma;
  double l[QMAX + 2]; /* the corrector's l (e) */
  double c[QMAX + 2]; /* the order change's c (a) */
  double a1;          /* order up: z_{q+1} = a1 acor_{n-1} */
  int q, dq;          /* the step's order and its change from step n-1 */
};

struct dsk_discrete {
  long generation; /* solver generation of the recorded pass, -1: none */
  int nt, cap_t;
  double *times, *us; /* output times, y at each (n x nt) */
  long *ostep;        /* the step whose array interpolates output j (0: t0) */
  long ns, cap_s;
  struct dstep *st;   /* st[1..ns] */
  double *ys;         /* y_0 .. y_ns (n each) */
  double tau[QMAX + 2];
  double *zn, *zp, *obs, *acor, *sacor, *z0; /* replay: (QMAX+2) x n, n, n, n, 2 x n */
  double *zb, *sb, *ab, *w, *ub;             /* backward */
  double *bws, *gj, *pbar, *pw;
  double *lu;
  int *ipiv;
  SUNMatrix A; /* KLU: (I - gamma J)^T on the transposed pattern */
  SUNLinearSolver LS;
  N_Vector xv, bv, tv;
  int *tcolptr, *trowidx, *tpos;
  double *rv;        /* n: the refinement's residual */
  double *fact_j;    /* J's values at the last factorisation (cheap Jacobians) */
  double fact_gamma;
  int fact_ok;       /* lu / A holds a factorisation */
  int verify;        /* opt.adjoint_discrete == 2: check every step (tests) */
  long nef;          /* CVODES' error test failures so far in the pass */
};

void dsk_discrete_free(dsk_solver *s) {
  struct dsk_discrete *d = s->disc;
  if (!d) return;
  free(d->times), free(d->us), free(d->ostep), free(d->st), free(d->ys);
  free(d->zn), free(d->zp), free(d->obs), free(d->acor), free(d->sacor), free(d->z0);
  free(d->zb), free(d->sb), free(d->ab), free(d->w), free(d->ub);
  free(d->bws), free(d->gj), free(d->pbar), free(d->pw), free(d->lu), free(d->ipiv);
  free(d->rv), free(d->fact_j);
  if (d->LS) SUNLinSolFree(d->LS);
  if (d->A) SUNMatDestroy(d->A);
  if (d->xv) N_VDestroy(d->xv);
  if (d->bv) N_VDestroy(d->bv);
  if (d->tv) N_VDestroy(d->tv);
  free(d->tcolptr), free(d->trowidx), free(d->tpos);
  free(d);
  s->disc = NULL;
}

int dsk_discrete_supported(const dsk_solver *s) {
  return s->be == &dsk_backend_cvodes && s->opt.method == DSK_BDF && s->nstop == 0 &&
         (s->linsol == DSK_LS_DENSE || s->linsol == DSK_LS_LAPACK || s->linsol == DSK_LS_SUNDENSE ||
          s->linsol == DSK_LS_KLU) &&
         s->tab->vjp_x[DSK_FN_RHS] && s->tab->vjp_p[DSK_FN_RHS];
}

static int state(dsk_solver *s, dsk_status *st) {
  struct dsk_discrete *d;
  size_t n = (size_t)s->n, np = (size_t)s->tab->nparams, L = QMAX + 2;
  if (s->disc) return DSK_OK;
  d = calloc(1, sizeof *d);
  if (!d) return dsk_status_set(st, DSK_E_NOMEM, "out of memory (discrete adjoint)");
  s->disc = d;
  d->generation = -1;
  d->zn = calloc(L * n, sizeof(double));
  d->zp = calloc(L * n, sizeof(double));
  d->obs = calloc(L * n, sizeof(double));
  d->zb = calloc(L * n, sizeof(double));
  d->acor = calloc(n, sizeof(double));
  d->sacor = calloc(n, sizeof(double));
  d->z0 = calloc(2 * n, sizeof(double));
  d->sb = calloc(n, sizeof(double));
  d->ab = calloc(n, sizeof(double));
  d->w = calloc(n, sizeof(double));
  d->ub = calloc(n, sizeof(double));
  d->bws = calloc((size_t)s->tab->nws + 1, sizeof(double));
  d->gj = calloc((size_t)s->tab->nout + 1, sizeof(double));
  d->pbar = calloc(np + 1, sizeof(double));
  d->pw = calloc(np + 1, sizeof(double));
  d->tv = N_VNew_Serial(s->n, s->ctx);
  d->rv = calloc(n + 1, sizeof(double));
  d->fact_j = calloc((size_t)dsk_model_jac_pattern(s->model)->nnz + 1, sizeof(double));
  if (!d->tv || !d->rv || !d->fact_j || !d->zn || !d->zp || !d->obs || !d->zb || !d->acor || !d->sacor || !d->z0 || !d->sb ||
      !d->ab || !d->w || !d->ub || !d->bws || !d->gj || !d->pbar || !d->pw) {
    dsk_discrete_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory (discrete adjoint)");
  }
  if (s->linsol == DSK_LS_KLU) {
    if (dsk_pattern_transpose(&s->U, s->n, &d->tcolptr, &d->trowidx, &d->tpos)) {
      dsk_discrete_free(s);
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory (discrete adjoint)");
    }
    d->xv = N_VNew_Serial(s->n, s->ctx);
    d->bv = N_VNew_Serial(s->n, s->ctx);
    int rc = d->xv && d->bv
                 ? dsk_adjoint_klu_t(s, d->xv, d->tcolptr, d->trowidx, &d->A, &d->LS, st)
                 : dsk_status_set(st, DSK_E_NOMEM, "out of memory (discrete adjoint)");
    if (rc != DSK_OK) {
      dsk_discrete_free(s);
      return rc;
    }
  } else {
    d->lu = calloc(n * n + 1, sizeof(double));
    d->ipiv = calloc(n + 1, sizeof(int));
    if (!d->lu || !d->ipiv) {
      dsk_discrete_free(s);
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory (discrete adjoint)");
    }
  }
  return DSK_OK;
}

#define Z(a, j) ((a) + (size_t)(j) * (size_t)n)

/* (a) order up from q (A1 and c_2..c_q) or down from q (c_2..c_{q-1}),
   with the history tau and the array's scale h (the previous step). */
static void order_coeffs(const double *tau, double h, int q, int up, double *c, double *a1) {
  for (int i = 0; i < QMAX + 2; i++) c[i] = 0.0;
  c[2] = 1.0;
  if (up) {
    double a0 = -1.0, al1 = 1.0, prod = 1.0, xold = 1.0, hs = h;
    for (int j = 1; j < q; j++) {
      hs += tau[j + 1];
      double xi = hs / h;
      prod *= xi;
      a0 -= 1.0 / (j + 1);
      al1 += 1.0 / xi;
      for (int i = j + 2; i >= 2; i--) c[i] = c[i] * xold + c[i - 1];
      xold = xi;
    }
    *a1 = (-a0 - al1) / prod;
  } else {
    double hs = 0.0;
    for (int j = 1; j <= q - 2; j++) {
      hs += tau[j];
      double xi = hs / h;
      for (int i = j + 2; i >= 2; i--) c[i] = c[i] * xi + c[i - 1];
    }
    *a1 = 0.0;
  }
}

/* (e) the corrector's l for order q and step h (l_0 = 1). */
static void bdf_l(const double *tau, double h, int q, double *l) {
  double a0 = -1.0, hs = h;
  for (int i = 0; i < QMAX + 2; i++) l[i] = 0.0;
  l[0] = l[1] = 1.0;
  if (q > 1) {
    for (int j = 2; j < q; j++) {
      hs += tau[j - 1];
      double xi_inv = h / hs;
      a0 -= 1.0 / j;
      for (int i = j; i >= 1; i--) l[i] += l[i - 1] * xi_inv;
    }
    a0 -= 1.0 / q;
    double xs_inv = -l[1] - a0;
    for (int i = q; i >= 1; i--) l[i] += l[i - 1] * xs_inv;
  }
}

/* zp = (a)-(c) applied to zn (order q0, scale of step st[-1]) for step *p;
   the acor of the previous step in sacor. */
static void predict(const dsk_solver *s, struct dsk_discrete *d, int q0, struct dstep *p) {
  int n = s->n, q = p->q;
  memcpy(d->zp, d->zn, (size_t)(q0 + 1) * (size_t)n * sizeof(double));
  if (p->dq == 1) {
    double *zq = Z(d->zp, q0 + 1);
    for (int i = 0; i < n; i++) zq[i] = p->a1 * d->sacor[i];
    for (int j = 2; j <= q0; j++)
      for (int i = 0; i < n; i++) Z(d->zp, j)[i] += p->c[j] * zq[i];
  } else if (p->dq == -1) {
    for (int j = 2; j < q0; j++)
      for (int i = 0; i < n; i++) Z(d->zp, j)[i] -= p->c[j] * Z(d->zp, q0)[i];
  }
  double e = 1.0;
  for (int j = 1; j <= q; j++) {
    e *= p->eta;
    for (int i = 0; i < n; i++) Z(d->zp, j)[i] *= e;
  }
  for (int k = 1; k <= q; k++)
    for (int j = q; j >= k; j--)
      for (int i = 0; i < n; i++) Z(d->zp, j - 1)[i] += Z(d->zp, j)[i];
}

static int grow_steps(dsk_solver *s, struct dsk_discrete *d) {
  long cap = d->cap_s ? 2 * d->cap_s : 256;
  size_t n = (size_t)s->n;
  if ((double)cap * ((double)n * sizeof(double) + sizeof(struct dstep)) > (double)DSK_DISC_MEMORY)
    return DSK_DISC_FALLBACK;
  struct dstep *sp = realloc(d->st, (size_t)(cap + 1) * sizeof *sp);
  if (sp) d->st = sp;
  double *ys = sp ? realloc(d->ys, (size_t)(cap + 1) * n * sizeof *ys) : NULL;
  if (ys) d->ys = ys;
  if (!sp || !ys) return DSK_DISC_FALLBACK;
  d->cap_s = cap;
  return DSK_OK;
}

/* One forward step recorded: its coefficients (a)-(e) from h, q and the
   history, and y_n.  With d->verify, also CVODES' array observed and the
   replay checked against it (see the top of the file); without, a step with
   more than MXNEF1 = 3 error test failures (CVODES then lowers the order or
   re-evaluates F inside the step, paths the replay does not model) ends the
   recording.  DSK_DISC_FALLBACK: the continuous adjoint instead. */
static int record_step(dsk_solver *s, struct dsk_discrete *d, int tstop, int *q0, double *h0) {
  int n = s->n, q;
  long ns = d->ns + 1, nef = 0;
  double h, tn;
  void *mem = s->mem;
  if (CVodeGetLastStep(mem, &h) < 0 || CVodeGetLastOrder(mem, &q) < 0 ||
      CVodeGetCurrentTime(mem, &tn) < 0 || CVodeGetNumErrTestFails(mem, &nef) < 0 || q < 1 ||
      q > QMAX)
    return DSK_DISC_FALLBACK;
  if (nef - d->nef > 3 && !d->verify) return DSK_DISC_FALLBACK;
  d->nef = nef;
  if (ns > d->cap_s && grow_steps(s, d) != DSK_OK) return DSK_DISC_FALLBACK;
  struct dstep *p = &d->st[ns];
  memset(p, 0, sizeof *p);
  p->t = tn, p->h = h, p->q = q;
  if (ns == 1) {
    if (q != 1) return DSK_DISC_FALLBACK;
    *q0 = 1, *h0 = h;
  }
  p->dq = q - *q0;
  if (p->dq > 1 || p->dq < -1) return DSK_DISC_FALLBACK;
  p->eta = h / *h0;
  if (p->dq == 1) order_coeffs(d->tau, *h0, *q0, 1, p->c, &p->a1);
  if (p->dq == -1 && *q0 > 2) order_coeffs(d->tau, *h0, *q0, 0, p->c, &p->a1);
  bdf_l(d->tau, h, q, p->l);
  p->rl1 = 1.0 / p->l[1];
  p->gamma = h * p->rl1;
  /* y_n = z_0 (at tstop CVODES returns y interpolated at tstop instead) */
  double *yn = d->ys + (size_t)ns * (size_t)n;
  if (tstop || d->verify) {
    if (CVodeGetDky(mem, tn, 0, d->tv) < 0) return DSK_DISC_FALLBACK;
    memcpy(yn, NV_DATA_S(d->tv), (size_t)n * sizeof(double));
  } else {
    memcpy(yn, NV_DATA_S(s->y), (size_t)n * sizeof(double));
  }
  if (d->verify) {
    /* the observed array z_k = h^k/k! y^(k)(t_n), against the replay from the last */
    double fac = 1.0, ymax = 0.0;
    for (int k = 0; k <= q; k++) {
      if (k > 0) fac *= h / k;
      if (CVodeGetDky(mem, tn, k, d->tv) < 0) return DSK_DISC_FALLBACK;
      for (int i = 0; i < n; i++) Z(d->obs, k)[i] = fac * NV_Ith_S(d->tv, i);
    }
    if (ns == 1) { /* z at t0: [y0, h F(t0, y0)] */
      memcpy(d->zn, d->z0, (size_t)n * sizeof(double));
      for (int i = 0; i < n; i++) Z(d->zn, 1)[i] = h * d->z0[n + i];
    }
    predict(s, d, *q0, p);
    for (int i = 0; i < n; i++) {
      d->acor[i] = Z(d->obs, 0)[i] - Z(d->zp, 0)[i];
      ymax = fmax(ymax, fabs(Z(d->obs, 0)[i]));
    }
    for (int j = 1; j <= q; j++) {
      double emax = 0.0, omax = 0.0;
      for (int i = 0; i < n; i++) {
        double r = Z(d->zp, j)[i] + p->l[j] * d->acor[i];
        emax = fmax(emax, fabs(r - Z(d->obs, j)[i]));
        omax = fmax(omax, fabs(Z(d->obs, j)[i]));
      }
      if (!(emax <= 1e-9 * (ymax + omax) + 1e-300)) return DSK_DISC_FALLBACK;
    }
    memcpy(d->zn, d->obs, (size_t)(q + 1) * (size_t)n * sizeof(double));
    memcpy(d->sacor, d->acor, (size_t)n * sizeof(double));
  }
  for (int i = q; i >= 2; i--) d->tau[i] = d->tau[i - 1];
  if (q == 1 && ns > 1) d->tau[2] = d->tau[1];
  d->tau[1] = h;
  *q0 = q, *h0 = h;
  d->ns = ns;
  return DSK_OK;
}

static int grow_times(dsk_solver *s, struct dsk_discrete *d, int nt, dsk_status *st) {
  if (nt <= d->cap_t) return DSK_OK;
  double *tt = realloc(d->times, (size_t)nt * sizeof *tt);
  if (tt) d->times = tt;
  double *uu = tt ? realloc(d->us, (size_t)nt * (size_t)s->n * sizeof *uu) : NULL;
  if (uu) d->us = uu;
  long *os = uu ? realloc(d->ostep, (size_t)nt * sizeof *os) : NULL;
  if (os) d->ostep = os;
  if (!tt || !uu || !os) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for %d times", nt);
  d->cap_t = nt;
  return DSK_OK;
}

/* Output j at time t from the current CVODES array (or y0 at t0). */
static int output(dsk_solver *s, struct dsk_discrete *d, int j, double t, long step, double *y,
                  int nt, dsk_status *st) {
  int n = s->n;
  double *u = NV_DATA_S(s->y), *keep = d->ub;
  memcpy(keep, u, (size_t)n * sizeof *u);
  if (step > 0 && CVodeGetDky(s->mem, t, 0, s->y) < 0) return DSK_DISC_FALLBACK;
  if (step == 0) memcpy(u, d->ys, (size_t)n * sizeof *u);
  memcpy(d->us + (size_t)j * (size_t)n, u, (size_t)n * sizeof *u);
  d->times[j] = t;
  d->ostep[j] = step;
  int rc = y ? dsk_solver_store_output(s, t, y, nt, j, st) : DSK_OK;
  memcpy(u, keep, (size_t)n * sizeof *u);
  return rc;
}

int dsk_discrete_forward(dsk_solver *s, const double *p, const double *times, int nt, double *y,
                         dsk_status *st) {
  struct dsk_discrete *d;
  int rc = state(s, st), n = s->n, q0 = 1;
  double h0 = 0.0;
  if (rc == DSK_OK) rc = grow_times(s, s->disc, nt, st);
  if (rc != DSK_OK) return rc;
  d = s->disc;
  d->generation = -1;
  d->ns = 0;
  d->nef = 0;
  d->verify = s->opt.adjoint_discrete == 2;
  if (d->cap_s == 0 && grow_steps(s, d) != DSK_OK) return DSK_DISC_FALLBACK;
  for (int i = 0; i < QMAX + 2; i++) d->tau[i] = 0.0;
  rc = dsk_solver_begin(s, p, times[nt - 1], st);
  if (rc != DSK_OK) return rc;
  memcpy(d->ys, NV_DATA_S(s->y), (size_t)n * sizeof(double));
  if (d->verify) { /* the replay's start: z at t0 = [y0, h F(t0, y0)] */
    memcpy(d->z0, d->ys, (size_t)n * sizeof(double));
    int frc = s->tab->eval[DSK_FN_RHS](s->opt.t0, d->ys, s->ws, d->z0 + n);
    if (frc) {
      st->t = s->opt.t0;
      return dsk_status_set(st, DSK_E_MODELFN, "F returned %d at t0", frc);
    }
  }
  int j = 0;
  for (; j < nt && times[j] <= s->opt.t0 && rc == DSK_OK; j++)
    rc = output(s, d, j, times[j], 0, y, nt, st);
  int tstop = 0;
  while (rc == DSK_OK && j < nt) {
    double tret = s->t_cur;
    int flag = 0;
    /* tout: the next output time, as dsk_solver_solve_dense passes it (CVODES'
       first step depends on it), so that both take the same steps */
    rc = dsk_solver_step_to(s, times[j], 1, &tret, &flag, st);
    if (rc != DSK_OK) break;
    tstop = flag == DSK_STEP_TSTOP;
    rc = record_step(s, d, tstop, &q0, &h0);
    if (rc != DSK_OK) break;
    double tn = d->st[d->ns].t;
    for (; rc == DSK_OK && j < nt && (times[j] <= tn || tstop); j++)
      rc = output(s, d, j, times[j], d->ns, y, nt, st);
  }
  dsk_solver_collect_stats(s);
  if (rc != DSK_OK) return rc;
  d->nt = nt;
  d->generation = s->generation;
  return DSK_OK;
}

/* x = M^{-1} x with the last factorisation M = (I - gamma_c J_c)^T */
static int apply_minv(dsk_solver *s, struct dsk_discrete *d, double *x) {
  int n = s->n, info = 0, one = 1;
  if (d->A) {
    memcpy(NV_DATA_S(d->bv), x, (size_t)n * sizeof *x);
    int flag = SUNLinSolSolve(d->LS, d->A, d->xv, d->bv, 0.0);
    memcpy(x, NV_DATA_S(d->xv), (size_t)n * sizeof *x);
    return flag;
  }
  dgetrs_("T", &n, &one, d->lu, &n, d->ipiv, x, &n, &info, 1);
  return info;
}

/* M = (I - gamma J(t, y))^T, factorised (J evaluated first when eval, else in s->jvals) */
static int factor(dsk_solver *s, struct dsk_discrete *d, double t, const double *yv,
                  double gamma, int eval, dsk_status *st) {
  int n = s->n, flag = 0;
  d->fact_ok = 0;
  int rc = eval ? dsk_lin_eval_jac(s, t, yv) : 0;
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the Jacobian of F returned %d at t = %g", rc, t);
  }
  const dsk_sparsity *P = dsk_model_jac_pattern(s->model);
  if (d->A) {
    double *x = SM_DATA_S(d->A);
    for (int k = 0; k < s->U.nnz; k++) x[k] = 0.0;
    for (int k = 0; k < P->nnz; k++) x[d->tpos[s->jmap[k]]] = -gamma * s->jvals[k];
    for (int i = 0; i < n; i++) x[d->tpos[s->diagmap[i]]] += 1.0;
    flag = SUNLinSolSetup(d->LS, d->A);
  } else {
    double *a = d->lu;
    memset(a, 0, (size_t)n * (size_t)n * sizeof *a);
    for (int c = 0; c < n; c++)
      for (int k = P->colptr[c]; k < P->colptr[c + 1]; k++)
        a[(size_t)c * (size_t)n + (size_t)P->rowidx[k]] = -gamma * s->jvals[k];
    for (int i = 0; i < n; i++) a[(size_t)i * (size_t)n + (size_t)i] += 1.0;
    dgetrf_(&n, &n, a, &n, d->ipiv, &flag);
  }
  if (flag != 0) {
    st->t = t;
    return dsk_status_set(st, DSK_E_SOLVER,
                          "the discrete adjoint's Newton matrix (I - gamma J) is singular or "
                          "its factorisation failed (%d) at t = %g", flag, t);
  }
  d->fact_ok = 1;
  return DSK_OK;
}

/* w = (I - gamma J(t, y))^{-T} b.  With a cheap Jacobian (at most
   DSK_DISC_COLORS colours: one tangent each) J is evaluated and factorised at
   every step, and the factorisation is reused when gamma and J are those of
   the last one (a linear model at an unchanged step size and order: heat1d's
   backward pass 1.9 to 1.4 solves).  A dearer Jacobian (a dense 16-state
   network: 16 tangents, where the forward Newton iteration evaluated J 3
   times in 159 steps) is avoided where the last factorisation M still serves:
   w = M^{-1} b, then corrections M^{-1} r with the exact residual
   r = b - w + gamma J^T w (one vector-Jacobian product) until
   |r| <= DSK_DISC_RTOL |b|; if the residual does not fall 10x per correction,
   M is refreshed at (t, y) and w = M^{-1} b is the exact solve (nn_tanh[16]:
   backward pass 6.9 to 5.2 solves; for 3-state models refinement cost more
   than the factorisation it saves).  DSK_DISC_RTOL: far below the gradient's
   own error, that of the integration (about 1e-7 of it at rtol 1e-8). */
#define DSK_DISC_COLORS 8
#define DSK_DISC_RTOL 1e-10
#define DSK_DISC_MAXIT 8
static int tsolve(dsk_solver *s, struct dsk_discrete *d, double t, const double *yv,
                  double gamma, const double *b, double *w, dsk_status *st) {
  int n = s->n;
  if (dsk_model_jac_ncolors(s->model) <= DSK_DISC_COLORS) {
    const dsk_sparsity *P = dsk_model_jac_pattern(s->model);
    int rc = dsk_lin_eval_jac(s, t, yv);
    if (rc) {
      st->t = t;
      return dsk_status_set(st, DSK_E_MODELFN, "the Jacobian of F returned %d at t = %g", rc, t);
    }
    int same = d->fact_ok && gamma == d->fact_gamma &&
               memcmp(d->fact_j, s->jvals, (size_t)P->nnz * sizeof(double)) == 0;
    if (!same) {
      rc = factor(s, d, t, yv, gamma, 0, st);
      if (rc != DSK_OK) return rc;
      d->fact_gamma = gamma;
      memcpy(d->fact_j, s->jvals, (size_t)P->nnz * sizeof(double));
    }
  } else if (d->fact_ok) {
    double bmax = 0.0, rprev = INFINITY;
    for (int i = 0; i < n; i++) bmax = fmax(bmax, fabs(b[i]));
    memcpy(w, b, (size_t)n * sizeof *b);
    if (bmax == 0.0) return DSK_OK;
    if (apply_minv(s, d, w) != 0) d->fact_ok = 0;
    for (int it = 0; d->fact_ok && it < DSK_DISC_MAXIT; it++) {
      int rc = s->tab->vjp_x[DSK_FN_RHS](t, yv, w, s->ws, d->bws, d->rv);
      if (rc) {
        st->t = t;
        return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of F returned %d at t = %g", rc, t);
      }
      double rmax = 0.0;
      for (int i = 0; i < n; i++) {
        d->rv[i] = b[i] - w[i] + gamma * d->rv[i];
        rmax = fmax(rmax, fabs(d->rv[i]));
      }
      if (rmax <= DSK_DISC_RTOL * bmax) return DSK_OK;
      if (!(rmax <= 0.1 * rprev)) break;
      rprev = rmax;
      if (apply_minv(s, d, d->rv) != 0) break;
      for (int i = 0; i < n; i++) w[i] += d->rv[i];
    }
    int rc = factor(s, d, t, yv, gamma, 1, st);
    if (rc != DSK_OK) return rc;
  } else {
    int rc = factor(s, d, t, yv, gamma, 1, st);
    if (rc != DSK_OK) return rc;
  }
  memcpy(w, b, (size_t)n * sizeof *b);
  if (apply_minv(s, d, w) != 0) {
    st->t = t;
    return dsk_status_set(st, DSK_E_SOLVER,
                          "the discrete adjoint's linear solve failed at t = %g", t);
  }
  return DSK_OK;
}

/* Column j of g into d->gj; 1 when it has a non-zero. */
static int column(const dsk_solver *s, const double *g, int nt, int j) {
  int any = 0;
  for (int i = 0; i < s->tab->nout; i++) {
    s->disc->gj[i] = g[(size_t)i * (size_t)nt + (size_t)j];
    any |= s->disc->gj[i] != 0.0;
  }
  return any;
}

/* ubar = (d out/du)^T g_j at output j, grad += (d out/dp)^T g_j */
static int out_term(dsk_solver *s, struct dsk_discrete *d, int j, double *grad, dsk_status *st) {
  const double *u = d->us + (size_t)j * (size_t)s->n;
  double t = d->times[j];
  int rc = s->tab->vjp_x[DSK_FN_OUT](t, u, d->gj, s->ws, d->bws, d->ub);
  if (rc == 0) rc = s->tab->vjp_p[DSK_FN_OUT](t, u, d->gj, s->ws, d->bws, d->pbar);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of out returned %d at t = %g", rc, t);
  }
  for (int k = 0; k < s->tab->nparams; k++) grad[k] += d->pbar[k];
  return DSK_OK;
}

/* grad += c (dF/dp)^T w at (t, y) */
static int add_fp(dsk_solver *s, struct dsk_discrete *d, double t, const double *yv,
                  const double *w, double c, double *grad, dsk_status *st) {
  int np = s->tab->nparams;
  if (np == 0) return DSK_OK;
  int rc = s->tab->vjp_p[DSK_FN_RHS](t, yv, w, s->ws, d->bws, d->pw);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of F returned %d at t = %g", rc, t);
  }
  for (int k = 0; k < np; k++) grad[k] += c * d->pw[k];
  return DSK_OK;
}

int dsk_discrete_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st) {
  struct dsk_discrete *d = s->disc;
  int n = s->n, np = s->tab->nparams, nt = d->nt, rc = DSK_OK, jlast = -1;
  for (int k = 0; k < np; k++) grad[k] = 0.0;
  s->stats.backward_steps = s->stats.backward_restarts = 0;
  for (int jj = nt - 1; jj >= 0 && jlast < 0; jj--)
    if (column(s, g, nt, jj)) jlast = jj;
  if (jlast < 0) return DSK_OK; /* a zero gradient costs nothing */
  int j = jlast;
  long last = d->ostep[jlast];
  memset(d->zb, 0, (size_t)(QMAX + 2) * (size_t)n * sizeof(double));
  memset(d->sb, 0, (size_t)n * sizeof(double));
  for (long m = last; m >= 1 && rc == DSK_OK; m--) {
    const struct dstep *p = &d->st[m];
    const double *ym = d->ys + (size_t)m * (size_t)n;
    int q = p->q;
    for (; rc == DSK_OK && j >= 0 && d->ostep[j] == m; j--) {
      if (!column(s, g, nt, j)) continue;
      rc = out_term(s, d, j, grad, st);
      double sj = (d->times[j] - p->t) / p->h, pw = 1.0;
      for (int k = 0; k <= q && rc == DSK_OK; k++, pw *= sj)
        for (int i = 0; i < n; i++) Z(d->zb, k)[i] += pw * d->ub[i];
    }
    if (rc != DSK_OK) break;
    /* (e) and (d) */
    for (int i = 0; i < n; i++) {
      double a = d->sb[i];
      for (int k = 0; k <= q; k++) a += p->l[k] * Z(d->zb, k)[i];
      d->ab[i] = a;
    }
    rc = tsolve(s, d, p->t, ym, p->gamma, d->ab, d->w, st);
    if (rc == DSK_OK) rc = add_fp(s, d, p->t, ym, d->w, p->gamma, grad, st);
    if (rc != DSK_OK) break;
    for (int i = 0; i < n; i++) {
      Z(d->zb, 0)[i] += d->w[i] - d->ab[i];
      Z(d->zb, 1)[i] -= p->rl1 * d->w[i];
    }
    /* (c) */
    for (int k = q; k >= 1; k--)
      for (int jj = k; jj <= q; jj++)
        for (int i = 0; i < n; i++) Z(d->zb, jj)[i] += Z(d->zb, jj - 1)[i];
    /* (b) */
    double e = 1.0;
    for (int jj = 1; jj <= q; jj++) {
      e *= p->eta;
      for (int i = 0; i < n; i++) Z(d->zb, jj)[i] *= e;
    }
    /* (a) */
    memset(d->sb, 0, (size_t)n * sizeof(double));
    if (p->dq == 1) {
      int q0 = q - 1;
      double *zq = Z(d->zb, q);
      for (int jj = 2; jj <= q0; jj++)
        for (int i = 0; i < n; i++) zq[i] += p->c[jj] * Z(d->zb, jj)[i];
      for (int i = 0; i < n; i++) d->sb[i] = p->a1 * zq[i], zq[i] = 0.0;
    } else if (p->dq == -1) {
      int q0 = q + 1;
      double *zq = Z(d->zb, q0);
      for (int i = 0; i < n; i++) zq[i] = 0.0;
      for (int jj = 2; jj < q0; jj++)
        for (int i = 0; i < n; i++) zq[i] -= p->c[jj] * Z(d->zb, jj)[i];
    }
  }
  /* outputs at t0, then z at t0 = [y0, h_1 F(t0, y0)] */
  for (; rc == DSK_OK && j >= 0; j--) {
    if (!column(s, g, nt, j)) continue;
    rc = out_term(s, d, j, grad, st);
    for (int i = 0; rc == DSK_OK && i < n; i++) Z(d->zb, 0)[i] += d->ub[i];
  }
  if (rc == DSK_OK && last >= 1) {
    double h1 = d->st[1].h;
    int frc = s->tab->vjp_x[DSK_FN_RHS](s->opt.t0, d->ys, Z(d->zb, 1), s->ws, d->bws, d->ub);
    if (frc) {
      st->t = s->opt.t0;
      return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of F returned %d at t0", frc);
    }
    for (int i = 0; i < n; i++) Z(d->zb, 0)[i] += h1 * d->ub[i];
    rc = add_fp(s, d, s->opt.t0, d->ys, Z(d->zb, 1), h1, grad, st);
  }
  if (rc == DSK_OK && np > 0) {
    int frc = s->tab->vjp_p[DSK_FN_U0](s->opt.t0, NULL, Z(d->zb, 0), s->ws, d->bws, d->pbar);
    if (frc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of u0 returned %d", frc);
    for (int k = 0; k < np; k++) grad[k] += d->pbar[k];
  }
  s->stats.backward_steps = last;
  s->stats.backward_restarts = 0;
  return rc;
}

int dsk_discrete_recorded(const dsk_solver *s) {
  return s->disc && s->disc->generation >= 0 && s->disc->generation == s->generation;
}

int dsk_solver_discrete_adjoint(const dsk_solver *s) {
  return s && s->opt.adjoint_discrete && dsk_discrete_supported(s);
}

int dsk_solver_discrete_recorded(const dsk_solver *s) { return s && dsk_discrete_recorded(s); }
