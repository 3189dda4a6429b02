/* test_lex.c - the lexer: token kinds, names with index suffixes, numbers,
   comments, positions, and lexical errors with line:col. */
#include <stdlib.h>

#include "../compile.h"
#include "runner.h"

void suite_lex(void);

/* Lex `src`; returns the tokens (arena of *c) or NULL on error (status in *st). */
static dsk_token *lex(dsk_cctx *c, dsk_status *st, const char *src, int *n) {
  memset(c, 0, sizeof *c);
  c->src = src;
  c->st = st;
  dsk_status_clear(st);
  if (setjmp(c->on_error) == 0) return dsk_lex(c, n);
  return NULL;
}

static void test_tokens(void) {
  dsk_cctx c;
  dsk_status st;
  int n = 0;
  dsk_token *t = lex(&c, &st, "A_ij { 1.5e-3, k1 } // comment\n/* block\n */ x..y", &n);
  CHECK(t != NULL);
  if (!t) return;
  CHECK(n == 10);
  CHECK(t[0].kind == TK_NAME && strcmp(t[0].text, "A") == 0 && strcmp(t[0].idx, "ij") == 0);
  CHECK(t[1].kind == TK_LBRACE);
  CHECK(t[2].kind == TK_NUM && t[2].num == 1.5e-3 && !t[2].is_int);
  CHECK(t[3].kind == TK_COMMA);
  CHECK(t[4].kind == TK_NAME && strcmp(t[4].text, "k1") == 0 && t[4].idx[0] == 0);
  CHECK(t[5].kind == TK_RBRACE);
  CHECK(t[6].kind == TK_NAME && t[6].sp.line == 3 && t[6].sp.col == 5);
  CHECK(t[7].kind == TK_DOTDOT);
  CHECK(t[9].kind == TK_EOF);
  dsk_arena_free(&c.arena);
}

static void test_numbers(void) {
  dsk_cctx c;
  dsk_status st;
  int n = 0;
  dsk_token *t = lex(&c, &st, "12 5. 2.5e+4 1e-3 0:3", &n);
  CHECK(t != NULL);
  if (!t) return;
  CHECK(t[0].num == 12 && t[0].is_int);
  CHECK(t[1].num == 5.0 && !t[1].is_int);
  CHECK(t[2].num == 2.5e4);
  CHECK(t[3].num == 1e-3);
  CHECK(t[4].num == 0 && t[5].kind == TK_COLON && t[6].num == 3);
  dsk_arena_free(&c.arena);
}

static void expect_error(const char *src, int line, int col, const char *text) {
  dsk_cctx c;
  dsk_status st;
  int n;
  char pos[32];
  CHECK(lex(&c, &st, src, &n) == NULL);
  CHECK(st.code == DSK_E_SYNTAX);
  CHECK_MSG(st.line == line && st.col == col, "got %d:%d want %d:%d", st.line, st.col, line,
            col);
  snprintf(pos, sizeof pos, "%d:%d: error:", line, col);
  CHECK_CONTAINS(st.msg, pos);
  CHECK_CONTAINS(st.msg, text);
  CHECK_CONTAINS(st.msg, "^");
  dsk_arena_free(&c.arena);
}

static void test_errors(void) {
  expect_error("u { .5 }", 1, 5, "0.5");
  expect_error("u { 1E5 }", 1, 5, "lower-case");
  expect_error("u { 1 }\nF { 2 $ u }", 2, 7, "unexpected character '$'");
  expect_error("u { 1 } /* open", 1, 9, "unterminated comment");
  expect_error("my_k1 { 1 }", 1, 1, "'_'");
  expect_error("u { 1e }", 1, 5, "exponent");
}

void suite_lex(void) {
  test_tokens();
  test_numbers();
  test_errors();
}
