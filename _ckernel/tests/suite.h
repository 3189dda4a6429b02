/*
 * suite.h - helpers shared by the kernel's test suites: the suite's own JIT
 * cache directory (mkdtemp, removed at the end), compiling a model into it,
 * a solver with given options, and central differences of a loss sum(g .* y) over solve_dense.
 * Header-only, one cache per test file.  Include after runner.h and dsk.h,
 * with _DEFAULT_SOURCE defined (mkdtemp).
 */
#ifndef DSK_TEST_SUITE_H
#define DSK_TEST_SUITE_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char suite_cache_dir[64];

/* A new directory /tmp/dsk_NAME_XXXXXX; 0 (and a failed check) when it cannot be made. */
static int suite_cache_open(const char *name) {
  snprintf(suite_cache_dir, sizeof suite_cache_dir, "/tmp/dsk_%.20s_XXXXXX", name);
  if (!mkdtemp(suite_cache_dir)) {
    CHECK(!"mkdtemp");
    return 0;
  }
  return 1;
}

static void suite_cache_close(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", suite_cache_dir);
  if (system(cmd) != 0) printf("could not remove %s\n", suite_cache_dir);
}

/* The model of src compiled into the suite's cache, or NULL (a failed check). */
static dsk_model *suite_compile(const char *src) {
  dsk_jit_options opt = {suite_cache_dir, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  int rc = dsk_model_compile(src, &opt, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  return rc == DSK_OK ? m : NULL;
}

/* A solver with the default options but these (discrete: adjoint_discrete), or
   NULL (a failed check). */
static dsk_solver *suite_solver(dsk_model *m, int method, double rtol, double atol, int linsol,
                                int discrete) {
  dsk_solver_options o;
  dsk_solver *s = NULL;
  dsk_status st;
  dsk_solver_options_default(&o);
  o.method = method;
  o.rtol = rtol;
  o.atol = atol;
  o.linear_solver = linsol;
  o.adjoint_discrete = discrete;
  CHECK_MSG(dsk_solver_create(m, &o, &s, &st) == DSK_OK, "%s", st.msg);
  return s;
}

/* fd[k] = (L(p + h e_k) - L(p - h e_k)) / 2h, h = rel |p_k|, L = sum g .* y over
   solve_dense of s (nout x nt outputs, np <= 16); 0 when a solve failed. */
static int suite_fd_gradient(dsk_solver *s, const double *p, int np, const double *times, int nt,
                             const double *g, int nout, double rel, double *fd) {
  double pp[16], *y = malloc((size_t)nout * (size_t)nt * sizeof *y);
  dsk_status st;
  int ok = y != NULL && np <= 16;
  for (int k = 0; ok && k < np; k++) {
    double h = rel * fabs(p[k]), l[2] = {0.0, 0.0};
    for (int side = 0; ok && side < 2; side++) {
      memcpy(pp, p, (size_t)np * sizeof *pp);
      pp[k] += side ? -h : h;
      ok = dsk_solver_solve_dense(s, pp, times, nt, y, &st) == DSK_OK;
      for (int q = 0; ok && q < nout * nt; q++) l[side] += g[q] * y[q];
    }
    fd[k] = (l[0] - l[1]) / (2 * h);
  }
  free(y);
  CHECK(ok);
  return ok;
}

#endif
