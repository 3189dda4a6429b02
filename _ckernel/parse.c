/*
 * parse.c - tokens -> AST, by recursive descent.
 *
 * The grammar (DIFFSL.md):
 *   model   = [legacy_in] tensor* EOF
 *   tensor  = NAME '{' [element (',' element)* [',']] '}'
 *   element = [block ':'] [NAME '='] expr
 *   block   = '(' range (',' range)* ')'
 *   range   = INT [(':' | '..') INT]
 *   expr    = term (('+' | '-') term)*
 *   term    = unary (('*' | '/' | '%') unary)*
 *   unary   = ('-' | '+') unary | postfix
 *   postfix = primary ['[' expr [':' expr] ']']
 *   primary = NUM | STR | NAME '(' [expr (',' expr)*] ')' | NAME | '(' expr ')'
 * Every node records the span of source it came from.
 */
#include <stdio.h>
#include <string.h>

#include "compile.h"

typedef struct parser {
  dsk_cctx *c;
  const dsk_token *t; /* current token */
  int depth;          /* expression nesting, bounded so the C stack is too */
} parser;

#define MAX_DEPTH 200 /* nested parentheses, unary operators, calls */
#define MAX_TREE 1000 /* depth of the operator tree */

static const char *tok_name(dsk_tok_kind k) {
  switch (k) {
    case TK_EOF: return "end of input";
    case TK_NAME: return "a name";
    case TK_NUM: return "a number";
    case TK_STR: return "a string";
    case TK_LBRACE: return "'{'";
    case TK_RBRACE: return "'}'";
    case TK_LPAREN: return "'('";
    case TK_RPAREN: return "')'";
    case TK_LBRACK: return "'['";
    case TK_RBRACK: return "']'";
    case TK_COMMA: return "','";
    case TK_COLON: return "':'";
    case TK_DOTDOT: return "'..'";
    case TK_ASSIGN: return "'='";
    case TK_PLUS: return "'+'";
    case TK_MINUS: return "'-'";
    case TK_STAR: return "'*'";
    case TK_SLASH: return "'/'";
    case TK_PERCENT: return "'%'";
  }
  return "?";
}

#if defined(__GNUC__)
__attribute__((noreturn))
#endif
static void expected(parser *ps, const char *what) {
  dsk_cerror(ps->c, DSK_E_SYNTAX, ps->t->sp, "expected %s near %s", what,
             dsk_tok_describe(ps->c, ps->t));
}

static int accept(parser *ps, dsk_tok_kind k) {
  if (ps->t->kind != k) return 0;
  ps->t++;
  return 1;
}

static const dsk_token *expect(parser *ps, dsk_tok_kind k) {
  const dsk_token *t = ps->t;
  if (t->kind != k) expected(ps, tok_name(k));
  ps->t++;
  return t;
}

/* Span from the start of `a` to the end of `b`. */
static dsk_span join(dsk_span a, dsk_span b) {
  dsk_span s = a;
  s.len = b.off + b.len - a.off;
  return s;
}

static dsk_ast_expr *new_expr(parser *ps, dsk_ast_kind k, dsk_span sp) {
  dsk_ast_expr *e = dsk_alloc(ps->c, sizeof *e);
  e->kind = k;
  e->sp = sp;
  return e;
}

static dsk_ast_expr *expr(parser *ps);

/* primary = NUM | STR | NAME '(' args ')' | NAME | '(' expr ')' */
static dsk_ast_expr *primary(parser *ps) {
  const dsk_token *t = ps->t;
  dsk_ast_expr *e;
  if (accept(ps, TK_NUM)) {
    e = new_expr(ps, AST_NUM, t->sp);
    e->num = t->num;
    e->is_int = t->is_int;
    return e;
  }
  if (accept(ps, TK_STR)) {
    e = new_expr(ps, AST_STR, t->sp);
    e->name = t->text;
    return e;
  }
  if (accept(ps, TK_NAME)) {
    if (ps->t->kind == TK_LPAREN && t->idx[0])
      dsk_cerror(ps->c, DSK_E_SYNTAX, t->sp,
                 "a function call takes no index: write %s(...), not %s_%s(...)", t->text, t->text,
                 t->idx);
    if (ps->t->kind == TK_LPAREN) {
      int cap = 4;
      ps->t++;
      e = new_expr(ps, AST_CALL, t->sp);
      e->name = t->text;
      e->args = dsk_alloc(ps->c, (size_t)cap * sizeof *e->args);
      if (ps->t->kind != TK_RPAREN) {
        do {
          if (e->nargs == cap) {
            e->args = dsk_grow(ps->c, e->args, (size_t)cap * sizeof *e->args,
                               (size_t)cap * 2 * sizeof *e->args);
            cap *= 2;
          }
          e->args[e->nargs++] = expr(ps);
        } while (accept(ps, TK_COMMA));
      }
      e->sp = join(t->sp, expect(ps, TK_RPAREN)->sp);
      for (int k = 0; k < e->nargs; k++)
        if (e->args[k]->depth + 1 > e->depth) e->depth = e->args[k]->depth + 1;
      return e;
    }
    e = new_expr(ps, AST_NAME, t->sp);
    e->name = t->text;
    e->idx = t->idx;
    return e;
  }
  if (accept(ps, TK_LPAREN)) {
    e = expr(ps);
    expect(ps, TK_RPAREN);
    return e;
  }
  expected(ps, "an expression");
}

/* postfix = primary ['[' expr [':' expr] ']'] */
static dsk_ast_expr *postfix(parser *ps) {
  dsk_ast_expr *e = primary(ps);
  if (ps->t->kind == TK_LBRACK) {
    dsk_ast_expr *ix = new_expr(ps, AST_INDEX, e->sp);
    ps->t++;
    ix->a = e;
    ix->b = expr(ps);
    if (accept(ps, TK_COLON)) ix->c = expr(ps);
    ix->sp = join(e->sp, expect(ps, TK_RBRACK)->sp);
    return ix;
  }
  return e;
}

/* unary = ('-' | '+') unary | postfix */
static dsk_ast_expr *unary(parser *ps) {
  const dsk_token *t = ps->t;
  if (++ps->depth > MAX_DEPTH)
    dsk_cerror(ps->c, DSK_E_SYNTAX, t->sp, "expression nested more than %d deep", MAX_DEPTH);
  if (accept(ps, TK_MINUS)) {
    dsk_ast_expr *a = unary(ps);
    ps->depth--;
    dsk_ast_expr *e = new_expr(ps, AST_NEG, join(t->sp, a->sp));
    e->a = a;
    return e;
  }
  if (accept(ps, TK_PLUS)) {
    dsk_ast_expr *a = unary(ps);
    ps->depth--;
    return a;
  }
  {
    dsk_ast_expr *a = postfix(ps);
    ps->depth--;
    return a;
  }
}

static dsk_ast_expr *binary(parser *ps, char op, dsk_span opsp, dsk_ast_expr *a,
                           dsk_ast_expr *b) {
  dsk_ast_expr *e = new_expr(ps, AST_BIN, join(a->sp, b->sp));
  e->op = op;
  e->opsp = opsp;
  e->depth = 1 + (a->depth > b->depth ? a->depth : b->depth);
  if (e->depth > MAX_TREE)
    dsk_cerror(ps->c, DSK_E_SYNTAX, opsp,
               "expression too deep (more than %d operations in a chain): split it into "
               "intermediate tensors",
               MAX_TREE);
  e->a = a;
  e->b = b;
  return e;
}

/* term = unary (('*' | '/' | '%') unary)* */
static dsk_ast_expr *term(parser *ps) {
  dsk_ast_expr *e = unary(ps);
  for (;;) {
    char op = ps->t->kind == TK_STAR ? '*' : ps->t->kind == TK_SLASH ? '/'
              : ps->t->kind == TK_PERCENT ? '%' : 0;
    if (!op) return e;
    {
      dsk_span opsp = ps->t++->sp;
      e = binary(ps, op, opsp, e, unary(ps));
    }
  }
}

/* expr = term (('+' | '-') term)* */
static dsk_ast_expr *expr(parser *ps) {
  dsk_ast_expr *e = term(ps);
  for (;;) {
    char op = ps->t->kind == TK_PLUS ? '+' : ps->t->kind == TK_MINUS ? '-' : 0;
    if (!op) return e;
    {
      dsk_span opsp = ps->t++->sp;
      e = binary(ps, op, opsp, e, term(ps));
    }
  }
}

/* Is the '(' at the current token the start of a block, i.e. is its matching
   ')' followed by ':'? */
static int at_block(const parser *ps) {
  const dsk_token *t = ps->t;
  int depth = 0;
  if (t->kind != TK_LPAREN) return 0;
  /* '(' INT ':' / '..' / ',' can only start a block (an unfinished one, too) */
  if (t[1].kind == TK_NUM &&
      (t[2].kind == TK_COLON || t[2].kind == TK_DOTDOT || t[2].kind == TK_COMMA))
    return 1;
  for (; t->kind != TK_EOF; t++) {
    if (t->kind == TK_LPAREN) depth++;
    if (t->kind == TK_RPAREN && --depth == 0) return t[1].kind == TK_COLON;
    if (t->kind == TK_LBRACE || t->kind == TK_RBRACE) return 0;
  }
  return 0;
}

static int int_literal(parser *ps) {
  const dsk_token *t = ps->t;
  if (t->kind != TK_NUM || !t->is_int) expected(ps, "an integer");
  if (t->num > 1e9)
    dsk_cerror(ps->c, DSK_E_SYNTAX, t->sp, "index %.0f is too large", t->num);
  ps->t++;
  return (int)t->num;
}

/* block = '(' range (',' range)* ')';  range = INT [(':' | '..') INT] */
static void block(parser *ps, dsk_ast_elem *el) {
  const dsk_token *open = expect(ps, TK_LPAREN);
  int ndiag = 0;
  do {
    int k = el->nranges;
    const dsk_token *start = ps->t;
    if (k == DSK_MAX_RANK)
      dsk_cerror(ps->c, DSK_E_SYNTAX, ps->t->sp, "blocks have at most %d axes", DSK_MAX_RANK);
    el->lo[k] = int_literal(ps);
    el->hi[k] = el->lo[k] + 1;
    if (ps->t->kind == TK_COLON || ps->t->kind == TK_DOTDOT) {
      ndiag += ps->t->kind == TK_DOTDOT;
      ps->t++;
      el->hi[k] = int_literal(ps);
      if (el->hi[k] <= el->lo[k])
        dsk_cerror(ps->c, DSK_E_SYNTAX, join(start->sp, ps->t[-1].sp),
                   "empty range %d:%d (the end is exclusive and must exceed the start)",
                   el->lo[k], el->hi[k]);
    }
    el->nranges++;
  } while (accept(ps, TK_COMMA));
  el->block_sp = join(open->sp, expect(ps, TK_RPAREN)->sp);
  if (ndiag && ndiag != el->nranges)
    dsk_cerror(ps->c, DSK_E_SYNTAX, el->block_sp,
               "a diagonal block uses '..' on every axis, e.g. (0..3, 0..3)");
  el->diag = ndiag > 0;
}

/* element = [block ':'] [NAME '='] expr */
static void element(parser *ps, dsk_ast_elem *el) {
  const dsk_token *start = ps->t;
  if (at_block(ps)) {
    block(ps, el);
    expect(ps, TK_COLON);
  }
  if (ps->t->kind == TK_NAME && ps->t[1].kind == TK_ASSIGN) {
    if (ps->t->idx[0])
      dsk_cerror(ps->c, DSK_E_SYNTAX, ps->t->sp,
                 "an element name has no index (write 'x = ...', and (0:n): x = ... for a vector)");
    el->name = ps->t->text;
    el->name_sp = ps->t->sp;
    ps->t += 2;
    if (at_block(ps))
      dsk_cerror(ps->c, DSK_E_SYNTAX, ps->t->sp,
                 "a block goes before the element's name: write (a:b): %s = ...", el->name);
  }
  el->expr = expr(ps);
  el->sp = join(start->sp, el->expr->sp);
}

/* tensor = NAME '{' [element (',' element)* [',']] '}' */
static void tensor(parser *ps, dsk_ast_tensor *tn) {
  const dsk_token *name = expect(ps, TK_NAME), *open;
  int cap = 4;
  tn->name = name->text;
  tn->idx = name->idx;
  tn->sp = name->sp;
  if (ps->t->kind == TK_ASSIGN && strcmp(name->text, "in") == 0)
    dsk_cerror(ps->c, DSK_E_SYNTAX, name->sp,
               "the legacy 'in = [a, b]' list is not supported: define the parameters as a "
               "tensor with default values instead, e.g. in_i { a = 1.0, b = 2.0 }");
  if (ps->t->kind != TK_LBRACE) expected(ps, "'{' to start the definition of a tensor");
  open = ps->t++;
  tn->elems = dsk_alloc(ps->c, (size_t)cap * sizeof *tn->elems);
  while (ps->t->kind != TK_RBRACE) {
    if (tn->nelems == cap) {
      tn->elems = dsk_grow(ps->c, tn->elems, (size_t)cap * sizeof *tn->elems,
                           (size_t)cap * 2 * sizeof *tn->elems);
      cap *= 2;
    }
    element(ps, &tn->elems[tn->nelems++]);
    if (!accept(ps, TK_COMMA)) break;
  }
  if (ps->t->kind != TK_RBRACE) {
    if (ps->t->kind == TK_EOF)
      dsk_cerror(ps->c, DSK_E_SYNTAX, open->sp, "'{' of tensor '%s' is never closed",
                 name->text);
    expected(ps, "',' or '}'");
  }
  ps->t++;
}

dsk_ast_model *dsk_parse(dsk_cctx *c, const dsk_token *toks, int ntok) {
  parser ps = {c, toks, 0};
  dsk_ast_model *m = dsk_alloc(c, sizeof *m);
  int cap = 8;
  (void)ntok;
  m->tensors = dsk_alloc(c, (size_t)cap * sizeof *m->tensors);
  while (ps.t->kind != TK_EOF) {
    if (ps.t->kind != TK_NAME) expected(&ps, "the name of a tensor definition");
    if (m->ntensors == cap) {
      m->tensors = dsk_grow(c, m->tensors, (size_t)cap * sizeof *m->tensors,
                            (size_t)cap * 2 * sizeof *m->tensors);
      cap *= 2;
    }
    tensor(&ps, &m->tensors[m->ntensors++]);
  }
  return m;
}
