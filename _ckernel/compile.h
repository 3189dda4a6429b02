/*
 * compile.h - shared by the compiler stages (lex.c, parse.c, sema.c, emit_c.c).
 *
 * One dsk_cctx lives for one call of dsk_translate().  Every allocation of the
 * stages comes from its arena and is released in one place when the call
 * ends, whatever the outcome.  A stage that finds an error calls
 * dsk_cerror(), which formats "line:col: error: ..." plus the source line and
 * a caret into the status and longjmps back to dsk_translate(); the jump never
 * leaves the kernel.
 */
#ifndef DSK_COMPILE_H
#define DSK_COMPILE_H

#include <setjmp.h>
#include <stddef.h>
#include "dsk.h"

/* ---- arena ---------------------------------------------------------------- */

typedef struct dsk_arena_chunk dsk_arena_chunk;
typedef struct dsk_arena {
  dsk_arena_chunk *head;
} dsk_arena;

/* ---- source positions ----------------------------------------------------- */

typedef struct dsk_span {
  int off;  /* byte offset into the source */
  int len;  /* bytes covered */
  int line; /* 1-based */
  int col;  /* 1-based, in bytes */
} dsk_span;

/* ---- compile context ------------------------------------------------------ */

typedef struct dsk_cctx {
  const char *src;
  dsk_arena arena;
  dsk_status *st;
  jmp_buf on_error;
} dsk_cctx;

void *dsk_alloc(dsk_cctx *c, size_t n);               /* zeroed; jumps on OOM */
void *dsk_grow(dsk_cctx *c, void *p, size_t old_n, size_t new_n); /* arena realloc */
char *dsk_strndup(dsk_cctx *c, const char *s, size_t n);
void dsk_arena_free(dsk_arena *a);

/* Report an error at `sp` (code DSK_E_SYNTAX or DSK_E_MODEL) and unwind. */
void dsk_cerror(dsk_cctx *c, int code, dsk_span sp, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5), noreturn))
#endif
    ;

/* ---- tokens (lex.c) -------------------------------------------------------- */

typedef enum dsk_tok_kind {
  TK_EOF,     /* end of input */
  TK_NAME,    /* name, with optional index suffix: A_ij -> text "A", idx "ij" */
  TK_NUM,     /* number literal; num holds the value */
  TK_STR,     /* 'quoted' string (read('file.tns')); text holds the contents */
  TK_LBRACE,  /* { */
  TK_RBRACE,  /* } */
  TK_LPAREN,  /* ( */
  TK_RPAREN,  /* ) */
  TK_LBRACK,  /* [ */
  TK_RBRACK,  /* ] */
  TK_COMMA,   /* , */
  TK_COLON,   /* : */
  TK_DOTDOT,  /* .. */
  TK_ASSIGN,  /* = */
  TK_PLUS,    /* + */
  TK_MINUS,   /* - */
  TK_STAR,    /* * */
  TK_SLASH,   /* / */
  TK_PERCENT  /* % (index expressions only) */
} dsk_tok_kind;

typedef struct dsk_token {
  dsk_tok_kind kind;
  dsk_span sp;
  double num;       /* TK_NUM */
  int is_int;       /* TK_NUM written without '.', 'e' */
  const char *text; /* TK_NAME: the name; TK_STR: the contents (arena) */
  const char *idx;  /* TK_NAME: index letters after '_', or "" */
} dsk_token;

/* Tokenise the whole source; the array ends with TK_EOF. */
dsk_token *dsk_lex(dsk_cctx *c, int *ntok);
/* Human-readable token description for "near ..." messages. */
const char *dsk_tok_describe(dsk_cctx *c, const dsk_token *t);

/* ---- AST (parse.c) --------------------------------------------------------- */

typedef enum dsk_ast_kind {
  AST_NUM,   /* number literal: num */
  AST_NAME,  /* tensor or element reference: name, idx ("" when none) */
  AST_STR,   /* string literal: name holds the text */
  AST_NEG,   /* unary minus: a */
  AST_BIN,   /* a op b, op one of + - * / % */
  AST_CALL,  /* name(args...) */
  AST_INDEX  /* a[b] or a[b:c] (c != NULL for a range) */
} dsk_ast_kind;

typedef struct dsk_ast_expr {
  dsk_ast_kind kind;
  dsk_span sp;                /* the whole expression */
  double num;                 /* AST_NUM */
  int is_int;                 /* AST_NUM written as an integer */
  char op;                    /* AST_BIN */
  dsk_span opsp;              /* AST_BIN: the operator */
  int depth;                  /* height of the operator tree below (bounded) */
  const char *name, *idx;     /* AST_NAME, AST_CALL (name), AST_STR (name) */
  struct dsk_ast_expr *a, *b, *c;
  struct dsk_ast_expr **args; /* AST_CALL */
  int nargs;
} dsk_ast_expr;

#define DSK_MAX_RANK 8

/* One element of a tensor definition: [block ':'] [name '='] expr. */
typedef struct dsk_ast_elem {
  dsk_span sp;
  int nranges;              /* 0 when there is no explicit block */
  int lo[DSK_MAX_RANK];     /* block start per axis */
  int hi[DSK_MAX_RANK];     /* block end (exclusive) per axis */
  int diag;                 /* 1 for (a..b, c..d) */
  dsk_span block_sp;
  const char *name;         /* named element, or NULL */
  dsk_span name_sp;
  dsk_ast_expr *expr;
} dsk_ast_elem;

typedef struct dsk_ast_tensor {
  const char *name, *idx;   /* "F", "i" */
  dsk_span sp;              /* the name token */
  dsk_ast_elem *elems;
  int nelems;
} dsk_ast_tensor;

typedef struct dsk_ast_model {
  dsk_ast_tensor *tensors;
  int ntensors;
} dsk_ast_model;

dsk_ast_model *dsk_parse(dsk_cctx *c, const dsk_token *toks, int ntok);

#endif
