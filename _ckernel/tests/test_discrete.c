/* test_discrete.c - the discrete adjoint of CVODES' BDF steps (sens_discrete.c):
   every step of the replay checked against CVODES' own Nordsieck array
   (adjoint_discrete = 2) over several models and tolerances; gradients
   against a closed form, central differences of tighter solves and the
   continuous adjoint; the outputs of its forward pass against solve_dense's;
   the fallbacks (events, adams, checkpoint times). */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"
#include "suite.h"

void suite_discrete(void);

static const char *ROBERTSON =
    "in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\n"
    "u_i { a = 1, b = 0, c = 0 }\n"
    "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, k3 * b * b }\n"
    "out_i { a + 2 * c, 1e4 * b }\n";
static const char *VDP = "in_i { mu = 10 }\nu_i { x = 2, y = 0 }\n"
                         "F_i { y, mu * (1 - x * x) * y - x }\n";
static const char *LV = "in_i { a = 1.5, b = 1, c = 3, d = 1 }\nu_i { x = 1, y = 1 }\n"
                        "F_i { a * x - b * x * y, -c * y + d * x * y }\n";

/* 30-state heat equation with a boundary parameter: KLU above DSK_LS_KLU_MIN */
static const char *HEAT =
    "in_i { kappa = 0.5, tb = 1.0 }\n"
    "L_ij { (0..30, 0..30): -2.0, (0..29, 1..30): 1.0, (1..30, 0..29): 1.0 }\n"
    "b_i { (0): tb, (1:29): 0.0, (29): tb }\n"
    "u_i { (0:15): 0.0, (15:30): 1.0 }\n"
    "lap_i { L_ij * u_j }\n"
    "F_i { kappa * (lap_i + b_i) * 961.0 }\n";

/* Every step replayed and checked (adjoint_discrete = 2) at four tolerances: the
   pass is a recorded discrete one, its backward pass one step per forward step
   without restarts, and its gradient the one of the unchecked mode, bit for bit. */
static void test_replay_matches_cvodes(void) {
  struct {
    const char *src;
    int linsol;
    double t1;
  } cases[] = {{ROBERTSON, DSK_LS_DENSE, 4e4}, {VDP, DSK_LS_DENSE, 30.0},
               {LV, DSK_LS_LAPACK, 20.0},      {HEAT, DSK_LS_KLU, 0.1},
               {LV, DSK_LS_SUNDENSE, 20.0}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    dsk_model *m = suite_compile(cases[c].src);
    if (!m) continue;
    const dsk_gen_table *tab = dsk_model_table(m);
    int np = tab->nparams, nout = tab->nout;
    double p[4], times[7], *g = malloc((size_t)nout * 7 * sizeof *g), g1[4], g2[4];
    memcpy(p, tab->default_params, (size_t)np * sizeof *p);
    for (int j = 0; j < 7; j++) times[j] = cases[c].t1 * pow(10.0, j - 6.0);
    for (int q = 0; q < nout * 7; q++) g[q] = sin(1.0 + q);
    for (double rtol = 1e-4; rtol > 1e-11; rtol *= 1e-2) {
      dsk_solver *sv = suite_solver(m, DSK_BDF, rtol, rtol * 1e-2, cases[c].linsol, 2);
      dsk_solver *sc = suite_solver(m, DSK_BDF, rtol, rtol * 1e-2, cases[c].linsol, 1);
      dsk_status st;
      dsk_stats stats;
      if (!sv || !sc || !g) {
        dsk_solver_free(sv), dsk_solver_free(sc);
        continue;
      }
      CHECK(dsk_solver_discrete_adjoint(sv) == 1);
      CHECK_MSG(dsk_solver_reverse(sv, p, times, 7, g, g1, &st) == DSK_OK, "%s", st.msg);
      CHECK_MSG(dsk_solver_discrete_recorded(sv) == 1, "case %zu rtol %g: a step not replayed",
                c, rtol);
      dsk_solver_stats(sv, &stats);
      CHECK(stats.backward_steps == stats.steps && stats.backward_restarts == 0);
      CHECK_MSG(dsk_solver_reverse(sc, p, times, 7, g, g2, &st) == DSK_OK, "%s", st.msg);
      for (int k = 0; k < np; k++) CHECK(g1[k] == g2[k]);
      dsk_solver_free(sv);
      dsk_solver_free(sc);
    }
    free(g);
    dsk_model_free(m);
  }
}

/* decay: u = a0 exp(-k t); the discrete gradient within the integration error
   of the closed form, and outputs at t0 (y0 itself) included */
static void test_decay_closed_form(void) {
  dsk_model *m = suite_compile("in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n");
  dsk_solver *s = m ? suite_solver(m, DSK_BDF, 1e-10, 1e-12, DSK_LS_AUTO, 1) : NULL;
  if (s) {
    const double p[2] = {0.7, 2.0}, times[4] = {0.0, 0.5, 2.0, 5.0}, g[4] = {1.0, -0.5, 2.0, 1.5};
    double grad[2], wk = 0.0, wa = 0.0;
    dsk_status st;
    for (int j = 0; j < 4; j++) {
      double e = exp(-0.7 * times[j]);
      wk += g[j] * -times[j] * 2.0 * e;
      wa += g[j] * e;
    }
    CHECK_MSG(dsk_solver_reverse(s, p, times, 4, g, grad, &st) == DSK_OK, "%s", st.msg);
    CHECK(dsk_solver_discrete_recorded(s) == 1);
    CHECK_CLOSE(grad[0], wk, 1e-7);
    CHECK_CLOSE(grad[1], wa, 1e-7);
  }
  dsk_solver_free(s);
  dsk_model_free(m);
}

/* Robertson with two outputs: central differences of solves at rtol 1e-12, to
   1e-4 of the largest p_k dL/dp_k; the forward pass's outputs are solve_dense's
   bit for bit; a second backward pass with another g needs no new forward pass. */
static void test_robertson_fd(void) {
  dsk_model *m = suite_compile(ROBERTSON);
  dsk_solver *s = m ? suite_solver(m, DSK_BDF, 1e-10, 1e-14, DSK_LS_AUTO, 1) : NULL;
  dsk_solver *ref = m ? suite_solver(m, DSK_BDF, 1e-12, 1e-16, DSK_LS_AUTO, 0) : NULL;
  if (s && ref) {
    const double p[3] = {0.04, 1e4, 3e7}, times[4] = {0.1, 1.0, 10.0, 40.0};
    const double g[8] = {0.5, -1.0, 0.25, 1.0, 1.0, 0.0, -2.0, 0.5};
    double grad[3], y[8], yc[8], fd[3], scale = 0.0, grad2[3];
    dsk_status st;
    CHECK(dsk_solver_solve_dense(s, p, times, 4, y, &st) == DSK_OK);
    CHECK_MSG(dsk_solver_forward_checkpointed(s, p, times, 4, yc, &st) == DSK_OK, "%s", st.msg);
    CHECK(memcmp(y, yc, sizeof y) == 0);
    CHECK_MSG(dsk_solver_backward(s, g, grad, &st) == DSK_OK, "%s", st.msg);
    suite_fd_gradient(ref, p, 3, times, 4, g, 2, 1e-5, fd);
    for (int k = 0; k < 3; k++)
      if (fabs(fd[k] * p[k]) > scale) scale = fabs(fd[k] * p[k]);
    for (int k = 0; k < 3; k++)
      CHECK_MSG(fabs(grad[k] - fd[k]) * p[k] <= 1e-4 * scale, "dL/dp%d: %.10g vs FD %.10g", k,
                grad[k], fd[k]);
    /* linear in g: 3 g gives 3 grad, from the same forward pass */
    double g3[8];
    for (int q = 0; q < 8; q++) g3[q] = 3.0 * g[q];
    CHECK_MSG(dsk_solver_backward(s, g3, grad2, &st) == DSK_OK, "%s", st.msg);
    double gmax = fmax(fabs(grad[0]) * p[0], fmax(fabs(grad[1]) * p[1], fabs(grad[2]) * p[2]));
    for (int k = 0; k < 3; k++)
      CHECK_MSG(fabs(grad2[k] - 3.0 * grad[k]) * p[k] <= 1e-12 * gmax, "%d: %.17g vs %.17g", k,
                grad2[k], 3.0 * grad[k]);
  }
  dsk_solver_free(s);
  dsk_solver_free(ref);
  dsk_model_free(m);
}

/* The heat equation (KLU) with a loss on every output time: the discrete and the
   continuous adjoint agree to the integration error, the discrete one without a
   restart and with one backward step per forward step. */
static void test_heat_against_continuous(void) {
  dsk_model *m = suite_compile(HEAT);
  dsk_solver *d = m ? suite_solver(m, DSK_BDF, 1e-10, 1e-12, DSK_LS_KLU, 1) : NULL;
  dsk_solver *c = m ? suite_solver(m, DSK_BDF, 1e-10, 1e-12, DSK_LS_KLU, 0) : NULL;
  if (d && c) {
    int nout = dsk_model_table(m)->nout;
    double p[2] = {0.5, 1.0}, times[6] = {0.0, 0.002, 0.005, 0.01, 0.03, 0.1}, gd[2], gc[2];
    double *g = malloc((size_t)nout * 6 * sizeof *g);
    dsk_status st;
    dsk_stats sd, sc;
    if (g) {
      for (int q = 0; q < nout * 6; q++) g[q] = cos(0.3 * q);
      CHECK_MSG(dsk_solver_reverse(d, p, times, 6, g, gd, &st) == DSK_OK, "%s", st.msg);
      CHECK_MSG(dsk_solver_reverse(c, p, times, 6, g, gc, &st) == DSK_OK, "%s", st.msg);
      dsk_solver_stats(d, &sd);
      dsk_solver_stats(c, &sc);
      CHECK(sd.backward_steps == sd.steps && sd.backward_restarts == 0);
      CHECK(sc.backward_restarts >= 4 && sc.backward_steps > 2 * sd.backward_steps);
      double scale = fmax(fabs(gc[0]), fabs(gc[1]));
      for (int k = 0; k < 2; k++)
        CHECK_MSG(fabs(gd[k] - gc[k]) <= 1e-6 * scale, "%d: %.12g vs %.12g", k, gd[k], gc[k]);
    }
    free(g);
  }
  dsk_solver_free(d);
  dsk_solver_free(c);
  dsk_model_free(m);
}

/* A dense 10-state model (10 colours: the backward solves refine with the last
   factorisation instead of a new Jacobian at every step): the discrete gradient
   against the continuous adjoint at rtol 1e-10, and every step replayed. */
static void test_dense_refinement(void) {
  dsk_model *m = suite_compile("in_i { k = 1.0, c = 0.5 }\n"
                         "A_ij { (0..10, 0..10): 0.3 }\n"
                         "u_i { (0:5): 1.0, (5:10): -0.5 }\n"
                         "F_i { -k * u_i + c * tanh(A_ij * u_j) + 0.2 * sin(t) }\n");
  dsk_solver *d = m ? suite_solver(m, DSK_BDF, 1e-10, 1e-12, DSK_LS_DENSE, 2) : NULL;
  dsk_solver *c = m ? suite_solver(m, DSK_BDF, 1e-10, 1e-12, DSK_LS_DENSE, 0) : NULL;
  if (d && c) {
    const double p[2] = {1.0, 0.5}, times[5] = {0.5, 1.0, 2.0, 4.0, 8.0};
    double g[50], gd[2], gc[2];
    dsk_status st;
    CHECK(dsk_model_jac_ncolors(m) > 8);
    for (int q = 0; q < 50; q++) g[q] = sin(0.7 * q + 0.1);
    CHECK_MSG(dsk_solver_reverse(d, p, times, 5, g, gd, &st) == DSK_OK, "%s", st.msg);
    CHECK(dsk_solver_discrete_recorded(d) == 1);
    CHECK_MSG(dsk_solver_reverse(c, p, times, 5, g, gc, &st) == DSK_OK, "%s", st.msg);
    double scale = fmax(fabs(gc[0]), fabs(gc[1]));
    for (int k = 0; k < 2; k++)
      CHECK_MSG(fabs(gd[k] - gc[k]) <= 1e-6 * scale, "%d: %.12g vs %.12g", k, gd[k], gc[k]);
  }
  dsk_solver_free(d);
  dsk_solver_free(c);
  dsk_model_free(m);
}

/* Where it does not apply the continuous adjoint runs: events, adams, checkpoint
   times; a zero g costs nothing. */
static void test_fallbacks(void) {
  dsk_model *ev = suite_compile("in_i { k = 1 }\nu { 1 }\nF { -k * u }\nstop { u - 0.5 }\n");
  dsk_model *de = suite_compile("in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n");
  dsk_status st;
  const double times[3] = {0.0, 0.3, 0.6}, g[3] = {0.0, 1.0, 1.0};
  double grad[2];
  if (ev) {
    dsk_solver *s = suite_solver(ev, DSK_BDF, 1e-8, 1e-10, DSK_LS_AUTO, 1);
    CHECK(s && dsk_solver_discrete_adjoint(s) == 0);
    CHECK(s && dsk_solver_reverse(s, (double[]){1.0}, times, 3, g, grad, &st) == DSK_OK);
    CHECK(s && dsk_solver_discrete_recorded(s) == 0);
    dsk_solver_free(s);
  }
  if (de) {
    const double p[2] = {0.7, 2.0}, ck[1] = {0.3};
    dsk_solver *a = suite_solver(de, DSK_ADAMS, 1e-8, 1e-10, DSK_LS_AUTO, 1);
    dsk_solver *b = suite_solver(de, DSK_BDF, 1e-8, 1e-10, DSK_LS_AUTO, 1);
    CHECK(a && dsk_solver_discrete_adjoint(a) == 0);
    CHECK(a && dsk_solver_reverse(a, p, times, 3, g, grad, &st) == DSK_OK);
    CHECK(a && dsk_solver_discrete_recorded(a) == 0);
    CHECK(b && dsk_solver_forward_checkpointed_at(b, p, times, 3, ck, 1, NULL, &st) == DSK_OK);
    CHECK(b && dsk_solver_discrete_recorded(b) == 0);
    CHECK(b && dsk_solver_backward(b, g, grad, &st) == DSK_OK);
    CHECK_CLOSE(grad[1], exp(-0.21) + exp(-0.42), 1e-6);
    /* a zero g: zeros, no backward step */
    const double z[3] = {0.0, 0.0, 0.0};
    dsk_stats sb;
    CHECK(b && dsk_solver_reverse(b, p, times, 3, z, grad, &st) == DSK_OK);
    CHECK(grad[0] == 0.0 && grad[1] == 0.0);
    CHECK(b && dsk_solver_forward_checkpointed(b, p, times, 3, NULL, &st) == DSK_OK);
    CHECK(b && dsk_solver_discrete_recorded(b) == 1);
    CHECK(b && dsk_solver_backward(b, z, grad, &st) == DSK_OK);
    dsk_solver_stats(b, &sb);
    CHECK(sb.backward_steps == 0 && grad[0] == 0.0 && grad[1] == 0.0);
    dsk_solver_free(a);
    dsk_solver_free(b);
  }
  dsk_model_free(ev);
  dsk_model_free(de);
}

void suite_discrete(void) {
  if (!suite_cache_open("discrete")) return;
  test_replay_matches_cvodes();
  test_decay_closed_form();
  test_robertson_fd();
  test_heat_against_continuous();
  test_dense_refinement();
  test_fallbacks();
  suite_cache_close();
}
