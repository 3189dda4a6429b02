/* fuzz_solve.c - libFuzzer target for the whole kernel: DiffSL in, every
 * solve mode out.
 *
 * Not part of dsk_tests: built with clang by `make fuzz-solve` (the kernel,
 * with ASan and UBSan, linked against the SUNDIALS of the set-up).  An input
 * that translates is compiled by the system C compiler (into
 * build/fuzz/solve-cache, so about 20 inputs a second) and solved with its
 * default parameters by one method (bdf, adams, tsit45 or esdirk34, picked
 * by the input's length) in every mode: solve_dense, solve, forward
 * sensitivities, reverse mode, a checkpointed pass with two backward passes,
 * and a solve with a NaN parameter.  Every call must return one of the
 * kernel's documented codes with a message; anything else aborts (a crash
 * for libFuzzer), as do traps in the generated code, memory errors, UB in the
 * kernel and leaks.  Models beyond MAX_STATES states or MAX_PARAMS
 * parameters are compiled but not solved (time, not correctness).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dsk.h"

#define MAX_STATES 400
#define MAX_PARAMS 64
#define NT 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *cache_dir(void) {
  const char *d = getenv("DSK_FUZZ_CACHE");
  return d && *d ? d : "build/fuzz/solve-cache";
}

/* A documented outcome of a solve call; abort on anything else. */
static void expect(int rc, const dsk_status *st, const char *call) {
  switch (rc) {
    case DSK_OK: return;
    case DSK_E_SOLVER:
    case DSK_E_MODELFN:
    case DSK_E_ARG:
    case DSK_E_BUDGET:
    case DSK_E_NOMEM:
      if (st->msg[0]) return;
      fprintf(stderr, "%s: code %d without a message\n", call, rc);
      break;
    default: fprintf(stderr, "%s: unexpected code %d: %s\n", call, rc, st->msg);
  }
  abort();
}

static void exercise(const dsk_model *m, int method) {
  const dsk_gen_table *tab = dsk_model_table(m);
  const int np = tab->nparams, no = tab->nout, n = tab->nstates;
  dsk_solver_options o;
  dsk_solver *s = NULL;
  dsk_status st;
  if (n > MAX_STATES || np > MAX_PARAMS) return;
  dsk_solver_options_default(&o);
  o.method = method;
  o.max_steps = 300;
  o.checkpoint_steps = 7;
  int rc = dsk_solver_create(m, &o, &s, &st);
  expect(rc, &st, "dsk_solver_create");
  if (rc != DSK_OK) return;
  {
    const double times[NT] = {0.0, 0.25, 1.0, 2.0};
    size_t ny = (size_t)(no > 0 ? no : 1) * NT;
    double *y = calloc(ny, sizeof *y), *sens = calloc(ny * (size_t)(np > 0 ? np : 1), sizeof *sens);
    double *g = calloc(ny, sizeof *g), *grad = calloc((size_t)np + 1, sizeof *grad);
    double *pnan = calloc((size_t)np + 1, sizeof *pnan);
    const double *ts, *ys;
    int nt = 0;
    if (!y || !sens || !g || !grad || !pnan) abort();
    for (size_t i = 0; i < ny; i++) g[i] = (i % 3 == 1) ? 0.0 : 1.0 / (1.0 + (double)i);
    for (int k = 0; k < np; k++) pnan[k] = k == 0 ? NAN : tab->default_params[k];
    expect(dsk_solver_solve_dense(s, tab->default_params, times, NT, y, &st), &st, "solve_dense");
    expect(dsk_solver_solve(s, tab->default_params, 2.0, &nt, &ts, &ys, &st), &st, "solve");
    expect(dsk_solver_forward(s, tab->default_params, times, NT, y, sens, &st), &st, "forward");
    expect(dsk_solver_reverse(s, tab->default_params, times, NT, g, grad, &st), &st, "reverse");
    rc = dsk_solver_forward_checkpointed(s, tab->default_params, times, NT, y, &st);
    expect(rc, &st, "forward_checkpointed");
    if (rc == DSK_OK)
      for (int rep = 0; rep < 2; rep++)
        expect(dsk_solver_backward(s, g, grad, &st), &st, "backward");
    if (np > 0) expect(dsk_solver_solve_dense(s, pnan, times, NT, y, &st), &st, "NaN parameters");
    free(y), free(sens), free(g), free(grad), free(pnan);
  }
  dsk_solver_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int methods[] = {DSK_BDF, DSK_ADAMS, DSK_TSIT45, DSK_ESDIRK34};
  char *src = malloc(size + 1);
  dsk_jit_options jo = {cache_dir(), NULL};
  dsk_model *m = NULL;
  dsk_status st;
  if (!src) return 0;
  memcpy(src, data, size);
  src[size] = 0;
  int rc = dsk_model_compile(src, &jo, &m, &st);
  if (rc == DSK_OK) {
    exercise(m, methods[size % 4]);
    dsk_model_free(m);
  } else if (rc != DSK_E_SYNTAX && rc != DSK_E_MODEL) {
    /* the translator accepted it: the C compiler must too */
    fprintf(stderr, "dsk_model_compile: code %d: %s\n", rc, st.msg);
    abort();
  }
  free(src);
  return 0;
}
