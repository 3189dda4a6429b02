/*
 * sema.c - AST -> tensor IR.
 *
 * For each tensor definition, in order:
 *   1. each element becomes a block: its expression is resolved (names ->
 *      views of tensors, indices -> domain axes), broadcasting and
 *      contraction sizes are checked, and its region in the tensor is fixed
 *      (explicit block, or concatenated along the first axis);
 *   2. the block's active points are enumerated from the sparsity of its
 *      expression ('*' intersects, '+' unites, a function densifies);
 *   3. the tensor's layout follows from the points of all its blocks
 *      (diagonal, else dense when full, else sparse), and every point gets
 *      its storage position and the positions of the operands it reads.
 * Then the rules of the special tensors are checked and the workspace is laid
 * out.  Errors point at the offending source text.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

#define MAX_DOM (2 * DSK_MAX_RANK)
#define MAX_POINTS 50000000L

/* ---- tuple -> position tables (open addressing over 64-bit keys) -------- */

typedef struct postable {
  long long *keys; /* -1 = empty */
  int *vals;
  long cap, n;
} postable;

static void pt_init(dsk_cctx *c, postable *t, long expect) {
  long cap = 16;
  while (cap < 2 * expect + 16) cap *= 2;
  t->keys = dsk_alloc(c, (size_t)cap * sizeof *t->keys);
  t->vals = dsk_alloc(c, (size_t)cap * sizeof *t->vals);
  memset(t->keys, 0xff, (size_t)cap * sizeof *t->keys);
  t->cap = cap;
  t->n = 0;
}

static unsigned long long mix(unsigned long long x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

/* Position of key, or -1. */
static int pt_get(const postable *t, long long key) {
  long i = (long)(mix((unsigned long long)key) & (unsigned long long)(t->cap - 1));
  while (t->keys[i] != -1) {
    if (t->keys[i] == key) return t->vals[i];
    i = (i + 1) & (t->cap - 1);
  }
  return -1;
}

/* Insert key -> val unless present; returns the stored value. */
static int pt_put(dsk_cctx *c, postable *t, long long key, int val) {
  long i;
  if (2 * (t->n + 1) > t->cap) {
    postable big;
    pt_init(c, &big, t->cap);
    for (long k = 0; k < t->cap; k++)
      if (t->keys[k] != -1) pt_put(c, &big, t->keys[k], t->vals[k]);
    *t = big;
  }
  i = (long)(mix((unsigned long long)key) & (unsigned long long)(t->cap - 1));
  while (t->keys[i] != -1) {
    if (t->keys[i] == key) return t->vals[i];
    i = (i + 1) & (t->cap - 1);
  }
  t->keys[i] = key;
  t->vals[i] = val;
  t->n++;
  return val;
}

/* Row-major linear index of a tuple in a shape. */
static long long linear(const int *shape, int rank, const int *tup) {
  long long k = 0;
  for (int a = 0; a < rank; a++) k = k * shape[a] + tup[a];
  return k;
}

/* A set of domain points: everything (full) or an ordered list. */
typedef struct pattern {
  int full;
  long n;
  int *pts; /* n rows of ndom ints */
} pattern;

/* ---- names ---------------------------------------------------------------- */

/* A region of a tensor that a name refers to. */
typedef struct view {
  int tensor;
  int rank;               /* 0: a single entry */
  int off[DSK_MAX_RANK];  /* per tensor axis */
  int ext[DSK_MAX_RANK];  /* per view axis (rank of the view) */
} view;

typedef struct symbol {
  const char *name;
  dsk_span sp;
  view v;
} symbol;

typedef struct sema {
  dsk_cctx *c;
  dsk_ir_model *m;
  int nfiles;            /* read('file') tensors made so far */
  pattern *filepts;      /* the points of the block being built, when read from a file */
  symbol *syms;
  int nsyms, capsyms;
  int cur;               /* tensor being defined */
  /* the block being built */
  dsk_ir_block *blk;
  char letters[MAX_DOM]; /* domain axis letters: the tensor's, then contracted */
  int nlet;
  int capreads;
} sema;

static const char *const reserved[] = {"u0", "t", "N", "data", "root", "thread_id", "thread_dim",
                                       "rr", "states", "inputs", "outputs"};

static const symbol *lookup(const sema *s, const char *name) {
  for (int k = 0; k < s->nsyms; k++)
    if (strcmp(s->syms[k].name, name) == 0) return &s->syms[k];
  return NULL;
}

/* A name a model may define: not reserved, not a function. */
static void check_free_name(sema *s, const char *name, dsk_span sp) {
  for (size_t k = 0; k < sizeof reserved / sizeof reserved[0]; k++)
    if (strcmp(name, reserved[k]) == 0)
      dsk_cerror(s->c, DSK_E_MODEL, sp, "'%s' is a reserved name", name);
  if (dsk_fn_lookup(name) >= 0 || strcmp(name, "interp1d") == 0 || strcmp(name, "read") == 0)
    dsk_cerror(s->c, DSK_E_MODEL, sp, "'%s' is the name of a function", name);
}

static void define(sema *s, const char *name, dsk_span sp, view v) {
  const symbol *old = lookup(s, name);
  check_free_name(s, name, sp);
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
  s->syms[s->nsyms].v = v;
  s->nsyms++;
}

static dsk_ir_tensor *cur(sema *s) { return &s->m->t[s->cur]; }

/* ---- expressions ------------------------------------------------------------ */

/* An expression and its extent along each domain axis (1 = broadcast). */
typedef struct shaped {
  dsk_ir_expr *e;
  int ext[MAX_DOM];
} shaped;

static shaped leaf(sema *s, dsk_ir_op op, dsk_span sp, int dep) {
  shaped r;
  r.e = dsk_alloc(s->c, sizeof *r.e);
  r.e->op = op;
  r.e->sp = sp;
  r.e->dep = dep;
  for (int k = 0; k < MAX_DOM; k++) r.ext[k] = 1;
  return r;
}

static void shape_text(const sema *s, const int *ext, char *buf, size_t n) {
  size_t len = 0;
  int any = 0;
  buf[0] = 0;
  for (int k = 0; k < s->nlet && len + 16 < n; k++) {
    if (ext[k] == 1) continue;
    len += (size_t)snprintf(buf + len, n - len, "%s%c=%d", any ? ", " : "", s->letters[k], ext[k]);
    any = 1;
  }
  if (!any) snprintf(buf, n, "scalar");
}

/* Broadcast a and b into r: per axis equal, or one of them 1. */
static void broadcast(sema *s, dsk_span sp, const shaped *a, const shaped *b, shaped *r) {
  for (int k = 0; k < MAX_DOM; k++) {
    if (a->ext[k] == b->ext[k] || b->ext[k] == 1) {
      r->ext[k] = a->ext[k];
    } else if (a->ext[k] == 1) {
      r->ext[k] = b->ext[k];
    } else if (k >= cur(s)->rank) {
      dsk_cerror(s->c, DSK_E_MODEL, sp,
                 "contraction over '%c' with mismatched sizes %d and %d", s->letters[k],
                 a->ext[k], b->ext[k]);
    } else {
      char sa[128], sb[128];
      shape_text(s, a->ext, sa, sizeof sa);
      shape_text(s, b->ext, sb, sizeof sb);
      dsk_cerror(s->c, DSK_E_MODEL, sp,
                 "shape mismatch: (%s) and (%s) do not broadcast (each axis must be equal or 1)",
                 sa, sb);
    }
  }
}

/* The domain axis of index letter ch (added as a contraction axis if new). */
static int axis_of(sema *s, char ch, dsk_span sp) {
  for (int k = 0; k < s->nlet; k++)
    if (s->letters[k] == ch) return k;
  if (s->nlet == MAX_DOM)
    dsk_cerror(s->c, DSK_E_MODEL, sp, "too many distinct indices in one element");
  s->letters[s->nlet] = ch;
  return s->nlet++;
}

static int add_read(sema *s, const dsk_ir_read *r) {
  dsk_ir_block *b = s->blk;
  if (b->nreads == s->capreads) {
    int cap = s->capreads ? 2 * s->capreads : 8;
    b->reads = dsk_grow(s->c, b->reads, (size_t)s->capreads * sizeof *b->reads,
                        (size_t)cap * sizeof *b->reads);
    s->capreads = cap;
  }
  b->reads[b->nreads] = *r;
  return b->nreads++;
}

static int tensor_dep(const dsk_ir_tensor *t) {
  switch (t->role) {
    case ROLE_U: return DEP_STATE;
    case ROLE_DUDT: return DEP_DUDT;
    case ROLE_IN: return DEP_IN;
    default: return t->dep;
  }
}

/* Read of view v with index letters idx (one per view axis); noff: run-time
   offset of axis 0, or NULL. */
static shaped read_view(sema *s, dsk_span sp, const char *name, const view *v, const char *idx,
                        const char *noff) {
  const dsk_ir_tensor *tt = &s->m->t[v->tensor];
  dsk_ir_read r;
  shaped out;
  int nidx = (int)strlen(idx);
  memset(&r, 0, sizeof r);
  if (tt->role == ROLE_F || tt->role == ROLE_OUT || tt->role == ROLE_STOP ||
      tt->role == ROLE_RESET || tt->role == ROLE_M)
    dsk_cerror(s->c, DSK_E_MODEL, sp, "'%s' cannot be read by other tensors", tt->name);
  if (v->rank == 0 && nidx)
    dsk_cerror(s->c, DSK_E_MODEL, sp, "'%s' is a scalar; use it without an index", name);
  if (v->rank > 0 && nidx != v->rank) {
    if (!nidx)
      dsk_cerror(s->c, DSK_E_MODEL, sp, "'%s' has rank %d (shape %d%s); index it, e.g. %s_%.*s",
                 name, v->rank, v->ext[0], v->rank > 1 ? "x..." : "", name, v->rank, "ijklmnop");
    dsk_cerror(s->c, DSK_E_MODEL, sp, "'%s' has rank %d but is used with %d ind%s", name,
               v->rank, nidx, nidx == 1 ? "ex" : "ices");
  }
  out = leaf(s, IR_READ, sp, tensor_dep(tt));
  r.tensor = v->tensor;
  r.rank = tt->rank;
  r.noff = noff;
  r.dep = out.e->dep;
  for (int k = 0; k < tt->rank; k++) {
    r.off[k] = v->off[k];
    r.ax[k] = -1;
    r.ext[k] = 1;
  }
  /* a view of lower rank than its tensor (a named entry) fixes the leading axes */
  for (int k = 0; k < v->rank; k++) {
    int ta = tt->rank - v->rank + k;
    int ax = axis_of(s, idx[k], sp);
    if (v->ext[k] == 1) {
      r.ax[ta] = -1;
    } else {
      for (int j = 0; j < k; j++)
        if (idx[j] == idx[k])
          dsk_cerror(s->c, DSK_E_MODEL, sp,
                     "index '%c' is repeated in '%s_%s' (diagonal extraction is not supported)",
                     idx[k], name, idx);
      r.ax[ta] = ax;
      out.ext[ax] = v->ext[k];
    }
    r.ext[ta] = v->ext[k];
  }
  out.e->read = add_read(s, &r);
  cur(s)->reads[v->tensor] = 1;
  return out;
}

static shaped expr(sema *s, const dsk_ast_expr *a);

/* A view of the whole tensor or named element called `name`. */
static view name_view(sema *s, const dsk_ast_expr *a) {
  const symbol *sym = lookup(s, a->name);
  if (!sym) {
    if (strcmp(a->name, cur(s)->name) == 0)
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "'%s' cannot be used in its own definition",
                 a->name);
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "unknown name '%s'", a->name);
  }
  return sym->v;
}

static shaped name_ref(sema *s, const dsk_ast_expr *a) {
  view v;
  if (strcmp(a->name, "t") == 0 && !a->idx[0]) return leaf(s, IR_T, a->sp, DEP_TIME);
  if (strcmp(a->name, "N") == 0 && !a->idx[0]) return leaf(s, IR_NIDX, a->sp, DEP_N);
  v = name_view(s, a);
  return read_view(s, a->sp, a->name, &v, a->idx, NULL);
}

/* ---- index expressions: integers and N --------------------------------------- */

typedef struct intexpr {
  const char *text; /* C int expression */
  int uses_n;
} intexpr;

/* Index values (literals and every intermediate result) stay within
   +-DSK_INDEX_MAX, the bound of the parser's integer literals: then no
   operation below can overflow a long long (|x * y| <= 1e18). */
#define DSK_INDEX_MAX 1e9

static long long int_checked(sema *s, const dsk_ast_expr *a, long long v) {
  if (v > (long long)DSK_INDEX_MAX || v < -(long long)DSK_INDEX_MAX)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "index expression out of range (%lld)", v);
  return v;
}

/* Value of an index expression at N = n (division and % as in C). */
static long long int_eval(sema *s, const dsk_ast_expr *a, long long n) {
  long long x, y;
  switch (a->kind) {
    case AST_NUM:
      if (!a->is_int)
        dsk_cerror(s->c, DSK_E_MODEL, a->sp, "an index must be an integer, not %g", a->num);
      if (!(fabs(a->num) <= DSK_INDEX_MAX))
        dsk_cerror(s->c, DSK_E_MODEL, a->sp, "index %.0f is too large", a->num);
      return (long long)a->num;
    case AST_NAME:
      if (strcmp(a->name, "N") == 0 && !a->idx[0]) return n;
      dsk_cerror(s->c, DSK_E_MODEL, a->sp,
                 "an index is built from integers and N, not '%s'", a->name);
    case AST_NEG: return -int_eval(s, a->a, n);
    case AST_BIN:
      x = int_eval(s, a->a, n);
      y = int_eval(s, a->b, n);
      if ((a->op == '/' || a->op == '%') && y == 0)
        dsk_cerror(s->c, DSK_E_MODEL, a->sp, "division by zero in an index");
      switch (a->op) {
        case '+': return int_checked(s, a, x + y);
        case '-': return int_checked(s, a, x - y);
        case '*': return int_checked(s, a, x * y);
        case '/': return x / y;
        default: return x % y;
      }
    default:
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "an index is built from integers and N");
  }
}

static int uses_n(const dsk_ast_expr *a) {
  if (!a) return 0;
  if (a->kind == AST_NAME) return strcmp(a->name, "N") == 0;
  return uses_n(a->a) || uses_n(a->b);
}

/* The C text of an index expression that uses N, evaluated at run time by
   the prelude's dsk_iop (diff.c): no C arithmetic on N of our own, so a
   division by zero or an overflow for some N is a failed model function
   (return -2), never a trap or undefined behaviour in the generated code. */
static const char *int_text(sema *s, const dsk_ast_expr *a) {
  const char *x, *y;
  char *buf;
  size_t n;
  switch (a->kind) {
    case AST_NUM:
      buf = dsk_alloc(s->c, 32);
      snprintf(buf, 32, "%lldLL", (long long)a->num); /* int_eval checked its range */
      return buf;
    case AST_NAME: return "(long long)N";
    case AST_NEG:
      x = int_text(s, a->a);
      n = strlen(x) + 32;
      buf = dsk_alloc(s->c, n);
      snprintf(buf, n, "dsk_iop(0LL, %s, '-')", x);
      return buf;
    default:
      x = int_text(s, a->a);
      y = int_text(s, a->b);
      n = strlen(x) + strlen(y) + 32;
      buf = dsk_alloc(s->c, n);
      snprintf(buf, n, "dsk_iop(%s, %s, '%c')", x, y, a->op);
      return buf;
  }
}

/* base[lo] or base[lo:hi] of a dense vector. */
static shaped index_ref(sema *s, const dsk_ast_expr *a) {
  const dsk_ast_expr *base = a->a;
  view v, w;
  int lo = 0, width = 1;
  const char *noff = NULL;
  const dsk_ir_tensor *tt;
  if (base->kind != AST_NAME)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "only a named vector can be indexed with [...]");
  v = name_view(s, base);
  tt = &s->m->t[v.tensor];
  if (v.rank != 1 || tt->rank != 1 || tt->layout != LAYOUT_DENSE)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "only dense vectors can be indexed with [...]");
  if (uses_n(a->b) || uses_n(a->c)) {
    long long w0 = a->c ? int_eval(s, a->c, 0) - int_eval(s, a->b, 0) : 1;
    for (long long n = 1; n < 4 && a->c; n++)
      if (int_eval(s, a->c, n) - int_eval(s, a->b, n) != w0)
        dsk_cerror(s->c, DSK_E_MODEL, a->sp, "the width of an index range must not depend on N");
    if (w0 < 1 || w0 > v.ext[0])
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "index range of width %lld in a vector of length %d",
                 w0, v.ext[0]);
    int_eval(s, a->b, 0); /* every literal of the offset checked */
    noff = int_text(s, a->b);
    width = (int)w0;
  } else {
    long long l = int_eval(s, a->b, 0), h = a->c ? int_eval(s, a->c, 0) : l + 1;
    if (l < 0 || h > v.ext[0] || h <= l)
      {
        char what[64];
        if (a->c) snprintf(what, sizeof what, "range %lld:%lld", l, h);
        else snprintf(what, sizeof what, "index %lld", l);
        dsk_cerror(s->c, DSK_E_MODEL, a->sp, "%s is out of range for '%s' of length %d", what,
                   base->name, v.ext[0]);
      }
    lo = (int)l;
    width = (int)(h - l);
  }
  w = v;
  w.off[0] += lo;
  w.ext[0] = width;
  if (!a->c) w.rank = 0;
  {
    shaped r = read_view(s, a->sp, base->name, &w, a->c ? base->idx : "", noff);
    if (noff) {
      /* ext[0] - 1 is the largest valid value of the run-time offset */
      s->blk->reads[r.e->read].ext[0] = v.ext[0] - width + 1;
      s->blk->reads[r.e->read].dep |= DEP_N;
      r.e->dep |= DEP_N;
    }
    return r;
  }
}

/* ---- values known at compile time ------------------------------------------ */

static const double *const_values(sema *s, int k);

static double ceval(sema *s, const dsk_ir_block *b, const int *row, const dsk_ir_expr *e) {
  double x, y;
  switch (e->op) {
    case IR_NUM: return e->num;
    case IR_READ: {
      int pos = row[1 + e->read];
      return pos < 0 ? 0.0 : const_values(s, b->reads[e->read].tensor)[pos];
    }
    case IR_NEG: return -ceval(s, b, row, e->a);
    case IR_ADD: return ceval(s, b, row, e->a) + ceval(s, b, row, e->b);
    case IR_SUB: return ceval(s, b, row, e->a) - ceval(s, b, row, e->b);
    case IR_MUL: return ceval(s, b, row, e->a) * ceval(s, b, row, e->b);
    case IR_DIV: return ceval(s, b, row, e->a) / ceval(s, b, row, e->b);
    case IR_CALL:
      x = ceval(s, b, row, e->a);
      y = e->b ? ceval(s, b, row, e->b) : 0.0;
      return dsk_fn_eval(e->fn, x, y);
    case IR_INTERP: {
      const double *yv = const_values(s, b->reads[e->yr].tensor) + row[1 + e->yr];
      const double *g = e->grid;
      int n = e->ngrid, k = 0;
      x = ceval(s, b, row, e->a);
      if (!(x > g[0])) return yv[0];
      if (!(x < g[n - 1])) return yv[n - 1];
      while (k + 2 < n && g[k + 1] <= x) k++;
      return yv[k] + (x - g[k]) / (g[k + 1] - g[k]) * (yv[k + 1] - yv[k]);
    }
    default: return 0.0;
  }
}

/* The stored values of constant tensor k, evaluated once. */
static const double *const_values(sema *s, int k) {
  dsk_ir_tensor *t = &s->m->t[k];
  if (t->consts) return t->consts;
  t->consts = dsk_alloc(s->c, (size_t)(t->nnz ? t->nnz : 1) * sizeof(double));
  for (int b = 0; b < t->nblocks; b++) {
    const dsk_ir_block *bl = &t->blocks[b];
    int w = 1 + bl->nreads;
    for (int p = 0; p < bl->npts; p++) {
      const int *row = bl->cols + (size_t)p * (size_t)w;
      double v = ceval(s, bl, row, bl->e);
      if (bl->contract)
        t->consts[row[0]] += v;
      else
        t->consts[row[0]] = v;
    }
  }
  return t->consts;
}

/* A whole dense vector argument of interp1d. */
static view vector_arg(sema *s, const dsk_ast_expr *a, const char *what) {
  view v;
  if (a->kind != AST_NAME)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "the %s of interp1d must be a named vector", what);
  v = name_view(s, a);
  if (v.rank != 1 || s->m->t[v.tensor].rank != 1 || s->m->t[v.tensor].layout != LAYOUT_DENSE)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "the %s of interp1d must be a dense vector", what);
  return v;
}

/* interp1d(x_i, y_i, q): x constant and strictly increasing, y any vector of
   the same length, q any expression (the result has its shape). */
static shaped interp(sema *s, const dsk_ast_expr *a) {
  view xv, yv;
  dsk_ir_read r;
  shaped q, out;
  double *grid;
  const double *xs;
  dsk_ir_model *m = s->m;
  if (a->nargs != 3)
    dsk_cerror(s->c, DSK_E_MODEL, a->sp,
               "interp1d takes 3 arguments (grid, values, point), not %d", a->nargs);
  xv = vector_arg(s, a->args[0], "grid");
  if (m->t[xv.tensor].dep != 0 || m->t[xv.tensor].role != ROLE_OTHER)
    dsk_cerror(s->c, DSK_E_MODEL, a->args[0]->sp, "the grid of interp1d must be constant");
  if (xv.ext[0] < 2)
    dsk_cerror(s->c, DSK_E_MODEL, a->args[0]->sp, "the grid of interp1d needs 2 points or more");
  xs = const_values(s, xv.tensor) + xv.off[0];
  for (int k = 1; k < xv.ext[0]; k++)
    if (!(xs[k] > xs[k - 1]))
      dsk_cerror(s->c, DSK_E_MODEL, a->args[0]->sp,
                 "the grid of interp1d must be strictly increasing, but entry %d is %g after %g",
                 k, xs[k], xs[k - 1]);
  grid = dsk_alloc(s->c, (size_t)xv.ext[0] * sizeof *grid);
  memcpy(grid, xs, (size_t)xv.ext[0] * sizeof *grid);
  yv = vector_arg(s, a->args[1], "values");
  if (yv.ext[0] != xv.ext[0])
    dsk_cerror(s->c, DSK_E_MODEL, a->args[1]->sp,
               "interp1d: the values have length %d but the grid has %d", yv.ext[0], xv.ext[0]);
  memset(&r, 0, sizeof r);
  r.tensor = yv.tensor;
  r.rank = 1;
  r.ax[0] = -1;
  r.off[0] = yv.off[0];
  r.ext[0] = yv.ext[0];
  r.whole = 1;
  r.dep = tensor_dep(&m->t[yv.tensor]);
  {
    const dsk_ir_tensor *tt = &m->t[yv.tensor];
    if (tt->role == ROLE_F || tt->role == ROLE_OUT || tt->role == ROLE_STOP ||
        tt->role == ROLE_RESET || tt->role == ROLE_M)
      dsk_cerror(s->c, DSK_E_MODEL, a->args[1]->sp, "'%s' cannot be read by other tensors",
                 tt->name);
  }
  q = expr(s, a->args[2]);
  out = leaf(s, IR_INTERP, a->sp, q.e->dep | r.dep);
  memcpy(out.ext, q.ext, sizeof out.ext);
  out.e->a = q.e;
  out.e->yr = add_read(s, &r);
  out.e->grid = grid;
  out.e->ngrid = xv.ext[0];
  cur(s)->reads[yv.tensor] = 1;
  if (m->ngrids == m->capgrids) {
    int cap = m->capgrids ? 2 * m->capgrids : 4;
    m->grids = dsk_grow(s->c, m->grids, (size_t)m->capgrids * sizeof *m->grids,
                        (size_t)cap * sizeof *m->grids);
    m->capgrids = cap;
  }
  out.e->gid = m->ngrids;
  m->grids[m->ngrids++] = out.e;
  return out;
}

static shaped call(sema *s, const dsk_ast_expr *a) {
  int fn = dsk_fn_lookup(a->name);
  shaped x, y, r;
  if (strcmp(a->name, "interp1d") == 0) return interp(s, a);
  if (fn < 0) {
    if (strcmp(a->name, "read") == 0)
      dsk_cerror(s->c, DSK_E_MODEL, a->sp,
                 "read('file') is a whole element of its own: write (0:n, 0:m): read('file.tns')");
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "unknown function '%s'", a->name);
  }
  if (a->nargs != dsk_fn_nargs(fn))
    dsk_cerror(s->c, DSK_E_MODEL, a->sp, "function '%s' takes %d argument%s, not %d", a->name,
               dsk_fn_nargs(fn), dsk_fn_nargs(fn) == 1 ? "" : "s", a->nargs);
  x = expr(s, a->args[0]);
  r = leaf(s, IR_CALL, a->sp, x.e->dep);
  r.e->fn = fn;
  r.e->a = x.e;
  memcpy(r.ext, x.ext, sizeof r.ext);
  if (a->nargs == 2) {
    y = expr(s, a->args[1]);
    broadcast(s, a->sp, &x, &y, &r);
    r.e->b = y.e;
    r.e->dep |= y.e->dep;
  }
  return r;
}

static shaped expr(sema *s, const dsk_ast_expr *a) {
  shaped r, x, y;
  switch (a->kind) {
    case AST_NUM:
      r = leaf(s, IR_NUM, a->sp, 0);
      r.e->num = a->num;
      return r;
    case AST_NAME: return name_ref(s, a);
    case AST_CALL: return call(s, a);
    case AST_INDEX: return index_ref(s, a);
    case AST_NEG:
      x = expr(s, a->a);
      r = leaf(s, IR_NEG, a->sp, x.e->dep);
      r.e->a = x.e;
      memcpy(r.ext, x.ext, sizeof r.ext);
      return r;
    case AST_BIN:
      if (a->op == '%')
        dsk_cerror(s->c, DSK_E_MODEL, a->opsp, "'%%' is only allowed in index expressions");
      x = expr(s, a->a);
      y = expr(s, a->b);
      r = leaf(s, a->op == '+' ? IR_ADD : a->op == '-' ? IR_SUB : a->op == '*' ? IR_MUL : IR_DIV,
               a->sp, x.e->dep | y.e->dep);
      broadcast(s, a->sp, &x, &y, &r);
      r.e->a = x.e;
      r.e->b = y.e;
      return r;
    case AST_STR:
      dsk_cerror(s->c, DSK_E_MODEL, a->sp, "a string is only allowed in read('file.tns')");
  }
  dsk_cerror(s->c, DSK_E_MODEL, a->sp, "unexpected expression");
}

/* ---- sparsity of an expression over the block's domain -------------------- */

typedef struct domain {
  int n;           /* axes */
  int ext[MAX_DOM];
} domain;

static long long dom_key(const domain *d, const int *p) { return linear(d->ext, d->n, p); }

static pattern pat_list(sema *s, const domain *d, long cap) {
  pattern p;
  p.full = 0;
  p.n = 0;
  p.pts = dsk_alloc(s->c, (size_t)(cap ? cap : 1) * (size_t)(d->n ? d->n : 1) * sizeof(int));
  return p;
}

static void check_points(sema *s, dsk_span sp, long n) {
  if (n > MAX_POINTS)
    dsk_cerror(s->c, DSK_E_MODEL, sp, "this element has more than %ld entries", MAX_POINTS);
}

/* The stored entries of a sparse or diagonal read, in the domain; the domain
   axes the read does not index are expanded in full. */
static pattern read_pattern(sema *s, const domain *d, const dsk_ir_read *r, dsk_span sp) {
  const dsk_ir_tensor *tt = &s->m->t[r->tensor];
  int covered[MAX_DOM] = {0};
  long expand = 1, cap;
  pattern p;
  for (int k = 0; k < r->rank; k++)
    if (r->ax[k] >= 0) covered[r->ax[k]] = 1;
  for (int a = 0; a < d->n; a++)
    if (!covered[a]) expand *= d->ext[a];
  check_points(s, sp, (long)tt->nnz * expand);
  cap = (long)tt->nnz * expand;
  p = pat_list(s, d, cap);
  for (int e = 0; e < tt->nnz; e++) {
    int tup[DSK_MAX_RANK], pt[MAX_DOM], ok = 1;
    for (int k = 0; k < tt->rank; k++)
      tup[k] = tt->layout == LAYOUT_DIAG ? e : tt->entries[(long)e * tt->rank + k];
    memset(pt, 0, sizeof pt);
    for (int k = 0; k < tt->rank && ok; k++) {
      int local = tup[k] - r->off[k];
      if (local < 0 || local >= r->ext[k]) ok = 0;
      else if (r->ax[k] >= 0) pt[r->ax[k]] = local;
      else if (local != 0) ok = 0;
    }
    if (!ok) continue;
    /* expand over the uncovered axes */
    for (long x = 0; x < expand; x++) {
      long rest = x;
      for (int a = d->n - 1; a >= 0; a--) {
        if (covered[a]) continue;
        pt[a] = (int)(rest % d->ext[a]);
        rest /= d->ext[a];
      }
      memcpy(p.pts + p.n * d->n, pt, (size_t)d->n * sizeof(int));
      p.n++;
    }
  }
  return p;
}

static pattern pat_intersect(sema *s, const domain *d, pattern a, pattern b) {
  postable t;
  pattern r;
  if (a.full) return b;
  if (b.full) return a;
  pt_init(s->c, &t, b.n);
  for (long k = 0; k < b.n; k++) pt_put(s->c, &t, dom_key(d, b.pts + k * d->n), 1);
  r = pat_list(s, d, a.n);
  for (long k = 0; k < a.n; k++)
    if (pt_get(&t, dom_key(d, a.pts + k * d->n)) >= 0)
      memcpy(r.pts + r.n++ * d->n, a.pts + k * d->n, (size_t)d->n * sizeof(int));
  return r;
}

static pattern pat_union(sema *s, const domain *d, pattern a, pattern b) {
  postable t;
  pattern r;
  if (a.full) return a;
  if (b.full) return b;
  pt_init(s->c, &t, a.n + b.n);
  r = pat_list(s, d, a.n + b.n);
  for (int pass = 0; pass < 2; pass++) {
    const pattern *x = pass ? &b : &a;
    for (long k = 0; k < x->n; k++) {
      long long key = dom_key(d, x->pts + k * d->n);
      if (pt_get(&t, key) >= 0) continue;
      pt_put(s->c, &t, key, 1);
      memcpy(r.pts + r.n++ * d->n, x->pts + k * d->n, (size_t)d->n * sizeof(int));
    }
  }
  return r;
}

static int same_pattern(const domain *d, const pattern *a, const pattern *b) {
  if (a->full || b->full) return a->full == b->full;
  return a->n == b->n && memcmp(a->pts, b->pts, (size_t)(a->n * d->n) * sizeof(int)) == 0;
}

static pattern expr_pattern(sema *s, const domain *d, const dsk_ir_expr *e) {
  pattern a, b, full;
  full.full = 1;
  full.n = 0;
  full.pts = NULL;
  switch (e->op) {
    case IR_NUM:
      if (e->num == 0.0) return pat_list(s, d, 0);
      return full;
    case IR_READ: {
      const dsk_ir_read *r = &s->blk->reads[e->read];
      if (s->m->t[r->tensor].layout == LAYOUT_DENSE || r->noff) return full;
      return read_pattern(s, d, r, e->sp);
    }
    case IR_NEG: return expr_pattern(s, d, e->a);
    case IR_ADD:
    case IR_SUB: return pat_union(s, d, expr_pattern(s, d, e->a), expr_pattern(s, d, e->b));
    case IR_MUL: return pat_intersect(s, d, expr_pattern(s, d, e->a), expr_pattern(s, d, e->b));
    case IR_DIV:
      a = expr_pattern(s, d, e->a);
      b = expr_pattern(s, d, e->b);
      if (!b.full && !same_pattern(d, &a, &b))
        dsk_cerror(s->c, DSK_E_MODEL, e->sp,
                   "division by a sparse tensor is only allowed with the same sparsity pattern");
      return a;
    default: return full; /* t, N, functions: dense */
  }
}

static int is_zero_literal(const dsk_ir_expr *e) { return e->op == IR_NUM && e->num == 0.0; }

/* All points of the block's region that the expression can make non-zero. */
static pattern block_points(sema *s, const domain *d, const dsk_ir_block *b, int rank) {
  pattern p, r;
  if (b->src_points) return *(const pattern *)b->src_points;
  p = expr_pattern(s, d, b->e);
  if (is_zero_literal(b->e)) p.full = 1; /* covers its region until place() decides */
  if (!p.full) {
    if (!b->diag) return p;
    r = pat_list(s, d, p.n);
    for (long k = 0; k < p.n; k++) {
      const int *pt = p.pts + k * d->n;
      int ok = 1;
      for (int a = 1; a < rank; a++) ok &= pt[a] == pt[0];
      if (ok) memcpy(r.pts + r.n++ * d->n, pt, (size_t)d->n * sizeof(int));
    }
    return r;
  }
  {
    /* enumerate: a diagonal uses one counter for the tensor's axes */
    int free_axes[MAX_DOM], nfree = 0;
    long total = 1;
    if (b->diag) {
      free_axes[nfree++] = 0;
      for (int a = rank; a < d->n; a++) free_axes[nfree++] = a;
    } else {
      for (int a = 0; a < d->n; a++) free_axes[nfree++] = a;
    }
    for (int k = 0; k < nfree; k++) total *= d->ext[free_axes[k]];
    check_points(s, b->sp, total);
    r = pat_list(s, d, total);
    for (long x = 0; x < total; x++) {
      int *pt = r.pts + x * d->n;
      long rest = x;
      for (int k = nfree - 1; k >= 0; k--) {
        pt[free_axes[k]] = (int)(rest % d->ext[free_axes[k]]);
        rest /= d->ext[free_axes[k]];
      }
      if (b->diag)
        for (int a = 1; a < rank; a++) pt[a] = pt[0];
    }
    r.n = total;
    return r;
  }
}

/* ---- elements and tensors ----------------------------------------------------- */

static int role_of(const char *name) {
  static const struct {
    const char *name;
    int role;
  } roles[] = {{"in", ROLE_IN},     {"u", ROLE_U},       {"dudt", ROLE_DUDT},
               {"F", ROLE_F},       {"M", ROLE_M},       {"out", ROLE_OUT},
               {"stop", ROLE_STOP}, {"reset", ROLE_RESET}};
  for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++)
    if (strcmp(name, roles[k].name) == 0) return roles[k].role;
  return ROLE_OTHER;
}

static void check_name(sema *s, const dsk_ast_tensor *at) {
  check_free_name(s, at->name, at->sp);
  if (strlen(at->idx) > DSK_MAX_RANK)
    dsk_cerror(s->c, DSK_E_MODEL, at->sp, "tensors have rank at most %d", DSK_MAX_RANK);
  for (int a = 0; at->idx[a]; a++)
    for (int b = 0; b < a; b++)
      if (at->idx[a] == at->idx[b])
        dsk_cerror(s->c, DSK_E_MODEL, at->sp, "index '%c' appears twice in '%s_%s'", at->idx[a],
                   at->name, at->idx);
}

/* Parse a FROSTT .tns file: lines "i j ... value" (1-based), '#' comments.
   Entries are checked against the block; they become the values of a new
   constant vector tensor read in sequence by the block. */
static shaped read_file(sema *s, const dsk_ast_elem *el) {
  const dsk_ast_expr *call = el->expr;
  dsk_ir_tensor *t = cur(s), *ft;
  dsk_ir_read r;
  shaped out;
  FILE *f;
  char line[4096];
  long cap = 64, n = 0;
  int lineno = 0, rank = t->rank;
  double *vals;
  int *pts;
  postable seen;
  if (call->nargs != 1 || call->args[0]->kind != AST_STR)
    dsk_cerror(s->c, DSK_E_MODEL, call->sp, "read takes one file name in quotes: read('file.tns')");
  if (el->nranges != rank || rank == 0 || el->diag)
    dsk_cerror(s->c, DSK_E_MODEL, call->sp,
               "read('%s') needs a block giving its shape, e.g. (0:n, 0:m): read('%s')",
               call->args[0]->name, call->args[0]->name);
  f = fopen(call->args[0]->name, "r");
  if (!f)
    dsk_cerror(s->c, DSK_E_MODEL, call->args[0]->sp, "cannot read '%s': %s", call->args[0]->name,
               strerror(errno));
  vals = dsk_alloc(s->c, (size_t)cap * sizeof *vals);
  pts = dsk_alloc(s->c, (size_t)cap * (size_t)rank * sizeof *pts);
  pt_init(s->c, &seen, 64);
  while (fgets(line, sizeof line, f)) {
    char *p = line, *end;
    int tup[DSK_MAX_RANK];
    lineno++;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '#' || *p == '\n' || *p == '\r' || !*p) continue;
    for (int a = 0; a <= rank; a++) {
      double v = strtod(p, &end);
      if (end == p || (a < rank && (v != (double)(long)v || v < 1 || v > el->hi[a] - el->lo[a]))) {
        fclose(f);
        if (end == p)
          dsk_cerror(s->c, DSK_E_MODEL, call->args[0]->sp,
                     "%s:%d: expected %d indices and a value", call->args[0]->name, lineno, rank);
        dsk_cerror(s->c, DSK_E_MODEL, call->args[0]->sp,
                   "%s:%d: index %g is outside 1..%d (indices are 1-based)", call->args[0]->name,
                   lineno, v, el->hi[a] - el->lo[a]);
      }
      if (a < rank) tup[a] = (int)v - 1;
      else vals[n] = v;
      p = end;
    }
    {
      int ext[DSK_MAX_RANK];
      for (int a = 0; a < rank; a++) ext[a] = el->hi[a] - el->lo[a];
      if (pt_get(&seen, linear(ext, rank, tup)) >= 0) {
        fclose(f);
        dsk_cerror(s->c, DSK_E_MODEL, call->args[0]->sp, "%s:%d: entry repeated",
                   call->args[0]->name, lineno);
      }
      pt_put(s->c, &seen, linear(ext, rank, tup), 1);
    }
    memcpy(pts + (size_t)n * (size_t)rank, tup, (size_t)rank * sizeof *tup);
    if (++n == cap) {
      vals = dsk_grow(s->c, vals, (size_t)cap * sizeof *vals, (size_t)cap * 2 * sizeof *vals);
      pts = dsk_grow(s->c, pts, (size_t)cap * (size_t)rank * sizeof *pts,
                     (size_t)cap * 2 * (size_t)rank * sizeof *pts);
      cap *= 2;
    }
    if (n > MAX_POINTS) {
      fclose(f);
      dsk_cerror(s->c, DSK_E_MODEL, call->args[0]->sp, "'%s' has too many entries",
                 call->args[0]->name);
    }
  }
  fclose(f);
  if (n == 0)
    dsk_cerror(s->c, DSK_E_MODEL, call->args[0]->sp, "'%s' holds no entries", call->args[0]->name);
  /* the values: a constant vector tensor of its own */
  ft = &s->m->t[s->m->ndefined + s->nfiles];
  ft->name = "read";
  ft->idx = "i";
  ft->sp = call->sp;
  ft->rank = 1;
  ft->shape[0] = (int)n;
  ft->nnz = (int)n;
  ft->layout = LAYOUT_DENSE;
  ft->role = ROLE_OTHER;
  ft->consts = vals;
  ft->from_file = 1;
  ft->reads = dsk_alloc(s->c, (size_t)s->m->nt);
  memset(&r, 0, sizeof r);
  r.tensor = s->m->ndefined + s->nfiles++;
  r.rank = 1;
  r.ax[0] = -1;
  r.ext[0] = (int)n;
  r.seq = 1;
  out = leaf(s, IR_READ, call->sp, 0);
  out.e->read = add_read(s, &r);
  t->reads[r.tensor] = 1;
  s->filepts = dsk_alloc(s->c, sizeof *s->filepts);
  s->filepts->full = 0;
  s->filepts->n = n;
  s->filepts->pts = pts;
  for (int a = 0; a < rank; a++) out.ext[a] = el->hi[a] - el->lo[a];
  return out;
}

/* Build block b of the current tensor from element el; `next0` is where the
   previous element ended along the first axis. */
static void element(sema *s, dsk_ir_block *b, const dsk_ast_elem *el, int next0) {
  dsk_ir_tensor *t = cur(s);
  shaped x;
  memset(b, 0, sizeof *b);
  s->blk = b;
  s->capreads = 0;
  memcpy(s->letters, t->idx, (size_t)t->rank);
  s->nlet = t->rank;
  b->sp = el->sp;
  s->filepts = NULL;
  if (el->expr->kind == AST_CALL && strcmp(el->expr->name, "read") == 0)
    x = read_file(s, el);
  else
    x = expr(s, el->expr);
  b->e = x.e;
  b->src_points = s->filepts;
  b->ndom = s->nlet;
  b->contract = s->nlet > t->rank;
  if (el->nranges) {
    if (t->rank == 0)
      dsk_cerror(s->c, DSK_E_MODEL, el->block_sp, "a scalar tensor has no blocks");
    if (el->nranges != t->rank)
      dsk_cerror(s->c, DSK_E_MODEL, el->block_sp, "block has %d ax%s but '%s' has rank %d",
                 el->nranges, el->nranges == 1 ? "is" : "es", t->name, t->rank);
    for (int a = 0; a < t->rank; a++) {
      b->lo[a] = el->lo[a];
      b->ext[a] = el->hi[a] - el->lo[a];
      if (el->diag && b->ext[a] != b->ext[0])
        dsk_cerror(s->c, DSK_E_MODEL, el->block_sp,
                   "a diagonal block needs equal widths on every axis");
      if (x.ext[a] != 1 && x.ext[a] != b->ext[a])
        dsk_cerror(s->c, DSK_E_MODEL, el->expr->sp,
                   "shape mismatch: the block is %d wide along '%c' but the expression is %d",
                   b->ext[a], t->idx[a], x.ext[a]);
    }
    b->diag = el->diag;
  } else {
    for (int a = 0; a < t->rank; a++) {
      b->lo[a] = a == 0 ? next0 : 0;
      b->ext[a] = x.ext[a];
    }
  }
  for (int a = 0; a < b->ndom; a++) b->dext[a] = a < t->rank ? b->ext[a] : x.ext[a];
  t->dep |= x.e->dep;
}

/* Name an element: a view of its region (a scalar when it is one entry). */
static void name_element(sema *s, const dsk_ast_elem *el, const dsk_ir_block *b) {
  dsk_ir_tensor *t = cur(s);
  view v;
  int single = 1;
  memset(&v, 0, sizeof v);
  v.tensor = s->cur;
  for (int a = 0; a < t->rank; a++) {
    v.off[a] = b->lo[a];
    single &= b->ext[a] == 1;
  }
  if (b->diag && t->rank > 1)
    dsk_cerror(s->c, DSK_E_MODEL, el->name_sp, "a diagonal block cannot be named");
  v.rank = single ? 0 : t->rank;
  for (int a = 0; a < v.rank; a++) v.ext[a] = b->ext[a];
  define(s, el->name, el->name_sp, v);
}

static int forced_dense(int role) { return role != ROLE_OTHER; }

/* Decide the layout from the points of all blocks and give every point its
   storage position and its operands' positions. */
static void place(sema *s, dsk_ir_tensor *t, pattern *pts) {
  postable pos;
  long total = 0, dense_n = 1, uniq;
  int diag_ok = t->rank >= 2, has_contract = 0;
  for (int a = 0; a < t->rank; a++) {
    if (dense_n > (1L << 62) / (t->shape[a] + 1))
      dsk_cerror(s->c, DSK_E_MODEL, t->sp, "'%s' is too large to index", t->name);
    dense_n *= t->shape[a];
  }
  for (int k = 0; k < t->nblocks; k++) total += pts[k].n;
  pt_init(s->c, &pos, total);
  /* unique result tuples in order of appearance */
  for (int k = 0; k < t->nblocks; k++) {
    const dsk_ir_block *b = &t->blocks[k];
    postable mine;
    has_contract |= b->contract;
    pt_init(s->c, &mine, b->contract ? pts[k].n : 0);
    for (long p = 0; p < pts[k].n; p++) {
      int tup[DSK_MAX_RANK];
      long long key;
      const int *pt = pts[k].pts + p * b->ndom;
      for (int a = 0; a < t->rank; a++) tup[a] = b->lo[a] + pt[a];
      key = linear(t->shape, t->rank, tup);
      if (pt_get(&pos, key) >= 0) {
        if (!b->contract || pt_get(&mine, key) < 0)
          dsk_cerror(s->c, DSK_E_MODEL, b->sp, "this element overlaps an earlier one of '%s'",
                     t->name);
        continue;
      }
      if (b->contract) pt_put(s->c, &mine, key, 1);
      pt_put(s->c, &pos, key, (int)pos.n);
      for (int a = 1; a < t->rank; a++) diag_ok &= tup[a] == tup[0];
    }
  }
  uniq = pos.n;
  for (int a = 1; a < t->rank; a++) diag_ok &= t->shape[a] == t->shape[0];
  if (!(forced_dense(t->role) || uniq == dense_n || t->rank == 0)) {
    /* not dense: literal zero elements only fix the size, drop their entries */
    int dropped = 0;
    for (int k = 0; k < t->nblocks; k++)
      if (is_zero_literal(t->blocks[k].e) && pts[k].n) {
        pts[k].n = 0;
        dropped = 1;
      }
    if (dropped) {
      place(s, t, pts);
      return;
    }
  }
  if (forced_dense(t->role) || uniq == dense_n || t->rank == 0 || uniq == 0) {
    if (dense_n > MAX_POINTS)
      dsk_cerror(s->c, DSK_E_MODEL, t->sp, "'%s' would have more than %ld entries", t->name,
                 MAX_POINTS);
    t->layout = LAYOUT_DENSE;
    t->nnz = (int)dense_n;
    t->zero_fill = uniq < dense_n || has_contract;
  } else if (diag_ok && uniq == t->shape[0]) {
    t->layout = LAYOUT_DIAG;
    t->nnz = t->shape[0];
    t->zero_fill = has_contract;
  } else {
    t->layout = LAYOUT_SPARSE;
    t->nnz = (int)uniq;
    t->zero_fill = has_contract;
    t->entries = dsk_alloc(s->c, (size_t)(uniq ? uniq : 1) * (size_t)t->rank * sizeof(int));
    for (long k = 0; k < pos.cap; k++) {
      long long key = pos.keys[k];
      int v = pos.vals[k];
      if (key < 0) continue;
      for (int a = t->rank - 1; a >= 0; a--) {
        t->entries[(long)v * t->rank + a] = (int)(key % t->shape[a]);
        key /= t->shape[a];
      }
    }
    {
      postable *lk = dsk_alloc(s->c, sizeof *lk);
      *lk = pos;
      t->lookup = lk;
    }
  }
  if (t->nnz == 0)
    dsk_cerror(s->c, DSK_E_MODEL, t->sp, "'%s' has no non-zero entries", t->name);
}

/* Storage position of tuple tup in tensor tt, or -1 for a structural zero. */
static int position(const dsk_ir_tensor *tt, const int *tup) {
  switch (tt->layout) {
    case LAYOUT_DENSE: return (int)linear(tt->shape, tt->rank, tup);
    case LAYOUT_DIAG:
      for (int a = 1; a < tt->rank; a++)
        if (tup[a] != tup[0]) return -1;
      return tup[0];
    default: return pt_get((const postable *)tt->lookup, linear(tt->shape, tt->rank, tup));
  }
}

static void columns(sema *s, dsk_ir_tensor *t, dsk_ir_block *b, const pattern *p) {
  int w = 1 + b->nreads;
  b->npts = (int)p->n;
  b->cols = dsk_alloc(s->c, (size_t)(p->n ? p->n : 1) * (size_t)w * sizeof(int));
  for (long k = 0; k < p->n; k++) {
    const int *pt = p->pts + k * b->ndom;
    int *row = b->cols + k * w, tup[DSK_MAX_RANK];
    for (int a = 0; a < t->rank; a++) tup[a] = b->lo[a] + pt[a];
    row[0] = position(t, tup);
    for (int r = 0; r < b->nreads; r++) {
      const dsk_ir_read *rd = &b->reads[r];
      const dsk_ir_tensor *tt = &s->m->t[rd->tensor];
      int ot[DSK_MAX_RANK];
      for (int a = 0; a < rd->rank; a++) ot[a] = rd->off[a] + (rd->ax[a] >= 0 ? pt[rd->ax[a]] : 0);
      row[1 + r] = rd->seq ? (int)k : position(tt, ot);
    }
  }
}

static void tensor(sema *s, const dsk_ast_tensor *at) {
  dsk_ir_model *m = s->m;
  dsk_ir_tensor *t = &m->t[s->cur];
  pattern *pts;
  int next0 = 0;
  view self;
  check_name(s, at);
  t->name = at->name;
  t->idx = at->idx;
  t->sp = at->sp;
  t->rank = (int)strlen(at->idx);
  t->role = role_of(at->name);
  t->reads = dsk_alloc(s->c, (size_t)m->nt);
  if (at->nelems == 0) dsk_cerror(s->c, DSK_E_MODEL, at->sp, "'%s' has no elements", at->name);
  t->blocks = dsk_alloc(s->c, (size_t)at->nelems * sizeof *t->blocks);
  pts = dsk_alloc(s->c, (size_t)at->nelems * sizeof *pts);
  for (int k = 0; k < at->nelems; k++) {
    dsk_ir_block *b = &t->blocks[k];
    element(s, b, &at->elems[k], next0);
    t->nblocks++;
    if (t->rank == 0 && k > 0)
      dsk_cerror(s->c, DSK_E_MODEL, at->elems[k].sp,
                 "'%s' is a scalar and holds one value; write %s_i { ... } for a vector",
                 t->name, t->name);
    for (int a = 0; a < t->rank; a++) {
      if ((long)b->lo[a] + b->ext[a] > MAX_POINTS)
        dsk_cerror(s->c, DSK_E_MODEL, at->elems[k].sp, "'%s' would have more than %ld entries",
                   t->name, MAX_POINTS);
      if (b->lo[a] + b->ext[a] > t->shape[a]) t->shape[a] = b->lo[a] + b->ext[a];
    }
    if (t->rank > 0) next0 = b->lo[0] + b->ext[0];
    if (at->elems[k].name) name_element(s, &at->elems[k], b);
  }
  for (int k = 0; k < t->nblocks; k++) {
    domain d;
    d.n = t->blocks[k].ndom;
    memcpy(d.ext, t->blocks[k].dext, sizeof d.ext);
    s->blk = &t->blocks[k];
    pts[k] = block_points(s, &d, &t->blocks[k], t->rank);
  }
  place(s, t, pts);
  for (int k = 0; k < t->nblocks; k++) columns(s, t, &t->blocks[k], &pts[k]);
  if (t->role == ROLE_IN) t->dep = DEP_IN;
  memset(&self, 0, sizeof self);
  self.tensor = s->cur;
  self.rank = t->rank;
  for (int a = 0; a < t->rank; a++) self.ext[a] = t->shape[a];
  define(s, at->name, at->sp, self);
}

/* ---- the special tensors ------------------------------------------------------ */

static double literal(sema *s, const dsk_ast_expr *a) {
  if (a->kind == AST_NUM) return a->num;
  if (a->kind == AST_NEG && a->a->kind == AST_NUM) return -a->a->num;
  dsk_cerror(s->c, DSK_E_MODEL, a->sp, "the default value of a parameter must be a number");
}

static void check_in(sema *s, const dsk_ast_tensor *at, dsk_ir_tensor *t) {
  dsk_ir_model *m = s->m;
  if (t->rank > 1) dsk_cerror(s->c, DSK_E_MODEL, t->sp, "'in' is a scalar or a vector");
  m->nparams = t->nnz;
  m->param_names = dsk_alloc(s->c, (size_t)t->nnz * sizeof *m->param_names);
  m->defaults = dsk_alloc(s->c, (size_t)t->nnz * sizeof *m->defaults);
  for (int k = 0; k < at->nelems; k++) {
    const dsk_ast_elem *el = &at->elems[k];
    if (!el->name)
      dsk_cerror(s->c, DSK_E_MODEL, el->sp,
                 "each parameter in 'in' needs a name and a default, e.g. in_i { k = 1.0 }");
    if (t->blocks[k].ext[0] != 1 && t->rank == 1)
      dsk_cerror(s->c, DSK_E_MODEL, el->sp, "each parameter in 'in' is a scalar");
    m->param_names[k] = el->name;
    m->defaults[k] = literal(s, el->expr);
  }
}

static const dsk_ir_tensor *need(sema *s, int k, const char *what) {
  dsk_span start = {0, 0, 1, 1};
  if (k < 0) dsk_cerror(s->c, DSK_E_MODEL, start, "%s", what);
  return &s->m->t[k];
}

static void same_shape_as_u(sema *s, int k) {
  const dsk_ir_model *m = s->m;
  const dsk_ir_tensor *t, *u = &m->t[m->iu];
  if (k < 0) return;
  t = &m->t[k];
  if (t->rank != u->rank || (t->rank == 1 && t->shape[0] != u->shape[0]))
    dsk_cerror(s->c, DSK_E_MODEL, t->sp,
               "%s has length %d but u has length %d: %s must have the shape of u", t->name,
               t->rank ? t->shape[0] : 1, u->rank ? u->shape[0] : 1, t->name);
}

static void vector_or_scalar(sema *s, int k) {
  if (k >= 0 && s->m->t[k].rank > 1)
    dsk_cerror(s->c, DSK_E_MODEL, s->m->t[k].sp, "'%s' must be a scalar or a vector",
               s->m->t[k].name);
}

static void check_model(sema *s, const dsk_ast_model *ast) {
  dsk_ir_model *m = s->m;
  const dsk_ir_tensor *u = need(s, m->iu, "the model defines no state: add u { ... }");
  need(s, m->iF, "the model defines no right-hand side: add F { ... }");
  vector_or_scalar(s, m->iu);
  for (int k = 0; k < u->nblocks; k++)
    if (u->blocks[k].e->dep & ~DEP_IN)
      dsk_cerror(s->c, DSK_E_MODEL, u->blocks[k].sp,
                 "the initial state u may depend only on constants and parameters, not on t, N "
                 "or u");
  same_shape_as_u(s, m->iF);
  same_shape_as_u(s, m->idudt);
  same_shape_as_u(s, m->iM);
  same_shape_as_u(s, m->ireset);
  vector_or_scalar(s, m->iout);
  vector_or_scalar(s, m->istop);
  if (m->t[m->iF].dep & DEP_DUDT)
    dsk_cerror(s->c, DSK_E_MODEL, m->t[m->iF].sp, "F must not depend on dudt (put it in M)");
  if (m->iM >= 0 && (m->t[m->iM].dep & DEP_STATE))
    dsk_cerror(s->c, DSK_E_MODEL, m->t[m->iM].sp, "M must not depend on the state u");
  if (m->iM >= 0 && m->idudt < 0)
    dsk_cerror(s->c, DSK_E_MODEL, m->t[m->iM].sp, "M needs dudt: define dudt_i { ... } first");
  if (m->ireset >= 0 && m->istop < 0)
    dsk_cerror(s->c, DSK_E_MODEL, m->t[m->ireset].sp, "reset needs stop: define stop_i { ... }");
  for (int k = 0; k < m->nt; k++)
    if (k != m->iM && m->t[k].role != ROLE_OTHER && (m->t[k].dep & DEP_DUDT))
      dsk_cerror(s->c, DSK_E_MODEL, m->t[k].sp, "only M may depend on dudt");
  if (m->iin >= 0) check_in(s, &ast->tensors[m->iin], &m->t[m->iin]);
  m->nstates = u->nnz;
  m->nout = m->iout >= 0 ? m->t[m->iout].nnz : m->nstates;
  m->nstop = m->istop >= 0 ? m->t[m->istop].nnz : 0;
}

/* Workspace: N, then in, then every intermediate, in definition order. */
static void layout(sema *s) {
  dsk_ir_model *m = s->m;
  long off = 1;
  m->n_slot = 0;
  for (int k = 0; k < m->nt; k++) {
    dsk_ir_tensor *t = &m->t[k];
    t->ws_off = -1;
    if (t->role == ROLE_IN || t->role == ROLE_OTHER) {
      t->ws_off = (int)off;
      off += t->nnz;
      if (off > MAX_POINTS)
        dsk_cerror(s->c, DSK_E_MODEL, t->sp,
                   "the model's tensors hold more than %ld entries in all", MAX_POINTS);
    }
  }
  m->nws = (int)off;
}

dsk_ir_model *dsk_sema(dsk_cctx *c, const dsk_ast_model *ast) {
  sema s;
  dsk_ir_model *m = dsk_alloc(c, sizeof *m);
  int *slots[] = {&m->iin, &m->iu, &m->idudt, &m->iF, &m->iM, &m->iout, &m->istop, &m->ireset};
  memset(&s, 0, sizeof s);
  s.c = c;
  s.m = m;
  m->ndefined = ast->ntensors;
  m->nt = ast->ntensors;
  for (int k = 0; k < ast->ntensors; k++) /* room for the tensors read from files */
    for (int e = 0; e < ast->tensors[k].nelems; e++) {
      const dsk_ast_expr *x = ast->tensors[k].elems[e].expr;
      m->nt += x->kind == AST_CALL && strcmp(x->name, "read") == 0;
    }
  m->t = dsk_alloc(c, (size_t)(m->nt ? m->nt : 1) * sizeof *m->t);
  for (size_t k = 0; k < sizeof slots / sizeof slots[0]; k++) *slots[k] = -1;
  for (s.cur = 0; s.cur < m->ndefined; s.cur++) {
    int role = role_of(ast->tensors[s.cur].name);
    tensor(&s, &ast->tensors[s.cur]);
    if (role != ROLE_OTHER) *slots[role - 1] = s.cur;
  }
  check_model(&s, ast);
  layout(&s);
  return m;
}
