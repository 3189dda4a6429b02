/* test_sema.c - semantic analysis through dsk_translate: accepted models and
   every model error with its line:col. */
#include <stdlib.h>

#include "../dsk.h"
#include "runner.h"

void suite_sema(void);

static void expect_ok(const char *src) {
  char *c = NULL;
  dsk_status st;
  int rc = dsk_translate(src, &c, &st);
  CHECK_MSG(rc == DSK_OK && c != NULL, "%s -> %s", src, st.msg);
  free(c);
}

static void expect_error(const char *src, int line, int col, const char *text) {
  char *c = NULL;
  dsk_status st;
  char pos[32];
  int rc = dsk_translate(src, &c, &st);
  CHECK_MSG(rc == DSK_E_MODEL, "'%s': rc %d", src, rc);
  CHECK(c == NULL);
  CHECK_MSG(st.line == line && st.col == col, "'%s': got %d:%d want %d:%d", src, st.line,
            st.col, line, col);
  snprintf(pos, sizeof pos, "%d:%d: error:", line, col);
  CHECK_CONTAINS(st.msg, pos);
  CHECK_CONTAINS(st.msg, text);
  CHECK_CONTAINS(st.msg, "^");
  free(c);
}

static void test_accepts(void) {
  expect_ok("in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }");
  expect_ok("in { r = 1 }\nu_i { x = 1, y = 2 }\nF_i { -r * x, x - y }\nout_i { x + y }");
  expect_ok("u_i { (0:3): x = 1 }\ns { 2 * t }\nv_i { s * x_i }\nF_i { sin(v_i) + pow(x_i, 2) }");
  expect_ok("u { 1 }\nF { sigmoid(u) + arcsinh(u) + arccosh(u + 2) + heaviside(u) + "
            "copysign(u, -1) + min(u, 1) + max(u, 0) + log10(u) + abs(u) }");
  expect_ok("u_i { 1, 2 }\nF_i { (0:2): -1 * u_i, }");
  expect_ok("u { 1 } F { -u }"); /* no parameters */
}

static void test_errors(void) {
  expect_error("in_i { k = 1 }\nu { 1 }\nF { -kk * u }", 3, 6, "unknown name 'kk'");
  expect_error("u { 1 }\nu { 2 }\nF { 1 }", 2, 1, "'u' is already defined (at 1:1)");
  expect_error("u_i { x = 1, x = 2 }\nF_i { 1, 2 }", 1, 14, "'x' is already defined");
  expect_error("u_i { 1, 2 }\nF_i { 1, 2, 3 }", 2, 1, "F has length 3 but u has length 2");
  expect_error("a_i { 1, 2 }\nb_i { 1, 2, 3 }\nu_i { (0:2): 1 }\nF_i { a_i + b_i }", 4, 7,
               "(i=2) and (i=3) do not broadcast");
  expect_error("u { 1 }\nF { foo(u) }", 2, 5, "unknown function 'foo'");
  expect_error("u { 1 }\nF { pow(u) }", 2, 5, "takes 2 arguments, not 1");
  expect_error("u { 1 }", 1, 1, "no right-hand side");
  expect_error("F { 1 }", 1, 1, "no state");
  expect_error("u { 1 }\nF { t }\nt { 2 }", 3, 1, "reserved name");
  expect_error("u_i { 1, 2 }\nF_i { u }", 2, 7, "'u' has rank 1 (shape 2); index it, e.g. u_i");
  expect_error("u { 1 }\nF { u_i }", 2, 5, "scalar");
  expect_error("u { t }\nF { 1 }", 1, 5, "initial state u may depend only");
  expect_error("in_i { k = 1, 2 }\nu { 1 }\nF { 1 }", 1, 15, "needs a name");
  expect_error("in_i { k = t }\nu { 1 }\nF { 1 }", 1, 12, "must be a number");
  expect_error("u { 1, 2 }\nF { 1 }", 1, 8, "'u' is a scalar");
  expect_error("u_i { 1, 2 }\nF_i { (0:2): u_i, (1:2): 1 }", 2, 19, "overlaps an earlier one");
  expect_error("u { 1 }\nF { F }", 2, 5, "own definition");
  expect_error("u { 1 }\nF { 1 }\nout { F }", 3, 7, "cannot be read");
  expect_error("u { 1 }\nF { 1 % 2 }", 2, 7, "index expressions");
  expect_error("A_ij { (0:2, 0:3): 1 }\nu_i { 1, 2 }\nF_i { A_ij * u_j }", 3, 7,
               "contraction over 'j' with mismatched sizes 3 and 2");
  expect_error("u_i { 1, 2 }\nF_i { (0..2, 0..2): 1 }", 2, 7, "block has 2 axes but 'F' has rank 1");
  expect_error("A_ij { (0..2, 0..3): 1 }\nu_i { 1, 2 }\nF_i { u_i }", 1, 8, "equal widths");
  expect_error("u_i { 1, 2 }\nF_i { u_i[2] }", 2, 7, "out of range");
  expect_error("u_i { 1, 2 }\nF_i { u_i[N:N+3], 1 }", 2, 7, "width 3");
  expect_error("u_i { 1, 2 }\nF_i { u_i[t] }", 2, 11, "integers and N");
  expect_error("u_i { 1, 2 }\nF_i { u_i }\nreset_i { u_i }", 3, 1, "reset needs stop");
  expect_error("u_i { 1, 2 }\ndudt_i { a = 0, b = 0 }\nF_i { a, u_i[0] }", 3, 1, "F must not depend on dudt");
  expect_error("u_i { 1, 2 }\ndudt_i { a = 0, b = 0 }\nF_i { u_i }\nout_i { a }", 4, 1, "only M may depend on dudt");
  expect_error("u_i { 1, 2 }\nF_i { u_i }\nM_i { u_i }", 3, 1, "M must not depend on the state");
  expect_error("A_ij { (0..2, 0..2): 1 }\nu_i { 1, 2 }\nF_i { A_ij[0] }", 3, 7, "dense vectors");
  expect_error("x_i { 0, 1, 1, 2 }\ny_i { 1, 2, 3, 4 }\nu { 1 }\nF { interp1d(x_i, y_i, u) }", 4, 14,
               "strictly increasing, but entry 2 is 1 after 1");
  expect_error("x_i { 0, 1 }\ny_i { 1, 2, 3 }\nu { 1 }\nF { interp1d(x_i, y_i, u) }", 4, 19,
               "values have length 3 but the grid has 2");
  expect_error("in_i { a = 1 }\nx_i { 0, a }\nu { 1 }\nF { interp1d(x_i, x_i, u) }", 4, 14,
               "grid of interp1d must be constant");
  expect_error("u { 1 }\nF { interp1d(u, u) }", 2, 5, "takes 3 arguments");
  expect_error("C_ij { (0:3, 0:3): read('no_such_file.tns') }\nu { 1 }\nF { u }", 1, 25,
               "cannot read 'no_such_file.tns'");
  expect_error("C_ij { (0:3, 0:3): read('_ckernel/tests/data/out_of_range.tns') }\nu { 1 }\nF { u }",
               1, 25, "out_of_range.tns:2: index 4 is outside 1..3");
  expect_error("C_ij { (0:3, 0:3): read('_ckernel/tests/data/malformed.tns') }\nu { 1 }\nF { u }",
               1, 25, "malformed.tns:2: expected 2 indices and a value");
  expect_error("C_ij { read('_ckernel/tests/data/c3.tns') }\nu { 1 }\nF { u }", 1, 8,
               "needs a block giving its shape");
  expect_error("u_i { 1, 2 }\nF_i { 2 * read('x.tns') }", 2, 11, "whole element of its own");
  expect_error("D_ij { (0..2, 0..2): 1 }\nu_i { 1, 2 }\nF_i { u_i / D_ij }", 3, 7, "same sparsity");
}

void suite_sema(void) {
  test_accepts();
  test_errors();
}
