/*
 * sema.c - AST -> tensor IR.
 *
 * Resolves names (tensors and named elements), fixes each element's extent
 * and offset, checks broadcasting and the rules of the special tensors
 * (in, u, F, out), classes every tensor by what it depends on (ir.h
 * dsk_dep) and lays the workspace out.  Errors point at the offending text.
 *
 * Scope so far: dense tensors of rank 0 and 1.  Higher ranks, contractions,
 * index expressions, dudt/M, stop/reset, interp1d and read() are rejected
 * with a message saying they are not supported yet.
 */
#include <stdio.h>
#include <string.h>

#include "ir.h"

/* A name visible to later definitions: a whole tensor or a named element. */
typedef struct symbol {
  const char *name;
  dsk_span sp;
  int tensor;  /* index into the model's tensors */
  int off, len;
  int is_vec;  /* read as name_i */
} symbol;

typedef struct sema {
  dsk_cctx *c;
  dsk_ir_model *m;
  symbol *syms;
  int nsyms, capsyms;
  int cur;            /* tensor being defined */
} sema;

static const char *const reserved[] = {"u0",     "t",       "N",      "data",   "root",
                                       "thread_id", "thread_dim", "rr", "states", "inputs",
                                       "outputs"};

static const char *const unsupported_special[] = {"dudt", "M", "stop", "reset"};

static const symbol *lookup(const sema *s, const char *name) {
  for (int k = 0; k < s->nsyms; k++)
    if (strcmp(s->syms[k].name, name) == 0) return &s->syms[k];
  return NULL;
}

static void define(sema *s, const char *name, dsk_span sp, int tensor, int off, int len,
                   int is_vec) {
  const symbol *old = lookup(s, name);
  if (old)
    dsk_cerror(s->c, DSK_E_MODEL, sp, "'%s' is already defined (at %d:%d)", name, old->sp.line,
               old->sp.col);
  if (s->nsyms == s->capsyms) {
    int cap = s->capsyms ? 2 * s->capsyms : 16;
    s->syms = dsk_grow(s->c, s->syms, (size_t)s->capsyms * sizeof *s->syms,
                       (size_t)cap * sizeof *s->syms);
    s->capsyms = cap;
  }
  s->syms[s->nsyms].name = name;
  s->syms[s->nsyms].sp = sp;
  s->syms[s->nsyms].tensor = tensor;
  s->syms[s->nsyms].off = off;
  s->syms[s->nsyms].len = len;
  s->syms[s->nsyms].is_vec = is_vec;
  s->nsyms++;
}

static dsk_ir_expr *node(sema *s, dsk_ir_op op, dsk_span sp, int len, int dep) {
  dsk_ir_expr *e = dsk_alloc(s->c, sizeof *e);
  e->op = op;
  e->sp = sp;
  e->len = len;
  e->dep = dep;
  return e;
}

/* Length of a broadcast of a and b: equal, or one of them is 1. */
static int broadcast(sema *s, dsk_span sp, const dsk_ir_expr *a, const dsk_ir_expr *b) {
  if (a->len == b->len || b->len == 1) return a->len;
  if (a->len == 1) return b->len;
  dsk_cerror(s->c, DSK_E_MODEL, sp,
             "shape mismatch: the operands have lengths %d and %d, which do not broadcast",
             a->len, b->len);
}

static int max_dep(int a, int b) { return a > b ? a : b; }

static dsk_ir_expr *expr(sema *s, const dsk_ast_expr *a);

/* A name in an expression: t, a tensor, or a named element. */
static dsk_ir_expr *name_ref(sema *s, const dsk_ast_expr *a) {
  const dsk_ir_tensor *self = &s->m->t[s->cur];
  const symbol *sym;
  const dsk_ir_tensor *tt;
  dsk_ir_expr *e;
  if (strcmp(a->name, "t") == 0 && !a->idx[0]) return node(s, IR_T, a->sp, 1, DEP_TIME);
  if (strcmp(a->name, "N") == 0)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "the model index N is not supported yet");
  sym = lookup(s, a->name);
  if (!sym) {
    if (strcmp(a->name, self->name) == 0)
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "'%s' cannot be used in its own definition",
                 a->name);
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "unknown name '%s'", a->name);
  }
  tt = &s->m->t[sym->tensor];
  if (tt->role == ROLE_F || tt->role == ROLE_OUT)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "'%s' cannot be read by other tensors", tt->name);
  if (!sym->is_vec && a->idx[0])
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "'%s' is a scalar; use it without an index", a->name);
  if (sym->is_vec) {
    if (!a->idx[0])
      dsk_cerror(s->c, DSK_E_MODEL, a->sp,
                 "'%s' is a vector of length %d; index it, e.g. %s_%s", a->name, sym->len,
                 a->name, self->idx[0] ? self->idx : "i");
    if (strlen(a->idx) != 1)
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "'%s' is a vector; it takes one index, not %d",
                 a->name, (int)strlen(a->idx));
    if (self->rank == 0 || a->idx[0] != self->idx[0])
      dsk_cerror(s->c, DSK_E_MODEL, a->sp,
                 "index '%c' of '%s' is not an index of '%s_%s': contractions (sums over "
                 "repeated indices) are not supported yet",
                 a->idx[0], a->name, self->name, self->idx[0] ? self->idx : "");
  }
  e = node(s, IR_READ, a->sp, sym->is_vec ? sym->len : 1,
           tt->role == ROLE_U ? DEP_STATE : tt->dep);
  e->tensor = sym->tensor;
  e->off = sym->off;
  s->m->t[s->cur].reads[sym->tensor] = 1;
  return e;
}

static dsk_ir_expr *call(sema *s, const dsk_ast_expr *a) {
  int fn = dsk_fn_lookup(a->name);
  dsk_ir_expr *e, *x, *y = NULL;
  if (fn < 0) {
    if (strcmp(a->name, "interp1d") == 0 || strcmp(a->name, "read") == 0)
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "'%s' is not supported yet", a->name);
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "unknown function '%s'", a->name);
  }
  if (a->nargs != dsk_fn_nargs(fn))
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "function '%s' takes %d argument%s, not %d", a->name,
               dsk_fn_nargs(fn), dsk_fn_nargs(fn) == 1 ? "" : "s", a->nargs);
  x = expr(s, a->args[0]);
  if (a->nargs == 2) y = expr(s, a->args[1]);
  e = node(s, IR_CALL, a->sp, y ? broadcast(s, a->sp, x, y) : x->len,
           y ? max_dep(x->dep, y->dep) : x->dep);
  e->fn = fn;
  e->a = x;
  e->b = y;
  return e;
}

static dsk_ir_expr *expr(sema *s, const dsk_ast_expr *a) {
  dsk_ir_expr *e, *x, *y;
  switch (a->kind) {
    case AST_NUM:
      e = node(s, IR_NUM, a->sp, 1, DEP_CONST);
      e->num = a->num;
      return e;
    case AST_NAME: return name_ref(s, a);
    case AST_CALL: return call(s, a);
    case AST_NEG:
      x = expr(s, a->a);
      e = node(s, IR_NEG, a->sp, x->len, x->dep);
      e->a = x;
      return e;
    case AST_BIN:
      if (a->op == '%')
        dsk_cerror(s->c, DSK_E_MODEL, a->sp, "'%%' is only allowed in index expressions");
      x = expr(s, a->a);
      y = expr(s, a->b);
      e = node(s, a->op == '+' ? IR_ADD : a->op == '-' ? IR_SUB : a->op == '*' ? IR_MUL : IR_DIV,
               a->sp, broadcast(s, a->sp, x, y), max_dep(x->dep, y->dep));
      e->a = x;
      e->b = y;
      return e;
    case AST_INDEX:
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "indexing with [...] is not supported yet");
    case AST_STR:
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "a string is only allowed in read('file.tns')");
  }
  dsk_cerror(s->c, DSK_E_MODEL, a->sp, "unexpected expression");
}

/* The literal value of a parameter default: a number, optionally negated. */
static double literal(sema *s, const dsk_ast_expr *a) {
  if (a->kind == AST_NUM) return a->num;
  if (a->kind == AST_NEG && a->a->kind == AST_NUM) return -a->a->num;
  dsk_cerror(s->c, DSK_E_MODEL, a->sp, "the default value of a parameter must be a number");
}

static int role_of(const char *name) {
  if (strcmp(name, "in") == 0) return ROLE_IN;
  if (strcmp(name, "u") == 0) return ROLE_U;
  if (strcmp(name, "F") == 0) return ROLE_F;
  if (strcmp(name, "out") == 0) return ROLE_OUT;
  return ROLE_OTHER;
}

static void check_name(sema *s, const dsk_ast_tensor *at) {
  size_t k;
  for (k = 0; k < sizeof reserved / sizeof reserved[0]; k++)
    if (strcmp(at->name, reserved[k]) == 0)
      dsk_cerror(s->c, DSK_E_MODEL, at->sp, "'%s' is a reserved name", at->name);
  for (k = 0; k < sizeof unsupported_special / sizeof unsupported_special[0]; k++)
    if (strcmp(at->name, unsupported_special[k]) == 0)
      dsk_cerror(s->c, DSK_E_MODEL, at->sp, "the '%s' tensor is not supported yet", at->name);
  if (dsk_fn_lookup(at->name) >= 0)
    dsk_cerror(s->c, DSK_E_MODEL, at->sp, "'%s' is the name of a function", at->name);
  if (strlen(at->idx) > 1)
    dsk_cerror(s->c, DSK_E_MODEL, at->sp,
               "tensors of rank %d are not supported yet (only scalars and vectors)",
               (int)strlen(at->idx));
}

/* One element of the tensor being defined, placed at offset `off`. Returns
   the number of entries it writes. */
static int element(sema *s, dsk_ir_tensor *t, const dsk_ast_elem *el, int off) {
  dsk_ir_block *b = &t->blocks[t->nblocks];
  int len;
  b->e = expr(s, el->expr);
  b->sp = el->sp;
  if (el->nranges) {
    if (t->rank == 0)
      dsk_cerror(s->c, DSK_E_MODEL, el->block_sp, "a scalar tensor has no blocks");
    if (el->nranges != t->rank || el->diag)
      dsk_cerror(s->c, DSK_E_MODEL, el->block_sp,
                 "block has %d ax%s but '%s' has rank %d", el->nranges,
                 el->nranges == 1 ? "is" : "es", t->name, t->rank);
    if (el->lo[0] != off)
      dsk_cerror(s->c, DSK_E_MODEL, el->block_sp,
                 "block starts at %d but the previous elements end at %d (gaps and overlaps "
                 "in vectors are not supported yet)",
                 el->lo[0], off);
    len = el->hi[0] - el->lo[0];
    if (b->e->len != 1 && b->e->len != len)
      dsk_cerror(s->c, DSK_E_MODEL, el->expr->sp,
                 "shape mismatch: the block has length %d but the expression has length %d",
                 len, b->e->len);
  } else {
    len = b->e->len;
  }
  if (t->rank == 0 && (t->nblocks > 0 || len != 1))
    dsk_cerror(s->c, DSK_E_MODEL, el->sp,
               "'%s' is a scalar and holds one value; write %s_i { ... } for a vector", t->name,
               t->name);
  b->off = off;
  b->len = len;
  t->nblocks++;
  if (el->name) define(s, el->name, el->name_sp, s->cur, off, len, len > 1);
  return len;
}

static void tensor(sema *s, const dsk_ast_tensor *at) {
  dsk_ir_model *m = s->m;
  dsk_ir_tensor *t = &m->t[s->cur];
  int off = 0;
  check_name(s, at);
  t->name = at->name;
  t->idx = at->idx;
  t->sp = at->sp;
  t->rank = (int)strlen(at->idx);
  t->role = role_of(at->name);
  t->reads = dsk_alloc(s->c, (size_t)m->nt);
  t->blocks = dsk_alloc(s->c, (size_t)(at->nelems ? at->nelems : 1) * sizeof *t->blocks);
  if (at->nelems == 0)
    dsk_cerror(s->c, DSK_E_MODEL, at->sp, "'%s' has no elements", at->name);
  for (int k = 0; k < at->nelems; k++) {
    off += element(s, t, &at->elems[k], off);
    t->dep = max_dep(t->dep, t->blocks[k].e->dep);
  }
  t->len = off;
  /* the tensor's own name is visible after its definition */
  define(s, at->name, at->sp, s->cur, 0, t->len, t->rank > 0);
}

/* Rules of the special tensors, once all are defined. */
static void check_in(sema *s, const dsk_ast_tensor *at, dsk_ir_tensor *t) {
  dsk_ir_model *m = s->m;
  m->nparams = t->len;
  m->param_names = dsk_alloc(s->c, (size_t)t->len * sizeof *m->param_names);
  m->defaults = dsk_alloc(s->c, (size_t)t->len * sizeof *m->defaults);
  for (int k = 0; k < at->nelems; k++) {
    const dsk_ast_elem *el = &at->elems[k];
    if (!el->name)
      dsk_cerror(s->c, DSK_E_MODEL, el->sp,
                 "each parameter in 'in' needs a name and a default, e.g. in_i { k = 1.0 }");
    if (t->blocks[k].len != 1)
      dsk_cerror(s->c, DSK_E_MODEL, el->sp, "each parameter in 'in' is a scalar");
    m->param_names[k] = el->name;
    m->defaults[k] = literal(s, el->expr);
  }
  t->dep = DEP_INPUT;
}

static void check_model(sema *s, const dsk_ast_model *ast) {
  dsk_ir_model *m = s->m;
  dsk_span end = {0, 0, 1, 1};
  if (m->iu < 0) dsk_cerror(s->c, DSK_E_MODEL, end, "the model defines no state: add u { ... }");
  if (m->iF < 0)
    dsk_cerror(s->c, DSK_E_MODEL, end, "the model defines no right-hand side: add F { ... }");
  if (m->t[m->iu].dep > DEP_INPUT)
    dsk_cerror(s->c, DSK_E_MODEL, m->t[m->iu].sp,
               "the initial state u may depend only on constants and parameters, not on t or u");
  if (m->t[m->iF].len != m->t[m->iu].len || m->t[m->iF].rank != m->t[m->iu].rank)
    dsk_cerror(s->c, DSK_E_MODEL, m->t[m->iF].sp,
               "F has length %d but u has length %d: F must have the shape of u",
               m->t[m->iF].len, m->t[m->iu].len);
  if (m->iin >= 0) check_in(s, &ast->tensors[m->iin], &m->t[m->iin]);
  m->nstates = m->t[m->iu].len;
  m->nout = m->iout >= 0 ? m->t[m->iout].len : m->nstates;
}

/* Workspace: in, then every intermediate, in definition order. */
static void layout(dsk_ir_model *m) {
  int off = 0;
  for (int k = 0; k < m->nt; k++) {
    dsk_ir_tensor *t = &m->t[k];
    t->ws_off = -1;
    if (t->role == ROLE_IN || t->role == ROLE_OTHER) {
      t->ws_off = off;
      off += t->len;
    }
  }
  m->nws = off;
}

dsk_ir_model *dsk_sema(dsk_cctx *c, const dsk_ast_model *ast) {
  sema s;
  dsk_ir_model *m = dsk_alloc(c, sizeof *m);
  memset(&s, 0, sizeof s);
  s.c = c;
  s.m = m;
  m->nt = ast->ntensors;
  m->t = dsk_alloc(c, (size_t)(m->nt ? m->nt : 1) * sizeof *m->t);
  m->iu = m->iF = m->iin = m->iout = -1;
  for (s.cur = 0; s.cur < m->nt; s.cur++) {
    const dsk_ast_tensor *at = &ast->tensors[s.cur];
    int role = role_of(at->name);
    tensor(&s, at);
    if (role == ROLE_IN) m->iin = s.cur;
    if (role == ROLE_U) m->iu = s.cur;
    if (role == ROLE_F) m->iF = s.cur;
    if (role == ROLE_OUT) m->iout = s.cur;
    if (role == ROLE_IN) m->t[s.cur].dep = DEP_INPUT;
  }
  check_model(&s, ast);
  layout(m);
  return m;
}
