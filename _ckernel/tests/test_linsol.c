/* test_linsol.c - the LAPACK linear solver, the Tsitouras 5(4) table, and the
   solvers on compiled DiffSL models: KLU against dense on the heat equation,
   IDAS on Robertson's DAE, events on the dosing model. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* mkdtemp */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arkode/arkode_butcher.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "../solve.h"
#include "runner.h"

void suite_linsol(void);
ARKodeButcherTable dsk_tsit5_table(void);

static void test_lapack(void) {
  SUNContext ctx = NULL;
  CHECK(SUNContext_Create(NULL, &ctx) == 0);
  if (!ctx) return;
  enum { N = 40 };
  N_Vector x = N_VNew_Serial(N, ctx), b = N_VNew_Serial(N, ctx);
  SUNMatrix A = SUNDenseMatrix(N, N, ctx);
  SUNLinearSolver LS = dsk_linsol_lapack(x, A, ctx);
  CHECK(x && b && A && LS);
  if (x && b && A && LS) {
    double xt[N];
    unsigned seed = 12345u;
    for (int j = 0; j < N; j++) {
      for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        SM_ELEMENT_D(A, i, j) = ((double)(seed >> 8) / 16777216.0) - 0.5 + (i == j ? 5.0 : 0.0);
      }
      xt[j] = sin(1.0 + j);
    }
    for (int i = 0; i < N; i++) {
      double s = 0;
      for (int j = 0; j < N; j++) s += SM_ELEMENT_D(A, i, j) * xt[j];
      NV_Ith_S(b, i) = s;
    }
    CHECK(SUNLinSolGetType(LS) == SUNLINEARSOLVER_DIRECT);
    CHECK(SUNLinSolInitialize(LS) == SUNLS_SUCCESS);
    CHECK(SUNLinSolSetup(LS, A) == SUNLS_SUCCESS);
    CHECK(SUNLinSolSolve(LS, A, x, b, 0.0) == SUNLS_SUCCESS);
    double err = 0;
    for (int i = 0; i < N; i++) err = fmax(err, fabs(NV_Ith_S(x, i) - xt[i]));
    CHECK_MSG(err < 1e-12, "max error %g", err);
    /* in place: x == b */
    N_VScale(1.0, b, x);
    CHECK(SUNLinSolSolve(LS, A, x, x, 0.0) == SUNLS_SUCCESS);
    CHECK_CLOSE(NV_Ith_S(x, 7), xt[7], 1e-12);
    /* a singular matrix is a recoverable failure */
    SUNMatZero(A);
    for (int i = 0; i < N - 1; i++) SM_ELEMENT_D(A, i, i) = 1.0;
    int rc = SUNLinSolSetup(LS, A);
    CHECK(rc == SUNLS_LUFACT_FAIL && rc > 0);
    CHECK(SUNLinSolLastFlag(LS) == N);
    long lrw = -1, liw = -1;
    CHECK(SUNLinSolSpace(LS, &lrw, &liw) == SUNLS_SUCCESS && liw >= N);
  }
  /* wrong shapes are refused */
  SUNMatrix R = SUNDenseMatrix(N, N - 1, ctx);
  CHECK(dsk_linsol_lapack(x, R, ctx) == NULL);
  SUNMatDestroy(R);
  if (LS) SUNLinSolFree(LS);
  if (A) SUNMatDestroy(A);
  if (b) N_VDestroy(b);
  if (x) N_VDestroy(x);
  SUNContext_Free(&ctx);
}

/* Runge-Kutta order conditions up to order 5 for weights w. */
static void order_residuals(ARKodeButcherTable B, const double *w, double res[17]) {
  int s = B->stages;
  double c[8], Ac[8], Ac2[8], Ac3[8], AAc[8], AcAc[8], AAc2[8], AAAc[8];
#define A_(i, j) B->A[i][j]
  for (int i = 0; i < s; i++) c[i] = B->c[i];
  for (int i = 0; i < s; i++) {
    Ac[i] = Ac2[i] = Ac3[i] = 0;
    for (int j = 0; j < s; j++)
      Ac[i] += A_(i, j) * c[j], Ac2[i] += A_(i, j) * c[j] * c[j], Ac3[i] += A_(i, j) * pow(c[j], 3);
  }
  for (int i = 0; i < s; i++) {
    AAc[i] = AcAc[i] = AAc2[i] = 0;
    for (int j = 0; j < s; j++)
      AAc[i] += A_(i, j) * Ac[j], AcAc[i] += A_(i, j) * c[j] * Ac[j], AAc2[i] += A_(i, j) * Ac2[j];
  }
  for (int i = 0; i < s; i++) {
    AAAc[i] = 0;
    for (int j = 0; j < s; j++) AAAc[i] += A_(i, j) * AAc[j];
  }
#undef A_
  double sum[17] = {0};
  const double want[17] = {1,       1. / 2,  1. / 3,  1. / 6,  1. / 4,  1. / 8,
                           1. / 12, 1. / 24, 1. / 5,  1. / 10, 1. / 15, 1. / 30,
                           1. / 20, 1. / 20, 1. / 40, 1. / 60, 1. / 120};
  for (int i = 0; i < s; i++) {
    double v[17] = {1,        c[i],        c[i] * c[i], Ac[i],       pow(c[i], 3),
                    c[i] * Ac[i], Ac2[i],  AAc[i],      pow(c[i], 4), c[i] * c[i] * Ac[i],
                    c[i] * Ac2[i], c[i] * AAc[i], Ac[i] * Ac[i], Ac3[i], AcAc[i],
                    AAc2[i],  AAAc[i]};
    for (int k = 0; k < 17; k++) sum[k] += w[i] * v[k];
  }
  for (int k = 0; k < 17; k++) res[k] = sum[k] - want[k];
}

static void test_tsit5_table(void) {
  ARKodeButcherTable B = dsk_tsit5_table();
  CHECK(B != NULL);
  if (!B) return;
  CHECK(B->stages == 7 && B->q == 5 && B->p == 4);
  for (int i = 0; i < 7; i++) { /* rows sum to c; explicit */
    double r = 0;
    for (int j = 0; j < 7; j++) r += B->A[i][j];
    CHECK_MSG(fabs(r - B->c[i]) < 1e-14, "row %d", i);
    for (int j = i; j < 7; j++) CHECK(B->A[i][j] == 0.0);
  }
  double res[17];
  order_residuals(B, B->b, res); /* b: all 17 conditions of order <= 5 */
  for (int k = 0; k < 17; k++) CHECK_MSG(fabs(res[k]) < 1e-14, "b, condition %d: %g", k, res[k]);
  order_residuals(B, B->d, res); /* bhat: the 8 of order <= 4, not all of order 5 */
  double worst5 = 0;
  for (int k = 0; k < 8; k++) CHECK_MSG(fabs(res[k]) < 1e-14, "d, condition %d: %g", k, res[k]);
  for (int k = 8; k < 17; k++) worst5 = fmax(worst5, fabs(res[k]));
  CHECK(worst5 > 1e-5);
  int q = 0, p = 0;
  CHECK(ARKodeButcherTable_CheckOrder(B, &q, &p, NULL) >= 0);
  CHECK_MSG(q == 5 && p == 4, "q %d p %d", q, p);
  ARKodeButcherTable_Free(B);
}

static const char heat_src[] =
    "in_i { kappa = 0.5, tb = 1.0 }\n"
    "dx { 1.0 / 201.0 }\n"
    "L_ij { (0..200, 0..200): -2.0, (0..199, 1..200): 1.0, (1..200, 0..199): 1.0 }\n"
    "b_i { (0): tb, (1:199): 0.0, (199): tb }\n"
    "u_i { (0:80): 0.0, (80:120): 2.0, (120:200): 0.0 }\n"
    "lap_i { L_ij * u_j }\n"
    "F_i { kappa * (lap_i + b_i) / (dx * dx) }\n";

static void heat_with(const dsk_model *m, int ls, const char *name, double *y) {
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  o.rtol = 1e-8;
  o.atol = 1e-10;
  o.linear_solver = ls;
  dsk_solver *s = NULL;
  dsk_status st;
  int rc = dsk_solver_create(m, &o, &s, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  if (!s) return;
  CHECK_MSG(strcmp(dsk_solver_linsol_name(s), name) == 0, "%s vs %s", dsk_solver_linsol_name(s),
            name);
  if (s->linsol == DSK_LS_KLU) /* AMD (KLU's default), not SUNDIALS' COLAMD */
    CHECK(SUNLinSol_KLUGetCommon(s->LS) && SUNLinSol_KLUGetCommon(s->LS)->ordering == 0);
  const double p[2] = {0.5, 1.0}, times[2] = {0.0, 0.01};
  rc = dsk_solver_solve_dense(s, p, times, 2, y, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  dsk_stats stats;
  dsk_solver_stats(s, &stats);
  /* CVODES reuses the Jacobian between linear setups (SUNDIALS' default) */
  CHECK_MSG(stats.jac_evals < stats.lin_setups, "%ld Jacobians, %ld setups", stats.jac_evals,
            stats.lin_setups);
  double y2[400];
  rc = dsk_solver_solve_dense(s, p, times, 2, y2, &st); /* reuse: identical */
  CHECK(rc == DSK_OK && memcmp(y, y2, sizeof y2) == 0);
  dsk_solver_free(s);
}

/* nvec_ops.c: every replaced operation gives nvector_serial's result bit
   for bit (also in place, and the fused ones against the serial fused ones),
   and clones inherit the operations. */
static int same_bits(N_Vector a, N_Vector b) {
  return memcmp(NV_DATA_S(a), NV_DATA_S(b), (size_t)NV_LENGTH_S(a) * sizeof(double)) == 0;
}

static void fill(N_Vector v, N_Vector w, unsigned *seed) {
  for (sunindextype i = 0; i < NV_LENGTH_S(v); i++) {
    *seed = *seed * 1103515245u + 12345u;
    double x = ((double)(*seed >> 8) / 16777216.0 - 0.3) * 7.0;
    NV_Ith_S(v, i) = x;
    if (w) NV_Ith_S(w, i) = x;
  }
}

static void test_nvec_ops(void) {
  SUNContext ctx = NULL;
  CHECK(SUNContext_Create(NULL, &ctx) == 0);
  if (!ctx) return;
  static const double cs[] = {1.0, -1.0, 0.0, 2.5, -2.5, 0.3, 1e-3};
  enum { NC = sizeof cs / sizeof cs[0] };
  int sizes[] = {1, 3, 7, 1001};
  unsigned seed = 4321u;
  for (int k = 0; k < 4; k++) {
    int n = sizes[k];
    N_Vector x = N_VNew_Serial(n, ctx), y = N_VNew_Serial(n, ctx), z = N_VNew_Serial(n, ctx);
    N_Vector t = N_VNew_Serial(n, ctx);
    N_Vector xs = NULL, ys = NULL, zs = NULL, ws = NULL;
    if (t) dsk_nvec_tune(t);
    if (t) xs = N_VClone(t), ys = N_VClone(t), zs = N_VClone(t), ws = N_VClone(t);
    CHECK(x && y && z && t && xs && ys && zs && ws);
    if (!(x && y && z && t && xs && ys && zs && ws)) break;
    CHECK(t->ops->nvlinearsum != N_VLinearSum_Serial);
    CHECK(xs->ops->nvlinearsum == t->ops->nvlinearsum); /* clones inherit */
    CHECK(xs->ops->nvlinearcombination != NULL && xs->ops->nvscaleaddmulti != NULL);
    fill(x, xs, &seed), fill(y, ys, &seed), fill(z, zs, &seed);
    for (int i = 0; i < n; i++) NV_Ith_S(ws, i) = 1.0 / (1.0 + fabs(NV_Ith_S(ys, i)));
    int bad = 0;
    for (int a = 0; a < NC; a++)
      for (int b = 0; b < NC; b++) {
        /* out of place, z = x and z = y */
        N_VLinearSum_Serial(cs[a], x, cs[b], y, z);
        N_VLinearSum(cs[a], xs, cs[b], ys, zs);
        bad += !same_bits(z, zs);
        N_Vector z2 = N_VClone(z), zs2 = N_VClone(zs);
        if (!z2 || !zs2) {
          bad++;
        } else {
          N_VScale_Serial(1.0, x, z2), N_VScale_Serial(1.0, xs, zs2);
          N_VLinearSum_Serial(cs[a], z2, cs[b], y, z2);
          N_VLinearSum(cs[a], zs2, cs[b], ys, zs2);
          bad += !same_bits(z2, zs2);
          N_VScale_Serial(1.0, y, z2), N_VScale_Serial(1.0, ys, zs2);
          N_VLinearSum_Serial(cs[a], x, cs[b], z2, z2);
          N_VLinearSum(cs[a], xs, cs[b], zs2, zs2);
          bad += !same_bits(z2, zs2);
        }
        if (z2) N_VDestroy(z2);
        if (zs2) N_VDestroy(zs2);
      }
    CHECK_MSG(bad == 0, "n = %d: %d linear sums differ from nvector_serial", n, bad);
    for (int a = 0; a < NC; a++) {
      N_VScale_Serial(cs[a], x, z), N_VScale(cs[a], xs, zs);
      CHECK(same_bits(z, zs));
      N_VAddConst_Serial(x, cs[a], z), N_VAddConst(xs, cs[a], zs);
      CHECK(same_bits(z, zs));
      N_VConst_Serial(cs[a], z), N_VConst(cs[a], zs);
      CHECK(same_bits(z, zs));
    }
    N_VProd_Serial(x, y, z), N_VProd(xs, ys, zs);
    CHECK(same_bits(z, zs));
    N_VDiv_Serial(x, y, z), N_VDiv(xs, ys, zs);
    CHECK(same_bits(z, zs));
    N_VAbs_Serial(x, z), N_VAbs(xs, zs);
    CHECK(same_bits(z, zs));
    N_VInv_Serial(x, z), N_VInv(xs, zs);
    CHECK(same_bits(z, zs));
    CHECK(N_VDotProd_Serial(x, y) == N_VDotProd(xs, ys));
    CHECK(N_VMaxNorm_Serial(x) == N_VMaxNorm(xs));
    CHECK(N_VMin_Serial(x) == N_VMin(xs));
    N_VScale_Serial(1.0, ws, z);
    CHECK(N_VWrmsNorm_Serial(x, z) == N_VWrmsNorm(xs, ws));
    N_VScale_Serial(1.0, y, t); /* the mask: entries of y > 0 */
    CHECK(N_VWrmsNormMask_Serial(x, z, t) == N_VWrmsNormMask(xs, ws, ys));
    /* fused operations against the serial fused ones */
    N_Vector X[4] = {x, y, z, t}, Xs[4] = {xs, ys, zs, ws};
    N_VScale_Serial(1.0, ws, t);
    N_VScale_Serial(1.0, z, zs); /* the same four vectors on both sides */
    double c4[4] = {1.0, -0.5, 2.0, 0.25};
    N_Vector r = N_VClone(x), rs = N_VClone(xs);
    if (r && rs) {
      for (int nv = 1; nv <= 4; nv++) {
        N_VLinearCombination_Serial(nv, c4, X, r);
        N_VLinearCombination(nv, c4, Xs, rs);
        CHECK_MSG(same_bits(r, rs), "linear combination of %d vectors", nv);
      }
      N_VScale_Serial(1.0, x, r), N_VScale_Serial(1.0, xs, rs); /* in place, c[0] != 1 */
      X[0] = r, Xs[0] = rs, c4[0] = 0.7;
      N_VLinearCombination_Serial(3, c4, X, r);
      N_VLinearCombination(3, c4, Xs, rs);
      CHECK(same_bits(r, rs));
      X[0] = x, Xs[0] = xs;
      N_VScaleAddMulti_Serial(3, c4, x, X + 1, X + 1);
      N_VScaleAddMulti(3, c4, xs, Xs + 1, Xs + 1);
      CHECK(same_bits(y, ys) && same_bits(z, zs) && same_bits(t, ws));
      double c1[1] = {1.0};
      N_VScaleAddMulti_Serial(1, c1, x, X + 1, &r);
      N_VScaleAddMulti(1, c1, xs, Xs + 1, &rs);
      CHECK(same_bits(r, rs));
      N_VScaleVectorArray_Serial(3, c4, X, X);
      N_VScaleVectorArray(3, c4, Xs, Xs);
      CHECK(same_bits(x, xs) && same_bits(y, ys) && same_bits(z, zs));
    }
    if (r) N_VDestroy(r);
    if (rs) N_VDestroy(rs);
    N_VDestroy(x), N_VDestroy(y), N_VDestroy(z), N_VDestroy(t);
    N_VDestroy(xs), N_VDestroy(ys), N_VDestroy(zs), N_VDestroy(ws);
  }
  dsk_nvec_tune(NULL); /* no-op */
  SUNContext_Free(&ctx);
}

/* nvec_ops.c, vector arrays (the sensitivity vectors): against nvector_serial's
   vector-array operations, bit for bit, for 1-3 vectors and 1-5 terms. */
enum { NA_VEC = 3, NA_SUM = 5 };
typedef struct {
  N_Vector x[NA_VEC], w[NA_VEC], z[NA_VEC], y[NA_SUM][NA_VEC], o[NA_SUM][NA_VEC], id;
} vec_set;

static int vec_set_new(vec_set *v, int n, N_Vector tmpl, SUNContext ctx) {
  N_Vector *all = (N_Vector *)v;
  int total = (int)(sizeof *v / sizeof(N_Vector)), ok = 1;
  for (int i = 0; i < total; i++) {
    all[i] = tmpl ? N_VClone(tmpl) : N_VNew_Serial(n, ctx);
    ok &= all[i] != NULL;
  }
  return ok;
}

static void vec_set_free(vec_set *v) {
  N_Vector *all = (N_Vector *)v;
  for (int i = 0; i < (int)(sizeof *v / sizeof(N_Vector)); i++)
    if (all[i]) N_VDestroy(all[i]);
}

/* the same values in both sets (weights positive, the mask of both signs) */
static void vec_set_fill(vec_set *r, vec_set *s, unsigned *seed) {
  N_Vector *a = (N_Vector *)r, *b = (N_Vector *)s;
  for (int i = 0; i < (int)(sizeof *r / sizeof(N_Vector)); i++) fill(a[i], b[i], seed);
  for (int i = 0; i < NA_VEC; i++)
    for (sunindextype k = 0; k < NV_LENGTH_S(r->w[i]); k++)
      NV_Ith_S(r->w[i], k) = NV_Ith_S(s->w[i], k) = 1.0 / (1.0 + fabs(NV_Ith_S(r->w[i], k)));
}

static int vec_set_same(vec_set *r, vec_set *s) {
  N_Vector *a = (N_Vector *)r, *b = (N_Vector *)s;
  for (int i = 0; i < (int)(sizeof *r / sizeof(N_Vector)); i++)
    if (!same_bits(a[i], b[i])) return 0;
  return 1;
}

static void test_nvec_array_ops(void) {
  SUNContext ctx = NULL;
  CHECK(SUNContext_Create(NULL, &ctx) == 0);
  if (!ctx) return;
  static const double cs[] = {1.0, -1.0, 2.5, -2.5, 0.3};
  unsigned seed = 99u;
  int sizes[] = {1, 3, 257};
  for (int q = 0; q < 3; q++) {
    int n = sizes[q], bad = 0;
    N_Vector t = N_VNew_Serial(n, ctx);
    vec_set r, s;
    memset(&r, 0, sizeof r), memset(&s, 0, sizeof s);
    if (t) dsk_nvec_tune(t);
    int ok = t && vec_set_new(&r, n, NULL, ctx) && vec_set_new(&s, n, t, ctx);
    CHECK(ok);
    if (ok) {
      CHECK(s.x[0]->ops->nvscaleaddmultivectorarray != N_VScaleAddMultiVectorArray_Serial);
      for (int nv = 1; nv <= NA_VEC; nv++) {
        double nr[NA_VEC], ns[NA_VEC];
        for (int a = 0; a < 5; a++)
          for (int b = 0; b < 5; b++) {
            vec_set_fill(&r, &s, &seed);
            N_VLinearSumVectorArray_Serial(nv, cs[a], r.x, cs[b], r.w, r.z);
            N_VLinearSumVectorArray(nv, cs[a], s.x, cs[b], s.w, s.z);
            bad += !vec_set_same(&r, &s);
          }
        N_VConstVectorArray_Serial(nv, 0.7, r.z), N_VConstVectorArray(nv, 0.7, s.z);
        bad += !vec_set_same(&r, &s);
        N_VWrmsNormVectorArray_Serial(nv, r.x, r.w, nr), N_VWrmsNormVectorArray(nv, s.x, s.w, ns);
        for (int i = 0; i < nv; i++) bad += nr[i] != ns[i];
        N_VWrmsNormMaskVectorArray_Serial(nv, r.x, r.w, r.id, nr);
        N_VWrmsNormMaskVectorArray(nv, s.x, s.w, s.id, ns);
        for (int i = 0; i < nv; i++) bad += nr[i] != ns[i];
        for (int ns_ = 1; ns_ <= NA_SUM; ns_++) {
          double c[NA_SUM] = {0.3, -1.0, 1.0, 2.5, -0.25};
          N_Vector *Yr[NA_SUM], *Ys[NA_SUM], *Or[NA_SUM], *Os[NA_SUM];
          for (int j = 0; j < NA_SUM; j++)
            Yr[j] = r.y[j], Ys[j] = s.y[j], Or[j] = r.o[j], Os[j] = s.o[j];
          for (int inplace = 0; inplace < 2; inplace++) {
            vec_set_fill(&r, &s, &seed);
            N_VScaleAddMultiVectorArray_Serial(nv, ns_, c, r.x, Yr, inplace ? Yr : Or);
            N_VScaleAddMultiVectorArray(nv, ns_, c, s.x, Ys, inplace ? Ys : Os);
            bad += !vec_set_same(&r, &s);
            /* linear combinations: out of place, and in place with c[0] 1 or not */
            N_Vector *Xr[NA_SUM], *Xs[NA_SUM];
            for (int j = 0; j < NA_SUM; j++) Xr[j] = r.y[j], Xs[j] = s.y[j];
            if (inplace) Xr[0] = r.z, Xs[0] = s.z;
            c[0] = inplace ? 1.0 : 0.3;
            for (int rep = 0; rep < 2; rep++) {
              N_VLinearCombinationVectorArray_Serial(nv, ns_, c, Xr, r.z);
              N_VLinearCombinationVectorArray(nv, ns_, c, Xs, s.z);
              bad += !vec_set_same(&r, &s);
              c[0] = 0.7;
            }
          }
        }
      }
      CHECK_MSG(bad == 0, "n = %d: %d vector-array results differ from nvector_serial", n, bad);
    }
    vec_set_free(&r), vec_set_free(&s);
    if (t) N_VDestroy(t);
  }
  SUNContext_Free(&ctx);
}

/* nvec_ops.c, matrices: zero, copy, c A + I and clone against sunmatrix_dense
   and sunmatrix_sparse, bit for bit (a sparse matrix without a stored
   diagonal entry takes SUNDIALS' own c A + I). */
static int same_sparse(SUNMatrix a, SUNMatrix b) {
  sunindextype nz = SM_INDEXPTRS_S(a)[SM_NP_S(a)];
  return SM_INDEXPTRS_S(b)[SM_NP_S(b)] == nz &&
         memcmp(SM_INDEXPTRS_S(a), SM_INDEXPTRS_S(b), (SM_NP_S(a) + 1) * sizeof(sunindextype)) == 0 &&
         memcmp(SM_INDEXVALS_S(a), SM_INDEXVALS_S(b), nz * sizeof(sunindextype)) == 0 &&
         memcmp(SM_DATA_S(a), SM_DATA_S(b), nz * sizeof(double)) == 0;
}

static void test_mat_ops(void) {
  SUNContext ctx = NULL;
  CHECK(SUNContext_Create(NULL, &ctx) == 0);
  if (!ctx) return;
  enum { N = 6 };
  SUNMatrix d = SUNDenseMatrix(N, N, ctx), dt = SUNDenseMatrix(N, N, ctx);
  CHECK(d && dt);
  if (d && dt) {
    dsk_mat_tune(dt);
    SUNMatrix dc = SUNMatClone(dt), ds = SUNMatClone(d);
    CHECK(dc && ds && dc->ops->scaleaddi == dt->ops->scaleaddi);
    unsigned seed = 99u;
    for (int j = 0; j < N; j++)
      for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        SM_ELEMENT_D(d, i, j) = SM_ELEMENT_D(dt, i, j) = (double)(seed >> 8) / 1677721.6 - 3.3;
      }
    SUNMatScaleAddI_Dense(-0.37, d), SUNMatScaleAddI(-0.37, dt);
    CHECK(memcmp(SM_DATA_D(d), SM_DATA_D(dt), N * N * sizeof(double)) == 0);
    if (dc && ds) {
      SUNMatCopy_Dense(d, ds), SUNMatCopy(dt, dc);
      CHECK(memcmp(SM_DATA_D(ds), SM_DATA_D(dc), N * N * sizeof(double)) == 0);
      SUNMatZero(dc);
      double zero[N * N] = {0};
      CHECK(memcmp(SM_DATA_D(dc), zero, sizeof zero) == 0);
    }
    if (dc) SUNMatDestroy(dc);
    if (ds) SUNMatDestroy(ds);
  }
  if (d) SUNMatDestroy(d);
  if (dt) SUNMatDestroy(dt);
  /* sparse: a tridiagonal pattern, then one without the (2, 2) entry */
  for (int miss = 0; miss < 2; miss++) {
    SUNMatrix a = SUNSparseMatrix(N, N, 3 * N, CSC_MAT, ctx);
    SUNMatrix at = SUNSparseMatrix(N, N, 3 * N, CSC_MAT, ctx);
    CHECK(a && at);
    if (a && at) {
      dsk_mat_tune(at);
      SUNMatrix m2[2] = {a, at};
      for (int q = 0; q < 2; q++) {
        sunindextype nz = 0;
        for (int j = 0; j < N; j++) {
          SM_INDEXPTRS_S(m2[q])[j] = nz;
          for (int i = j - 1; i <= j + 1; i++) {
            if (i < 0 || i >= N || (miss && i == 2 && j == 2)) continue;
            SM_INDEXVALS_S(m2[q])[nz] = i;
            SM_DATA_S(m2[q])[nz++] = 0.5 + i - 0.25 * j;
          }
        }
        SM_INDEXPTRS_S(m2[q])[N] = nz;
      }
      SUNMatrix b = SUNMatClone(a), bt = SUNMatClone(at);
      CHECK(b && bt && bt->ops->copy == at->ops->copy);
      if (b && bt) {
        SUNMatCopy_Sparse(a, b), SUNMatCopy(at, bt);
        CHECK(same_sparse(b, bt));
        SUNMatScaleAddI_Sparse(2.5, b), SUNMatScaleAddI(2.5, bt);
        CHECK_MSG(same_sparse(b, bt), "missing diagonal: %d", miss);
        SUNMatZero_Sparse(b), SUNMatZero(bt);
        CHECK(SM_INDEXPTRS_S(bt)[N] == 0 && same_sparse(b, bt));
      }
      if (b) SUNMatDestroy(b);
      if (bt) SUNMatDestroy(bt);
    }
    if (a) SUNMatDestroy(a);
    if (at) SUNMatDestroy(at);
  }
  dsk_mat_tune(NULL); /* no-op */
  SUNContext_Free(&ctx);
}

static void test_heat_klu(const char *root) {
  dsk_jit_options jo = {root, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  int rc = dsk_model_compile(heat_src, &jo, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  if (!m) return;
  CHECK(dsk_model_jac_pattern(m)->nnz == 3 * 200 - 2);
  static double yk[400], yl[400], yd[400], ya[400];
  heat_with(m, DSK_LS_KLU, "klu", yk);
  heat_with(m, DSK_LS_LAPACK, "lapack", yl);
  heat_with(m, DSK_LS_SUNDENSE, "dense", yd);
  heat_with(m, DSK_LS_AUTO, "klu", ya);
  double d1 = 0, d2 = 0;
  for (int i = 0; i < 400; i++) d1 = fmax(d1, fabs(yk[i] - yl[i])), d2 = fmax(d2, fabs(yk[i] - yd[i]));
  CHECK_MSG(d1 < 1e-9 && d2 < 1e-9, "klu vs lapack %g, vs dense %g", d1, d2);
  CHECK(memcmp(yk, ya, sizeof yk) == 0);
  dsk_model_free(m);
}

/* dsk_lin_jac_norm1: the largest column sum of |J| (the stiffness test of
   solve_cvodes.c), J = [[-2, 1], [3, -7 b]] at b = 1, 2: columns 5 and 8
   (the largest row sum would be 10), then 5 and 15. */
static void test_jac_norm1(const char *root) {
  dsk_jit_options jo = {root, NULL};
  dsk_model *m = NULL;
  dsk_solver *s = NULL;
  dsk_status st;
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  int rc = dsk_model_compile("in_i { k = 1.0 }\nu_i { a = 1, b = 1 }\n"
                             "F_i { -2 * a + b, 3 * a - 3.5 * k * b * b }\n",
                             &jo, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  if (m) rc = dsk_solver_create(m, &o, &s, &st);
  CHECK_MSG(!m || rc == DSK_OK, "%s", st.msg);
  if (s) {
    const double p[1] = {1.0};
    double y[2];
    const double times[1] = {0.0};
    CHECK(dsk_solver_solve_dense(s, p, times, 1, y, &st) == DSK_OK); /* sets the parameters */
    double u[2] = {1.0, 1.0};
    CHECK(dsk_lin_eval_jac(s, 0.0, u) == 0);
    CHECK_MSG(dsk_lin_jac_norm1(s) == 8.0, "%g", dsk_lin_jac_norm1(s));
    u[1] = 2.0;
    CHECK(dsk_lin_eval_jac(s, 0.0, u) == 0);
    CHECK_MSG(dsk_lin_jac_norm1(s) == 15.0, "%g", dsk_lin_jac_norm1(s));
  }
  dsk_solver_free(s);
  dsk_model_free(m);
}

static void test_dae_and_events(const char *root) {
  static const char rob[] =
      "in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\n"
      "u_i { a = 1, b = 0, c = 0 }\n"
      "dudt_i { dadt = 1, dbdt = 0, dcdt = 0 }\n"
      "M_i { dadt, dbdt, 0 }\n"
      "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, 1 - a - b - c }\n";
  static const char dosing[] =
      "in_i { cl = 2.0, vol = 10.0 }\n"
      "tdose_i { 4.0, 8.0, 12.0 }\n"
      "amt_i { 50.0, 50.0, 50.0 }\n"
      "u_i { q = 50.0 }\n"
      "F_i { -cl / vol * q }\n"
      "stop_i { tdose_i - t }\n"
      "reset_i { q + amt_i[N] }\n";
  dsk_jit_options jo = {root, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  o.rtol = 1e-10;
  o.atol = 1e-14;
  int rc = dsk_model_compile(rob, &jo, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  if (m) {
    dsk_solver *s = NULL;
    rc = dsk_solver_create(m, &o, &s, &st);
    CHECK_MSG(rc == DSK_OK, "%s", st.msg);
    if (s) {
      CHECK(strcmp(dsk_solver_integrator_name(s), "IDAS BDF") == 0);
      const double p[3] = {0.04, 1e4, 3e7}, times[2] = {0.0, 40.0};
      double y[6];
      rc = dsk_solver_solve_dense(s, p, times, 2, y, &st);
      CHECK_MSG(rc == DSK_OK, "%s", st.msg);
      CHECK_CLOSE(y[0 * 2 + 1], 0.7158270687, 1e-6);
      CHECK_CLOSE(y[2 * 2 + 1], 0.2841637457, 1e-6);
      dsk_solver_free(s);
    }
    o.method = DSK_TSIT45;
    s = (dsk_solver *)&st;
    CHECK(dsk_solver_create(m, &o, &s, &st) == DSK_E_ARG && s == NULL);
    CHECK_CONTAINS(st.msg, "method='bdf'");
    dsk_model_free(m);
  }
  m = NULL;
  rc = dsk_model_compile(dosing, &jo, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  for (int method = 0; m && method < DSK_NMETHODS; method++) {
    dsk_solver *s = NULL;
    o.method = method;
    o.rtol = 1e-9;
    o.atol = 1e-10;
    rc = dsk_solver_create(m, &o, &s, &st);
    if (method == DSK_TR_BDF2) { /* linear dense output: events refused */
      CHECK(rc == DSK_E_ARG && s == NULL);
      CHECK_CONTAINS(st.msg, "esdirk34");
      continue;
    }
    CHECK_MSG(rc == DSK_OK, "%s", st.msg);
    if (!s) continue;
    const double p[2] = {2.0, 10.0}, times[5] = {0.0, 4.0, 6.0, 12.0, 14.0};
    double y[5];
    rc = dsk_solver_solve_dense(s, p, times, 5, y, &st);
    CHECK_MSG(rc == DSK_OK, "%s", st.msg);
    for (int j = 0; j < 5; j++) {
      double t = times[j], q = 50 * exp(-0.2 * t);
      for (int d = 4; d <= 12; d += 4)
        if (t >= d) q += 50 * exp(-0.2 * (t - d));
      CHECK_CLOSE(y[j], q, 1e-6);
    }
    dsk_stats stats;
    dsk_solver_stats(s, &stats);
    CHECK(stats.events == 3);
    CHECK(dsk_solver_last_stop(s, NULL, NULL) == 0);
    int nt = 0;
    const double *ts = NULL, *ys = NULL;
    rc = dsk_solver_solve(s, p, 16.0, &nt, &ts, &ys, &st);
    CHECK_MSG(rc == DSK_OK && nt > 10 && ts[0] == 0.0 && fabs(ts[nt - 1] - 16.0) < 1e-12, "%s",
              st.msg);
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

void suite_linsol(void) {
  char root[] = "/tmp/dsk_test_linsol_XXXXXX";
  test_lapack();
  test_nvec_ops();
  test_nvec_array_ops();
  test_mat_ops();
  test_tsit5_table();
  if (!mkdtemp(root)) {
    CHECK(!"mkdtemp failed");
    return;
  }
  test_heat_klu(root);
  test_jac_norm1(root);
  test_dae_and_events(root);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  CHECK(system(cmd) == 0);
}
