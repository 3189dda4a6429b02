/* stress.c - dsk_stress: the kernel's whole life cycle, many times over.
 *
 * Built on demand (`meson compile -C build/ctest dsk_stress`) and run by
 * `make memcheck` under valgrind, where any definitely or indirectly lost
 * block, invalid read or write, or use of an uninitialised value fails it.
 * Each iteration compiles every model (the example models, loaded from the
 * JIT cache after the first iteration, and malformed ones that take the
 * error paths), solves them in every mode (solve_dense, internal steps,
 * forward sensitivities, reverse mode, a checkpointed forward pass with
 * repeated backward passes, events), takes the error paths of the solver
 * (NaN parameters, bad times, too few steps, a backward pass stopped by its
 * step budget) and frees everything.
 *
 *   dsk_stress [ITERATIONS [MODELS_DIR]]     default: 3, examples/models
 *
 * Prints one summary line "stress: N passed, N failed" (and a line for each
 * failed check before it); exit code 1 when a check failed.
 */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"

int dsk_test_passed = 0, dsk_test_failed = 0;

static char cache_dir[64];

/* An example model and what to do with it. */
typedef struct example {
  const char *file; /* in MODELS_DIR */
  double t_end;     /* last output time */
  int arkode;       /* also run this ARKODE method (-1: none) */
  int reverse;      /* reverse mode covers the model with bdf */
  char *src;        /* loaded text */
  const char *text; /* the model itself when file is not in MODELS_DIR */
} example;

/* 10 parameters: above opt.sketch_min = 8 (make_solver), the sketched gradient quadrature */
static const char many_params[] =
    "in_i { a0 = 0.1, a1 = 0.2, a2 = 0.3, a3 = 0.4, a4 = 0.5, b0 = 1, b1 = 2, b2 = 3, b3 = 4, "
    "b4 = 5 }\nu_i { x0 = b0, x1 = b1, x2 = b2, x3 = b3, x4 = b4 }\n"
    "F_i { -a0 * x0, a0 * x0 - a1 * x1, a1 * x1 - a2 * x2, a2 * x2 - a3 * x3 + sin(t), "
    "a3 * x3 - a4 * x4 }\n";
/* the same through IDAS: an algebraic state and M */
static const char many_params_dae[] =
    "in_i { a0 = 0.1, a1 = 0.2, a2 = 0.3, a3 = 0.4, a4 = 0.5, b0 = 1, b1 = 2, b2 = 3, b3 = 4, "
    "b4 = 5 }\nu_i { x0 = b0, x1 = b1, x2 = b2, y = 0 }\ndudt_i { d0 = 0, d1 = 0, d2 = 0, "
    "dy = 0 }\nM_i { d0, d1, d2, 0 }\nF_i { -a0 * x0, a0 * x0 - a1 * x1, a1 * x1 - a2 * x2 + "
    "sin(t), y - a3 * x0 - a4 * x2 - b3 * b4 }\n";

static example examples[] = {
    {"decay.ds", 5.0, DSK_TSIT45, 1, NULL, NULL},
    {"logistic.ds", 10.0, DSK_DOPRI5, 1, NULL, NULL},
    {"lotka_volterra.ds", 10.0, DSK_ESDIRK34, 1, NULL, NULL},
    {"robertson_ode.ds", 100.0, DSK_TR_BDF2, 1, NULL, NULL},
    {"robertson_dae.ds", 100.0, -1, 1, NULL, NULL},
    {"dosing.ds", 15.0, DSK_DOPRI5, 1, NULL, NULL},
    {"vanderpol.ds", 1.0, -1, 1, NULL, NULL},
    {"heat1d.ds", 0.05, -1, 1, NULL, NULL},
    {"(10 parameters)", 5.0, -1, 1, NULL, many_params},
    {"(10 parameters, DAE)", 5.0, -1, 1, NULL, many_params_dae},
};
#define NEX ((int)(sizeof examples / sizeof examples[0]))
#define NT 6

static char *read_file(const char *dir, const char *name) {
  char path[1024];
  FILE *f;
  long n;
  char *buf;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fopen(path, "rb");
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

/* discrete: opt.adjoint_discrete (sens_discrete.c), 0 elsewhere */
static dsk_solver *make_solver_d(const dsk_model *m, int method, long max_steps, int discrete,
                                 dsk_status *st) {
  dsk_solver_options o;
  dsk_solver *s = NULL;
  dsk_solver_options_default(&o);
  o.method = method;
  o.adjoint_discrete = discrete;
  o.rtol = 1e-6;
  o.atol = 1e-8;
  o.sketch_min = 8; /* the sketch on the 10-parameter models (DSK_SKETCH_MIN is 256) */
  if (max_steps > 0) o.max_steps = max_steps;
  if (dsk_solver_create(m, &o, &s, st) != DSK_OK) return NULL;
  return s;
}

static dsk_solver *make_solver(const dsk_model *m, int method, long max_steps, dsk_status *st) {
  return make_solver_d(m, method, max_steps, 0, st);
}

/* Every mode of one solver on one model; ok_reverse: the method covers it. */
static void exercise(dsk_solver *s, const dsk_gen_table *tab, double t_end, int ok_reverse,
                     const char *what) {
  const int np = tab->nparams, no = tab->nout;
  double times[NT], *y = malloc(sizeof(double) * no * NT), *y2 = malloc(sizeof(double) * no * NT);
  double *sens = malloc(sizeof(double) * (np > 0 ? np : 1) * no * NT);
  double *g = malloc(sizeof(double) * no * NT), *grad = malloc(sizeof(double) * (np + 1));
  double *grad2 = malloc(sizeof(double) * (np + 1));
  const double *ts, *ys;
  int nt = 0;
  dsk_status st;
  for (int j = 0; j < NT; j++) times[j] = t_end * j / (NT - 1);
  for (int i = 0; i < no * NT; i++) g[i] = (i % 3 == 1) ? 0.0 : 1.0 / (1 + i);

  CHECK_MSG(dsk_solver_solve_dense(s, tab->default_params, times, NT, y, &st) == DSK_OK, "%s: %s",
            what, st.msg);
  CHECK_MSG(dsk_solver_solve(s, tab->default_params, t_end, &nt, &ts, &ys, &st) == DSK_OK,
            "%s: %s", what, st.msg);
  CHECK(nt >= 2);
  CHECK_MSG(dsk_solver_forward(s, tab->default_params, times, NT, y2, sens, &st) == DSK_OK,
            "%s: %s", what, st.msg);
  if (ok_reverse) {
    CHECK_MSG(dsk_solver_reverse(s, tab->default_params, times, NT, g, grad, &st) == DSK_OK,
              "%s: %s", what, st.msg);
    CHECK_MSG(dsk_solver_forward_checkpointed(s, tab->default_params, times, NT, y2, &st) ==
                  DSK_OK,
              "%s: %s", what, st.msg);
    for (int rep = 0; rep < 3; rep++)
      CHECK_MSG(dsk_solver_backward(s, g, grad2, &st) == DSK_OK, "%s: %s", what, st.msg);
    { /* a backward step budget too small to finish (stops with DSK_E_BUDGET unless the
         pass is shorter than one output interval), then the whole pass again */
      dsk_solver_set_backward_budget(s, 1e-3);
      int rc = dsk_solver_backward(s, g, grad2, &st);
      dsk_solver_set_backward_budget(s, 0.0);
      CHECK_MSG(rc == DSK_OK || rc == DSK_E_BUDGET, "%s: %s", what, st.msg);
      CHECK_MSG(dsk_solver_backward(s, g, grad2, &st) == DSK_OK, "%s: %s", what, st.msg);
      for (int k = 0; k < np; k++)
        if (grad2[k] != grad[k] && !(isnan(grad2[k]) && isnan(grad[k]))) {
          CHECK_MSG(0, "%s: the gradient after a stopped pass differs at %d", what, k);
          break;
        }
    }
    { /* caller's checkpoint times (the ARKODE methods refuse them) */
      double ck[2] = {0.3 * t_end, 0.7 * t_end};
      int rc = dsk_solver_forward_checkpointed_at(s, tab->default_params, times, NT, ck, 2, y2,
                                                  &st);
      CHECK_MSG(rc == DSK_OK || (rc == DSK_E_ARG && strstr(st.msg, "'bdf' or 'adams'")),
                "%s: %s", what, st.msg);
      if (rc == DSK_OK)
        CHECK_MSG(dsk_solver_backward(s, g, grad2, &st) == DSK_OK, "%s: %s", what, st.msg);
    }
    /* a second solve invalidates the checkpoints */
    CHECK(dsk_solver_solve_dense(s, tab->default_params, times, NT, y2, &st) == DSK_OK);
    CHECK(dsk_solver_backward(s, g, grad2, &st) == DSK_E_ARG);
  }
  /* error paths: bad times, NaN parameters (any code, but the solver stays usable) */
  {
    double bad[3] = {0.0, 2.0, 1.0}, nan_t[2] = {0.0, NAN};
    double *pn = malloc(sizeof(double) * (np + 1));
    double *scratch = malloc(sizeof(double) * no * NT);
    CHECK(dsk_solver_solve_dense(s, tab->default_params, bad, 3, scratch, &st) == DSK_E_ARG);
    CHECK(dsk_solver_solve_dense(s, tab->default_params, nan_t, 2, scratch, &st) == DSK_E_ARG);
    CHECK(dsk_solver_solve_dense(s, tab->default_params, times, 0, scratch, &st) == DSK_E_ARG);
    if (np > 0) {
      memcpy(pn, tab->default_params, sizeof(double) * np);
      pn[0] = NAN;
      (void)dsk_solver_solve_dense(s, pn, times, NT, scratch, &st);
      (void)dsk_solver_forward(s, pn, times, NT, scratch, sens, &st);
      if (ok_reverse) (void)dsk_solver_reverse(s, pn, times, NT, g, grad, &st);
    }
    free(pn);
    free(scratch);
    CHECK_MSG(dsk_solver_solve_dense(s, tab->default_params, times, NT, y2, &st) == DSK_OK,
              "%s after errors: %s", what, st.msg);
    for (int i = 0; i < no * NT; i++)
      if (!(y2[i] == y[i] || (isnan(y2[i]) && isnan(y[i])))) {
        CHECK_MSG(0, "%s: the solve after the errors differs at %d", what, i);
        break;
      }
  }
  free(y);
  free(y2);
  free(sens);
  free(g);
  free(grad);
  free(grad2);
}

/* Solver failures: too few steps, in every mode. */
static void too_few_steps(const dsk_model *m, const dsk_gen_table *tab, double t_end,
                          const char *what) {
  dsk_status st;
  dsk_solver *s = make_solver(m, DSK_BDF, 3, &st);
  double times[2] = {0.0, t_end}, y[64], sens[256], g[64], grad[8];
  const double *ts, *ys;
  int nt;
  if (!s) {
    CHECK_MSG(0, "%s: %s", what, st.msg);
    return;
  }
  if (tab->nout * 2 > 64 || tab->nout * 2 * tab->nparams > 256 || tab->nparams > 8) {
    dsk_solver_free(s);
    return;
  }
  for (int i = 0; i < 64; i++) g[i] = 1.0;
  CHECK(dsk_solver_solve_dense(s, tab->default_params, times, 2, y, &st) == DSK_E_SOLVER);
  CHECK_MSG(st.flag[0] != '\0' && strstr(st.msg, "Suggestion") != NULL, "%s: %s", what, st.msg);
  CHECK(dsk_solver_solve(s, tab->default_params, t_end, &nt, &ts, &ys, &st) == DSK_E_SOLVER);
  CHECK(dsk_solver_forward(s, tab->default_params, times, 2, y, sens, &st) == DSK_E_SOLVER);
  CHECK(dsk_solver_reverse(s, tab->default_params, times, 2, g, grad, &st) == DSK_E_SOLVER);
  CHECK(dsk_solver_forward_checkpointed(s, tab->default_params, times, 2, y, &st) ==
        DSK_E_SOLVER);
  CHECK(dsk_solver_backward(s, g, grad, &st) == DSK_E_ARG);
  dsk_solver_free(s);
}

/* Compiler and JIT error paths. */
static void compile_errors(int iter) {
  static const char *bad_syntax = "in_i { k = }\nu { 1 }\nF { -k * u }\n";
  static const char *bad_model = "in_i { k = 1 }\nu { x = 1 }\nF { -kk * x }\n";
  dsk_jit_options opt = {cache_dir, NULL};
  dsk_model *m = NULL;
  dsk_status st;
  char src[128], file_dir[96];
  CHECK(dsk_model_compile(bad_syntax, &opt, &m, &st) == DSK_E_SYNTAX && m == NULL);
  CHECK(st.line == 1 && st.col > 0);
  CHECK(dsk_model_compile(bad_model, &opt, &m, &st) == DSK_E_MODEL && m == NULL);
  CHECK_CONTAINS(st.msg, "kk");
  /* a source not in the cache and a compiler that does not exist */
  snprintf(src, sizeof src, "in_i { k = %d.25 }\nu { 1 }\nF { -k * u }\n", iter);
  opt.cc = "/nonexistent/dsk-stress-cc";
  CHECK(dsk_model_compile(src, &opt, &m, &st) == DSK_E_JIT && m == NULL);
  /* a cache "directory" that is a file */
  snprintf(file_dir, sizeof file_dir, "%s/not_a_dir", cache_dir);
  {
    FILE *f = fopen(file_dir, "w");
    if (f) fclose(f);
  }
  opt.cc = NULL;
  opt.cache_dir = file_dir;
  CHECK(dsk_model_compile(src, &opt, &m, &st) == DSK_E_JIT && m == NULL);
}

int main(int argc, char **argv) {
  int iterations = argc > 1 ? atoi(argv[1]) : 3;
  const char *dir = argc > 2 ? argv[2] : "examples/models";
  char cmd[128];
  if (iterations < 1) iterations = 1;
  for (int e = 0; e < NEX; e++) {
    examples[e].src = examples[e].text ? strdup(examples[e].text) : read_file(dir, examples[e].file);
    if (!examples[e].src) {
      printf("stress: cannot read %s/%s (run from the repository root)\n", dir, examples[e].file);
      return 1;
    }
  }
  strcpy(cache_dir, "/tmp/dsk_stress_XXXXXX");
  if (!mkdtemp(cache_dir)) {
    printf("stress: mkdtemp failed\n");
    return 1;
  }
  for (int it = 0; it < iterations; it++) {
    for (int e = 0; e < NEX; e++) {
      dsk_jit_options opt = {cache_dir, NULL};
      dsk_model *m = NULL;
      dsk_status st;
      const dsk_gen_table *tab;
      dsk_solver *s;
      if (dsk_model_compile(examples[e].src, &opt, &m, &st) != DSK_OK) {
        CHECK_MSG(0, "%s: %s", examples[e].file, st.msg);
        continue;
      }
      tab = dsk_model_table(m);
      s = make_solver(m, DSK_BDF, 0, &st);
      CHECK_MSG(s != NULL, "%s: %s", examples[e].file, st.msg);
      if (s) {
        exercise(s, tab, examples[e].t_end, examples[e].reverse, examples[e].file);
        dsk_solver_free(s);
      }
      /* the discrete adjoint (where it does not apply, the continuous one), its replay
         checked at every step on odd iterations */
      s = make_solver_d(m, DSK_BDF, 0, 1 + it % 2, &st);
      CHECK_MSG(s != NULL, "%s: %s", examples[e].file, st.msg);
      if (s) {
        exercise(s, tab, examples[e].t_end, examples[e].reverse, examples[e].file);
        dsk_solver_free(s);
      }
      if (examples[e].arkode >= 0) {
        s = make_solver(m, examples[e].arkode, 0, &st);
        CHECK_MSG(s != NULL, "%s: %s", examples[e].file, st.msg);
        if (s) {
          exercise(s, tab, examples[e].t_end, 1, examples[e].file);
          dsk_solver_free(s);
        }
      }
      if (!tab->has_mass && (strcmp(examples[e].file, "lotka_volterra.ds") == 0 ||
                             strcmp(examples[e].file, "dosing.ds") == 0)) {
        /* adams with fixed-point iteration (no linear solver) in every mode */
        dsk_solver_options o;
        dsk_solver_options_default(&o);
        o.method = DSK_ADAMS, o.linear_solver = DSK_LS_FIXEDPOINT;
        o.rtol = 1e-6, o.atol = 1e-8;
        s = NULL;
        CHECK_MSG(dsk_solver_create(m, &o, &s, &st) == DSK_OK, "%s: %s", examples[e].file,
                  st.msg);
        if (s) {
          exercise(s, tab, examples[e].t_end, 1, examples[e].file);
          dsk_solver_free(s);
        }
      }
      if (tab->has_mass) {
        /* a singular M with an ARKODE method and adams: refused at creation */
        CHECK(make_solver(m, DSK_TSIT45, 0, &st) == NULL && st.code == DSK_E_ARG);
        CHECK(make_solver(m, DSK_ADAMS, 0, &st) == NULL && st.code == DSK_E_ARG);
      }
      if (strcmp(examples[e].file, "robertson_ode.ds") == 0 ||
          strcmp(examples[e].file, "robertson_dae.ds") == 0)
        too_few_steps(m, tab, 1e4, examples[e].file);
      dsk_model_free(m);
    }
    compile_errors(it);
  }
  for (int e = 0; e < NEX; e++) free(examples[e].src);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
  if (system(cmd) != 0) printf("stress: could not remove %s\n", cache_dir);
  printf("stress: %d passed, %d failed\n", dsk_test_passed, dsk_test_failed);
  return dsk_test_failed ? 1 : 0;
}
