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
#include <sunmatrix/sunmatrix_dense.h>

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
  const double p[2] = {0.5, 1.0}, times[2] = {0.0, 0.01};
  rc = dsk_solver_solve_dense(s, p, times, 2, y, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  double y2[400];
  rc = dsk_solver_solve_dense(s, p, times, 2, y2, &st); /* reuse: identical */
  CHECK(rc == DSK_OK && memcmp(y, y2, sizeof y2) == 0);
  dsk_solver_free(s);
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
  test_tsit5_table();
  if (!mkdtemp(root)) {
    CHECK(!"mkdtemp failed");
    return;
  }
  test_heat_klu(root);
  test_dae_and_events(root);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  CHECK(system(cmd) == 0);
}
