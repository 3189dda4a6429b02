/* test_emit.c - generated code: deterministic text, and exact tangents.
   Every model is compiled for real (dsk_model_compile); rhs_jvp is compared
   with central finite differences of rhs in random directions, and its
   primal output with rhs itself. */
#define _DEFAULT_SOURCE
#include <stdlib.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"

void suite_emit(void);

static const char *const models[] = {
    /* decay */
    "in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n",
    /* Robertson */
    "in_i { k1 = 0.04, k2 = 10000, k3 = 30000000 }\nu_i { a = 1, b = 0, c = 0 }\n"
    "F_i { -k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, k3 * b * b }\n",
    /* Van der Pol */
    "in_i { mu = 1000.0 }\nu_i { x = 2.0, v = 0.0 }\nF_i { v, mu * (1 - x * x) * v - x }\n",
    /* every function, vector intermediates of each class, broadcasting */
    "in_i { a = 0.3, b = 1.7 }\n"
    "c_i { 1.0, 2.0, 3.0 }\n"
    "w_i { a * c_i }\n"
    "u_i { (0:3): x = 0.5, y = b }\n"
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
};

static char cache_dir[64];

static void test_deterministic(void) {
  for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
    char *a = NULL, *b = NULL;
    dsk_status st;
    CHECK(dsk_translate(models[k], &a, &st) == DSK_OK);
    CHECK(dsk_translate(models[k], &b, &st) == DSK_OK);
    CHECK(a && b && strcmp(a, b) == 0);
    free(a);
    free(b);
  }
}

static double urand(unsigned *seed) { return (double)rand_r(seed) / RAND_MAX - 0.5; }

/* rhs_jvp(u, v) vs (rhs(u + h v) - rhs(u - h v)) / 2h, relative to the scale. */
static void check_tangent(const char *src) {
  dsk_jit_options opt = {cache_dir, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  const dsk_gen_table *tab;
  unsigned seed = 7;
  int rc = dsk_model_compile(src, &opt, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  if (rc) return;
  tab = dsk_model_table(m);
  {
    int n = tab->nstates, nw = tab->nws > 0 ? tab->nws : 1;
    double *ws = calloc((size_t)nw, sizeof *ws), *dws = calloc((size_t)nw, sizeof *dws);
    double *u = calloc((size_t)n, sizeof *u), *v = calloc((size_t)n, sizeof *v);
    double *f = calloc((size_t)n, sizeof *f), *df = calloc((size_t)n, sizeof *df);
    double *fp = calloc((size_t)n, sizeof *fp), *fm = calloc((size_t)n, sizeof *fm);
    double *up = calloc((size_t)n, sizeof *up), *f0 = calloc((size_t)n, sizeof *f0);
    CHECK(tab->init(ws) == 0);
    CHECK(tab->set_inputs(tab->default_params, ws) == 0);
    CHECK(tab->u0(ws, u) == 0);
    for (int trial = 0; trial < 3; trial++) {
      double t = 0.3 + trial, h = 1e-6, err = 0, scale = 0;
      for (int i = 0; i < n; i++) v[i] = urand(&seed);
      CHECK(tab->rhs_jvp(t, u, v, ws, dws, f, df) == 0);
      CHECK(tab->rhs(t, u, ws, f0) == 0);
      for (int i = 0; i < n; i++) CHECK(f[i] == f0[i]);
      for (int i = 0; i < n; i++) up[i] = u[i] + h * v[i];
      tab->rhs(t, up, ws, fp);
      for (int i = 0; i < n; i++) up[i] = u[i] - h * v[i];
      tab->rhs(t, up, ws, fm);
      for (int i = 0; i < n; i++) {
        double fd = (fp[i] - fm[i]) / (2 * h);
        if (fabs(fd - df[i]) > err) err = fabs(fd - df[i]);
        if (fabs(df[i]) > scale) scale = fabs(df[i]);
      }
      CHECK_MSG(err <= 1e-6 * (1 + scale), "tangent error %g (scale %g) for\n%s", err, scale,
                src);
    }
    free(ws), free(dws), free(u), free(v), free(f), free(df), free(fp), free(fm), free(up),
        free(f0);
  }
  dsk_model_free(m);
}

static void test_outputs(void) {
  /* out of the last model at its initial state: x_i * y and h = y * y */
  dsk_jit_options opt = {cache_dir, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  int rc = dsk_model_compile(models[3], &opt, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  if (rc) return;
  {
    const dsk_gen_table *tab = dsk_model_table(m);
    double ws[64] = {0}, u[4], y[4];
    CHECK(tab->nstates == 4 && tab->nparams == 2 && tab->nout == 4 && tab->nws <= 64);
    CHECK(strcmp(tab->param_names[0], "a") == 0 && strcmp(tab->param_names[1], "b") == 0);
    CHECK(tab->default_params[1] == 1.7);
    tab->init(ws);
    tab->set_inputs(tab->default_params, ws);
    tab->u0(ws, u);
    CHECK(u[0] == 0.5 && u[2] == 0.5 && u[3] == 1.7);
    tab->out(0.0, u, ws, y);
    CHECK_CLOSE(y[0], 0.5 * 1.7, 1e-15);
    CHECK_CLOSE(y[3], 1.7 * 1.7, 1e-15);
  }
  dsk_model_free(m);
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
  for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) check_tangent(models[k]);
  test_outputs();
  remove_cache();
}
