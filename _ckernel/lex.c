/*
 * lex.c - DiffSL text -> tokens.
 *
 * Names are a letter followed by letters and digits; an underscore directly
 * after a name starts its index suffix, one index per letter (A_ij -> name
 * "A", indices "ij").  Numbers: 12, 1.5, 5., 1e-3, 2.5e+4 (lower-case e; no
 * leading dot).  Comments: // to end of line and / * ... * /.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile.h"

typedef struct lexer {
  dsk_cctx *c;
  const char *p;  /* current position */
  int line;       /* line of p */
  const char *bol;/* beginning of the current line */
} lexer;

static dsk_span span_at(const lexer *lx, const char *start, const char *end) {
  dsk_span sp;
  sp.off = (int)(start - lx->c->src);
  sp.len = (int)(end - start);
  sp.line = lx->line;
  sp.col = (int)(start - lx->bol) + 1;
  return sp;
}

/* Skip whitespace and comments, tracking lines. */
static void skip_space(lexer *lx) {
  for (;;) {
    const char *p = lx->p;
    if (*p == '\n') {
      lx->line++;
      lx->bol = p + 1;
      lx->p = p + 1;
    } else if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f' || *p == '\v') {
      lx->p = p + 1;
    } else if (p[0] == '/' && p[1] == '/') {
      while (*lx->p && *lx->p != '\n') lx->p++;
    } else if (p[0] == '/' && p[1] == '*') {
      const char *start = p;
      int line = lx->line;
      const char *bol = lx->bol;
      lx->p = p + 2;
      while (*lx->p && !(lx->p[0] == '*' && lx->p[1] == '/')) {
        if (*lx->p == '\n') {
          lx->line++;
          lx->bol = lx->p + 1;
        }
        lx->p++;
      }
      if (!*lx->p) {
        lexer at = *lx;
        at.line = line;
        at.bol = bol;
        dsk_cerror(lx->c, DSK_E_SYNTAX, span_at(&at, start, start + 2),
                   "unterminated comment (opened here)");
      }
      lx->p += 2;
    } else {
      return;
    }
  }
}

/* number = digits ['.' digits*] ['e' ['+'|'-'] digits] */
static void lex_number(lexer *lx, dsk_token *t) {
  const char *s = lx->p, *p = lx->p;
  int is_int = 1;
  while (isdigit((unsigned char)*p)) p++;
  if (*p == '.' && p[1] != '.') {
    is_int = 0;
    p++;
    while (isdigit((unsigned char)*p)) p++;
  }
  if (*p == 'e') {
    const char *q = p + 1;
    if (*q == '+' || *q == '-') q++;
    if (!isdigit((unsigned char)*q))
      dsk_cerror(lx->c, DSK_E_SYNTAX, span_at(lx, s, q + (*q != 0)),
                 "malformed number: expected digits after the exponent 'e'");
    is_int = 0;
    p = q;
    while (isdigit((unsigned char)*p)) p++;
  }
  if (isalpha((unsigned char)*p) || *p == '_')
    dsk_cerror(lx->c, DSK_E_SYNTAX, span_at(lx, s, p + 1),
               "malformed number '%.*s' (exponents use a lower-case 'e')", (int)(p - s + 1), s);
  t->kind = TK_NUM;
  t->sp = span_at(lx, s, p);
  t->is_int = is_int;
  {
    char buf[64];
    size_t n = (size_t)(p - s);
    if (n >= sizeof buf)
      dsk_cerror(lx->c, DSK_E_SYNTAX, t->sp, "number literal is too long");
    memcpy(buf, s, n);
    buf[n] = 0;
    t->num = strtod(buf, NULL);
    if (!(t->num <= 1.7976931348623157e308))
      dsk_cerror(lx->c, DSK_E_SYNTAX, t->sp, "number %s is too large for a double", buf);
  }
  lx->p = p;
}

/* name = letter (letter | digit)* ['_' letter+] */
static void lex_name(lexer *lx, dsk_token *t) {
  const char *s = lx->p, *p = lx->p;
  while (isalnum((unsigned char)*p)) p++;
  t->kind = TK_NAME;
  t->text = dsk_strndup(lx->c, s, (size_t)(p - s));
  t->idx = "";
  if (*p == '_') {
    const char *q = p + 1;
    while (isalpha((unsigned char)*q)) q++;
    if (q == p + 1)
      dsk_cerror(lx->c, DSK_E_SYNTAX, span_at(lx, s, p + 1),
                 "expected index letters after '_' in '%.*s'", (int)(p - s + 1), s);
    if (isdigit((unsigned char)*q) || *q == '_')
      dsk_cerror(lx->c, DSK_E_SYNTAX, span_at(lx, s, q + 1),
                 "names cannot contain '_' (it starts an index list of single letters)");
    t->idx = dsk_strndup(lx->c, p + 1, (size_t)(q - p - 1));
    p = q;
  }
  t->sp = span_at(lx, s, p);
  lx->p = p;
}

static void lex_string(lexer *lx, dsk_token *t) {
  const char *s = lx->p, *p = lx->p + 1;
  char q = *s;
  while (*p && *p != q && *p != '\n') p++;
  if (*p != q)
    dsk_cerror(lx->c, DSK_E_SYNTAX, span_at(lx, s, s + 1), "unterminated string");
  t->kind = TK_STR;
  t->text = dsk_strndup(lx->c, s + 1, (size_t)(p - s - 1));
  t->sp = span_at(lx, s, p + 1);
  lx->p = p + 1;
}

static int punct_kind(const char *p, int *len) {
  *len = 1;
  switch (*p) {
    case '{': return TK_LBRACE;
    case '}': return TK_RBRACE;
    case '(': return TK_LPAREN;
    case ')': return TK_RPAREN;
    case '[': return TK_LBRACK;
    case ']': return TK_RBRACK;
    case ',': return TK_COMMA;
    case ':': return TK_COLON;
    case '=': return TK_ASSIGN;
    case '+': return TK_PLUS;
    case '-': return TK_MINUS;
    case '*': return TK_STAR;
    case '/': return TK_SLASH;
    case '%': return TK_PERCENT;
    case '.':
      if (p[1] == '.') {
        *len = 2;
        return TK_DOTDOT;
      }
      return -1;
    default: return -1;
  }
}

dsk_token *dsk_lex(dsk_cctx *c, int *ntok) {
  lexer lx = {c, c->src, 1, c->src};
  size_t cap = 64, n = 0;
  dsk_token *toks = dsk_alloc(c, cap * sizeof *toks);
  for (;;) {
    dsk_token t;
    memset(&t, 0, sizeof t);
    skip_space(&lx);
    if (n == cap) {
      toks = dsk_grow(c, toks, cap * sizeof *toks, 2 * cap * sizeof *toks);
      cap *= 2;
    }
    if (!*lx.p) {
      t.kind = TK_EOF;
      t.sp = span_at(&lx, lx.p, lx.p);
      toks[n++] = t;
      break;
    }
    if (isdigit((unsigned char)*lx.p)) {
      lex_number(&lx, &t);
    } else if (isalpha((unsigned char)*lx.p)) {
      lex_name(&lx, &t);
    } else if (*lx.p == '\'' || *lx.p == '"') {
      lex_string(&lx, &t);
    } else {
      int len, k = punct_kind(lx.p, &len);
      if (k < 0) {
        if (*lx.p == '.' && isdigit((unsigned char)lx.p[1]))
          dsk_cerror(c, DSK_E_SYNTAX, span_at(&lx, lx.p, lx.p + 1),
                     "numbers need a digit before the point (write 0.5, not .5)");
        if ((unsigned char)*lx.p >= 0x20 && (unsigned char)*lx.p < 0x7f)
          dsk_cerror(c, DSK_E_SYNTAX, span_at(&lx, lx.p, lx.p + 1), "unexpected character '%c'",
                     *lx.p);
        dsk_cerror(c, DSK_E_SYNTAX, span_at(&lx, lx.p, lx.p + 1),
                   "unexpected character (byte 0x%02x)", (unsigned char)*lx.p);
      }
      t.kind = (dsk_tok_kind)k;
      t.sp = span_at(&lx, lx.p, lx.p + len);
      lx.p += len;
    }
    toks[n++] = t;
  }
  *ntok = (int)n;
  return toks;
}

const char *dsk_tok_describe(dsk_cctx *c, const dsk_token *t) {
  char buf[96];
  if (t->kind == TK_EOF) return "end of input";
  snprintf(buf, sizeof buf, "'%.*s'", t->sp.len > 40 ? 40 : t->sp.len, c->src + t->sp.off);
  return dsk_strndup(c, buf, strlen(buf));
}
