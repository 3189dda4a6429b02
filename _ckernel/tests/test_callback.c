/* test_callback.c - callback models (model_callback.c): solves and reverse-mode
   gradients of a pure-C exponential decay against the closed form, failures
   from a callback ending the solve cleanly, and what such a model refuses. */
#include <stdlib.h>

#include "../dsk.h"
#include "runner.h"

void suite_callback(void);

/* dy_i/dt = -k y_i (two independent states), theta = [k] */
typedef struct decay_user {
  int calls;      /* rhs calls */
  int fail_after; /* rhs returns fail_code after this many calls (0: never) */
  int fail_code;
  int vjp_calls, jac_calls;
  int vjp_fail;   /* vjp returns -3 */
} decay_user;

static int decay_rhs(void *user, double t, const double *y, const double *th, double *f) {
  decay_user *u = user;
  (void)t;
  u->calls++;
  if (u->fail_after && u->calls > u->fail_after) return u->fail_code;
  f[0] = -th[0] * y[0];
  f[1] = -th[0] * y[1];
  return 0;
}

static int decay_jac(void *user, double t, const double *y, const double *th, double *J) {
  (void)t, (void)y;
  ((decay_user *)user)->jac_calls++;
  J[0] = -th[0], J[1] = 0.0; /* column 0 */
  J[2] = 0.0, J[3] = -th[0]; /* column 1 */
  return 0;
}

static int decay_vjp(void *user, double t, const double *y, const double *th, const double *w,
                     double *ybar, double *thbar) {
  decay_user *u = user;
  (void)t;
  u->vjp_calls++;
  if (u->vjp_fail) return -3;
  ybar[0] = -th[0] * w[0];
  ybar[1] = -th[0] * w[1];
  thbar[0] = -(y[0] * w[0] + y[1] * w[1]);
  return 0;
}

static dsk_model *decay_model(decay_user *u, int with_jac) {
  dsk_callbacks cb;
  dsk_model *m = NULL;
  dsk_status st;
  memset(&cb, 0, sizeof cb);
  cb.user = u;
  cb.nstates = 2;
  cb.ntheta = 1;
  cb.rhs = decay_rhs;
  cb.jac = with_jac ? decay_jac : NULL;
  cb.vjp = decay_vjp;
  CHECK_MSG(dsk_model_from_callbacks(&cb, &m, &st) == DSK_OK, "%s", st.msg);
  return m;
}

static dsk_solver *make_solver(dsk_model *m, int method, dsk_status *st) {
  dsk_solver_options o;
  dsk_solver *s = NULL;
  dsk_solver_options_default(&o);
  o.method = method;
  o.rtol = 1e-10;
  o.atol = 1e-12;
  if (dsk_solver_create(m, &o, &s, st) != DSK_OK) return NULL;
  return s;
}

static void test_decay(void) {
  const int methods[4] = {DSK_BDF, DSK_ADAMS, DSK_TSIT45, DSK_ESDIRK34};
  for (int mi = 0; mi < 4; mi++) {
    decay_user u;
    memset(&u, 0, sizeof u);
    dsk_model *m = decay_model(&u, 1);
    dsk_status st;
    if (!m) return;
    CHECK(dsk_model_callbacks(m) != NULL && dsk_model_callbacks(m)->user == &u);
    CHECK(dsk_model_table(m)->nparams == 3);
    dsk_solver *s = make_solver(m, methods[mi], &st);
    CHECK_MSG(s != NULL, "%s", st.msg);
    if (!s) {
      dsk_model_free(m);
      continue;
    }
    const double k = 0.7, p[3] = {2.0, -0.5, k}, times[4] = {0.0, 0.5, 1.5, 3.0};
    const double g[8] = {0.3, -1.0, 0.0, 2.0, /* y0 row */ 1.0, 0.5, 0.25, -0.5};
    double y[8], grad[3], want[3] = {0, 0, 0};
    CHECK_MSG(dsk_solver_solve_dense(s, p, times, 4, y, &st) == DSK_OK, "%s", st.msg);
    for (int j = 0; j < 4; j++) {
      CHECK_CLOSE(y[j], 2.0 * exp(-k * times[j]), 1e-7);
      CHECK_CLOSE(y[4 + j], -0.5 * exp(-k * times[j]), 1e-7);
    }
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 4; j++) {
        double e = exp(-k * times[j]);
        want[i] += g[i * 4 + j] * e;
        want[2] += g[i * 4 + j] * (-times[j] * p[i] * e);
      }
    CHECK_MSG(dsk_solver_reverse(s, p, times, 4, g, grad, &st) == DSK_OK, "%s", st.msg);
    for (int q = 0; q < 3; q++) CHECK_CLOSE(grad[q], want[q], 1e-6);
    CHECK(u.vjp_calls > 0);
    if (methods[mi] == DSK_BDF) CHECK(u.jac_calls > 0);
    dsk_solver_free(s);
    dsk_model_free(m);
  }
}

/* Without jac the implicit methods build J from jvp; with neither they are refused */
static int decay_jvp(void *user, double t, const double *y, const double *th, const double *v,
                     double *f, double *jv) {
  decay_rhs(user, t, y, th, f);
  jv[0] = -th[0] * v[0];
  jv[1] = -th[0] * v[1];
  return 0;
}

static void test_jacobian_sources(void) {
  decay_user u;
  dsk_callbacks cb;
  dsk_model *m = NULL;
  dsk_status st;
  memset(&u, 0, sizeof u);
  memset(&cb, 0, sizeof cb);
  cb.user = &u;
  cb.nstates = 2;
  cb.ntheta = 1;
  cb.rhs = decay_rhs;
  CHECK(dsk_model_from_callbacks(&cb, &m, &st) == DSK_OK);
  if (!m) return;
  CHECK(make_solver(m, DSK_BDF, &st) == NULL);
  CHECK(st.code == DSK_E_ARG);
  CHECK_CONTAINS(st.msg, "neither jac nor jvp");
  /* explicit: fine, but no reverse mode without vjp */
  dsk_solver *s = make_solver(m, DSK_DOPRI5, &st);
  CHECK(s != NULL);
  if (s) {
    const double p[3] = {1.0, 1.0, 0.5}, times[2] = {0.0, 1.0}, g[4] = {0, 1, 0, 1};
    double y[4], grad[3];
    CHECK(dsk_solver_solve_dense(s, p, times, 2, y, &st) == DSK_OK);
    CHECK_CLOSE(y[1], exp(-0.5), 1e-7);
    CHECK(dsk_solver_reverse(s, p, times, 2, g, grad, &st) == DSK_E_ARG);
    CHECK_CONTAINS(st.msg, "vector-Jacobian");
    CHECK(dsk_solver_forward(s, p, times, 2, y, grad, &st) == DSK_E_ARG);
    dsk_solver_free(s);
  }
  dsk_model_free(m);
  cb.jvp = decay_jvp;
  cb.vjp = decay_vjp;
  CHECK(dsk_model_from_callbacks(&cb, &m, &st) == DSK_OK);
  if (!m) return;
  /* without jac: matrix-free Newton-Krylov (SPGMR), forward and adjoint */
  const int imethods[3] = {DSK_BDF, DSK_ADAMS, DSK_ESDIRK34};
  for (int mi = 0; mi < 3; mi++) {
    s = make_solver(m, imethods[mi], &st);
    CHECK_MSG(s != NULL, "%s", st.msg);
    if (!s) continue;
    CHECK(strcmp(dsk_solver_linsol_name(s), "spgmr") == 0);
    const double p[3] = {1.0, 3.0, 0.5}, times[2] = {0.0, 2.0}, g[4] = {0, 1, 0, 1};
    double y[4], grad[3];
    CHECK(dsk_solver_solve_dense(s, p, times, 2, y, &st) == DSK_OK);
    CHECK_CLOSE(y[3], 3.0 * exp(-1.0), 1e-7);
    if (imethods[mi] != DSK_ESDIRK34) {
      CHECK_MSG(dsk_solver_reverse(s, p, times, 2, g, grad, &st) == DSK_OK, "%s", st.msg);
      CHECK_CLOSE(grad[1], exp(-1.0), 1e-6);
      CHECK_CLOSE(grad[2], -2.0 * 4.0 * exp(-1.0), 1e-6);
    } else {
      CHECK(dsk_solver_reverse(s, p, times, 2, g, grad, &st) == DSK_E_ARG);
    }
    dsk_solver_free(s);
  }
  /* a dense linear solver cannot take it */
  {
    dsk_solver_options o;
    dsk_solver_options_default(&o);
    o.linear_solver = DSK_LS_DENSE;
    s = NULL;
    CHECK(dsk_solver_create(m, &o, &s, &st) == DSK_E_ARG && s == NULL);
    CHECK_CONTAINS(st.msg, "matrix-free");
  }
  dsk_model_free(m);
  cb.rhs = NULL;
  CHECK(dsk_model_from_callbacks(&cb, &m, &st) == DSK_E_ARG && m == NULL);
}

/* An unrecoverable code from a callback ends the solve with an error, and the
   solver is still usable afterwards (valgrind: make memcheck, no leaks). */
static void test_callback_failure(void) {
  const int methods[2] = {DSK_BDF, DSK_TSIT45};
  for (int mi = 0; mi < 2; mi++) {
    decay_user u;
    memset(&u, 0, sizeof u);
    dsk_model *m = decay_model(&u, 1);
    dsk_status st;
    if (!m) return;
    dsk_solver *s = make_solver(m, methods[mi], &st);
    CHECK(s != NULL);
    if (s) {
      const double p[3] = {1.0, 1.0, 0.5}, times[3] = {0.0, 1.0, 5.0}, g[6] = {0, 0, 1, 0, 0, 1};
      double y[6], grad[3];
      u.fail_after = 10;
      u.fail_code = -7;
      int rc = dsk_solver_solve_dense(s, p, times, 3, y, &st);
      CHECK(rc == DSK_E_MODELFN || rc == DSK_E_SOLVER);
      CHECK_MSG(u.calls == 11, "%d calls", u.calls);
      /* a second solve works */
      u.fail_after = 0;
      CHECK(dsk_solver_solve_dense(s, p, times, 3, y, &st) == DSK_OK);
      CHECK_CLOSE(y[2], exp(-2.5), 1e-7);
      /* failing vjp in the backward pass */
      u.vjp_fail = 1;
      rc = dsk_solver_reverse(s, p, times, 3, g, grad, &st);
      CHECK(rc == DSK_E_MODELFN || rc == DSK_E_SOLVER);
      u.vjp_fail = 0;
      CHECK_MSG(dsk_solver_reverse(s, p, times, 3, g, grad, &st) == DSK_OK, "%s", st.msg);
      CHECK_CLOSE(grad[0], exp(-2.5), 1e-6);
      /* recoverable (> 0) a few times: the step is retried */
      u.calls = 0;
      u.fail_after = 0;
      dsk_solver_free(s);
    }
    dsk_model_free(m);
  }
}

void suite_callback(void) {
  test_decay();
  test_jacobian_sources();
  test_callback_failure();
}
