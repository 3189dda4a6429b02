/*
 * compile.c - the translator's driver: DiffSL text -> C source.
 *
 *   dsk_translate: dsk_lex -> dsk_parse -> dsk_sema -> dsk_emit_c
 *
 * It owns the per-call arena and the error exit.  Stages report errors with
 * dsk_cerror(), which longjmps back here; the arena is freed on every path.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile.h"
#include "ir.h"

struct dsk_arena_chunk {
  dsk_arena_chunk *next;
  size_t size;
  /* payload follows, max-aligned */
};

#define CHUNK_HDR ((sizeof(dsk_arena_chunk) + 15) & ~(size_t)15)

void *dsk_alloc(dsk_cctx *c, size_t n) {
  dsk_arena_chunk *ch;
  if (n > ((size_t)-1) / 2 - CHUNK_HDR) {
    dsk_status_set(c->st, DSK_E_NOMEM, "out of memory in the DiffSL compiler");
    longjmp(c->on_error, 1);
  }
  ch = calloc(1, CHUNK_HDR + (n ? n : 1));
  if (!ch) {
    dsk_status_set(c->st, DSK_E_NOMEM, "out of memory in the DiffSL compiler");
    longjmp(c->on_error, 1);
  }
  ch->size = n;
  ch->next = c->arena.head;
  c->arena.head = ch;
  return (char *)ch + CHUNK_HDR;
}

void *dsk_grow(dsk_cctx *c, void *p, size_t old_n, size_t new_n) {
  void *q = dsk_alloc(c, new_n);
  if (p && old_n) memcpy(q, p, old_n < new_n ? old_n : new_n);
  return q;
}

char *dsk_strndup(dsk_cctx *c, const char *s, size_t n) {
  char *d = dsk_alloc(c, n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

void dsk_arena_free(dsk_arena *a) {
  dsk_arena_chunk *ch = a->head;
  while (ch) {
    dsk_arena_chunk *next = ch->next;
    free(ch);
    ch = next;
  }
  a->head = NULL;
}

/* "L:C: error: MSG\n  <source line>\n  <spaces>^~~~".  Long lines are shown as
   a window around the column, marked with "...". */
void dsk_cerror(dsk_cctx *c, int code, dsk_span sp, const char *fmt, ...) {
  enum { WINDOW = 160, BEFORE = 60 };
  dsk_status *st = c->st;
  char text[DSK_MSG_MAX / 2];
  const char *bol = c->src + sp.off - (sp.col - 1);
  const char *eol = bol, *from, *to;
  int n, width, caret, i;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  while (*eol && *eol != '\n' && *eol != '\r') eol++;
  from = bol;
  if (sp.col - 1 > BEFORE + 20) from = bol + (sp.col - 1 - BEFORE);
  to = eol - from > WINDOW ? from + WINDOW : eol;
  n = snprintf(st->msg, sizeof st->msg, "%d:%d: error: %s\n  %s%.*s%s\n  ", sp.line, sp.col,
               text, from > bol ? "..." : "", (int)(to - from), from, to < eol ? "..." : "");
  caret = (int)(bol + sp.col - 1 - from) + (from > bol ? 3 : 0);
  width = sp.len > 0 ? sp.len : 1;
  if (bol + sp.col - 1 + width > to) width = (int)(to - (bol + sp.col - 1));
  if (width < 1) width = 1;
  for (i = 0; i < caret && n < (int)sizeof st->msg - 2; i++) {
    const char *ch = from + i - (from > bol ? 3 : 0);
    st->msg[n++] = (ch >= from && *ch == '\t') ? '\t' : ' ';
  }
  for (i = 0; i < width && i < WINDOW && n < (int)sizeof st->msg - 1; i++)
    st->msg[n++] = i == 0 ? '^' : '~';
  st->msg[n < (int)sizeof st->msg ? n : (int)sizeof st->msg - 1] = 0;
  st->code = code;
  st->line = sp.line;
  st->col = sp.col;
  longjmp(c->on_error, 1);
}

/* The pipeline; `tr` receives the C text (and the patterns when want_patterns). */
static int translate(const char *src, dsk_translation *tr, int want_patterns,
                     dsk_status *st_arg) {
  dsk_cctx c;
  dsk_status local;
  dsk_status *const st = st_arg ? st_arg : &local;
  volatile int rc = DSK_OK;
  dsk_status_clear(st);
  if (!tr) return dsk_status_set(st, DSK_E_ARG, "dsk_translate: output is NULL");
  memset(tr, 0, sizeof *tr);
  if (!src) return dsk_status_set(st, DSK_E_ARG, "dsk_translate: source is NULL");
  memset(&c, 0, sizeof c);
  c.src = src;
  c.st = st;
  if (setjmp(c.on_error) == 0) {
    int ntok;
    dsk_token *toks = dsk_lex(&c, &ntok);
    dsk_ast_model *ast = dsk_parse(&c, toks, ntok);
    dsk_ir_model *ir = dsk_sema(&c, ast);
    if (want_patterns) dsk_ir_patterns(&c, ir, &tr->jac, &tr->mass);
    tr->c_source = dsk_emit_c(&c, ir);
  } else {
    rc = st->code ? st->code : DSK_E_MODEL;
    dsk_translation_free(tr);
  }
  dsk_arena_free(&c.arena);
  return rc;
}

int dsk_translate(const char *src, char **c_source, dsk_status *st) {
  dsk_translation tr;
  int rc;
  if (!c_source) return dsk_status_set(st, DSK_E_ARG, "dsk_translate: c_source is NULL");
  rc = translate(src, &tr, 0, st);
  *c_source = tr.c_source;
  return rc;
}

int dsk_translate_ex(const char *src, dsk_translation *out, dsk_status *st) {
  return translate(src, out, 1, st);
}

void dsk_translation_free(dsk_translation *tr) {
  if (!tr) return;
  free(tr->c_source);
  free(tr->jac.colptr);
  free(tr->jac.rowidx);
  free(tr->mass.colptr);
  free(tr->mass.rowidx);
  memset(tr, 0, sizeof *tr);
}
