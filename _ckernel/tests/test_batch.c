/* test_batch.c - dsk_batch (batch.c): every row of a batch solve, forward
   and reverse pass is bit-identical (memcmp) to the same call on a fresh
   solver and on one solver reused across the rows, with 1 to 4 threads, on
   CVODES (Lotka-Volterra, dense; heat1d, KLU; dosing, events), IDAS
   (Robertson's DAE) and ARKODE (tsit45); fewer rows than threads, no rows,
   bad arguments, the lowest failing row reported, and two threads calling
   one batch at once.  Models come from examples/models (the runner's
   working directory is the project root). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* mkdtemp */

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"

void suite_batch(void);

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

static dsk_model *compile_example(const char *name, const char *root) {
  char path[256];
  snprintf(path, sizeof path, "examples/models/%s.ds", name);
  char *src = read_text(path);
  CHECK_MSG(src != NULL, "cannot read %s (run from the project root)", path);
  if (!src) return NULL;
  dsk_jit_options jo = {root, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  int rc = dsk_model_compile(src, &jo, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s: %s", name, st.msg);
  free(src);
  return m;
}

typedef struct bcase {
  const char *model;
  int method;
  double rtol, atol;
  double t1;   /* last output time */
  int reverse; /* the adjoint covers it */
} bcase;

enum { NROWS = 7, NT = 9 };

/* Row r: the default parameters scaled by 1 + 0.03 r (alternating sign). */
static void make_params(const dsk_gen_table *tab, double *p) {
  for (int r = 0; r < NROWS; r++)
    for (int k = 0; k < tab->nparams; k++)
      p[r * tab->nparams + k] =
          tab->default_params[k] * (1.0 + 0.03 * r * ((r + k) % 2 ? 1.0 : -1.0));
}

static void fill_g(double *g, size_t n) {
  for (size_t i = 0; i < n; i++) g[i] = 0.25 + 0.5 * (double)((i * 7) % 5) / 5.0;
}

static void test_case(const bcase *c, const char *root) {
  dsk_model *m = compile_example(c->model, root);
  if (!m) return;
  const dsk_gen_table *tab = dsk_model_table(m);
  int np = tab->nparams, nout = tab->nout;
  size_t ny = (size_t)nout * NT, ns = (size_t)np * ny;
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  o.method = c->method;
  o.rtol = c->rtol;
  o.atol = c->atol;
  double times[NT];
  for (int j = 0; j < NT; j++) times[j] = c->t1 * j / (NT - 1);
  double *p = malloc(sizeof(double) * NROWS * (size_t)np);
  double *g = malloc(sizeof(double) * NROWS * ny);
  double *y_ref = calloc(NROWS * ny, sizeof(double)), *y_reuse = calloc(NROWS * ny, sizeof(double));
  double *s_ref = calloc(NROWS * ns, sizeof(double)), *yf_ref = calloc(NROWS * ny, sizeof(double));
  double *gr_ref = calloc(NROWS * (size_t)np, sizeof(double));
  double *y = calloc(NROWS * ny, sizeof(double)), *sens = calloc(NROWS * ns, sizeof(double));
  double *yf = calloc(NROWS * ny, sizeof(double)), *grad = calloc(NROWS * (size_t)np, sizeof(double));
  make_params(tab, p);
  fill_g(g, NROWS * ny);
  dsk_status st;

  /* references: a fresh solver per row, and one solver reused across the rows
     (solve, forward and reverse interleaved, to shake out leftover state) */
  dsk_solver *reused = NULL;
  CHECK(dsk_solver_create(m, &o, &reused, &st) == DSK_OK);
  for (int r = 0; r < NROWS && reused; r++) {
    dsk_solver *s = NULL;
    CHECK(dsk_solver_create(m, &o, &s, &st) == DSK_OK);
    if (!s) break;
    CHECK_MSG(dsk_solver_solve_dense(s, p + r * np, times, NT, y_ref + r * ny, &st) == DSK_OK,
              "%s row %d: %s", c->model, r, st.msg);
    CHECK_MSG(dsk_solver_forward(s, p + r * np, times, NT, yf_ref + r * ny, s_ref + r * ns,
                                 &st) == DSK_OK,
              "%s row %d: %s", c->model, r, st.msg);
    if (c->reverse)
      CHECK_MSG(dsk_solver_reverse(s, p + r * np, times, NT, g + r * ny, gr_ref + r * np,
                                   &st) == DSK_OK,
                "%s row %d: %s", c->model, r, st.msg);
    dsk_solver_free(s);
    double gtmp[16];
    if (c->reverse && np <= 16)
      CHECK(dsk_solver_reverse(reused, p + ((r + 3) % NROWS) * np, times, NT, g, gtmp, &st) ==
            DSK_OK);
    CHECK(dsk_solver_solve_dense(reused, p + r * np, times, NT, y_reuse + r * ny, &st) == DSK_OK);
  }
  dsk_solver_free(reused);
  CHECK_MSG(memcmp(y_ref, y_reuse, NROWS * ny * sizeof(double)) == 0,
            "%s: a reused solver differs from fresh ones", c->model);

  dsk_batch *b = NULL;
  CHECK_MSG(dsk_batch_create(m, &o, &b, &st) == DSK_OK, "%s", st.msg);
  for (int threads = 1; threads <= 4 && b; threads++) {
    int status[NROWS];
    double stop_t[NROWS];
    int stop_index[NROWS];
    memset(y, 0, NROWS * ny * sizeof(double));
    int rc = dsk_batch_solve_dense(b, threads, NROWS, p, times, NT, y, status, stop_t,
                                   stop_index, &st);
    CHECK_MSG(rc == DSK_OK, "%s, %d threads: %s", c->model, threads, st.msg);
    CHECK_MSG(memcmp(y, y_ref, NROWS * ny * sizeof(double)) == 0,
              "%s, %d threads: batch solve_dense differs from per-row solves", c->model,
              threads);
    for (int r = 0; r < NROWS; r++) CHECK(status[r] == DSK_OK && stop_index[r] == -1);

    rc = dsk_batch_forward(b, threads, NROWS, p, times, NT, yf, sens, NULL, NULL, NULL, &st);
    CHECK_MSG(rc == DSK_OK, "%s, %d threads: %s", c->model, threads, st.msg);
    CHECK_MSG(memcmp(yf, yf_ref, NROWS * ny * sizeof(double)) == 0 &&
                  memcmp(sens, s_ref, NROWS * ns * sizeof(double)) == 0,
              "%s, %d threads: batch forward differs from per-row forward", c->model, threads);
    if (c->reverse) {
      memset(grad, 0, NROWS * (size_t)np * sizeof(double));
      rc = dsk_batch_reverse(b, threads, NROWS, p, times, NT, g, grad, status, &st);
      CHECK_MSG(rc == DSK_OK, "%s, %d threads: %s", c->model, threads, st.msg);
      CHECK_MSG(memcmp(grad, gr_ref, NROWS * (size_t)np * sizeof(double)) == 0,
                "%s, %d threads: batch reverse differs from per-row reverse", c->model,
                threads);
    }
  }
  /* created on first use: a spawned thread that found no row left made none */
  CHECK(dsk_batch_workers(b) >= 1 && dsk_batch_workers(b) <= 4);
  dsk_batch_free(b);
  free(p), free(g), free(y_ref), free(y_reuse), free(s_ref), free(yf_ref), free(gr_ref);
  free(y), free(sens), free(yf), free(grad);
  dsk_model_free(m);
}

/* dosing without reset semantics is covered by the cases; here: stop roots
   reported per row for a model that ends at a stop (no reset). */
static const char stop_src[] = "in_i { k = 1.0, level = 0.5 }\n"
                               "u { 1.0 }\n"
                               "F { -k * u }\n"
                               "stop { u - level }\n";

static void test_stop_rows(const char *root) {
  dsk_jit_options jo = {root, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  CHECK_MSG(dsk_model_compile(stop_src, &jo, &m, &st) == DSK_OK, "%s", st.msg);
  if (!m) return;
  dsk_batch *b = NULL;
  CHECK(dsk_batch_create(m, NULL, &b, &st) == DSK_OK);
  /* row 0 stops at ln 2 / 1, row 1 never reaches the level before t = 1 */
  double p[4] = {1.0, 0.5, 0.1, 0.5}, times[3] = {0.0, 0.5, 1.0}, y[6];
  double stop_t[2];
  int stop_index[2];
  CHECK(dsk_batch_solve_dense(b, 2, 2, p, times, 3, y, NULL, stop_t, stop_index, &st) ==
        DSK_OK);
  CHECK(stop_index[0] == 0 && fabs(stop_t[0] - log(2.0)) < 1e-4);
  CHECK(stop_index[1] == -1);
  CHECK(isnan(y[2]) && !isnan(y[3 + 2]));
  dsk_batch_free(b);
  dsk_model_free(m);
}

/* Rows 2 and 5 make F NaN (sqrt of a negative number): the error names row 2
   whatever the thread count; rows before it are solved. */
static const char decay_src[] = "in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n";
static const char nan_src[] = "in_i { k = 1.5, a0 = 1.0 }\nu { a0 }\n"
                              "F { -k * u + 0 * sqrt(k - 1) }\n";

static void test_errors(const char *root) {
  dsk_jit_options jo = {root, NULL};
  dsk_model *m = NULL, *mn = NULL;
  dsk_status st;
  CHECK_MSG(dsk_model_compile(decay_src, &jo, &m, &st) == DSK_OK, "%s", st.msg);
  CHECK_MSG(dsk_model_compile(nan_src, &jo, &mn, &st) == DSK_OK, "%s", st.msg);
  if (!m || !mn) return;
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  dsk_batch *b = NULL;
  CHECK(dsk_batch_create(mn, &o, &b, &st) == DSK_OK);
  enum { B = 8 };
  double p[2 * B], times[2] = {0.0, 1.0}, y[2 * B], g[2 * B], grad[2 * B];
  for (int r = 0; r < B; r++) p[2 * r] = (r == 2 || r == 5) ? 0.5 : 1.5, p[2 * r + 1] = 1.0;
  for (int threads = 1; threads <= 4; threads++) {
    int status[B];
    int rc = dsk_batch_solve_dense(b, threads, B, p, times, 2, y, status, NULL, NULL, &st);
    CHECK(rc != DSK_OK && rc == status[2]);
    CHECK_MSG(strncmp(st.msg, "row 2: ", 7) == 0, "%d threads: %s", threads, st.msg);
    CHECK(status[0] == DSK_OK && status[1] == DSK_OK);
    CHECK_CLOSE(y[2 * 1 + 1], exp(-1.5), 1e-4);
    for (int r = 3; r < B; r++) CHECK(status[r] == -1 || status[r] == (r == 5 ? rc : DSK_OK));
    if (threads == 1)
      for (int r = 3; r < B; r++) CHECK(status[r] == -1); /* stopped early */
    for (int i = 0; i < 2 * B; i++) g[i] = 1.0;
    rc = dsk_batch_reverse(b, threads, B, p, times, 2, g, grad, NULL, &st);
    CHECK_MSG(rc != DSK_OK && strncmp(st.msg, "row 2: ", 7) == 0, "%d: %s", rc, st.msg);
    rc = dsk_batch_forward(b, threads, B, p, times, 2, y, grad, NULL, NULL, NULL, &st);
    CHECK_MSG(rc != DSK_OK && strncmp(st.msg, "row 2: ", 7) == 0, "%d: %s", rc, st.msg);
  }
  dsk_batch_free(b);
  CHECK(dsk_batch_create(m, &o, &b, &st) == DSK_OK);
  /* arguments */
  CHECK(dsk_batch_solve_dense(b, 0, B, p, times, 2, y, NULL, NULL, NULL, &st) == DSK_E_ARG);
  CHECK_CONTAINS(st.msg, "threads");
  CHECK(dsk_batch_solve_dense(b, 2, -1, p, times, 2, y, NULL, NULL, NULL, &st) == DSK_E_ARG);
  double bad_times[2] = {1.0, 0.5};
  CHECK(dsk_batch_solve_dense(b, 2, B, p, bad_times, 2, y, NULL, NULL, NULL, &st) == DSK_E_ARG);
  CHECK_CONTAINS(st.msg, "non-decreasing");
  CHECK(dsk_batch_solve_dense(NULL, 2, B, p, times, 2, y, NULL, NULL, NULL, &st) == DSK_E_ARG);
  /* no rows: nothing to do, nothing written */
  y[0] = 42.0;
  CHECK(dsk_batch_solve_dense(b, 3, 0, p, times, 2, y, NULL, NULL, NULL, &st) == DSK_OK);
  CHECK(y[0] == 42.0);
  dsk_batch_free(b);

  /* fewer rows than threads: one worker per row */
  CHECK(dsk_batch_create(m, &o, &b, &st) == DSK_OK);
  double p2[4] = {0.5, 1.0, 0.25, 2.0};
  CHECK(dsk_batch_solve_dense(b, 4, 2, p2, times, 2, y, NULL, NULL, NULL, &st) == DSK_OK);
  CHECK(dsk_batch_workers(b) <= 2);
  CHECK_CLOSE(y[1], exp(-0.5), 1e-4);
  CHECK_CLOSE(y[3], 2.0 * exp(-0.25), 1e-4);
  dsk_batch_free(b);

  /* a method the model cannot take fails at create, like dsk_solver_create */
  o.method = DSK_TR_BDF2;
  dsk_model *ms = NULL;
  CHECK(dsk_model_compile(stop_src, &jo, &ms, &st) == DSK_OK);
  b = (dsk_batch *)1;
  CHECK(dsk_batch_create(ms, &o, &b, &st) == DSK_E_ARG && b == NULL);
  dsk_model_free(ms);
  dsk_model_free(mn);
  dsk_model_free(m);
}

/* Two threads calling one batch at once get the results of sequential calls. */
typedef struct concurrent_arg {
  dsk_batch *b;
  const double *p, *times;
  double *y;
  int rc;
} concurrent_arg;

static void *concurrent_main(void *arg) {
  concurrent_arg *a = arg;
  dsk_status st;
  a->rc = DSK_OK;
  for (int i = 0; i < 5 && a->rc == DSK_OK; i++)
    a->rc = dsk_batch_solve_dense(a->b, 2, NROWS, a->p, a->times, NT, a->y, NULL, NULL, NULL,
                                  &st);
  return NULL;
}

static void test_concurrent(const char *root) {
  dsk_model *m = compile_example("lotka_volterra", root);
  if (!m) return;
  const dsk_gen_table *tab = dsk_model_table(m);
  size_t ny = (size_t)tab->nout * NT;
  double p[NROWS * 4], p2[NROWS * 4], times[NT];
  make_params(tab, p);
  for (int i = 0; i < NROWS * 4; i++) p2[i] = p[i] * 1.01;
  for (int j = 0; j < NT; j++) times[j] = 10.0 * j / (NT - 1);
  double *ya = calloc(NROWS * ny, sizeof(double)), *yb = calloc(NROWS * ny, sizeof(double));
  double *ra = calloc(NROWS * ny, sizeof(double)), *rb = calloc(NROWS * ny, sizeof(double));
  dsk_batch *b = NULL;
  dsk_status st;
  CHECK(dsk_batch_create(m, NULL, &b, &st) == DSK_OK);
  CHECK(dsk_batch_solve_dense(b, 1, NROWS, p, times, NT, ra, NULL, NULL, NULL, &st) == DSK_OK);
  CHECK(dsk_batch_solve_dense(b, 1, NROWS, p2, times, NT, rb, NULL, NULL, NULL, &st) == DSK_OK);
  concurrent_arg a = {b, p, times, ya, -1}, c = {b, p2, times, yb, -1};
  pthread_t ta, tc;
  int ok_a = pthread_create(&ta, NULL, concurrent_main, &a) == 0;
  int ok_c = pthread_create(&tc, NULL, concurrent_main, &c) == 0;
  CHECK(ok_a && ok_c);
  if (ok_a) pthread_join(ta, NULL);
  if (ok_c) pthread_join(tc, NULL);
  CHECK(a.rc == DSK_OK && c.rc == DSK_OK);
  CHECK(memcmp(ya, ra, NROWS * ny * sizeof(double)) == 0);
  CHECK(memcmp(yb, rb, NROWS * ny * sizeof(double)) == 0);
  dsk_batch_free(b);
  free(ya), free(yb), free(ra), free(rb);
  dsk_model_free(m);
}

/* dsk_batch_reverse_budget on Robertson's ODE (4 rows, 2 threads, a gradient at
   every output time): over a budget of a tenth of the rows' backward steps the
   call stops with DSK_E_BUDGET and reports the steps taken; with no budget
   (and with a large one) the gradients equal dsk_batch_reverse's bit for bit,
   and the steps are the rows' sums. */
static void test_reverse_budget(const char *root) {
  dsk_model *m = compile_example("robertson_ode", root);
  if (!m) return;
  dsk_solver_options o;
  dsk_solver_options_default(&o);
  o.rtol = 1e-8, o.atol = 1e-10;
  dsk_batch *b = NULL;
  dsk_status st;
  CHECK_MSG(dsk_batch_create(m, &o, &b, &st) == DSK_OK, "%s", st.msg);
  if (b) {
    enum { R = 4, NT = 9 };
    double p[R * 3], times[NT], g[R * 3 * NT], want[R * 3], grad[R * 3];
    long steps[2], full[2];
    int status[R];
    for (int r = 0; r < R; r++) p[3 * r] = 0.04 * (1 + 0.1 * r), p[3 * r + 1] = 1e4,
                                 p[3 * r + 2] = 3e7;
    for (int j = 0; j < NT; j++) times[j] = pow(10.0, j - 4);
    for (int q = 0; q < R * 3 * NT; q++) g[q] = 0.2 + 0.1 * (q % 5) - 0.07 * (q % 3);
    CHECK_MSG(dsk_batch_reverse(b, 2, R, p, times, NT, g, want, status, &st) == DSK_OK, "%s",
              st.msg);
    CHECK_MSG(dsk_batch_reverse_budget(b, 2, R, p, times, NT, g, grad, status, 0.0, full, &st) ==
                  DSK_OK, "%s", st.msg);
    CHECK(memcmp(grad, want, sizeof want) == 0);
    CHECK_MSG(full[0] > 0 && full[1] > full[0], "steps %ld forward, %ld backward", full[0],
              full[1]);
    double ratio = 0.1 * (double)full[1] / (double)full[0];
    int rc = dsk_batch_reverse_budget(b, 2, R, p, times, NT, g, grad, status, ratio, steps, &st);
    CHECK_MSG(rc == DSK_E_BUDGET, "rc %d: %s", rc, st.msg);
    CHECK_MSG(steps[1] > 0 && steps[1] < full[1], "%ld of %ld backward steps", steps[1],
              full[1]);
    CHECK_MSG(dsk_batch_reverse_budget(b, 2, R, p, times, NT, g, grad, status, 100.0, steps,
                                       &st) == DSK_OK, "%s", st.msg);
    CHECK(memcmp(grad, want, sizeof want) == 0);
    CHECK(steps[0] == full[0] && steps[1] == full[1]);
    dsk_batch_free(b);
  }
  dsk_model_free(m);
}

void suite_batch(void) {
  char root[] = "/tmp/dsk_test_batch_XXXXXX";
  if (!mkdtemp(root)) {
    CHECK(!"mkdtemp failed");
    return;
  }
  static const bcase cases[] = {
      {"lotka_volterra", DSK_BDF, 1e-8, 1e-10, 10.0, 1},
      {"lotka_volterra", DSK_TSIT45, 1e-8, 1e-10, 10.0, 1},
      {"robertson_dae", DSK_BDF, 1e-6, 1e-10, 40.0, 1},
      {"dosing", DSK_BDF, 1e-8, 1e-10, 16.0, 1},
      {"heat1d", DSK_BDF, 1e-6, 1e-8, 0.05, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_case(&cases[i], root);
  test_stop_rows(root);
  test_errors(root);
  test_concurrent(root);
  test_reverse_budget(root);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  CHECK(system(cmd) == 0);
}
