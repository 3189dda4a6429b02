/* test_emit.c - generated code: deterministic text, layouts and loops, and
   exact derivatives.  Every model is compiled for real (dsk_model_compile).
   For every function family (u0, rhs, mass, out, stop, reset) each tangent
   (jvp_x, jvp_p) is compared with central finite differences of eval, its
   primal output with eval itself, and each adjoint (vjp_x, vjp_p) with the
   tangent through <w, J v> = <J^T w, v>. */
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"

void suite_emit(void);

static char cache_dir[64];

static const char *const fam_names[DSK_NFN] = {"u0", "rhs", "mass", "out", "stop", "reset", "dudt0"};

/* Models exercising the language; the example models are read from disk. */
static const char *const models[] = {
    /* every function, vector intermediates of each class, broadcasting */
    "in_i { a = 0.3, b = 1.7 }\n"
    "c_i { 1.0, 2.0, 3.0 }\n"
    "w_i { a * c_i }\n"
    "u_i { (0:3): x = 0.5 + a, y = b }\n"
    "s { sin(t) + 2 }\n"
    "g_i { w_i * x_i / s + t * x_i }\n"
    "h { y * y }\n"
    "F_i {\n"
    "  (0:3): sin(g_i) * cos(x_i) + tan(x_i) + exp(-x_i) + log(h + x_i) + log10(1 + x_i * x_i),\n"
    "  sqrt(h + 1) + abs(y - 1) + sigmoid(y) + arcsinh(y) + arccosh(h + 2) + heaviside(y)\n"
    "    + tanh(y) + sinh(y) + cosh(y) + pow(h + 1, y) + min(y, h) + max(y, -h) + copysign(y, t - 1)\n"
    "    - -y / (1 + h),\n"
    "}\n"
    "out_i { x_i * y, h }\n",
    /* matrices: diagonal, sparse and dense blocks, transposes, contractions */
    "in_i { a = 0.5, b = 2.0 }\n"
    "A_ij { (0..3, 0..3): a, (0:1, 1:3): 1.0 + b, (2, 0): -0.5 }\n"
    "B_ij { A_ji * b }\n"
    "D_ij { (0..3, 0..3): 2.0 }\n"
    "C_ij { A_ij + B_ij * a }\n"
    "u_i { x = 1, y = 0.5, z = 2 }\n"
    "v_i { C_ij * u_j + D_ij * u_j }\n"
    "s { v_i * u_i }\n"
    "rs_i { A_ij }\n"
    "q_ij { u_i * u_j }\n"
    "F_i { v_i - s * u_i / 10 + rs_i * sin(u_i) + q_ij * A_ji }\n"
    "out_i { u_i[0:2], s, u_i[2] * b }\n",
    /* mass matrix with parameters, stop and reset with N */
    "in_i { k = 1.5, m = 2.0 }\n"
    "tb_i { 1.0, 2.0, 3.0 }\n"
    "amt_i { m, 2 * m, 3 * m, 4 * m }\n"
    "u_i { p = 1.0, q = k }\n"
    "dudt_i { dp = 0, dq = 0 }\n"
    "M_i { m * dp + dq, dq }\n"
    "F_i { -k * p * q, p - q * q }\n"
    "stop_i { tb_i - t, p * q - k }\n"
    "reset_i { p + amt_i[N], q * amt_i[N + 1] }\n"
    "out_i { p * q, amt_i[N:N+2] * q }\n",
    /* a 3-D tensor contracted twice, and a sparse vector with gaps */
    "in_i { a = 0.7 }\n"
    "T_ijk { (0:2, 0:2, 0:1): a, (1, 1, 1): 2.5 }\n"
    "e_i { (0): 1.0, (3): a }\n"
    "u_i { 1, 2, 0.5, 0.25 }\n"
    "w_ij { T_ijk * u_k[0:2] }\n"
    "z_i { w_ij * u_j[0:2] }\n"
    "F_i { (0:2): z_i, (2:4): -u_i[2:4] } \n"
    "g_i { u_i * e_i + e_i / 2 }\n"
    "out_i { z_i[0:1], g_i }\n",
    /* interp1d: a constant grid, values that depend on parameters and the state */
    "in_i { a = 0.8, b = 0.3 }\n"
    "xg_i { 0.0, 0.5, 1.5, 3.0 }\n"
    "yv_i { a, 2 * a, b, 1.0 }\n"
    "u_i { p = 0.7, q = 2.2 }\n"
    "w_i { p, q, p * q, 1 }\n"
    "F_i { interp1d(xg_i, yv_i, p) * q, interp1d(xg_i, w_i, q + t) - p }\n"
    "out_i { interp1d(xg_i, yv_i, t), interp1d(xg_i, yv_i, 5.0), interp1d(xg_i, yv_i, -1.0) }\n",
};

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = 0;
  fclose(f);
  return buf;
}

/* dsk_model_compile into the test cache; NULL (and a failed check) on error. */
static dsk_model *compile(const char *src) {
  dsk_jit_options opt = {cache_dir, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  int rc = dsk_model_compile(src, &opt, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s\n%s", st.msg, src);
  return rc == DSK_OK ? m : NULL;
}

static double urand(unsigned *seed) { return (double)rand_r(seed) / RAND_MAX - 0.5; }

static double dot(const double *a, const double *b, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

static double *vec(int n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

static int out_len(const dsk_gen_table *tab, int fam) {
  switch (fam) {
    case DSK_FN_OUT: return tab->nout;
    case DSK_FN_STOP: return tab->nstop;
    default: return tab->nstates;
  }
}

/* max |a - b| / (1 + max |b|) */
static double relerr(const double *a, const double *b, int n) {
  double e = 0, s = 0;
  for (int i = 0; i < n; i++) {
    if (fabs(a[i] - b[i]) > e) e = fabs(a[i] - b[i]);
    if (fabs(b[i]) > s) s = fabs(b[i]);
  }
  return e / (1 + s);
}

/* Every derivative of family fam at parameters p, time t, point x. */
static void check_family(const dsk_gen_table *tab, int fam, const double *p, double t,
                         const double *x0, const char *label) {
  int nx = tab->nstates, np = tab->nparams, ny = out_len(tab, fam), nw = tab->nws;
  double *ws = vec(nw), *dws = vec(nw), *bws = vec(nw);
  double *x = vec(nx), *dx = vec(nx), *dp = vec(np), *w = vec(ny), *xb = vec(nx), *pb = vec(np);
  double *y = vec(ny), *y0 = vec(ny), *dy = vec(ny), *yp = vec(ny), *ym = vec(ny), *fd = vec(ny);
  double *pp = vec(np);
  unsigned seed = 11u + (unsigned)fam;
  const double h = 1e-6;
  int has_x = tab->jvp_x[fam] != NULL;
  CHECK(tab->init(ws) == 0);
  CHECK(tab->set_inputs(p, ws) == 0);
  memcpy(x, x0, (size_t)nx * sizeof *x);
  for (int i = 0; i < nx; i++) dx[i] = urand(&seed);
  for (int i = 0; i < np; i++) dp[i] = urand(&seed) * (fabs(p[i]) + 0.1);
  for (int i = 0; i < ny; i++) w[i] = urand(&seed);
  CHECK(tab->eval[fam](t, x, ws, y0) == 0);
  if (has_x) {
    /* d/dx */
    CHECK(tab->jvp_x[fam](t, x, dx, ws, dws, y, dy) == 0);
    CHECK_MSG(relerr(y, y0, ny) == 0, "%s %s: jvp_x primal differs from eval", label,
              fam_names[fam]);
    for (int i = 0; i < nx; i++) x[i] = x0[i] + h * dx[i];
    tab->eval[fam](t, x, ws, yp);
    for (int i = 0; i < nx; i++) x[i] = x0[i] - h * dx[i];
    tab->eval[fam](t, x, ws, ym);
    memcpy(x, x0, (size_t)nx * sizeof *x);
    for (int i = 0; i < ny; i++) fd[i] = (yp[i] - ym[i]) / (2 * h);
    CHECK_MSG(relerr(dy, fd, ny) < 1e-6, "%s %s: jvp_x vs FD error %g", label, fam_names[fam],
              relerr(dy, fd, ny));
    CHECK(tab->vjp_x[fam](t, x, w, ws, bws, xb) == 0);
    {
      double lhs = dot(w, dy, ny), rhs = dot(xb, dx, nx);
      CHECK_MSG(fabs(lhs - rhs) <= 1e-12 * (1 + fabs(lhs)), "%s %s: <w,Jv> %.17g <J'w,v> %.17g",
                label, fam_names[fam], lhs, rhs);
    }
  }
  /* d/dp */
  CHECK(tab->jvp_p[fam](t, x, dp, ws, dws, y, dy) == 0);
  CHECK_MSG(relerr(y, y0, ny) == 0, "%s %s: jvp_p primal differs from eval", label, fam_names[fam]);
  for (int i = 0; i < np; i++) pp[i] = p[i] + h * dp[i];
  tab->set_inputs(pp, ws);
  tab->eval[fam](t, x, ws, yp);
  for (int i = 0; i < np; i++) pp[i] = p[i] - h * dp[i];
  tab->set_inputs(pp, ws);
  tab->eval[fam](t, x, ws, ym);
  tab->set_inputs(p, ws);
  for (int i = 0; i < ny; i++) fd[i] = (yp[i] - ym[i]) / (2 * h);
  CHECK_MSG(relerr(dy, fd, ny) < 1e-6, "%s %s: jvp_p vs FD error %g", label, fam_names[fam],
            relerr(dy, fd, ny));
  CHECK(tab->vjp_p[fam](t, x, w, ws, bws, pb) == 0);
  {
    double lhs = dot(w, dy, ny), rhs = dot(pb, dp, np);
    CHECK_MSG(fabs(lhs - rhs) <= 1e-12 * (1 + fabs(lhs)), "%s %s: p: <w,Jv> %.17g <J'w,v> %.17g",
              label, fam_names[fam], lhs, rhs);
  }
  /* the fused adjoint: both of the above in one sweep */
  CHECK_MSG((tab->vjp_xp[fam] != NULL) == (fam == DSK_FN_RHS), "%s %s: vjp_xp for rhs only",
            label, fam_names[fam]);
  if (has_x && tab->vjp_xp[fam]) {
    double *xb2 = vec(nx), *pb2 = vec(np);
    for (int i = 0; i < nx; i++) xb2[i] = 1e300; /* must be overwritten */
    for (int i = 0; i < np; i++) pb2[i] = 1e300;
    CHECK(tab->vjp_x[fam](t, x, w, ws, bws, xb) == 0);
    CHECK(tab->vjp_xp[fam](t, x, w, ws, bws, xb2, pb2) == 0);
    CHECK_MSG(relerr(xb2, xb, nx) <= 1e-14 && relerr(pb2, pb, np) <= 1e-14,
              "%s %s: vjp_xp differs from vjp_x / vjp_p (%g, %g)", label, fam_names[fam],
              relerr(xb2, xb, nx), relerr(pb2, pb, np));
    free(xb2), free(pb2);
  }
  free(ws), free(dws), free(bws), free(x), free(dx), free(dp), free(w), free(xb), free(pb);
  free(y), free(y0), free(dy), free(yp), free(ym), free(fd), free(pp);
}

static void check_model(const char *src, const char *label) {
  dsk_model *m = compile(src);
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    int nx = tab->nstates;
    double *ws = vec(tab->nws), *u = vec(nx), *v = vec(nx);
    unsigned seed = 3;
    CHECK(tab->eval[DSK_FN_U0] && tab->eval[DSK_FN_RHS] && tab->eval[DSK_FN_OUT]);
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    tab->eval[DSK_FN_U0](0, NULL, ws, u);
    for (int i = 0; i < nx; i++) {
      u[i] += 0.1 * urand(&seed); /* away from special values such as 0 */
      v[i] = urand(&seed);
    }
    for (int f = 0; f < DSK_NFN; f++) {
      if (!tab->eval[f]) continue;
      check_family(tab, f, tab->default_params, 0.37, f == DSK_FN_MASS ? v : u, label);
    }
    free(ws), free(u), free(v);
  }
  dsk_model_free(m);
}

/* ---- randomized small models ------------------------------------------------
   Expressions drawn from products, quotients, every smooth function (with
   arguments kept in their domains), contractions over sparse and dense
   matrices, broadcasts and indexing, over 3 states and 2 parameters. */

typedef struct rnd {
  unsigned seed;
  char *buf;
  size_t len, cap;
} rnd;

static int pick(rnd *r, int n) { return (int)(rand_r(&r->seed) % (unsigned)n); }

static void put(rnd *r, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(r->buf + r->len, r->cap - r->len, fmt, ap);
  va_end(ap);
  if (n > 0) r->len += (size_t)n < r->cap - r->len ? (size_t)n : r->cap - r->len - 1;
}

/* A scalar-per-entry expression over index i of depth <= d; `vecs` names
   vectors of length 3 readable as NAME_i. */
static void rexpr(rnd *r, int d, const char *const *vecs, int nvecs) {
  static const char *const safe1[] = {"sin(%s)", "cos(%s)", "tanh(%s)", "sigmoid(%s)",
                                      "exp(0.3 * %s)", "sqrt(1 + %s * %s)", "log(2 + %s * %s)",
                                      "arcsinh(%s)", "arccosh(2 + %s * %s)", "log10(3 + %s * %s)",
                                      "sinh(0.5 * %s)", "cosh(0.5 * %s)", "tan(0.3 * sin(%s))"};
  if (d == 0 || pick(r, 4) == 0) {
    switch (pick(r, 5)) {
      case 0: put(r, "%d.%d", 1 + pick(r, 3), pick(r, 10)); return;
      case 1: put(r, "%s", pick(r, 2) ? "a" : "b"); return;
      case 2: put(r, "t"); return;
      default: put(r, "%s_i", vecs[pick(r, nvecs)]); return;
    }
  }
  switch (pick(r, 7)) {
    case 0:
    case 1: {
      static const char ops[] = "+-*";
      put(r, "(");
      rexpr(r, d - 1, vecs, nvecs);
      put(r, " %c ", ops[pick(r, 3)]);
      rexpr(r, d - 1, vecs, nvecs);
      put(r, ")");
      return;
    }
    case 2: /* a quotient with a denominator away from zero */
      put(r, "(");
      rexpr(r, d - 1, vecs, nvecs);
      put(r, " / (2 + sin(");
      rexpr(r, d - 1, vecs, nvecs);
      put(r, ")))");
      return;
    case 3: {
      char inner[512];
      size_t mark = r->len;
      const char *f = safe1[pick(r, (int)(sizeof safe1 / sizeof safe1[0]))];
      rexpr(r, d - 1, vecs, nvecs);
      snprintf(inner, sizeof inner, "%s", r->buf + mark);
      r->len = mark;
      r->buf[mark] = 0;
      put(r, f, inner, inner);
      return;
    }
    case 4:
      put(r, "pow(1.5 + sin(");
      rexpr(r, d - 1, vecs, nvecs);
      put(r, "), %s)", pick(r, 2) ? "a" : "1.3");
      return;
    case 5:
      put(r, "%s(", pick(r, 2) ? "min" : "max");
      rexpr(r, d - 1, vecs, nvecs);
      put(r, ", ");
      rexpr(r, d - 1, vecs, nvecs);
      put(r, ")");
      return;
    default: /* a contraction with a sparse or dense matrix */
      put(r, "%s_ij * %s_j", pick(r, 2) ? "S" : "D", vecs[pick(r, nvecs)]);
      return;
  }
}

static char *random_model(unsigned seed) {
  static const char *const vecs1[] = {"u", "c"};
  static const char *const vecs2[] = {"u", "c", "g"};
  rnd r = {seed, NULL, 0, 8192};
  r.buf = calloc(r.cap, 1);
  put(&r, "in_i { a = 0.%d, b = 1.%d }\n", 2 + pick(&r, 7), pick(&r, 9));
  put(&r, "c_i { 1.0, a, 2 * b }\n");
  put(&r, "S_ij { (0..3, 0..3): a, (0, 2): b, (2, 1): -0.5 }\n");
  put(&r, "D_ij { (0:3, 0:3): 0.1 * b }\n");
  put(&r, "u_i { x = 0.3, y = -0.2, z = 0.1 * b }\n");
  put(&r, "g_i { (0:3): ");
  rexpr(&r, 3, vecs1, 2);
  put(&r, " }\nh { ");
  rexpr(&r, 2, vecs1, 2);
  put(&r, " * u_i[%d] }\n", pick(&r, 3));
  put(&r, "p_i { (0:3): ");
  rexpr(&r, 3, vecs2, 3);
  put(&r, " }\nF_i { (0:2): p_i[0:2] + 0.1 * u_i[0:2], p_i[2] * h - u_i[2] }\n");
  put(&r, "out_i { g_i * h, h }\n");
  return r.buf;
}

static void test_random_models(void) {
  for (unsigned k = 0; k < 40; k++) {
    char *src = random_model(1000 + k), label[32];
    dsk_status st;
    char *c = NULL;
    snprintf(label, sizeof label, "random model %u", k);
    CHECK_MSG(dsk_translate(src, &c, &st) == DSK_OK, "%s:\n%s\n%s", label, src, st.msg);
    free(c);
    check_model(src, label);
    free(src);
  }
}

static void test_deterministic(void) {
  for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
    char *a = NULL, *b = NULL;
    dsk_status st;
    CHECK_MSG(dsk_translate(models[k], &a, &st) == DSK_OK, "%s", st.msg);
    CHECK(dsk_translate(models[k], &b, &st) == DSK_OK);
    CHECK(a && b && strcmp(a, b) == 0);
    free(a);
    free(b);
  }
}

static void test_examples(void) {
  static const char *const names[] = {"decay",          "dosing",        "heat1d",
                                      "logistic",       "lotka_volterra", "robertson_dae",
                                      "robertson_ode",  "vanderpol"};
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    char path[256], *src;
    snprintf(path, sizeof path, "examples/models/%s.ds", names[k]);
    src = slurp(path);
    CHECK_MSG(src != NULL, "cannot read %s (run from the repository root)", path);
    if (!src) continue;
    check_model(src, names[k]);
    free(src);
  }
}

/* Index arithmetic on N at run time: a division by zero or a value beyond
   int for some N fails the model function (-2) instead of trapping (SIGFPE)
   or overflowing in the generated code. */
static void test_n_index_arithmetic(void) {
  dsk_model *m = compile("a_i { 1, 2 }\nu_i { x = 1, y = 1 }\n"
                         "F_i { -a_i[7 / (N - 1) + 7] * x, -a_i[N * 1000000000 * 3 + N % (N - 1)] * y }\n"
                         "stop_i { x - 0.5, x - 0.25, x - 0.125 }\nreset_i { x, y }\n");
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[64] = {0}, u[2] = {1.0, 1.0}, f[2];
    CHECK(tab->nws <= 64);
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    ws[tab->n_slot] = 0; /* 7 / -1 + 7 = 0 and 0 + 0 % -1 = 0 */
    CHECK(tab->eval[DSK_FN_RHS](0, u, ws, f) == 0);
    CHECK(f[0] == -1.0 && f[1] == -1.0);
    ws[tab->n_slot] = 1; /* 7 / 0 */
    CHECK(tab->eval[DSK_FN_RHS](0, u, ws, f) == -2);
    ws[tab->n_slot] = 2; /* 7 / 1 + 7 = 14: out of range */
    CHECK(tab->eval[DSK_FN_RHS](0, u, ws, f) == -2);
  }
  dsk_model_free(m);
  m = compile("a_i { 1, 2 }\nu_i { x = 1 }\nF_i { -a_i[N * 1000000000 * 3] * x }\n"
              "stop_i { x - 0.5, x - 0.25 }\nreset_i { x }\n");
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[64] = {0}, u[1] = {1.0}, f[1];
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    CHECK(tab->eval[DSK_FN_RHS](0, u, ws, f) == 0 && f[0] == -1.0);
    ws[tab->n_slot] = 1; /* 3e9 does not fit an int */
    CHECK(tab->eval[DSK_FN_RHS](0, u, ws, f) == -2);
  }
  dsk_model_free(m);
}

/* Values of generated code against hand computation. */
static void test_values(void) {
  dsk_model *m = compile(models[2]);
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[64] = {0}, u[2], v[2] = {0.3, -0.7}, y[4];
    const double k = 1.5, mm = 2.0;
    CHECK(tab->nstates == 2 && tab->nparams == 2 && tab->nout == 3 && tab->nstop == 4);
    CHECK(tab->has_mass == 1 && tab->nws <= 64);
    CHECK(strcmp(tab->param_names[1], "m") == 0 && tab->default_params[0] == 1.5);
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    tab->eval[DSK_FN_U0](0, NULL, ws, u);
    CHECK(u[0] == 1.0 && u[1] == k);
    tab->eval[DSK_FN_MASS](0, v, ws, y);
    CHECK_CLOSE(y[0], mm * 0.3 - 0.7, 1e-15);
    CHECK_CLOSE(y[1], -0.7, 1e-15);
    tab->eval[DSK_FN_STOP](0.5, u, ws, y);
    CHECK_CLOSE(y[0], 0.5, 1e-15);
    CHECK_CLOSE(y[3], 1.0 * k - k, 1e-15);
    /* N selects the dose */
    tab->eval[DSK_FN_RESET](0, u, ws, y);
    CHECK_CLOSE(y[0], 1.0 + mm, 1e-15);
    CHECK_CLOSE(y[1], k * 2 * mm, 1e-15);
    ws[tab->n_slot] = 2;
    tab->eval[DSK_FN_RESET](0, u, ws, y);
    CHECK_CLOSE(y[0], 1.0 + 3 * mm, 1e-15);
    CHECK_CLOSE(y[1], k * 4 * mm, 1e-15);
    tab->eval[DSK_FN_OUT](0, u, ws, y);
    CHECK_CLOSE(y[1], 3 * mm * k, 1e-15);
    CHECK_CLOSE(y[2], 4 * mm * k, 1e-15);
    /* N out of range is an error, not a wild read */
    ws[tab->n_slot] = 3;
    CHECK(tab->eval[DSK_FN_RESET](0, u, ws, y) == -2);
    ws[tab->n_slot] = 0;
    double dudt[2];
    tab->eval[DSK_FN_DUDT0](0, NULL, ws, dudt);
    CHECK(dudt[0] == 0 && dudt[1] == 0);
  }
  dsk_model_free(m);
}

/* Layouts, seen through the workspace size (1 slot for N, then each
   tensor's stored entries): blocks that tile the shape are dense even with
   literal zeros; gaps make a vector sparse and drop its literal zeros; a
   full diagonal is diagonal. */
static void test_layouts(void) {
  static const struct {
    const char *decl;
    int nnz;
  } cases[] = {
      {"x_i { 0, 1, 2 }", 3},
      {"x_i { (0): 1, (1:4): 0, (4): 2 }", 5},
      {"x_i { (0): 1, (4): 2 }", 2},
      {"x_i { (0): 1, (2): 0, (4): 2 }", 2},
      {"x_ij { (0..3, 0..3): 1 }", 3},
      {"x_ij { (0..3, 0..3): 1, (0, 2): 5 }", 4},
      {"x_ij { (0:2, 0:3): 1 }", 6},
      {"x_ij { (0..2, 0..2): 1, (0:2, 2:3): 1 }", 4},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char src[256];
    dsk_jit_options opt = {cache_dir, NULL};
    dsk_model *m = NULL;
    dsk_status st;
    snprintf(src, sizeof src, "%s\nu { 1 }\nF { -u }\n", cases[k].decl);
    CHECK_MSG(dsk_model_compile(src, &opt, &m, &st) == DSK_OK, "%s", st.msg);
    if (!m) continue;
    CHECK_MSG(dsk_model_table(m)->nws == 1 + cases[k].nnz, "%s: nws %d, want %d", cases[k].decl,
              dsk_model_table(m)->nws, 1 + cases[k].nnz);
    dsk_model_free(m);
  }
}

/* A sparse matrix read from a FROSTT file, times the state. */
static void test_read_file(void) {
  dsk_model *m = compile("in_i { a = 2 }\n"
                         "C_ij { (0:3, 0:3): read('_ckernel/tests/data/c3.tns') }\n"
                         "u_i { 1, 2, 3 }\nF_i { a * C_ij * u_j }\n");
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[32] = {0}, u[3], f[3];
    CHECK(tab->nws == 1 + 1 + 4 + 4); /* N, in, C (4 stored), the file's values */
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    tab->eval[DSK_FN_U0](0, NULL, ws, u);
    tab->eval[DSK_FN_RHS](0, u, ws, f);
    CHECK_CLOSE(f[0], 2 * (2.0 * 1 + 0.5 * 3), 1e-15);
    CHECK_CLOSE(f[1], 2 * (3.0 * 2), 1e-15);
    CHECK_CLOSE(f[2], 2 * (-1.5 * 1), 1e-15);
    CHECK(dsk_model_jac_pattern(m)->nnz == 4);
  }
  dsk_model_free(m);
}

/* interp1d values: linear between grid points, clamped outside */
static void test_interp_values(void) {
  dsk_model *m = compile(models[4]);
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[64] = {0}, u[2], y[3], f[2];
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    tab->eval[DSK_FN_U0](0, NULL, ws, u);
    tab->eval[DSK_FN_OUT](1.0, u, ws, y); /* between 0.5 (1.6) and 1.5 (0.3) */
    CHECK_CLOSE(y[0], 1.6 + 0.5 * (0.3 - 1.6), 1e-14);
    CHECK(y[1] == 1.0 && y[2] == 0.8);
    tab->eval[DSK_FN_RHS](0.0, u, ws, f); /* p = 0.7: between 0.5 and 1.5 */
    CHECK_CLOSE(f[0], (1.6 + 0.2 * (0.3 - 1.6)) * 2.2, 1e-14);
  }
  dsk_model_free(m);
}

/* rhs reports a NaN or an infinity with 1 */
static void test_nonfinite(void) {
  dsk_model *m = compile("u { 1 }\nF { sqrt(u - 2) }\n");
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[8] = {0}, u = 1.0, f;
    tab->init(ws);
    tab->set_inputs(NULL, ws);
    CHECK(tab->eval[DSK_FN_RHS](0, &u, ws, &f) == 1);
    u = 3.0;
    CHECK(tab->eval[DSK_FN_RHS](0, &u, ws, &f) == 0 && f == 1.0);
  }
  dsk_model_free(m);
}

/* The 3-D model by hand: w_ij = T_ijk u_k, z_i = w_ij u_j. */
static void test_contraction_values(void) {
  dsk_model *m = compile(models[3]);
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[128] = {0}, u[4], f[4], want[2] = {0, 0}, T[2][2][2], a = 0.7;
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++)
        for (int k = 0; k < 2; k++) T[i][j][k] = k == 0 ? a : 0.0;
    T[1][1][1] = 2.5;
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    tab->eval[DSK_FN_U0](0, NULL, ws, u);
    tab->eval[DSK_FN_RHS](0, u, ws, f);
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++)
        for (int k = 0; k < 2; k++) want[i] += T[i][j][k] * u[k] * u[j];
    CHECK_CLOSE(f[0], want[0], 1e-14);
    CHECK_CLOSE(f[1], want[1], 1e-14);
    CHECK(f[2] == -0.5 && f[3] == -0.25);
  }
  dsk_model_free(m);
}

/* A 100,000-state tridiagonal model: loops, not unrolled code. */
static void test_large_sparse_text(void) {
  const char *src =
      "in_i { kappa = 1.0 }\n"
      "L_ij { (0..100000, 0..100000): -2.0, (0..99999, 1..100000): 1.0, (1..100000, 0..99999): 1.0 }\n"
      "u_i { (0:100000): 1.0 }\n"
      "F_i { kappa * L_ij * u_j }\n";
  char *c = NULL;
  dsk_status st;
  CHECK_MSG(dsk_translate(src, &c, &st) == DSK_OK, "%s", st.msg);
  CHECK_MSG(c && strlen(c) < 200000, "generated %zu bytes", c ? strlen(c) : (size_t)0);
  free(c);
}

/* ---- dense and irregular constant matrices ----------------------------------
   A dense n x n matrix W and an irregular sparse S (about 3 entries a row at
   pseudo-random columns), both written entry by entry as in DiffSL exported
   from NumPy:  F = gain * S tanh(W u + c) - u (S h in its own tensor: a
   contraction sums its whole element expression).  W becomes a static table read
   by unrolled row sums (n >= 8), S's product a loop over a table of points.
   Values come from a pseudo-random generator shared with the reference,
   which is computed here directly. */

typedef struct mats {
  int n, nnz;
  double *w, *s; /* w: n x n row-major; s: nnz values at (si, sj) */
  int *si, *sj;
} mats;

static double lcg(unsigned *x) {
  *x = *x * 1103515245u + 12345u;
  return (double)((*x >> 8) & 0xffff) / 65536.0 - 0.5;
}

static char *dense_sparse_model(int n, unsigned seed, mats *M) {
  size_t cap = 256 + (size_t)n * (size_t)n * 48 + (size_t)n * 200, len = 0;
  char *src = malloc(cap);
  M->n = n;
  M->nnz = 0;
  M->w = calloc((size_t)n * (size_t)n, sizeof(double));
  M->s = calloc((size_t)n * 3, sizeof(double));
  M->si = calloc((size_t)n * 3, sizeof(int));
  M->sj = calloc((size_t)n * 3, sizeof(int));
  len += (size_t)snprintf(src + len, cap - len, "in_i { gain = 0.8, c = 0.3 }\nW_ij { ");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      double v = 3.0 * lcg(&seed) / sqrt((double)n);
      M->w[i * n + j] = v;
      len += (size_t)snprintf(src + len, cap - len, "%s(%d, %d): %.17g", i + j ? ", " : "", i, j, v);
    }
  len += (size_t)snprintf(src + len, cap - len, " }\nS_ij { ");
  for (int i = 0; i < n; i++) {
    int used[3] = {-1, -1, -1};
    for (int q = 0; q < 3; q++) {
      int j = (int)(rand_r(&seed) % (unsigned)n), dup = 0;
      for (int r = 0; r < q; r++) dup |= used[r] == j;
      if (dup) continue;
      used[q] = j;
    }
    /* entries of a row in increasing column order */
    for (int a = 0; a < 3; a++)
      for (int b = a + 1; b < 3; b++)
        if (used[b] >= 0 && (used[a] < 0 || used[b] < used[a])) {
          int t = used[a];
          used[a] = used[b];
          used[b] = t;
        }
    for (int q = 0; q < 3; q++) {
      double v;
      if (used[q] < 0) continue;
      v = 1.0 + lcg(&seed);
      M->si[M->nnz] = i, M->sj[M->nnz] = used[q], M->s[M->nnz] = v;
      len += (size_t)snprintf(src + len, cap - len, "%s(%d, %d): %.17g", M->nnz ? ", " : "", i,
                              used[q], v);
      M->nnz++;
    }
  }
  snprintf(src + len, cap - len,
           " }\nu_i { (0:%d): 0.5 }\nz_i { W_ij * u_j }\nh_i { tanh(z_i + c) }\n"
           "v_i { S_ij * h_j }\nF_i { gain * v_i - u_i }\n",
           n);
  return src;
}

static void mats_free(mats *M) { free(M->w), free(M->s), free(M->si), free(M->sj); }

static void test_dense_sparse_constants(void) {
  static const int sizes[] = {5, 13, 24};
  for (size_t q = 0; q < sizeof sizes / sizeof sizes[0]; q++) {
    int n = sizes[q];
    mats M;
    char *src = dense_sparse_model(n, 7u + (unsigned)n, &M), label[48];
    dsk_model *m;
    snprintf(label, sizeof label, "dense+sparse constants n=%d", n);
    /* every derivative against finite differences; jvp's primal == eval */
    check_model(src, label);
    m = compile(src);
    if (m) {
      const dsk_gen_table *tab = dsk_model_table(m);
      double *ws = vec(tab->nws), *u = vec(n), *f = vec(n), *h = vec(n), *want = vec(n);
      unsigned seed = 99;
      const double gain = 0.8, c = 0.3;
      tab->init(ws);
      tab->set_inputs(tab->default_params, ws);
      for (int i = 0; i < n; i++) u[i] = 2.0 * lcg(&seed);
      CHECK(tab->eval[DSK_FN_RHS](0.0, u, ws, f) == 0);
      for (int i = 0; i < n; i++) {
        double z = 0;
        for (int j = 0; j < n; j++) z += M.w[i * n + j] * u[j];
        h[i] = tanh(z + c);
        want[i] = -u[i];
      }
      for (int e = 0; e < M.nnz; e++) want[M.si[e]] += gain * M.s[e] * h[M.sj[e]];
      CHECK_MSG(relerr(f, want, n) < 1e-14, "%s: rhs error %g", label, relerr(f, want, n));
      free(ws), free(u), free(f), free(h), free(want);
      dsk_model_free(m);
    }
    free(src);
    mats_free(&M);
  }
}

/* The new loop forms around the other expression kinds: interp1d inside an
   unrolled row sum (its temporaries beside the unrolled indices), a read
   indexed by N and a function inside a point-table loop; every derivative
   against finite differences. */
static void test_tables_with_interp_and_n(void) {
  const int n = 10;
  size_t cap = 16384, len = 0;
  char *src = malloc(cap), *c = NULL;
  unsigned seed = 17;
  dsk_status st;
  len += (size_t)snprintf(src + len, cap - len,
                          "in_i { a = 0.8, b = 0.3 }\nxg_i { 0.0, 0.5, 1.5, 3.0 }\n"
                          "yv_i { a, 2 * a, b, 1.0 }\namt_i { a, 2 * a, 3 * a }\nW_ij { ");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      len += (size_t)snprintf(src + len, cap - len, "%s(%d, %d): %.6f", i + j ? ", " : "", i, j,
                              lcg(&seed));
  len += (size_t)snprintf(src + len, cap - len, " }\nS_ij { ");
  for (int i = 0, first = 1; i < n; i++) {
    /* two or three pseudo-random columns a row, in increasing order */
    int j0 = (int)(rand_r(&seed) % 4u), j1 = j0 + 1 + (int)(rand_r(&seed) % 3u);
    int j2 = j1 + 2 + (int)(rand_r(&seed) % 3u), cols[3] = {j0, j1, j2};
    for (int q = 0; q < 3; q++) {
      if (cols[q] >= n) continue;
      len += (size_t)snprintf(src + len, cap - len, "%s(%d, %d): %.6f", first ? "" : ", ", i,
                              cols[q], lcg(&seed));
      first = 0;
    }
  }
  snprintf(src + len, cap - len,
           " }\nu_i { (0:%d): 0.5 }\nz_i { W_ij * interp1d(xg_i, yv_i, 2 * u_j) }\n"
           "v_i { S_ij * sin(u_j) * amt_i[N] }\nF_i { z_i + v_i - u_i }\n"
           "stop_i { t - 1 }\nreset_i { u_i }\n",
           n);
  CHECK_MSG(dsk_translate(src, &c, &st) == DSK_OK, "%s", st.msg);
  if (c) {
    CHECK_MSG(strstr(c, "ku1") != NULL, "the row sums of z are not unrolled");
    CHECK_MSG(strstr(c, "dsk_ix") != NULL, "v is not a point-table loop");
  }
  free(c);
  check_model(src, "interp1d and N in the new loops");
  free(src);
}

/* Code size follows blocks, not entries: growing W from 16 x 16 to 32 x 32
   (768 more entries, 1536 with S's) costs a number literal and a few index
   digits per entry, not a statement (unrolled entries cost about 100 bytes
   each); a 2-D stencil of m rows emits one loop nest for all rows in each
   function, so only init grows with the rows' blocks. */
static size_t c_bytes(const char *src) {
  char *c = NULL;
  dsk_status st;
  size_t n;
  CHECK_MSG(dsk_translate(src, &c, &st) == DSK_OK, "%s", st.msg);
  n = c ? strlen(c) : 0;
  free(c);
  return n;
}

static char *stencil_model(int m) {
  size_t cap = 512 + (size_t)m * 128, len = 0;
  char *src = malloc(cap);
  int n = m * m;
  len += (size_t)snprintf(src + len, cap - len, "in_i { kappa = 1.0 }\nL_ij { (0..%d, 0..%d): -4.0", n, n);
  for (int r = 0; r < m; r++) {
    int a = r * m;
    len += (size_t)snprintf(src + len, cap - len, ", (%d..%d, %d..%d): 1.0, (%d..%d, %d..%d): 1.0",
                            a, a + m - 1, a + 1, a + m, a + 1, a + m, a, a + m - 1);
  }
  snprintf(src + len, cap - len,
           ", (0..%d, %d..%d): 1.0, (%d..%d, 0..%d): 1.0 }\nu_i { (0:%d): 1.0 }\n"
           "lap_i { L_ij * u_j }\nF_i { kappa * lap_i - u_i * u_i }\n",
           n - m, m, n, m, n, n - m, n);
  return src;
}

static void test_compact_text(void) {
  mats A, B;
  char *a = dense_sparse_model(16, 1, &A), *b = dense_sparse_model(32, 1, &B);
  char *s20 = stencil_model(20), *s40 = stencil_model(40);
  size_t ca = c_bytes(a), cb = c_bytes(b), cs20 = c_bytes(s20), cs40 = c_bytes(s40);
  double per_entry = (double)(cb - ca) / (double)(B.n * B.n + B.nnz - A.n * A.n - A.nnz);
  CHECK_MSG(per_entry < 40, "%.1f bytes of C per matrix entry (%zu -> %zu)", per_entry, ca, cb);
  /* 40 more row blocks: init gains a loop per block; rhs, jvp and vjp do not grow */
  CHECK_MSG(cs40 - cs20 < 40 * 120, "stencil: %zu bytes (20 rows) -> %zu (40 rows)", cs20, cs40);
  /* compiled, checked against finite differences and the 5-point formula */
  check_model(s20, "stencil 20 x 20");
  {
    dsk_model *m = compile(s20);
    const int M = 20, n = M * M;
    if (m) {
      const dsk_gen_table *tab = dsk_model_table(m);
      double *ws = vec(tab->nws), *u = vec(n), *f = vec(n), *want = vec(n);
      unsigned seed = 5;
      tab->init(ws);
      tab->set_inputs(tab->default_params, ws);
      for (int i = 0; i < n; i++) u[i] = lcg(&seed);
      CHECK(tab->eval[DSK_FN_RHS](0.0, u, ws, f) == 0);
      for (int r = 0; r < M; r++)
        for (int c = 0; c < M; c++) {
          int i = r * M + c;
          double lap = -4.0 * u[i];
          if (c > 0) lap += u[i - 1];
          if (c < M - 1) lap += u[i + 1];
          if (r > 0) lap += u[i - M];
          if (r < M - 1) lap += u[i + M];
          want[i] = lap - u[i] * u[i];
        }
      CHECK_MSG(relerr(f, want, n) < 1e-14, "stencil rhs error %g", relerr(f, want, n));
      free(ws), free(u), free(f), free(want);
      dsk_model_free(m);
    }
  }
  free(a), free(b), free(s20), free(s40);
  mats_free(&A);
  mats_free(&B);
}

/* The Jacobian from coloured tangent sweeps equals the dense one from
   unit-vector sweeps, the pattern holds every non-zero, and a tridiagonal
   Jacobian needs 3 colours. */
static void check_jacobian(const char *src, const char *label, int want_colors) {
  dsk_model *m = compile(src);
  if (!m) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    const dsk_sparsity *J = dsk_model_jac_pattern(m);
    int n = tab->nstates;
    double *ws = vec(tab->nws), *dws = vec(tab->nws), *u = vec(n), *e = vec(n), *f = vec(n);
    double *col = vec(n), *work = vec(3 * n), *vals = vec(J ? J->nnz : 1);
    unsigned seed = 5;
    int missing = 0, wrong = 0;
    CHECK(J != NULL && J->nrows == n && J->ncols == n);
    if (want_colors) CHECK_MSG(dsk_model_jac_ncolors(m) == want_colors, "%s: %d colours", label,
                               dsk_model_jac_ncolors(m));
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    tab->eval[DSK_FN_U0](0, NULL, ws, u);
    for (int i = 0; i < n; i++) u[i] += 0.1 * urand(&seed) + 0.05;
    CHECK(dsk_model_jac_values(m, 0.3, u, ws, dws, work, vals) == 0);
    for (int j = 0; j < n; j++) {
      int k = J->colptr[j];
      e[j] = 1.0;
      tab->jvp_x[DSK_FN_RHS](0.3, u, e, ws, dws, f, col);
      e[j] = 0.0;
      for (int i = 0; i < n; i++) {
        int in_pattern = k < J->colptr[j + 1] && J->rowidx[k] == i;
        if (in_pattern) {
          wrong += vals[k] != col[i];
          k++;
        } else {
          missing += col[i] != 0.0;
        }
      }
    }
    CHECK_MSG(missing == 0, "%s: %d non-zeros outside the pattern", label, missing);
    CHECK_MSG(wrong == 0, "%s: %d coloured values differ", label, wrong);
    free(ws), free(dws), free(u), free(e), free(f), free(col), free(work), free(vals);
  }
  dsk_model_free(m);
}

static void test_jacobians(void) {
  for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
    char label[32];
    snprintf(label, sizeof label, "model %zu", k);
    check_jacobian(models[k], label, 0);
  }
  check_jacobian("in_i { kappa = 1.0 }\n"
                 "L_ij { (0..200, 0..200): -2.0, (0..199, 1..200): 1.0, (1..200, 0..199): 1.0 }\n"
                 "u_i { (0:200): 1.0 }\n"
                 "lap_i { L_ij * u_j }\n"
                 "F_i { kappa * lap_i + sin(u_i) }\n",
                 "tridiagonal", 3);
  {
    /* the pattern of the 10^5-state model, without any dense matrix */
    dsk_translation tr;
    dsk_status st;
    int rc = dsk_translate_ex(
        "L_ij { (0..100000, 0..100000): -2.0, (0..99999, 1..100000): 1.0, (1..100000, "
        "0..99999): 1.0 }\nu_i { (0:100000): 1.0 }\nF_i { L_ij * u_j }\n",
        &tr, &st);
    CHECK_MSG(rc == DSK_OK, "%s", st.msg);
    CHECK(tr.jac.nnz == 3 * 100000 - 2 && tr.jac.colptr[1] == 2 && tr.jac.rowidx[2] == 0);
    CHECK(tr.mass.nnz == 0 && tr.mass.colptr == NULL);
    dsk_translation_free(&tr);
  }
  {
    /* mass pattern of the Robertson DAE: diag(1, 1, 0) */
    dsk_translation tr;
    dsk_status st;
    char *src = slurp("examples/models/robertson_dae.ds");
    CHECK(src && dsk_translate_ex(src, &tr, &st) == DSK_OK);
    if (src) {
      CHECK(tr.mass.nnz == 2 && tr.mass.colptr[3] == 2 && tr.mass.rowidx[1] == 1);
      CHECK(tr.jac.nnz == 9);
      dsk_translation_free(&tr);
    }
    free(src);
  }
  {
    /* mass values of model 2: M_i { m * dp + dq, dq } -> [[m, 1], [0, 1]] */
    dsk_jit_options opt = {cache_dir, NULL};
    dsk_model *m = NULL;
    dsk_status st;
    CHECK(dsk_model_compile(models[2], &opt, &m, &st) == DSK_OK);
    if (m) {
      const dsk_sparsity *P = dsk_model_mass_pattern(m);
      const dsk_gen_table *tab = dsk_model_table(m);
      double ws[64] = {0}, work[4], vals[3];
      tab->init(ws);
      tab->set_inputs(tab->default_params, ws);
      CHECK(P->nnz == 3 && P->colptr[1] == 1 && P->colptr[2] == 3);
      CHECK(dsk_model_mass_values(m, 0.0, ws, work, vals) == 0);
      CHECK(vals[0] == 2.0 && vals[1] == 1.0 && vals[2] == 1.0);
      dsk_model_free(m);
    }
  }
}

static void remove_cache(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
  if (system(cmd) != 0) printf("could not remove %s\n", cache_dir);
}

void suite_emit(void) {
  strcpy(cache_dir, "/tmp/dsk_emit_XXXXXX");
  if (!mkdtemp(cache_dir)) {
    CHECK(!"mkdtemp");
    return;
  }
  test_deterministic();
  for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
    char label[32];
    snprintf(label, sizeof label, "model %zu", k);
    check_model(models[k], label);
  }
  test_examples();
  test_random_models();
  test_values();
  test_n_index_arithmetic();
  test_contraction_values();
  test_nonfinite();
  test_interp_values();
  test_layouts();
  test_read_file();
  test_large_sparse_text();
  test_dense_sparse_constants();
  test_tables_with_interp_and_n();
  test_compact_text();
  test_jacobians();
  remove_cache();
}
