/* test_adjoint.c - reverse mode (sens_adjoint.c) against closed forms and
   central finite differences of the forward solve. */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"
#include "suite.h"

void suite_adjoint(void);

static dsk_solver *solver_ls(dsk_model *m, int method, double rtol, double atol, int linsol) {
  return suite_solver(m, method, rtol, atol, linsol, 0);
}

static dsk_solver *solver(dsk_model *m, int method, double rtol, double atol) {
  return solver_ls(m, method, rtol, atol, DSK_LS_AUTO);
}

/* decay: out = a0 exp(-k t); L = sum_j g_j out(t_j) */
static void test_decay_closed_form(void) {
  dsk_model *m = suite_compile("in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n");
  if (!m) return;
  for (int method = 0; method < 2; method++) {
    dsk_solver *s = solver(m, method == 0 ? DSK_BDF : DSK_ADAMS, 1e-10, 1e-12);
    const double p[2] = {0.7, 2.0}, times[5] = {0.0, 0.5, 1.0, 2.0, 3.0};
    const double g[5] = {0.3, -1.0, 0.0, 2.0, 0.5};
    double grad[2], want_k = 0, want_a = 0, y[5];
    dsk_status st;
    if (!s) continue;
    for (int j = 0; j < 5; j++) {
      double e = exp(-p[0] * times[j]);
      want_k += g[j] * (-times[j] * p[1] * e);
      want_a += g[j] * e;
    }
    CHECK_MSG(dsk_solver_reverse(s, p, times, 5, g, grad, &st) == DSK_OK, "%s", st.msg);
    CHECK_CLOSE(grad[0], want_k, 1e-7);
    CHECK_CLOSE(grad[1], want_a, 1e-7);
    /* one forward pass, two backward passes with different g */
    CHECK(dsk_solver_forward_checkpointed(s, p, times, 5, y, &st) == DSK_OK);
    CHECK_CLOSE(y[3], 2.0 * exp(-1.4), 1e-8);
    CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_OK);
    CHECK_CLOSE(grad[0], want_k, 1e-7);
    {
      const double g2[5] = {0, 0, 1.0, 0, 0};
      CHECK(dsk_solver_backward(s, g2, grad, &st) == DSK_OK);
      CHECK_CLOSE(grad[0], -1.0 * 2.0 * exp(-0.7), 1e-7);
      CHECK_CLOSE(grad[1], exp(-0.7), 1e-7);
    }
    /* checkpoint times of the caller (one at an output time, one at the end):
       the same outputs and gradient */
    {
      const double ck[4] = {0.25, 1.0, 2.5, 3.0}, bad[2] = {1.0, 1.0}, out[1] = {3.5};
      double y2[5];
      CHECK_MSG(dsk_solver_forward_checkpointed_at(s, p, times, 5, ck, 4, y2, &st) == DSK_OK,
                "%s", st.msg);
      for (int j = 0; j < 5; j++) CHECK_CLOSE(y2[j], p[1] * exp(-p[0] * times[j]), 1e-8);
      CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_OK);
      CHECK_CLOSE(grad[0], want_k, 1e-7);
      CHECK_CLOSE(grad[1], want_a, 1e-7);
      CHECK(dsk_solver_forward_checkpointed_at(s, p, times, 5, bad, 2, y2, &st) == DSK_E_ARG);
      CHECK_CONTAINS(st.msg, "strictly increasing");
      CHECK(dsk_solver_forward_checkpointed_at(s, p, times, 5, out, 1, y2, &st) == DSK_E_ARG);
      CHECK_CONTAINS(st.msg, "outside");
    }
    /* another solve invalidates the checkpoints */
    CHECK(dsk_solver_forward_checkpointed(s, p, times, 5, y, &st) == DSK_OK);
    CHECK(dsk_solver_solve_dense(s, p, times, 5, y, &st) == DSK_OK);
    CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_E_ARG);
    CHECK_CONTAINS(st.msg, "forward pass again");
    /* a zero g gives a zero gradient */
    {
      const double z[5] = {0};
      grad[0] = grad[1] = 7;
      CHECK(dsk_solver_reverse(s, p, times, 5, z, grad, &st) == DSK_OK);
      CHECK(grad[0] == 0 && grad[1] == 0);
    }
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* Robertson with several outputs: reverse mode against central differences. */
static void test_robertson_fd(void) {
  dsk_model *m = suite_compile("in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\n"
                         "u_i { a = 1, b = 0, c = 0 }\n"
                         "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, k3 * b * b }\n"
                         "out_i { a + 2 * c, 1e4 * b }\n");
  dsk_solver *s;
  if (!m) return;
  s = solver(m, DSK_BDF, 1e-10, 1e-14);
  /* the differences from tighter solves: at the gradient's rtol 1e-10 a
     difference over 1e-5 p has an error of 1e-4 (the solution's own error
     over h, whatever the gradient) */
  dsk_solver *ref = solver(m, DSK_BDF, 1e-12, 1e-16);
  if (s && ref) {
    const double p[3] = {0.04, 1e4, 3e7}, times[4] = {0.1, 1.0, 10.0, 40.0};
    const double g[8] = {0.5, -1.0, 0.25, 1.0, /* out 0 */ 1.0, 0.0, -2.0, 0.5 /* out 1 */};
    double grad[3];
    dsk_status st;
    double fd[3], scale = 0;
    CHECK_MSG(dsk_solver_reverse(s, p, times, 4, g, grad, &st) == DSK_OK, "%s", st.msg);
    suite_fd_gradient(ref, p, 3, times, 4, g, 2, 1e-5, fd);
    for (int k = 0; k < 3; k++)
      if (fabs(fd[k] * p[k]) > scale) scale = fabs(fd[k] * p[k]);
    /* relative sensitivities p_k dL/dp_k, to 1e-4 of the largest */
    for (int k = 0; k < 3; k++)
      CHECK_MSG(fabs(grad[k] - fd[k]) * p[k] <= 1e-4 * scale, "dL/dp%d: %.10g vs FD %.10g", k,
                grad[k], fd[k]);
  }
  dsk_solver_free(s);
  dsk_solver_free(ref);
  dsk_model_free(m);
}

static const double heat_p[2] = {0.5, 1.0}, heat_t[3] = {0.001, 0.01, 0.05},
                    heat_g[6] = {1, 0, 2, 0, 1, 1};

/* The heat models' gradient (0 on success). */
static int heat_gradient(dsk_model *m, int method, int linsol, double rtol, double grad[2]) {
  dsk_solver *s = solver_ls(m, method, rtol, 1e-12, linsol);
  dsk_status st;
  if (!s) return -1;
  int rc = dsk_solver_reverse(s, heat_p, heat_t, 3, heat_g, grad, &st);
  CHECK_MSG(rc == DSK_OK, "method %d, linear solver %d: %s", method, linsol, st.msg);
  dsk_solver_free(s);
  return rc == DSK_OK ? 0 : -1;
}

/* A 60-state heat equation with KLU, LAPACK and SUNDIALS dense: the same
   gradient, and equal to central differences; the implicit ARKODE tables with
   KLU on the transposed pattern (and SUNDIALS dense): the same gradient. */
static void test_linear_solvers(void) {
  dsk_model *m = suite_compile(
      "in_i { kappa = 0.5, tb = 1.0 }\n"
      "L_ij { (0..60, 0..60): -2.0, (0..59, 1..60): 1.0, (1..60, 0..59): 1.0 }\n"
      "b_i { (0): tb, (1:59): 0.0, (59): tb }\n"
      "u_i { (0:30): 0.0, (30:60): 1.0 }\n"
      "lap_i { L_ij * u_j }\n"
      "F_i { kappa * (lap_i + b_i) * 3721.0 + 0.1 * sin(u_i) }\n"
      "out_i { u_i[10], u_i[40] + tb * u_i[20] }\n");
  static const int kinds[3] = {DSK_LS_KLU, DSK_LS_LAPACK, DSK_LS_SUNDENSE};
  double grads[3][2];
  if (!m) return;
  for (int q = 0; q < 3; q++)
    if (heat_gradient(m, DSK_BDF, kinds[q], 1e-10, grads[q])) {
      dsk_model_free(m);
      return;
    }
  dsk_solver *s = solver_ls(m, DSK_BDF, 1e-10, 1e-12, DSK_LS_KLU);
  for (int k = 0; k < 2 && s; k++) {
    double pp[2] = {heat_p[0], heat_p[1]}, y[6], lp = 0, lm = 0, h = 1e-4 * heat_p[k];
    dsk_status st;
    pp[k] += h;
    dsk_solver_solve_dense(s, pp, heat_t, 3, y, &st);
    for (int i = 0; i < 6; i++) lp += heat_g[i] * y[i];
    pp[k] -= 2 * h;
    dsk_solver_solve_dense(s, pp, heat_t, 3, y, &st);
    for (int i = 0; i < 6; i++) lm += heat_g[i] * y[i];
    CHECK_CLOSE(grads[0][k], (lp - lm) / (2 * h), 1e-5);
  }
  if (s) dsk_solver_free(s);
  for (int k = 0; k < 2; k++) {
    CHECK_CLOSE(grads[1][k], grads[0][k], 1e-7);
    CHECK_CLOSE(grads[2][k], grads[0][k], 1e-7);
  }
  static const int ark[3][2] = {{DSK_ESDIRK34, DSK_LS_KLU},
                                {DSK_ESDIRK34, DSK_LS_SUNDENSE},
                                {DSK_TR_BDF2, DSK_LS_KLU}};
  for (int q = 0; q < 3; q++) {
    double grad[2];
    if (heat_gradient(m, ark[q][0], ark[q][1], ark[q][0] == DSK_TR_BDF2 ? 1e-8 : 1e-10, grad))
      continue;
    for (int k = 0; k < 2; k++)
      CHECK_MSG(fabs(grad[k] - grads[0][k]) <= (q == 2 ? 1e-4 : 1e-6) * fabs(grads[0][k]),
                "method %d, linear solver %d: dL/dp%d %.10g, bdf %.10g", ark[q][0], ark[q][1], k,
                grad[k], grads[0][k]);
  }
  dsk_model_free(m);
  /* with a diagonal M depending on kappa (a heat capacity): KLU keeps the pattern,
     -(M^-1 dF/du)^T; the same gradient as the dense matrix */
  m = suite_compile("in_i { kappa = 0.5, tb = 1.0 }\n"
              "L_ij { (0..60, 0..60): -2.0, (0..59, 1..60): 1.0, (1..60, 0..59): 1.0 }\n"
              "b_i { (0): tb, (1:59): 0.0, (59): tb }\n"
              "c_i { (0:60): 1.0 + 0.5 * kappa }\n"
              "u_i { (0:30): 0.0, (30:60): 1.0 }\n"
              "dudt_i { (0:60): 0.0 }\n"
              "M_i { c_i * dudt_i }\n"
              "lap_i { L_ij * u_j }\n"
              "F_i { kappa * (lap_i + b_i) * 3721.0 + 0.1 * sin(u_i) }\n"
              "out_i { u_i[10], u_i[40] + tb * u_i[20] }\n");
  if (!m) return;
  double mgrads[2][2];
  if (heat_gradient(m, DSK_ESDIRK34, DSK_LS_KLU, 1e-10, mgrads[0]) == 0 &&
      heat_gradient(m, DSK_ESDIRK34, DSK_LS_SUNDENSE, 1e-10, mgrads[1]) == 0)
    for (int k = 0; k < 2; k++) CHECK_CLOSE(mgrads[0][k], mgrads[1][k], 1e-8);
  dsk_model_free(m);
}

static void test_refusals(void) {
  dsk_model *m = suite_compile("in_i { r = 1 }\nu { 1 }\nF { -r * u }\nstop { u - 0.5 }\n");
  if (!m) return;
  {
    dsk_solver *s = solver(m, DSK_BDF, 1e-6, 1e-8);
    const double p[1] = {1}, t[2] = {0, 1}, g[2] = {1, 1};
    double grad[1];
    dsk_status st;
    if (s) {
      /* the solve stops at u = 0.5 (t = ln 2): the output at t = 1 is NaN */
      CHECK(dsk_solver_reverse(s, p, t, 2, g, grad, &st) == DSK_E_ARG);
      CHECK_CONTAINS(st.msg, "after the solve stopped");
      {
        /* before the stop: u = exp(-r t) */
        const double t2[3] = {0, 0.5, 1.0}, g2[3] = {0, 1, 0};
        CHECK_MSG(dsk_solver_reverse(s, p, t2, 3, g2, grad, &st) == DSK_OK, "%s", st.msg);
        CHECK_CLOSE(grad[0], -0.5 * exp(-0.5), 1e-5);
      }
      dsk_solver_free(s);
    }
  }
  dsk_model_free(m);
}

/* DAEs (IDAS).  A linear index-1 DAE with M depending on a parameter:
     m x' = -k x,  0 = c x - y,  x(0) = x0 (y(0) from the constraint),
   x = x0 exp(-k t / m), y = c x; outputs x and x y = c x^2 (an output of the
   algebraic state).  Written twice: with the algebraic equation last, and
   first (M's zero row and zero column then differ), with every linear
   solver, and with zeros in g and an output at t0. */
static void test_dae_mass_param_closed_form(void) {
  static const char *src[2] = {
      "in_i { m = 2, k = 0.5, c = 3, x0 = 1.5 }\n"
      "u_i { x = x0, y = 0 }\n"
      "dudt_i { dxdt = 0, dydt = 0 }\n"
      "M_i { m * dxdt, 0 }\n"
      "F_i { -k * x, c * x - y }\n"
      "out_i { x, x * y }\n",
      "in_i { m = 2, k = 0.5, c = 3, x0 = 1.5 }\n"
      "u_i { x = x0, y = 0 }\n"
      "dudt_i { dxdt = 0, dydt = 0 }\n"
      "M_i { 0, m * dxdt }\n"
      "F_i { c * x - y, -k * x }\n"
      "out_i { x, x * y }\n"};
  static const int kinds[3] = {DSK_LS_SUNDENSE, DSK_LS_LAPACK, DSK_LS_KLU};
  const double p[4] = {2.0, 0.5, 3.0, 1.5}, times[5] = {0.0, 0.5, 1.0, 2.0, 3.0};
  const double g[10] = {0.3, -1.0, 0.0, 2.0, 0.0, /* x */ 0.7, 0.0, 0.0, -0.4, 0.0 /* x y */};
  double want[4] = {0, 0, 0, 0};
  for (int j = 0; j < 5; j++) {
    double t = times[j], x = p[3] * exp(-p[1] * t / p[0]);
    double dx[4] = {x * p[1] * t / (p[0] * p[0]), -x * t / p[0], 0.0, x / p[3]};
    for (int q = 0; q < 4; q++)
      want[q] += g[j] * dx[q] + g[5 + j] * (2.0 * p[2] * x * dx[q] + (q == 2 ? x * x : 0.0));
  }
  for (int v = 0; v < 2; v++) {
    dsk_model *m = suite_compile(src[v]);
    if (!m) continue;
    for (int q = 0; q < 3; q++) {
      dsk_solver_options o;
      dsk_solver *s = NULL;
      dsk_status st;
      double grad[4], y[10];
      dsk_solver_options_default(&o);
      o.rtol = 1e-10;
      o.atol = 1e-12;
      o.linear_solver = kinds[q];
      CHECK_MSG(dsk_solver_create(m, &o, &s, &st) == DSK_OK, "%s", st.msg);
      if (!s) continue;
      CHECK_CONTAINS(dsk_solver_integrator_name(s), "IDAS");
      CHECK_MSG(dsk_solver_reverse(s, p, times, 5, g, grad, &st) == DSK_OK, "%s", st.msg);
      for (int k = 0; k < 4; k++)
        CHECK_MSG(fabs(grad[k] - want[k]) <= 1e-7 * (fabs(want[k]) + 1e-3),
                  "variant %d solver %d dL/dp%d: %.12g vs %.12g", v, q, k, grad[k], want[k]);
      /* one forward pass, two backward passes; the outputs of the forward pass */
      CHECK(dsk_solver_forward_checkpointed(s, p, times, 5, y, &st) == DSK_OK);
      CHECK_CLOSE(y[3], 1.5 * exp(-0.5), 1e-8);
      CHECK_CLOSE(y[8], 3.0 * 1.5 * 1.5 * exp(-1.0), 1e-8);
      {
        /* only the algebraic output at t = 1: d(c x^2)/dp */
        const double g2[10] = {0, 0, 0, 0, 0, 0, 0, 1.0, 0, 0};
        double x = 1.5 * exp(-0.25);
        CHECK(dsk_solver_backward(s, g2, grad, &st) == DSK_OK);
        CHECK_CLOSE(grad[0], 2 * 3.0 * x * x * 0.5 / 4.0, 1e-7);
        CHECK_CLOSE(grad[2], x * x, 1e-7);
        CHECK_CLOSE(grad[3], 2 * 3.0 * x * x / 1.5, 1e-7);
      }
      {
        /* only at t0: the jump alone, no backward integration */
        const double g3[10] = {1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0};
        CHECK(dsk_solver_backward(s, g3, grad, &st) == DSK_OK);
        CHECK_CLOSE(grad[2], 1.5 * 1.5, 1e-9);
        CHECK_CLOSE(grad[3], 1.0 + 2 * 3.0 * 1.5, 1e-9);
        CHECK(fabs(grad[0]) < 1e-12 && fabs(grad[1]) < 1e-12);
      }
      dsk_solver_free(s);
    }
    dsk_model_free(m);
  }
}

/* A non-singular M with a parameter (IDAS without algebraic states):
   m x' = -k x, x(0) = 1, no out (the output is the state). */
static void test_dae_regular_mass(void) {
  dsk_model *m = suite_compile("in_i { m = 2, k = 0.5 }\n"
                         "u { x = 1 }\n"
                         "dudt { dxdt = 0 }\n"
                         "M { m * dxdt }\n"
                         "F { -k * x }\n");
  dsk_solver *s;
  if (!m) return;
  s = solver(m, DSK_BDF, 1e-10, 1e-12);
  if (s) {
    const double p[2] = {2.0, 0.5}, t[4] = {0.5, 1.0, 2.0, 4.0}, g[4] = {1.0, 0.0, -0.5, 2.0};
    double grad[2], want[2] = {0, 0};
    dsk_status st;
    for (int j = 0; j < 4; j++) {
      double x = exp(-p[1] * t[j] / p[0]);
      want[0] += g[j] * x * p[1] * t[j] / (p[0] * p[0]);
      want[1] += g[j] * -x * t[j] / p[0];
    }
    CHECK_CONTAINS(dsk_solver_integrator_name(s), "IDAS");
    CHECK_MSG(dsk_solver_reverse(s, p, t, 4, g, grad, &st) == DSK_OK, "%s", st.msg);
    CHECK_CLOSE(grad[0], want[0], 1e-7);
    CHECK_CLOSE(grad[1], want[1], 1e-7);
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* Robertson as a DAE (c algebraic) with outputs of all three states:
   reverse mode against central differences, and the three linear solvers
   agree. */
static void test_robertson_dae_fd(void) {
  dsk_model *m = suite_compile("in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\n"
                         "u_i { a = 1, b = 0, c = 0 }\n"
                         "dudt_i { dadt = 1, dbdt = 0, dcdt = 0 }\n"
                         "M_i { dadt, dbdt, 0 }\n"
                         "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b,"
                         " 1 - a - b - c }\n"
                         "out_i { a, 1e4 * b, c }\n");
  static const int kinds[3] = {DSK_LS_SUNDENSE, DSK_LS_LAPACK, DSK_LS_KLU};
  const double p[3] = {0.04, 1e4, 3e7}, times[5] = {0.0, 0.1, 1.0, 10.0, 40.0};
  const double g[15] = {1.0, 0.5, -1.0, 0.0, 1.0, /* a */ 0.0, 1.0, 0.0, -2.0, 0.5, /* 1e4 b */
                        0.0, 0.0, 2.0, 0.0, 1.0 /* c */};
  double grads[3][3], fd[3], scale = 0;
  if (!m) return;
  for (int q = 0; q < 3; q++) {
    dsk_solver_options o;
    dsk_solver *s = NULL;
    dsk_status st;
    dsk_solver_options_default(&o);
    o.rtol = 1e-10;
    o.atol = 1e-14;
    o.linear_solver = kinds[q];
    CHECK_MSG(dsk_solver_create(m, &o, &s, &st) == DSK_OK, "%s", st.msg);
    if (!s) continue;
    CHECK_MSG(dsk_solver_reverse(s, p, times, 5, g, grads[q], &st) == DSK_OK, "%s", st.msg);
    if (q == 0)
      for (int k = 0; k < 3; k++) {
        double pp[3] = {p[0], p[1], p[2]}, y[15], lp = 0, lm = 0, h = 1e-5 * p[k];
        pp[k] = p[k] + h;
        CHECK(dsk_solver_solve_dense(s, pp, times, 5, y, &st) == DSK_OK);
        for (int i = 0; i < 15; i++) lp += g[i] * y[i];
        pp[k] = p[k] - h;
        CHECK(dsk_solver_solve_dense(s, pp, times, 5, y, &st) == DSK_OK);
        for (int i = 0; i < 15; i++) lm += g[i] * y[i];
        fd[k] = (lp - lm) / (2 * h);
        if (fabs(fd[k] * p[k]) > scale) scale = fabs(fd[k] * p[k]);
      }
    dsk_solver_free(s);
  }
  for (int k = 0; k < 3; k++) {
    CHECK_MSG(fabs(grads[0][k] - fd[k]) * p[k] <= 1e-4 * scale, "dL/dp%d: %.10g vs FD %.10g", k,
              grads[0][k], fd[k]);
    CHECK_MSG(fabs(grads[1][k] - grads[0][k]) * p[k] <= 1e-7 * scale, "lapack dL/dp%d", k);
    CHECK_MSG(fabs(grads[2][k] - grads[0][k]) * p[k] <= 1e-7 * scale, "klu dL/dp%d", k);
  }
  dsk_model_free(m);
}

/* M depending on t is refused (its adjoint needs dM/dt). */
static void test_dae_refuses_time_dependent_mass(void) {
  dsk_model *m = suite_compile("in_i { k = 0.5 }\n"
                         "u_i { x = 1, y = 0 }\n"
                         "dudt_i { dxdt = 0, dydt = 0 }\n"
                         "M_i { (1 + t) * dxdt, 0 }\n"
                         "F_i { -k * x, x - y }\n");
  dsk_solver *s;
  if (!m) return;
  s = solver(m, DSK_BDF, 1e-8, 1e-10);
  if (s) {
    const double p[1] = {0.5}, t[2] = {0, 1}, g[4] = {1, 1, 1, 1};
    double grad[1];
    dsk_status st;
    CHECK(dsk_solver_reverse(s, p, t, 2, g, grad, &st) == DSK_E_ARG);
    CHECK_CONTAINS(st.msg, "independent of t");
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}


/* ---- events ----------------------------------------------------------------- */

/* The dosing model (doses at fixed times): the closed form
   q(t) = sum_{t_d <= t} 50 exp(-k (t - t_d)), k = cl / vol, out = q / vol. */
static void test_dosing_closed_form(void) {
  dsk_model *m = suite_compile("in_i { cl = 2.0, vol = 10.0 }\n"
                         "tdose_i { 4.0, 8.0, 12.0 }\n"
                         "amt_i { 50.0, 50.0, 50.0 }\n"
                         "u_i { q = 50.0 }\n"
                         "F_i { -cl / vol * q }\n"
                         "stop_i { tdose_i - t }\n"
                         "reset_i { q + amt_i[N] }\n"
                         "out_i { q / vol }\n");
  if (!m) return;
  /* CVODES (sens_adjoint.c) and the ARKODE methods (sens_adjoint_arkode.c) */
  const int methods[5] = {DSK_BDF, DSK_ADAMS, DSK_TSIT45, DSK_DOPRI5, DSK_ESDIRK34};
  for (int method = 0; method < 5; method++) {
    dsk_solver *s = solver(m, methods[method], 1e-10, 1e-12);
    const double p[2] = {2.0, 10.0}, times[7] = {1.0, 3.0, 5.0, 8.0, 9.0, 13.0, 15.0};
    const double g[7] = {0.5, -1.0, 0.3, 2.0, 1.0, -0.7, 0.25}, td[4] = {0, 4, 8, 12};
    double grad[2], want_cl = 0, want_vol = 0, y[7], k = p[0] / p[1];
    dsk_status st;
    if (!s) continue;
    for (int j = 0; j < 7; j++) {
      double q = 0, dqdk = 0;
      for (int d = 0; d < 4; d++)
        if (td[d] <= times[j]) {
          double e = 50.0 * exp(-k * (times[j] - td[d]));
          q += e;
          dqdk -= (times[j] - td[d]) * e;
        }
      want_cl += g[j] * dqdk / p[1] / p[1];
      want_vol += g[j] * (dqdk * (-p[0] / (p[1] * p[1])) / p[1] - q / (p[1] * p[1]));
    }
    CHECK_MSG(dsk_solver_reverse(s, p, times, 7, g, grad, &st) == DSK_OK, "%s", st.msg);
    CHECK_MSG(fabs(grad[0] - want_cl) <= 1e-6 * fabs(want_cl), "dL/dcl %.10g vs %.10g", grad[0],
              want_cl);
    CHECK_MSG(fabs(grad[1] - want_vol) <= 1e-6 * fabs(want_vol), "dL/dvol %.10g vs %.10g",
              grad[1], want_vol);
    /* repeatable backward passes, and a solve in between still finds the doses */
    CHECK(dsk_solver_forward_checkpointed(s, p, times, 7, y, &st) == DSK_OK);
    CHECK_CLOSE(y[3], (50.0 * exp(-0.2 * 8) + 50.0 * exp(-0.2 * 4) + 50.0) / 10.0, 1e-7);
    CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_OK);
    CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_OK);
    CHECK_MSG(fabs(grad[0] - want_cl) <= 1e-6 * fabs(want_cl), "again: %.10g vs %.10g", grad[0],
              want_cl);
    {
      double y2[7];
      CHECK(dsk_solver_solve_dense(s, p, times, 7, y2, &st) == DSK_OK);
      CHECK_CLOSE(y2[6], y[6], 1e-8);
    }
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* A bouncing ball: the bounce times depend on the state and on g, e, h0.
   Reverse mode against central differences of the solve and forward mode. */
static void test_ball(void) {
  dsk_model *m = suite_compile("in_i { g = 9.81, e = 0.8, h0 = 10.0 }\n"
                         "u_i { h = h0, v = 0.0 }\n"
                         "F_i { v, -g }\n"
                         "stop_i { h }\n"
                         "reset_i { 0, -e * v }\n");
  if (!m) return;
  for (int method = 0; method < 2; method++) {
    dsk_solver *s = solver(m, method == 0 ? DSK_BDF : DSK_ADAMS, 1e-10, 1e-10);
    const double p[3] = {9.81, 0.8, 10.0}, times[5] = {0.5, 1.0, 2.0, 3.5, 5.0};
    const double g[10] = {0.3, -1.0, 0.5, 2.0, 1.0, /* h */ 0.1, 0.2, -0.4, 0.3, 0.5 /* v */};
    double grad[3], y[10], sens[30], fd[3];
    dsk_status st;
    if (!s) continue;
    CHECK_MSG(dsk_solver_reverse(s, p, times, 5, g, grad, &st) == DSK_OK, "%s", st.msg);
    CHECK_MSG(dsk_solver_forward(s, p, times, 5, y, sens, &st) == DSK_OK, "%s", st.msg);
    for (int k = 0; k < 3; k++) {
      double pp[3] = {p[0], p[1], p[2]}, lp = 0, lm = 0, h = 1e-4 * p[k], fw = 0;
      pp[k] = p[k] + h;
      CHECK(dsk_solver_solve_dense(s, pp, times, 5, y, &st) == DSK_OK);
      for (int q = 0; q < 10; q++) lp += g[q] * y[q];
      pp[k] = p[k] - h;
      CHECK(dsk_solver_solve_dense(s, pp, times, 5, y, &st) == DSK_OK);
      for (int q = 0; q < 10; q++) lm += g[q] * y[q];
      fd[k] = (lp - lm) / (2 * h);
      for (int q = 0; q < 10; q++) fw += g[q] * sens[k * 10 + q];
      CHECK_MSG(fabs(grad[k] - fd[k]) <= 1e-4 * fabs(fd[k]), "ball dL/dp%d: %.10g vs FD %.10g", k,
                grad[k], fd[k]);
      CHECK_MSG(fabs(grad[k] - fw) <= 1e-6 * fabs(fw), "ball dL/dp%d: %.10g vs forward %.10g", k,
                grad[k], fw);
    }
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* ARKODE methods (sens_adjoint_arkode.c): decay against its closed form over
   many checkpoint intervals, Lotka-Volterra with two outputs and Robertson
   (implicit tables) against central differences, repeated backward passes,
   and the refusals (M, events).  The finite differences are of solve_dense
   with bdf at tight tolerances: TR-BDF2's own solution (order 2, global error
   ~1e-7 at rtol 1e-10) is too rough for a 1e-4 relative step. */
static double ark_fd(dsk_solver *s, const double *p, int np, int k, const double *times, int nt,
                     const double *g, int nout, double rel) {
  double pp[8], y[64], lp = 0, lm = 0, h = rel * p[k];
  dsk_status st;
  for (int i = 0; i < np; i++) pp[i] = p[i];
  pp[k] = p[k] + h;
  CHECK(dsk_solver_solve_dense(s, pp, times, nt, y, &st) == DSK_OK);
  for (int i = 0; i < nout * nt; i++) lp += g[i] * y[i];
  pp[k] = p[k] - h;
  CHECK(dsk_solver_solve_dense(s, pp, times, nt, y, &st) == DSK_OK);
  for (int i = 0; i < nout * nt; i++) lm += g[i] * y[i];
  return (lp - lm) / (2 * h);
}

static void test_arkode_methods(void) {
  static const int methods[4] = {DSK_TSIT45, DSK_DOPRI5, DSK_TR_BDF2, DSK_ESDIRK34};
  dsk_model *dec = suite_compile("in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n");
  dsk_model *lv = suite_compile("in_i { a = 1.5, b = 1.0, c = 3.0, d = 1.0 }\n"
                          "u_i { x = 1.0, y = 1.0 }\n"
                          "F_i { a * x - b * x * y, -c * y + d * x * y }\n"
                          "out_i { x * y, x + 2 * y }\n");
  dsk_model *rob = suite_compile("in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\n"
                           "u_i { a = 1, b = 0, c = 0 }\n"
                           "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b,"
                           " k3 * b * b }\n"
                           "out_i { a + 2 * c, 1e4 * b }\n");
  for (int q = 0; q < 4 && dec; q++) {
    dsk_solver *s = solver(dec, methods[q], 1e-10, 1e-12);
    const double p[2] = {0.7, 2.0}, times[5] = {0.0, 0.5, 1.0, 4.0, 8.0};
    const double g[5] = {0.3, -1.0, 0.0, 2.0, 0.5};
    double grad[2], want_k = 0, want_a = 0, y[5];
    dsk_status st;
    if (!s) continue;
    for (int j = 0; j < 5; j++) {
      double e = exp(-p[0] * times[j]);
      want_k += g[j] * (-times[j] * p[1] * e);
      want_a += g[j] * e;
    }
    CHECK_MSG(dsk_solver_reverse(s, p, times, 5, g, grad, &st) == DSK_OK, "%s", st.msg);
    CHECK_MSG(fabs(grad[0] - want_k) <= 1e-6 * fabs(want_k), "method %d: %.12g vs %.12g", q,
              grad[0], want_k);
    CHECK_MSG(fabs(grad[1] - want_a) <= 1e-6 * fabs(want_a), "method %d: %.12g vs %.12g", q,
              grad[1], want_a);
    /* one forward pass, two backward passes */
    CHECK(dsk_solver_forward_checkpointed(s, p, times, 5, y, &st) == DSK_OK);
    CHECK_CLOSE(y[3], 2.0 * exp(-2.8), 1e-6);
    {
      const double g2[5] = {0, 0, 1.0, 0, 0};
      CHECK(dsk_solver_backward(s, g2, grad, &st) == DSK_OK);
      CHECK_CLOSE(grad[0], -2.0 * exp(-0.7), 1e-7);
      CHECK_CLOSE(grad[1], exp(-0.7), 1e-7);
      CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_OK);
      CHECK_CLOSE(grad[0], want_k, 1e-6);
    }
    CHECK(dsk_solver_solve_dense(s, p, times, 5, y, &st) == DSK_OK);
    CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_E_ARG);
    CHECK_CONTAINS(st.msg, "forward pass again");
    dsk_solver_free(s);
  }
  if (lv) {
    dsk_solver *ref = solver(lv, DSK_BDF, 1e-12, 1e-14);
    const double p[4] = {1.5, 1.0, 3.0, 1.0}, times[4] = {1.0, 2.5, 4.0, 6.0};
    const double g[8] = {0.5, -1.0, 0.0, 1.0, /* x y */ 1.0, 0.0, -2.0, 0.5 /* x + 2 y */};
    double fd[4];
    for (int k = 0; k < 4 && ref; k++) fd[k] = ark_fd(ref, p, 4, k, times, 4, g, 2, 1e-4);
    for (int q = 0; q < 4 && ref; q++) {
      dsk_solver *s = solver(lv, methods[q], 1e-10, 1e-12);
      double grad[4], y[8], sens[32];
      dsk_status st;
      if (!s) continue;
      CHECK_MSG(dsk_solver_reverse(s, p, times, 4, g, grad, &st) == DSK_OK, "%s", st.msg);
      CHECK_MSG(dsk_solver_forward(s, p, times, 4, y, sens, &st) == DSK_OK, "%s", st.msg);
      for (int k = 0; k < 4; k++) {
        double fw = 0;
        for (int i = 0; i < 8; i++) fw += g[i] * sens[k * 8 + i];
        CHECK_MSG(fabs(grad[k] - fd[k]) <= 1e-4 * fabs(fd[k]),
                  "method %d dL/dp%d: %.10g vs FD %.10g", q, k, grad[k], fd[k]);
        CHECK_MSG(fabs(grad[k] - fw) <= 1e-4 * fabs(fw),
                  "method %d dL/dp%d: %.10g vs forward mode %.10g", q, k, grad[k], fw);
      }
      dsk_solver_free(s);
    }
    if (ref) dsk_solver_free(ref);
  }
  if (rob) {
    dsk_solver *ref = solver(rob, DSK_BDF, 1e-12, 1e-16); /* see test_robertson_fd */
    const double p[3] = {0.04, 1e4, 3e7}, times[4] = {0.1, 1.0, 10.0, 40.0};
    const double g[8] = {0.5, -1.0, 0.25, 1.0, 1.0, 0.0, -2.0, 0.5};
    double fd[3], scale = 0;
    for (int k = 0; k < 3 && ref; k++) {
      fd[k] = ark_fd(ref, p, 3, k, times, 4, g, 2, 1e-5);
      if (fabs(fd[k] * p[k]) > scale) scale = fabs(fd[k] * p[k]);
    }
    if (ref) dsk_solver_free(ref);
    for (int q = 2; q < 4 && scale > 0; q++) {
      dsk_solver *s = solver(rob, methods[q], 1e-10, 1e-14);
      double grad[3];
      dsk_status st;
      if (!s) continue;
      CHECK_MSG(dsk_solver_reverse(s, p, times, 4, g, grad, &st) == DSK_OK, "%s", st.msg);
      for (int k = 0; k < 3; k++)
        CHECK_MSG(fabs(grad[k] - fd[k]) * p[k] <= 1e-4 * scale,
                  "method %d dL/dp%d: %.10g vs FD %.10g", q, k, grad[k], fd[k]);
      dsk_solver_free(s);
    }
  }
  {
    /* a mass matrix: m x' = -k x, x = exp(-k t / m), L = x(0) + x(1); with events (a
       sawtooth: reset to 1 at x = 0.5); refused: a gradient after a stop without reset */
    dsk_model *mm = suite_compile("in_i { m = 2, k = 0.5 }\nu { x = 1 }\ndudt { dxdt = 0 }\n"
                            "M { m * dxdt }\nF { -k * x }\n");
    dsk_model *mev = suite_compile("in_i { m = 2, k = 0.5 }\nu { x = 1 }\ndudt { dxdt = 0 }\n"
                             "M { m * dxdt }\nF { -k * x }\nstop { x - 0.5 }\nreset { 1 }\n");
    dsk_model *ev = suite_compile("in_i { r = 1 }\nu { 1 }\nF { -r * u }\nstop { u - 0.5 }\n");
    const double p[2] = {2.0, 0.5}, t[2] = {0, 1}, g[2] = {1, 1};
    const double e = exp(-p[1] / p[0]), want[2] = {e * p[1] / (p[0] * p[0]), -e / p[0]};
    double grad[2];
    dsk_status st;
    /* and M depending on t: (m + t) x' = -k x, x = (m / (m + t))^k */
    dsk_model *mt = suite_compile("in_i { m = 2, k = 0.5 }\nu { x = 1 }\ndudt { dxdt = 0 }\n"
                            "M { (m + t) * dxdt }\nF { -k * x }\n");
    const double r = p[0] / (p[0] + 1),
                 want_t[2] = {p[1] * pow(r, p[1] - 1) / ((p[0] + 1) * (p[0] + 1)),
                              pow(r, p[1]) * log(r)};
    dsk_model *models[2] = {mm, mt};
    const double *wants[2] = {want, want_t};
    for (int c = 0; c < 2; c++)
      for (int q = 0; q < 4 && models[c]; q++) {
        dsk_solver *s = solver(models[c], methods[q], 1e-10, 1e-12);
        if (!s) continue;
        CHECK_MSG(dsk_solver_reverse(s, p, t, 2, g, grad, &st) == DSK_OK, "%s", st.msg);
        double tol = methods[q] == DSK_TR_BDF2 ? 3e-5 : 1e-7;
        for (int k = 0; k < 2; k++)
          CHECK_MSG(fabs(grad[k] - wants[c][k]) <= tol * fabs(wants[c][k]),
                    "method %d with M (case %d): dL/dp%d = %.10g, closed form %.10g", q, c, k,
                    grad[k], wants[c][k]);
        dsk_solver_free(s);
      }
    if (mt) dsk_model_free(mt);
    /* the sawtooth at t = 6 (event times m ln 2 / k = 2.77, 5.55): x = 4 e^(-k t / m) */
    const double t6[2] = {0, 6}, x6 = 4 * exp(-p[1] / p[0] * 6),
                 want6[2] = {x6 * p[1] * 6 / (p[0] * p[0]), -x6 * 6 / p[0]};
    for (int q = 0; q < 4 && mev; q++) {
      if (methods[q] == DSK_TR_BDF2) continue; /* no events */
      dsk_solver *s = solver(mev, methods[q], 1e-10, 1e-12);
      if (!s) continue;
      CHECK_MSG(dsk_solver_reverse(s, p, t6, 2, g, grad, &st) == DSK_OK, "%s", st.msg);
      for (int k = 0; k < 2; k++)
        CHECK_MSG(fabs(grad[k] - want6[k]) <= 1e-7 * fabs(want6[k]),
                  "method %d with M and events: dL/dp%d = %.10g, closed form %.10g", q, k,
                  grad[k], want6[k]);
      dsk_solver_free(s);
    }
    dsk_solver *s;
    s = ev ? solver(ev, DSK_ESDIRK34, 1e-6, 1e-8) : NULL;
    if (s) {
      CHECK(dsk_solver_reverse(s, p, t, 2, g, grad, &st) == DSK_E_ARG);
      CHECK_CONTAINS(st.msg, "after the solve stopped");
      dsk_solver_free(s);
    }
    if (mev) dsk_model_free(mev);
    if (mm) dsk_model_free(mm);
    if (ev) dsk_model_free(ev);
  }
  if (dec) dsk_model_free(dec);
  if (lv) dsk_model_free(lv);
  if (rob) dsk_model_free(rob);
}


/* IDAS: an index-1 DAE whose firing times depend on the parameters; the stop
   function on the algebraic state.  Against forward mode and central
   differences. */
static void test_dae_threshold(void) {
  dsk_model *m = suite_compile("in_i { cur = 2.0, tau = 1.5, vth = 2.0, c = 2.0 }\n"
                         "u_i { x = 0.0, y = 0.0 }\n"
                         "dudt_i { dxdt = 0, dydt = 0 }\n"
                         "M_i { dxdt, 0 }\n"
                         "F_i { (cur - x) / tau, c * x - y }\n"
                         "stop_i { y - vth }\n"
                         "reset_i { 0.0, 0.0 }\n"
                         "out_i { x, y * y }\n");
  if (!m) return;
  dsk_solver *s = solver(m, DSK_BDF, 1e-10, 1e-10);
  if (s) {
    const double p[4] = {2.0, 1.5, 2.0, 2.0}, times[5] = {0.0, 0.5, 1.2, 2.5, 4.0};
    const double g[10] = {0.3, -1.0, 0.5, 2.0, 1.0, /* x */ 0.1, 0.2, -0.4, 0.3, 0.5 /* y^2 */};
    double grad[4], y[10], sens[40];
    dsk_status st;
    CHECK_MSG(dsk_solver_reverse(s, p, times, 5, g, grad, &st) == DSK_OK, "%s", st.msg);
    CHECK_MSG(dsk_solver_forward(s, p, times, 5, y, sens, &st) == DSK_OK, "%s", st.msg);
    for (int k = 0; k < 4; k++) {
      double pp[4] = {p[0], p[1], p[2], p[3]}, lp = 0, lm = 0, h = 1e-4 * p[k], fw = 0, fd;
      pp[k] = p[k] + h;
      CHECK(dsk_solver_solve_dense(s, pp, times, 5, y, &st) == DSK_OK);
      for (int q = 0; q < 10; q++) lp += g[q] * y[q];
      pp[k] = p[k] - h;
      CHECK(dsk_solver_solve_dense(s, pp, times, 5, y, &st) == DSK_OK);
      for (int q = 0; q < 10; q++) lm += g[q] * y[q];
      fd = (lp - lm) / (2 * h);
      for (int q = 0; q < 10; q++) fw += g[q] * sens[k * 10 + q];
      CHECK_MSG(fabs(grad[k] - fd) <= 1e-4 * fabs(fd) + 1e-6, "dae dL/dp%d: %.10g vs FD %.10g",
                k, grad[k], fd);
      CHECK_MSG(fabs(grad[k] - fw) <= 1e-6 * fabs(fw) + 1e-9, "dae dL/dp%d: %.10g vs fwd %.10g",
                k, grad[k], fw);
    }
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* Many parameters (the sketched quadrature of sens_adjoint.c, above
   opt.sketch_min = 8 here; by default DSK_SKETCH_MIN = 256; variant 4 without
   the sketch): u_i' = -a_i u_i, u_i(0) = b_i for 12 states, 24 parameters,
   out = u, against L = sum_ij g_ij b_i exp(-a_i t_j); also with checkpoints
   every 20 steps, with checkpoint times (the segmented path) and Adams.
   The sketch is accurate in norm: errors relative to the largest component. */
#define MANY_N 12
static void check_many(const double *grad, const double *want, int np, double tol) {
  double big = 0.0, err = 0.0;
  for (int k = 0; k < np; k++) big = fmax(big, fabs(want[k]));
  for (int k = 0; k < np; k++) err = fmax(err, fabs(grad[k] - want[k]));
  CHECK_MSG(err <= tol * big, "max error %.3g, largest component %.3g", err, big);
}

static void test_many_params_closed_form(void) {
  char src[2048];
  size_t len = 0;
  double p[2 * MANY_N], want[2 * MANY_N], grad[2 * MANY_N], y[MANY_N * 6];
  const double times[6] = {0.0, 0.3, 1.0, 1.7, 2.5, 4.0};
  double g[MANY_N * 6];
  len += (size_t)snprintf(src + len, sizeof src - len, "in_i { ");
  for (int i = 0; i < MANY_N; i++) {
    p[i] = 0.2 + 0.15 * i, p[MANY_N + i] = 1.0 + 0.1 * i;
    len += (size_t)snprintf(src + len, sizeof src - len, "a%d = %g, ", i, p[i]);
  }
  for (int i = 0; i < MANY_N; i++)
    len += (size_t)snprintf(src + len, sizeof src - len, "b%d = %g%s", i, p[MANY_N + i],
                            i + 1 < MANY_N ? ", " : " }\nu_i { ");
  for (int i = 0; i < MANY_N; i++)
    len += (size_t)snprintf(src + len, sizeof src - len, "x%d = b%d%s", i, i,
                            i + 1 < MANY_N ? ", " : " }\nF_i { ");
  for (int i = 0; i < MANY_N; i++)
    len += (size_t)snprintf(src + len, sizeof src - len, "-a%d * x%d%s", i, i,
                            i + 1 < MANY_N ? ", " : " }\n");
  dsk_model *m = suite_compile(src);
  if (!m) return;
  for (int k = 0; k < 2 * MANY_N; k++) want[k] = 0.0;
  for (int i = 0; i < MANY_N; i++)
    for (int j = 0; j < 6; j++) {
      double gij = (i + j) % 3 == 0 ? 0.0 : 1.0 - 0.3 * ((i * 7 + j) % 5), e = exp(-p[i] * times[j]);
      g[i * 6 + j] = gij;
      want[i] += gij * (-times[j]) * p[MANY_N + i] * e;
      want[MANY_N + i] += gij * e;
    }
  for (int variant = 0; variant < 5; variant++) {
    dsk_solver_options o;
    dsk_solver *s = NULL;
    dsk_status st;
    dsk_solver_options_default(&o);
    o.method = variant == 3 ? DSK_ADAMS : DSK_BDF;
    o.rtol = 1e-9, o.atol = 1e-11;
    o.sketch_min = variant == 4 ? 0 : 8;
    if (variant == 1) o.checkpoint_steps = 20;
    if (dsk_solver_create(m, &o, &s, &st) != DSK_OK) {
      CHECK_MSG(0, "%s", st.msg);
      continue;
    }
    if (variant == 2) {
      const double ck[2] = {0.8, 2.0};
      CHECK_MSG(dsk_solver_forward_checkpointed_at(s, p, times, 6, ck, 2, y, &st) == DSK_OK, "%s",
                st.msg);
      CHECK_MSG(dsk_solver_backward(s, g, grad, &st) == DSK_OK, "%s", st.msg);
    } else {
      CHECK_MSG(dsk_solver_reverse(s, p, times, 6, g, grad, &st) == DSK_OK, "%s", st.msg);
    }
    check_many(grad, want, 2 * MANY_N, 1e-6);
    /* a second backward pass over the same forward pass, g on the last time only */
    if (variant == 0) {
      double g2[MANY_N * 6] = {0}, want2[2 * MANY_N];
      for (int i = 0; i < MANY_N; i++) {
        double e = exp(-p[i] * times[5]);
        g2[i * 6 + 5] = 1.0;
        want2[i] = -times[5] * p[MANY_N + i] * e, want2[MANY_N + i] = e;
      }
      CHECK_MSG(dsk_solver_backward(s, g2, grad, &st) == DSK_OK, "%s", st.msg);
      check_many(grad, want2, 2 * MANY_N, 1e-6);
    }
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* adams with fixed-point iteration (DSK_LS_FIXEDPOINT): the closed form, no Jacobian
   nor linear setup, the forward sensitivities and the adjoint; bdf refuses it. */
static void test_fixedpoint(void) {
  dsk_model *m = suite_compile("in_i { k = 0.7, a0 = 2.5 }\nu { a0 }\nF { -k * u }\n");
  if (!m) return;
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  o.rtol = 1e-10, o.atol = 1e-12;
  o.method = DSK_ADAMS, o.linear_solver = DSK_LS_FIXEDPOINT;
  dsk_solver *s = NULL;
  dsk_status st;
  CHECK_MSG(dsk_solver_create(m, &o, &s, &st) == DSK_OK, "%s", st.msg);
  if (!s) {
    dsk_model_free(m);
    return;
  }
  CHECK(strcmp(dsk_solver_linsol_name(s), "fixedpoint") == 0);
  const double p[2] = {0.7, 2.5}, times[4] = {0.0, 0.5, 2.0, 5.0}, g[4] = {1.0, -0.5, 2.0, 0.3};
  double y[4], grad[2], sens[2 * 4], wk = 0.0, wa = 0.0;
  CHECK_MSG(dsk_solver_solve_dense(s, p, times, 4, y, &st) == DSK_OK, "%s", st.msg);
  for (int j = 0; j < 4; j++) CHECK_CLOSE(y[j], p[1] * exp(-p[0] * times[j]), 1e-7);
  dsk_stats stats;
  dsk_solver_stats(s, &stats);
  CHECK(stats.steps > 0 && stats.jac_evals == 0 && stats.lin_setups == 0);
  for (int j = 0; j < 4; j++) {
    double e = exp(-p[0] * times[j]);
    wk += g[j] * (-times[j] * p[1] * e), wa += g[j] * e;
  }
  CHECK_MSG(dsk_solver_reverse(s, p, times, 4, g, grad, &st) == DSK_OK, "%s", st.msg);
  CHECK_CLOSE(grad[0], wk, 1e-7);
  CHECK_CLOSE(grad[1], wa, 1e-7);
  CHECK_MSG(dsk_solver_forward(s, p, times, 4, y, sens, &st) == DSK_OK, "%s", st.msg);
  for (int j = 0; j < 4; j++) {
    CHECK_CLOSE(sens[0 * 4 + j], -times[j] * p[1] * exp(-p[0] * times[j]), 1e-6);
    CHECK_CLOSE(sens[1 * 4 + j], exp(-p[0] * times[j]), 1e-6);
  }
  dsk_solver_free(s);
  s = NULL;
  o.method = DSK_BDF;
  CHECK(dsk_solver_create(m, &o, &s, &st) == DSK_E_ARG && s == NULL);
  CHECK_CONTAINS(st.msg, "fixedpoint");
  dsk_model_free(m);
}

/* The backward step budget: Robertson (bdf, CVODES), the same as a DAE (IDAS)
   and Lotka-Volterra (tsit45, ARKODE) with a gradient at every output time.
   Over a small budget the pass stops with DSK_E_BUDGET after more than
   budget * (forward steps) backward steps; the solver then gives the same
   gradient, bit for bit, as before (without a budget, and with one it stays
   under), and backward passes over the same checkpoints work too. */
static void test_backward_budget(void) {
  static const char *const src[3] = {
      "in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\nu_i { a = 1, b = 0, c = 0 }\n"
      "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, k3 * b * b }\n",
      "in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\nu_i { a = 1, b = 0, c = 0 }\n"
      "dudt_i { da = 0, db = 0, dc = 0 }\nM_i { da, db, 0 }\n"
      "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, a + b + c - 1 }\n",
      "in_i { a = 1.5, b = 1, c = 3, d = 1 }\nu_i { x = 1, y = 1 }\n"
      "F_i { a * x - b * x * y, -c * y + d * x * y }\n"};
  static const int method[3] = {DSK_BDF, DSK_BDF, DSK_TSIT45};
  for (int c = 0; c < 3; c++) {
    dsk_model *m = suite_compile(src[c]);
    dsk_solver *s;
    if (!m) continue;
    s = solver(m, method[c], 1e-8, 1e-10);
    if (s) {
      const int n = c == 2 ? 2 : 3, np = c == 2 ? 4 : 3, nt = 9;
      double times[9], g[27], want[4], grad[4];
      dsk_status st;
      dsk_stats stats;
      for (int j = 0; j < nt; j++) times[j] = c == 2 ? 2.0 * (j + 1) : pow(10.0, j - 4);
      for (int q = 0; q < n * nt; q++) g[q] = 0.3 + 0.1 * (q % 7) - 0.05 * (q % 3);
      const double *p = dsk_model_table(m)->default_params;
      CHECK_MSG(dsk_solver_reverse(s, p, times, nt, g, want, &st) == DSK_OK, "%s", st.msg);
      dsk_solver_stats(s, &stats);
      long full = stats.backward_steps, fwd = stats.steps;
      CHECK_MSG(full > fwd, "case %d: %ld backward steps, %ld forward", c, full, fwd);
      /* a budget of a tenth of the full pass */
      double ratio = 0.1 * (double)full / (double)fwd;
      dsk_solver_set_backward_budget(s, ratio);
      int rc = dsk_solver_reverse(s, p, times, nt, g, grad, &st);
      dsk_solver_stats(s, &stats);
      CHECK_MSG(rc == DSK_E_BUDGET, "case %d: rc %d (%s)", c, rc, st.msg);
      CHECK_MSG(stats.backward_steps > ratio * (double)fwd && stats.backward_steps < full,
                "case %d: stopped after %ld of %ld backward steps (budget %g)", c,
                stats.backward_steps, full, ratio * (double)fwd);
      CHECK(strstr(st.msg, "budget") != NULL);
      /* over the same checkpoints: stops again; within a large budget: the gradient */
      CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_E_BUDGET);
      dsk_solver_set_backward_budget(s, 10.0 * (double)full / (double)fwd);
      CHECK_MSG(dsk_solver_backward(s, g, grad, &st) == DSK_OK, "%s", st.msg);
      for (int k = 0; k < np; k++)
        CHECK_MSG(grad[k] == want[k], "case %d: dL/dp%d %.17g, without a budget %.17g", c, k,
                  grad[k], want[k]);
      dsk_solver_set_backward_budget(s, 0.0);
      CHECK_MSG(dsk_solver_reverse(s, p, times, nt, g, grad, &st) == DSK_OK, "%s", st.msg);
      for (int k = 0; k < np; k++) CHECK(grad[k] == want[k]);
      dsk_solver_free(s);
    }
    dsk_model_free(m);
  }
}

void suite_adjoint(void) {
  if (!suite_cache_open("adjoint")) return;
  test_decay_closed_form();
  test_many_params_closed_form();
  test_fixedpoint();
  test_robertson_fd();
  test_linear_solvers();
  test_refusals();
  test_dosing_closed_form();
  test_ball();
  test_dae_threshold();
  test_dae_mass_param_closed_form();
  test_robertson_dae_fd();
  test_dae_regular_mass();
  test_dae_refuses_time_dependent_mass();
  test_arkode_methods();
  test_backward_budget();
  suite_cache_close();
}
