/* test_forward.c - forward sensitivities (sens_forward.c) for every method
   against closed forms (decay with several outputs, a parameter-dependent
   mass matrix, the dosing events, an integrate-and-fire threshold model whose
   event times depend on the state and the parameters) and against central
   finite differences of dsk_solver_solve_dense (Robertson's DAE, a bouncing
   ball). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* mkdtemp */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"

void suite_forward(void);

static const char *const mnames[DSK_NMETHODS] = {"bdf",    "adams",   "tsit45",
                                                 "dopri5", "tr_bdf2", "esdirk34"};

static dsk_model *compile(const char *src, const char *root) {
  dsk_jit_options jo = {root, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  int rc = dsk_model_compile(src, &jo, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  return m;
}

static dsk_solver *make(const dsk_model *m, int method, double rtol, double atol) {
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  o.method = method;
  o.rtol = rtol;
  o.atol = atol;
  dsk_solver *s = NULL;
  dsk_status st;
  int rc = dsk_solver_create(m, &o, &s, &st);
  CHECK_MSG(rc == DSK_OK, "%s: %s", mnames[method], st.msg);
  return s;
}

/* max |a - b| / (|b| + floor) */
static double rel(const double *a, const double *b, size_t n, double floor) {
  double e = 0;
  for (size_t i = 0; i < n; i++) e = fmax(e, fabs(a[i] - b[i]) / (fabs(b[i]) + floor));
  return e;
}

/* ---- decay with three outputs, u0 and out depending on the parameters ---- */

static const char decay_src[] = "in_i { k = 0.7, a0 = 2.0 }\n"
                                "u { a0 }\n"
                                "F { -k * u }\n"
                                "out_i { u, k * u, u * u }\n";

static void test_decay(const char *root) {
  dsk_model *m = compile(decay_src, root);
  if (!m) return;
  enum { NT = 6 };
  const double p[2] = {0.7, 2.0}, times[NT] = {0.0, 0.1, 0.5, 1.0, 2.0, 5.0};
  double ex[3 * NT], exs[2 * 3 * NT];
  for (int j = 0; j < NT; j++) {
    double t = times[j], E = exp(-p[0] * t), u = p[1] * E, du_dk = -t * u, du_da = E;
    ex[0 * NT + j] = u, ex[1 * NT + j] = p[0] * u, ex[2 * NT + j] = u * u;
    exs[(0 * 3 + 0) * NT + j] = du_dk;
    exs[(0 * 3 + 1) * NT + j] = u + p[0] * du_dk;
    exs[(0 * 3 + 2) * NT + j] = 2 * u * du_dk;
    exs[(1 * 3 + 0) * NT + j] = du_da;
    exs[(1 * 3 + 1) * NT + j] = p[0] * du_da;
    exs[(1 * 3 + 2) * NT + j] = 2 * u * du_da;
  }
  for (int method = 0; method < DSK_NMETHODS; method++) {
    dsk_solver *s = make(m, method, 1e-9, 1e-12);
    if (!s) continue;
    double y[3 * NT], sens[2 * 3 * NT], y2[3 * NT], sens2[2 * 3 * NT], yd[3 * NT];
    dsk_status st;
    int rc = dsk_solver_forward(s, p, times, NT, y, sens, &st);
    CHECK_MSG(rc == DSK_OK, "%s: %s", mnames[method], st.msg);
    double tol = (method == DSK_TSIT45 || method == DSK_DOPRI5) ? 1e-6 : 1e-5;
    double ey = rel(y, ex, 3 * NT, 1e-12), es = rel(sens, exs, 6 * NT, 1e-12);
    CHECK_MSG(ey <= tol && es <= tol, "%s: y %g sens %g", mnames[method], ey, es);
    /* repeatable, and a plain solve afterwards is the plain solve */
    rc = dsk_solver_forward(s, p, times, NT, y2, sens2, &st);
    CHECK(rc == DSK_OK && memcmp(y, y2, sizeof y) == 0 && memcmp(sens, sens2, sizeof sens) == 0);
    rc = dsk_solver_solve_dense(s, p, times, NT, yd, &st);
    CHECK_MSG(rc == DSK_OK && rel(yd, ex, 3 * NT, 1e-12) <= tol, "%s: %s", mnames[method],
              st.msg);
    dsk_stats stats;
    dsk_solver_stats(s, &stats);
    CHECK(stats.steps > 0);
    /* argument errors */
    CHECK(dsk_solver_forward(s, p, times, NT, y, NULL, &st) == DSK_E_ARG);
    CHECK(dsk_solver_forward(s, p, times, 0, y, sens, &st) == DSK_E_ARG);
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* ---- a mass matrix depending on a parameter ---- */

static void test_mass_param(const char *root) {
  static const char src[] = "in_i { k = 1.0, m = 2.0 }\n"
                            "u_i { x = 1.0, y = 2.0 }\n"
                            "dudt_i { dx = 0, dy = 0 }\n"
                            "M_i { m * dx, 4 * dy }\n"
                            "F_i { -k * x, -k * y }\n";
  dsk_model *m = compile(src, root);
  if (!m) return;
  enum { NT = 5 };
  const double p[2] = {1.5, 2.5}, times[NT] = {0.0, 0.5, 1.0, 2.0, 3.0};
  double ex[2 * NT], exs[2 * 2 * NT];
  for (int j = 0; j < NT; j++) {
    double t = times[j], x = exp(-p[0] * t / p[1]), yv = 2 * exp(-p[0] * t / 4);
    ex[j] = x, ex[NT + j] = yv;
    exs[(0 * 2 + 0) * NT + j] = -t / p[1] * x;
    exs[(0 * 2 + 1) * NT + j] = -t / 4 * yv;
    exs[(1 * 2 + 0) * NT + j] = p[0] * t / (p[1] * p[1]) * x;
    exs[(1 * 2 + 1) * NT + j] = 0.0;
  }
  for (int method = 0; method < DSK_NMETHODS; method++) {
    if (method == DSK_ADAMS) continue;
    dsk_solver *s = make(m, method, 1e-9, 1e-12);
    if (!s) continue;
    double y[2 * NT], sens[2 * 2 * NT];
    dsk_status st;
    int rc = dsk_solver_forward(s, p, times, NT, y, sens, &st);
    CHECK_MSG(rc == DSK_OK, "%s: %s", mnames[method], st.msg);
    double ey = rel(y, ex, 2 * NT, 1e-12), es = rel(sens, exs, 4 * NT, 1e-9);
    CHECK_MSG(ey <= 1e-5 && es <= 1e-5, "%s: y %g sens %g", mnames[method], ey, es);
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* ---- sens_rtol / sens_atol: the sensitivities' own tolerances ---- */

/* Forward sensitivities of the decay (every method) and of the mass-matrix
   model (IDAS, ARKODE with M) with looser sensitivity tolerances: the option
   reaches every integrator, fewer steps in total, still within the looser
   tolerance of the closed forms; bad values refused. */
static void test_sens_tolerances(const char *root) {
  static const char mass_src[] = "in_i { k = 1.0, m = 2.0 }\n"
                                 "u_i { x = 1.0, y = 2.0 }\n"
                                 "dudt_i { dx = 0, dy = 0 }\n"
                                 "M_i { m * dx, 4 * dy }\n"
                                 "F_i { -k * x, -k * y }\n";
  enum { NT = 6 };
  const double times[NT] = {0.0, 0.5, 1.0, 2.0, 4.0, 8.0};
  long total[2] = {0, 0};
  for (int mod = 0; mod < 2; mod++) {
    dsk_model *m = compile(mod ? mass_src : decay_src, root);
    if (!m) return;
    const double p[2] = {0.7, 2.0};
    int nout = mod ? 2 : 3;
    double ex[2 * 3 * NT]; /* closed-form sensitivities */
    for (int j = 0; j < NT; j++) {
      double t = times[j];
      if (mod) {
        double x = exp(-p[0] * t / p[1]), yv = 2 * exp(-p[0] * t / 4);
        ex[0 * NT + j] = -t / p[1] * x, ex[1 * NT + j] = -t / 4 * yv;
        ex[2 * NT + j] = p[0] * t / (p[1] * p[1]) * x, ex[3 * NT + j] = 0.0;
      } else {
        double E = exp(-p[0] * t), u = p[1] * E, du_dk = -t * u;
        ex[0 * NT + j] = du_dk, ex[1 * NT + j] = u + p[0] * du_dk, ex[2 * NT + j] = 2 * u * du_dk;
        ex[3 * NT + j] = E, ex[4 * NT + j] = p[0] * E, ex[5 * NT + j] = 2 * u * E;
      }
    }
    for (int method = 0; method < DSK_NMETHODS; method++) {
      if (mod && (method == DSK_ADAMS || method == DSK_TSIT45 || method == DSK_DOPRI5))
        continue;
      long steps[2] = {0, 0};
      double err[2] = {0, 0};
      for (int loose = 0; loose < 2; loose++) {
        dsk_solver_options o;
        dsk_solver_options_default(&o);
        o.method = method, o.rtol = 1e-9, o.atol = 1e-12;
        if (loose) o.sens_rtol = 1e-5, o.sens_atol = 1e-8;
        dsk_solver *s = NULL;
        dsk_status st;
        int rc = dsk_solver_create(m, &o, &s, &st);
        CHECK_MSG(rc == DSK_OK, "%s: %s", mnames[method], st.msg);
        if (rc != DSK_OK) continue;
        double y[3 * NT], sens[2 * 3 * NT];
        rc = dsk_solver_forward(s, p, times, NT, y, sens, &st);
        CHECK_MSG(rc == DSK_OK, "%s: %s", mnames[method], st.msg);
        dsk_stats stats;
        dsk_solver_stats(s, &stats);
        steps[loose] = stats.steps;
        err[loose] = rel(sens, ex, (size_t)2 * nout * NT, 1e-3);
        dsk_solver_free(s);
      }
      double tol = method == DSK_TR_BDF2 ? 1e-4 : 1e-6;
      /* the option reaches every integrator; fewer steps on the whole (not on each:
         adams took 99 instead of 79 on the decay) */
      CHECK_MSG(err[0] <= tol && err[1] <= 1e-3 && steps[1] != steps[0],
                "%s (model %d): sens error %g / %g, steps %ld / %ld", mnames[method], mod,
                err[0], err[1], steps[0], steps[1]);
      total[0] += steps[0], total[1] += steps[1];
    }
    dsk_model_free(m);
  }
  CHECK_MSG(total[1] < 0.8 * total[0], "steps %ld (default) / %ld (loose)", total[0], total[1]);
  /* bad values */
  dsk_model *m = compile(decay_src, root);
  if (!m) return;
  const double bad[3] = {-1e-6, NAN, INFINITY};
  for (int b = 0; b < 6; b++) {
    dsk_solver_options o;
    dsk_solver_options_default(&o);
    if (b < 3) o.sens_rtol = bad[b];
    else o.sens_atol = bad[b - 3];
    dsk_solver *s = NULL;
    dsk_status st;
    CHECK(dsk_solver_create(m, &o, &s, &st) == DSK_E_ARG && s == NULL &&
          strstr(st.msg, "sens_rtol") != NULL);
  }
  dsk_model_free(m);
}

/* ---- dosing: fixed event times, out depends on vol ---- */

static const char dosing_src[] = "in_i { cl = 2.0, vol = 10.0 }\n"
                                 "tdose_i { 4.0, 8.0, 12.0 }\n"
                                 "amt_i { 50.0, 50.0, 50.0 }\n"
                                 "u_i { q = 50.0 }\n"
                                 "F_i { -cl / vol * q }\n"
                                 "stop_i { tdose_i - t }\n"
                                 "reset_i { q + amt_i[N] }\n"
                                 "out_i { q / vol }\n";

static void test_dosing(const char *root) {
  dsk_model *m = compile(dosing_src, root);
  if (!m) return;
  enum { NT = 7 };
  const double p[2] = {2.0, 10.0}, times[NT] = {0.0, 3.0, 4.0, 6.0, 8.0, 12.5, 16.0};
  double ex[NT], exs[2 * NT];
  for (int j = 0; j < NT; j++) {
    double t = times[j], cl = p[0], vol = p[1], k = cl / vol, q = 0, dq_dk = 0;
    for (int d = 0; d <= 12; d += 4)
      if (t >= d) q += 50 * exp(-k * (t - d)), dq_dk -= 50 * (t - d) * exp(-k * (t - d));
    ex[j] = q / vol;
    exs[j] = dq_dk / vol / vol;                                  /* dk/dcl = 1/vol */
    exs[NT + j] = dq_dk * (-cl / (vol * vol)) / vol - q / (vol * vol);
  }
  for (int method = 0; method < DSK_NMETHODS; method++) {
    if (method == DSK_TR_BDF2) continue;
    dsk_solver *s = make(m, method, 1e-9, 1e-10);
    if (!s) continue;
    double y[NT], sens[2 * NT];
    dsk_status st;
    int rc = dsk_solver_forward(s, p, times, NT, y, sens, &st);
    CHECK_MSG(rc == DSK_OK, "%s: %s", mnames[method], st.msg);
    double ey = rel(y, ex, NT, 1e-12), es = rel(sens, exs, 2 * NT, 1e-9);
    CHECK_MSG(ey <= 1e-6 && es <= 1e-5, "%s: y %g sens %g", mnames[method], ey, es);
    dsk_stats stats;
    dsk_solver_stats(s, &stats);
    CHECK(stats.events == 3);
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* ---- integrate-and-fire: v' = (I - v) / tau, fire at v = vth, reset to vr.
   From v = vr the next spike comes after T = tau ln((I - vr) / (I - vth));
   between spikes v = I - (I - vr) exp(-(t - t_last) / tau). ---- */

static void test_fire(const char *root) {
  static const char src[] = "in_i { cur = 2.0, tau = 1.5, vth = 1.0 }\n"
                            "u { 0.0 }\n"
                            "F { (cur - u) / tau }\n"
                            "stop { u - vth }\n"
                            "reset { 0.0 }\n";
  dsk_model *m = compile(src, root);
  if (!m) return;
  enum { NT = 6, NP = 3 };
  const double p[NP] = {2.0, 1.5, 1.0}, times[NT] = {0.0, 0.5, 1.2, 2.5, 3.3, 5.0};
  /* exact v(t; p) and its gradient by hand: T(p) = tau ln(I / (I - vth)),
     v = I (1 - exp(-(t - n T) / tau)) with n = floor(t / T) */
  double ex[NT], exs[NP * NT];
  for (int j = 0; j < NT; j++) {
    double I = p[0], tau = p[1], vth = p[2], t = times[j];
    double T = tau * log(I / (I - vth));
    double dT[NP] = {tau * (1 / I - 1 / (I - vth)), log(I / (I - vth)), tau / (I - vth)};
    int nsp = (int)floor(t / T);
    double r = t - nsp * T, E = exp(-r / tau);
    ex[j] = I * (1 - E);
    /* dv = d/dp [I (1 - exp(-r/tau))], r = t - n T */
    for (int k = 0; k < NP; k++) {
      double dr = -nsp * dT[k];
      double dtau = k == 1 ? 1.0 : 0.0, dI = k == 0 ? 1.0 : 0.0;
      double dE = E * (-(dr * tau - r * dtau) / (tau * tau));
      exs[k * NT + j] = dI * (1 - E) - I * dE;
    }
  }
  for (int method = 0; method < DSK_NMETHODS; method++) {
    if (method == DSK_TR_BDF2) continue;
    dsk_solver *s = make(m, method, 1e-10, 1e-12);
    if (!s) continue;
    double y[NT], sens[NP * NT];
    dsk_status st;
    int rc = dsk_solver_forward(s, p, times, NT, y, sens, &st);
    CHECK_MSG(rc == DSK_OK, "%s: %s", mnames[method], st.msg);
    double ey = rel(y, ex, NT, 1e-9), es = rel(sens, exs, NP * NT, 1e-9);
    CHECK_MSG(ey <= 1e-6 && es <= 1e-5, "%s: y %g sens %g", mnames[method], ey, es);
    dsk_stats stats;
    dsk_solver_stats(s, &stats);
    CHECK_MSG(stats.events == 4, "%s: %ld events", mnames[method], stats.events);
    dsk_solver_free(s);
  }
  dsk_model_free(m);
}

/* ---- central finite differences of solve_dense ---- */

static void fd_check(const dsk_model *m, int method, const double *p, const double *times, int nt,
                     double rtol_fd, double atol_fd, double tol, double floor, const char *what) {
  const dsk_gen_table *tab = dsk_model_table(m);
  int np = tab->nparams, nout = tab->nout;
  size_t ny = (size_t)nout * nt;
  dsk_solver *s = make(m, method, 1e-8, 1e-10);
  dsk_solver *r = make(m, method, rtol_fd, atol_fd);
  double *y = calloc(ny, sizeof *y), *sens = calloc(ny * np, sizeof *sens);
  double *yp = calloc(ny, sizeof *yp), *ym = calloc(ny, sizeof *ym), *pp = calloc(np, sizeof *pp);
  double *fd = calloc(ny * np, sizeof *fd);
  if (s && r && y && sens && yp && ym && pp && fd) {
    dsk_status st;
    int rc = dsk_solver_forward(s, p, times, nt, y, sens, &st);
    CHECK_MSG(rc == DSK_OK, "%s %s: %s", what, mnames[method], st.msg);
    for (int k = 0; k < np && rc == DSK_OK; k++) {
      double h = 1e-5 * fmax(fabs(p[k]), 1e-3);
      memcpy(pp, p, np * sizeof *pp);
      pp[k] = p[k] + h;
      rc = dsk_solver_solve_dense(r, pp, times, nt, yp, &st);
      pp[k] = p[k] - h;
      if (rc == DSK_OK) rc = dsk_solver_solve_dense(r, pp, times, nt, ym, &st);
      CHECK_MSG(rc == DSK_OK, "%s", st.msg);
      for (size_t i = 0; i < ny; i++) fd[(size_t)k * ny + i] = (yp[i] - ym[i]) / (2 * h);
    }
    double e = 0;
    for (size_t i = 0; i < ny * np; i++) {
      /* relative to each sensitivity row's scale (output i, parameter k) */
      size_t row = i / nt;
      double scale = 0;
      for (int j = 0; j < nt; j++) scale = fmax(scale, fabs(fd[row * nt + j]));
      e = fmax(e, fabs(sens[i] - fd[i]) / (scale + floor));
    }
    CHECK_MSG(e <= tol, "%s %s: forward vs FD %g", what, mnames[method], e);
  }
  free(y), free(sens), free(yp), free(ym), free(pp), free(fd);
  dsk_solver_free(s);
  dsk_solver_free(r);
}

static void test_fd(const char *root) {
  static const char rob[] = "in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\n"
                            "u_i { a = 1, b = 0, c = 0 }\n"
                            "dudt_i { dadt = 1, dbdt = 0, dcdt = 0 }\n"
                            "M_i { dadt, dbdt, 0 }\n"
                            "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, "
                            "1 - a - b - c }\n"
                            "out_i { a, 1e4 * b, c }\n";
  static const char ball[] = "in_i { g = 9.81, e = 0.8, h0 = 10.0 }\n"
                             "u_i { h = h0, v = 0.0 }\n"
                             "F_i { v, -g }\n"
                             "stop_i { h }\n"
                             "reset_i { 0, -e * v }\n";
  dsk_model *m = compile(rob, root);
  if (m) {
    const double p[3] = {0.04, 1e4, 3e7}, times[5] = {0.0, 0.4, 4.0, 40.0, 400.0};
    fd_check(m, DSK_BDF, p, times, 5, 1e-11, 1e-14, 1e-4, 1e-300, "robertson DAE");
    dsk_model_free(m);
  }
  m = compile(ball, root);
  if (m) {
    const double p[3] = {9.81, 0.8, 10.0}, times[5] = {0.0, 1.0, 2.0, 3.5, 5.0};
    const int methods[4] = {DSK_BDF, DSK_ADAMS, DSK_DOPRI5, DSK_ESDIRK34};
    for (int i = 0; i < 4; i++)
      fd_check(m, methods[i], p, times, 5, 1e-12, 1e-12, 1e-4, 1e-300, "ball");
    dsk_model_free(m);
  }
}

void suite_forward(void) {
  char root[] = "/tmp/dsk_test_forward_XXXXXX";
  if (!mkdtemp(root)) {
    CHECK(!"mkdtemp failed");
    return;
  }
  test_decay(root);
  test_mass_param(root);
  test_sens_tolerances(root);
  test_dosing(root);
  test_fire(root);
  test_fd(root);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  CHECK(system(cmd) == 0);
}
