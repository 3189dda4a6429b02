/* test_parse.c - the parser: AST shape, blocks, named elements, precedence,
   and syntax errors at the right line:col. */
#include <stdlib.h>

#include "../compile.h"
#include "runner.h"

void suite_parse(void);

static dsk_ast_model *parse(dsk_cctx *c, dsk_status *st, const char *src) {
  memset(c, 0, sizeof *c);
  c->src = src;
  c->st = st;
  dsk_status_clear(st);
  if (setjmp(c->on_error) == 0) {
    int n;
    dsk_token *t = dsk_lex(c, &n);
    return dsk_parse(c, t, n);
  }
  return NULL;
}

static void test_structure(void) {
  dsk_cctx c;
  dsk_status st;
  dsk_ast_model *m = parse(&c, &st,
                           "in_i { k = 0.7, a0 = 2.0, }\n"
                           "L_ij { (0..3, 0..3): -2.0, (0:2, 1:3): 1 }\n"
                           "u_i { (0:2): x = 1, y = a0 }\n"
                           "F_i { -k * x_i + 2 * 3, sin(y) / (1 - y) }\n");
  CHECK(m != NULL);
  if (!m) return;
  CHECK(m->ntensors == 4);
  CHECK(strcmp(m->tensors[0].name, "in") == 0 && m->tensors[0].nelems == 2);
  CHECK(strcmp(m->tensors[0].elems[1].name, "a0") == 0);
  CHECK(m->tensors[1].elems[0].diag == 1 && m->tensors[1].elems[0].nranges == 2);
  CHECK(m->tensors[1].elems[1].diag == 0 && m->tensors[1].elems[1].lo[1] == 1 &&
        m->tensors[1].elems[1].hi[1] == 3);
  CHECK(m->tensors[2].elems[0].nranges == 1 && strcmp(m->tensors[2].elems[0].name, "x") == 0);
  {
    /* -k * x_i + 2 * 3  ==  ((-k) * x_i) + (2 * 3) */
    dsk_ast_expr *e = m->tensors[3].elems[0].expr;
    CHECK(e->kind == AST_BIN && e->op == '+');
    CHECK(e->a->kind == AST_BIN && e->a->op == '*' && e->a->a->kind == AST_NEG);
    CHECK(e->b->kind == AST_BIN && e->b->op == '*');
    e = m->tensors[3].elems[1].expr;
    CHECK(e->kind == AST_BIN && e->op == '/' && e->a->kind == AST_CALL && e->a->nargs == 1);
    CHECK(e->sp.line == 4 && e->sp.col == 25);
  }
  dsk_arena_free(&c.arena);
}

static void test_index_expr(void) {
  dsk_cctx c;
  dsk_status st;
  dsk_ast_model *m = parse(&c, &st, "r_i { a_i[1:3], b_i[N + 1] }");
  CHECK(m != NULL);
  if (!m) return;
  CHECK(m->tensors[0].elems[0].expr->kind == AST_INDEX && m->tensors[0].elems[0].expr->c);
  CHECK(m->tensors[0].elems[1].expr->kind == AST_INDEX && !m->tensors[0].elems[1].expr->c);
  dsk_arena_free(&c.arena);
}

static void expect_error(const char *src, int line, int col, const char *text) {
  dsk_cctx c;
  dsk_status st;
  char pos[32];
  CHECK(parse(&c, &st, src) == NULL);
  CHECK(st.code == DSK_E_SYNTAX);
  CHECK_MSG(st.line == line && st.col == col, "'%s': got %d:%d want %d:%d", src, st.line,
            st.col, line, col);
  snprintf(pos, sizeof pos, "%d:%d: error:", line, col);
  CHECK_CONTAINS(st.msg, pos);
  CHECK_CONTAINS(st.msg, text);
  dsk_arena_free(&c.arena);
}

static void test_errors(void) {
  expect_error("u { 1 }\nF { 1 +* u }", 2, 8, "expected an expression near '*'");
  expect_error("u { 1 }\nF { (1 + u }", 2, 12, "expected ')' near '}'");
  expect_error("u { 1 }\nF { 1 u }", 2, 7, "expected ',' or '}' near 'u'");
  expect_error("u { 1 }\nF { 1", 2, 3, "never closed");
  expect_error("in = [a, b]\nu { 1 }", 1, 1, "define the parameters as a tensor");
  expect_error("u_i { (0..2, 0:2): 1 }", 1, 7, "'..' on every axis");
  expect_error("u_i { (3:1): 1 }", 1, 8, "empty range");
  expect_error("u { 1 } 3", 1, 9, "expected the name of a tensor definition");
  expect_error("u 1", 1, 3, "expected '{'");
  expect_error("u_i { x_i = 1 }", 1, 7, "element name has no index");
  {
    /* deep nesting is an error, not a stack overflow */
    static char deep[20100];
    size_t k = 0;
    memcpy(deep, "u { ", 4);
    k = 4;
    for (int i = 0; i < 10000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 10000; i++) deep[k++] = ')';
    deep[k++] = '}';
    deep[k] = 0;
    expect_error(deep, 1, 5 + 200, "nested more than 200 deep");
  }
}

void suite_parse(void) {
  test_structure();
  test_index_expr();
  test_errors();
}
