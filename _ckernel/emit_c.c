/*
 * emit_c.c - tensor IR -> C source implementing the dsk_gen.h ABI.
 *
 * The output is deterministic (same IR -> byte-identical text).  Each block's
 * active points (sema.c) are compressed into nests of affine loops: within a
 * nest, every storage position is start + s * ds + r * dr + k * dk, so a
 * tridiagonal block of 10^5 entries is one loop, the rows of a 2-D stencil
 * are one nest, and code size follows the number of blocks.  A block whose
 * points do not compress (an irregular sparse pattern) loops over a static
 * table of its points instead.  A loop body evaluates the element expression
 * as straight-line code, one temporary per node; tangent code adds each
 * node's directional derivative (rules in diff.c) and adjoint code recomputes
 * the body, then scatters the result's adjoint back into the operands'
 * adjoints.  A contraction row (matrix-vector product) sums into local
 * partial sums and stores once.
 *
 * Where each tensor is computed follows its dependencies: constants in
 * init() (or, when they compress badly, such as a dense matrix written entry
 * by entry, evaluated here and emitted as a static table read in place),
 * parameter-only tensors in set_inputs(), the rest inside each function that
 * needs them.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

enum { MODE_PRIMAL, MODE_TANGENT, MODE_ADJOINT };

/* One nest of affine loops over a block's points: position of column c at
   (s, r, k) is start[c] + s * ds[c] + r * dr[c] + k * dk[c]. */
typedef struct group {
  int S, R, L;       /* trip counts, outermost first */
  int *start, *ds, *dr, *dk; /* per column; start < 0: structural zero */
} group;

typedef struct nodeval {
  const dsk_ir_expr *e;
  const char *p; /* primal text */
  const char *d; /* tangent text or NULL */
} nodeval;

typedef struct emitter {
  dsk_cctx *c;
  const dsk_ir_model *m;
  char *buf;
  size_t len, cap;
  /* the function being emitted */
  int mode, seed;
  int target;        /* tensor index of the function's result */
  int xrole;         /* ROLE_U, or ROLE_DUDT for mass */
  int fam;           /* DSK_FN_* */
  /* the block being emitted */
  const dsk_ir_block *blk;
  const group *g;
  const char *kvar; /* name of the inner loop index in the body ("k") */
  const char *ix;   /* point table of the block (tabled loop), or NULL */
  int ixw;          /* its row width */
  int ntmp;
  nodeval *vals;
  int nvals, capvals;
  /* constants known at compile time: values per tensor (NULL when not a
     constant) and, for those emitted as a static table, its name */
  double **cvals;
  const char **ctab;
  /* file-scope declarations made while emitting functions (point tables),
     placed after the header */
  char *decl;
  size_t dlen, dcap;
  const dsk_ir_block **ixblk; /* blocks whose point table is declared */
  int nix;
} emitter;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void out(emitter *em, const char *fmt, ...) {
  va_list ap;
  int n;
  size_t room = em->cap - em->len; /* formatted in place when it fits */
  va_start(ap, fmt);
  n = vsnprintf(em->buf ? em->buf + em->len : NULL, em->buf ? room : 0, fmt, ap);
  va_end(ap);
  if (em->buf && (size_t)n < room) {
    em->len += (size_t)n;
    return;
  }
  if (em->len + (size_t)n + 1 > em->cap) {
    size_t cap = em->cap ? em->cap : 4096;
    while (em->len + (size_t)n + 1 > cap) cap *= 2;
    em->buf = dsk_grow(em->c, em->buf, em->len, cap);
    em->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(em->buf + em->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  em->len += (size_t)n;
}

/* Runs `out` calls into the declarations instead (swaps the buffers). */
static void swap_decl(emitter *em) {
  char *b = em->buf;
  size_t l = em->len, c = em->cap;
  em->buf = em->decl, em->len = em->dlen, em->cap = em->dcap;
  em->decl = b, em->dlen = l, em->dcap = c;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static char *fmt(emitter *em, const char *f, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(tmp, sizeof tmp, f, ap);
  va_end(ap);
  return dsk_strndup(em->c, tmp, strlen(tmp));
}

/* A double literal that C reads back exactly and never as an integer. */
static char *number(emitter *em, double x) {
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%.17g", x);
  if (!strpbrk(tmp, ".eEn")) strcat(tmp, ".0");
  if (x < 0) return fmt(em, "(%s)", tmp);
  return dsk_strndup(em->c, tmp, strlen(tmp));
}

/* ---- where tensors live -------------------------------------------------- */

enum { BASE_P, BASE_D, BASE_B }; /* primal, tangent, adjoint */

static const char *base(const emitter *em, int k, int which) {
  const dsk_ir_tensor *t = &em->m->t[k];
  if (em->ctab && em->ctab[k]) return em->ctab[k]; /* constant: never seeded */
  if (k == em->target) return which == BASE_P ? "y" : which == BASE_D ? "dy" : "w";
  if (t->role == em->xrole) return which == BASE_P ? "x" : which == BASE_D ? "dx" : "bar";
  return which == BASE_P ? "ws" : which == BASE_D ? "dws" : "bws";
}

static int ws_off(const emitter *em, int k) {
  int off = em->m->t[k].ws_off;
  if (em->ctab && em->ctab[k]) return 0;
  return off < 0 ? 0 : off;
}

/* ---- loops ---------------------------------------------------------------- */

static int compatible(const int *a, const int *b, int w) {
  for (int c = 0; c < w; c++)
    if ((a[c] < 0) != (b[c] < 0)) return 0;
  return 1;
}

static int same_shape(const group *a, const group *b, int w) {
  return a->R == b->R && a->L == b->L && compatible(a->start, b->start, w) &&
         memcmp(a->dr, b->dr, (size_t)w * sizeof(int)) == 0 &&
         memcmp(a->dk, b->dk, (size_t)w * sizeof(int)) == 0;
}

/* Merges consecutive groups of one shape whose starts advance by constant
   deltas into one loop nest (the rows of a 2-D stencil: one nest instead of
   one per grid row).  Compacts g in place; returns the new count. */
static int supergroups(emitter *em, group *g, int ng, int w) {
  int ns = 0;
  for (int q = 0; q < ng;) {
    group G = g[q];
    int S = 1;
    G.ds = dsk_alloc(em->c, (size_t)w * sizeof(int));
    if (q + 1 < ng && same_shape(&g[q], &g[q + 1], w)) {
      for (int c = 0; c < w; c++) G.ds[c] = g[q].start[c] < 0 ? 0 : g[q + 1].start[c] - g[q].start[c];
      S = 2;
      while (q + S < ng && same_shape(&g[q + S - 1], &g[q + S], w)) {
        int ok = 1;
        for (int c = 0; c < w && ok; c++)
          ok = g[q].start[c] < 0 || g[q + S].start[c] - g[q + S - 1].start[c] == G.ds[c];
        if (!ok) break;
        S++;
      }
    }
    G.S = S;
    g[ns++] = G;
    q += S;
  }
  return ns;
}

/* Runs: maximal stretches of points whose columns all advance by constant
   strides; then groups: consecutive runs of one length and stride whose
   starts advance by constant deltas. */
static group *compress(emitter *em, const dsk_ir_block *b, int *ngroups) {
  int w = 1 + b->nreads, n = b->npts, nruns = 0, ng = 0;
  int *rs = dsk_alloc(em->c, (size_t)(n ? n : 1) * sizeof(int)); /* run start point */
  int *rl = dsk_alloc(em->c, (size_t)(n ? n : 1) * sizeof(int)); /* run length */
  int *st = dsk_alloc(em->c, (size_t)(n ? n : 1) * (size_t)w * sizeof(int)); /* strides */
  group *g = dsk_alloc(em->c, (size_t)(n ? n : 1) * sizeof *g);
  const int *cols = b->cols;
  for (int p = 0; p < n;) {
    int *s = st + (size_t)nruns * (size_t)w, len = 1;
    const int *r0 = cols + (size_t)p * (size_t)w;
    memset(s, 0, (size_t)w * sizeof(int));
    if (p + 1 < n && compatible(r0, r0 + w, w)) {
      for (int c = 0; c < w; c++) s[c] = r0[c] < 0 ? 0 : r0[w + c] - r0[c];
      while (p + len < n) {
        const int *a = cols + (size_t)(p + len - 1) * (size_t)w, *z = a + w;
        int ok = compatible(a, z, w);
        for (int c = 0; c < w && ok; c++) ok = a[c] < 0 || z[c] - a[c] == s[c];
        if (!ok) break;
        len++;
      }
    }
    rs[nruns] = p;
    rl[nruns] = len;
    nruns++;
    p += len;
  }
  for (int q = 0; q < nruns;) {
    group *G = &g[ng++];
    const int *a = cols + (size_t)rs[q] * (size_t)w;
    int R = 1;
    G->L = rl[q];
    G->start = dsk_alloc(em->c, (size_t)w * sizeof(int));
    G->dr = dsk_alloc(em->c, (size_t)w * sizeof(int));
    G->dk = dsk_alloc(em->c, (size_t)w * sizeof(int));
    memcpy(G->start, a, (size_t)w * sizeof(int));
    memcpy(G->dk, st + (size_t)q * (size_t)w, (size_t)w * sizeof(int));
    if (q + 1 < nruns && rl[q + 1] == G->L &&
        memcmp(st + (size_t)q * w, st + (size_t)(q + 1) * w, (size_t)w * sizeof(int)) == 0 &&
        compatible(a, cols + (size_t)rs[q + 1] * w, w)) {
      const int *a1 = cols + (size_t)rs[q + 1] * (size_t)w;
      for (int c = 0; c < w; c++) G->dr[c] = a[c] < 0 ? 0 : a1[c] - a[c];
      R = 2;
      while (q + R < nruns) {
        const int *x = cols + (size_t)rs[q + R - 1] * w, *y = cols + (size_t)rs[q + R] * w;
        int ok = rl[q + R] == G->L && compatible(x, y, w) &&
                 memcmp(st + (size_t)q * w, st + (size_t)(q + R) * w, (size_t)w * sizeof(int)) == 0;
        for (int c = 0; c < w && ok; c++) ok = x[c] < 0 || y[c] - x[c] == G->dr[c];
        if (!ok) break;
        R++;
      }
    }
    G->R = R;
    q += R;
  }
  *ngroups = supergroups(em, g, ng, w);
  return g;
}

/* start + r * dr + k * dk for column c of the current group. */
static char *colidx(emitter *em, int c, int off) {
  const group *g = em->g;
  char tmp[128];
  if (em->ix) {
    snprintf(tmp, sizeof tmp, "%d + %s[%d * %s + %d]", off, em->ix, em->ixw, em->kvar, c);
    return dsk_strndup(em->c, tmp, strlen(tmp));
  }
  int n = snprintf(tmp, sizeof tmp, "%d", g->start[c] + off);
  if (g->S > 1 && g->ds[c]) {
    if (g->ds[c] == 1) n += snprintf(tmp + n, sizeof tmp - (size_t)n, " + s");
    else n += snprintf(tmp + n, sizeof tmp - (size_t)n, " + %d * s", g->ds[c]);
  }
  if (g->R > 1 && g->dr[c]) {
    if (g->dr[c] == 1) n += snprintf(tmp + n, sizeof tmp - (size_t)n, " + r");
    else n += snprintf(tmp + n, sizeof tmp - (size_t)n, " + %d * r", g->dr[c]);
  }
  if (g->L > 1 && g->dk[c]) {
    if (g->dk[c] == 1) snprintf(tmp + n, sizeof tmp - (size_t)n, " + %s", em->kvar);
    else snprintf(tmp + n, sizeof tmp - (size_t)n, " + %d * %s", g->dk[c], em->kvar);
  }
  return dsk_strndup(em->c, tmp, strlen(tmp));
}

/* The entry of read r (column 1 + r) in base `which`, or NULL for a zero. */
static const char *read_entry(emitter *em, int r, int which) {
  const dsk_ir_read *rd = &em->blk->reads[r];
  if (em->g->start[1 + r] < 0) return NULL;
  if (rd->noff)
    return fmt(em, "%s[%s + n%d]", base(em, rd->tensor, which),
               colidx(em, 1 + r, ws_off(em, rd->tensor)), r);
  return fmt(em, "%s[%s]", base(em, rd->tensor, which), colidx(em, 1 + r, ws_off(em, rd->tensor)));
}

/* ---- expressions ---------------------------------------------------------------- */

/* Pointer to the first value of interp1d node e in base `which`. */
static const char *y_vector(emitter *em, const dsk_ir_expr *e, int which) {
  const dsk_ir_read *rd = &em->blk->reads[e->yr];
  return fmt(em, "(%s + %s)", base(em, rd->tensor, which),
             colidx(em, 1 + e->yr, ws_off(em, rd->tensor)));
}

static nodeval *remember(emitter *em, const dsk_ir_expr *e, const char *p, const char *d) {
  if (em->nvals == em->capvals) {
    int cap = em->capvals ? 2 * em->capvals : 32;
    em->vals = dsk_grow(em->c, em->vals, (size_t)em->capvals * sizeof *em->vals,
                        (size_t)cap * sizeof *em->vals);
    em->capvals = cap;
  }
  em->vals[em->nvals].e = e;
  em->vals[em->nvals].p = p;
  em->vals[em->nvals].d = d;
  return &em->vals[em->nvals++];
}

static const nodeval *recall(const emitter *em, const dsk_ir_expr *e) {
  for (int k = em->nvals - 1; k >= 0; k--)
    if (em->vals[k].e == e) return &em->vals[k];
  return NULL;
}

static const char *temp(emitter *em, const char *text) {
  int k = em->ntmp++;
  out(em, "      const double p%d = %s;\n", k, text);
  return fmt(em, "p%d", k);
}

static const char *dtemp(emitter *em, const char *text) {
  out(em, "      const double d%d = %s;\n", em->ntmp - 1, text);
  return fmt(em, "d%d", em->ntmp - 1);
}

/* Forward code for e: its primal (and, in tangent mode, tangent) value. */
static const nodeval *expr(emitter *em, const dsk_ir_expr *e) {
  char pbuf[600], dbuf[1400];
  int want_d = em->mode == MODE_TANGENT && (e->dep & em->seed);
  const nodeval *a = NULL, *b = NULL;
  const char *p, *d = NULL;
  switch (e->op) {
    case IR_NUM: return remember(em, e, number(em, e->num), NULL);
    case IR_T: return remember(em, e, "t", NULL);
    case IR_NIDX: return remember(em, e, "(double)N", NULL);
    case IR_READ: {
      const char *pv = read_entry(em, e->read, BASE_P);
      if (!pv) return remember(em, e, "0.0", NULL);
      if (want_d && (em->blk->reads[e->read].dep & em->seed)) d = read_entry(em, e->read, BASE_D);
      return remember(em, e, pv, d);
    }
    case IR_NEG:
      a = expr(em, e->a);
      snprintf(pbuf, sizeof pbuf, "-%s", a->p);
      p = temp(em, pbuf);
      if (want_d && a->d) d = dtemp(em, fmt(em, "-%s", a->d));
      return remember(em, e, p, d);
    case IR_ADD:
    case IR_SUB:
    case IR_MUL:
    case IR_DIV: {
      static const char ops[] = {'+', '-', '*', '/'};
      a = expr(em, e->a);
      b = expr(em, e->b);
      snprintf(pbuf, sizeof pbuf, "%s %c %s", a->p, ops[e->op - IR_ADD], b->p);
      p = temp(em, pbuf);
      if (want_d && (a->d || b->d)) {
        dsk_op_tangent(dbuf, sizeof dbuf, e->op, a->p, b->p, p, a->d, b->d);
        d = dtemp(em, dbuf);
      }
      return remember(em, e, p, d);
    }
    case IR_CALL:
      a = expr(em, e->a);
      if (e->b) b = expr(em, e->b);
      dsk_fn_primal(pbuf, sizeof pbuf, e->fn, a->p, b ? b->p : NULL);
      p = temp(em, pbuf);
      if (want_d && (a->d || (b && b->d))) {
        dsk_fn_tangent(dbuf, sizeof dbuf, e->fn, a->p, b ? b->p : NULL, p, a->d, b ? b->d : NULL);
        d = dtemp(em, dbuf);
      }
      return remember(em, e, p, d);
    case IR_INTERP: {
      const char *ybase, *yd = NULL;
      int k = em->ntmp;
      a = expr(em, e->a);
      ybase = y_vector(em, e, BASE_P);
      k = em->ntmp++;
      out(em, "      int k%d; double w%d, s%d;\n", k, k, k);
      out(em, "      const double p%d = dsk_interp1d(dsk_grid%d, %s, %d, %s, &k%d, &w%d, &s%d);\n", k,
          e->gid, ybase, e->ngrid, a->p, k, k, k);
      p = fmt(em, "p%d", k);
      if (want_d) {
        char t1[300] = "", t2[300] = "";
        if (a->d) snprintf(t1, sizeof t1, "s%d * %s", k, a->d);
        if (em->blk->reads[e->yr].dep & em->seed) {
          yd = y_vector(em, e, BASE_D);
          snprintf(t2, sizeof t2, "(1.0 - w%d) * %s[k%d] + w%d * %s[k%d + 1]", k, yd, k, k, yd, k);
        }
        if (t1[0] || t2[0])
          d = dtemp(em, fmt(em, "%s%s%s", t1, t1[0] && t2[0] ? " + " : "", t2));
      }
      return remember(em, e, p, d);
    }
  }
  return remember(em, e, "0.0", NULL);
}

/* Adjoint code: add adjoint `adj` of e's value into the operands it reads. */
static void adjoint(emitter *em, const dsk_ir_expr *e, const char *adj) {
  char buf[1400];
  const nodeval *a, *b, *self;
  if (!(e->dep & em->seed)) return;
  {
    int k = em->ntmp++;
    out(em, "      const double a%d = %s;\n", k, adj);
    adj = fmt(em, "a%d", k);
  }
  switch (e->op) {
    case IR_READ: {
      const dsk_ir_read *rd = &em->blk->reads[e->read];
      const char *bar;
      if (!(rd->dep & em->seed)) return;
      bar = read_entry(em, e->read, BASE_B);
      if (bar) out(em, "      %s += %s;\n", bar, adj);
      return;
    }
    case IR_NEG: adjoint(em, e->a, fmt(em, "-%s", adj)); return;
    case IR_ADD:
      adjoint(em, e->a, adj);
      adjoint(em, e->b, adj);
      return;
    case IR_SUB:
      adjoint(em, e->a, adj);
      adjoint(em, e->b, fmt(em, "-%s", adj));
      return;
    case IR_MUL:
      a = recall(em, e->a);
      b = recall(em, e->b);
      adjoint(em, e->a, fmt(em, "%s * %s", adj, b->p));
      adjoint(em, e->b, fmt(em, "%s * %s", adj, a->p));
      return;
    case IR_DIV:
      b = recall(em, e->b);
      self = recall(em, e);
      adjoint(em, e->a, fmt(em, "%s / %s", adj, b->p));
      adjoint(em, e->b, fmt(em, "-%s * %s / %s", adj, self->p, b->p));
      return;
    case IR_INTERP: {
      /* p%d is the node; its k, w, s share the number */
      const char *num;
      self = recall(em, e);
      num = self->p + 1;
      if (em->blk->reads[e->yr].dep & em->seed) {
        const char *yb = y_vector(em, e, BASE_B);
        out(em, "      %s[k%s] += (1.0 - w%s) * %s;\n      %s[k%s + 1] += w%s * %s;\n", yb, num, num,
            adj, yb, num, num, adj);
      }
      adjoint(em, e->a, fmt(em, "s%s * %s", num, adj));
      return;
    }
    case IR_CALL:
      a = recall(em, e->a);
      b = e->b ? recall(em, e->b) : NULL;
      self = recall(em, e);
      if (dsk_fn_partial(buf, sizeof buf, e->fn, 0, a->p, b ? b->p : NULL, self->p))
        adjoint(em, e->a, fmt(em, "%s * %s", adj, buf));
      if (e->b && dsk_fn_partial(buf, sizeof buf, e->fn, 1, a->p, b->p, self->p))
        adjoint(em, e->b, fmt(em, "%s * %s", adj, buf));
      return;
    default: return;
  }
}

/* ---- blocks and tensors ------------------------------------------------------------ */

static void open_s(emitter *em) {
  if (em->g->S > 1) out(em, "  for (int s = 0; s < %d; s++)\n", em->g->S);
}

static void open_loops(emitter *em) {
  open_s(em);
  if (em->g->R > 1) out(em, "  for (int r = 0; r < %d; r++) {\n", em->g->R);
  else out(em, "  {\n");
  if (em->g->L > 1) out(em, "    for (int k = 0; k < %d; k++) {\n", em->g->L);
  else out(em, "    {\n");
}

static void close_loops(emitter *em) { out(em, "    }\n  }\n"); }

/* Run-time offsets of reads indexed by N, checked against their range. */
static void n_offsets(emitter *em, const dsk_ir_block *b) {
  for (int r = 0; r < b->nreads; r++) {
    const dsk_ir_read *rd = &b->reads[r];
    if (!rd->noff) continue;
    out(em, "  const long long n%d_ = %s;\n  if (n%d_ < 0 || n%d_ > %d) return -2;\n", r, rd->noff, r,
        r, rd->ext[0] - 1);
    out(em, "  const int n%d = (int)n%d_;\n", r, r);
  }
}

/* A contraction group whose written entry does not move along the inner
   loop (a row of a matrix-vector product): the sum is kept in a local, so
   the inner loop stores nothing and the compiler need not assume that a
   store changes what the loop reads. */
static int reduces(const emitter *em, const dsk_ir_block *b) {
  return b->contract && em->g->L > 1 && em->g->dk[0] == 0;
}

static void open_outer(emitter *em) {
  open_s(em);
  if (em->g->R > 1) out(em, "  for (int r = 0; r < %d; r++) {\n", em->g->R);
  else out(em, "  {\n");
}

/* Nodes of an expression tree (a body worth unrolling is small). */
static int nodes(const dsk_ir_expr *e) {
  return e ? 1 + nodes(e->a) + nodes(e->b) : 0;
}

enum { UNROLL = 4 };

/* The partial sums acc0..acc<n-1> (prefixed), added pairwise. */
static const char *sum_text(emitter *em, int n, const char *pre) {
  if (n == 4) return fmt(em, "(%sacc0 + %sacc1) + (%sacc2 + %sacc3)", pre, pre, pre, pre);
  if (n == 2) return fmt(em, "%sacc0 + %sacc1", pre, pre);
  return fmt(em, "%sacc0", pre);
}

/* A reduction group: the inner loop sums into locals.  Rows of at least
   2 * UNROLL terms with a small body are unrolled UNROLL times into
   independent partial sums, which the processor overlaps (one sum is
   limited by the latency of an addition per term).  The primal sums are the
   same with or without the tangent (jvp's primal equals eval bit for bit);
   the tangent, which doubles the independent work, keeps two. */
static void reduction(emitter *em, int k, const dsk_ir_block *b, int with_d, const char *pos) {
  static const char *const kv[UNROLL] = {"k", "ku1", "ku2", "ku3"};
  int L = em->g->L, unroll = L >= 2 * UNROLL && nodes(b->e) <= 8 ? UNROLL : 1;
  int dun = unroll > 1 ? 2 : 1;
  const nodeval *v;
  open_outer(em);
  out(em, "    double acc0 = %s[%s]", base(em, k, BASE_P), pos);
  for (int u = 1; u < unroll; u++) out(em, ", acc%d = 0.0", u);
  out(em, ";\n");
  if (with_d) {
    out(em, "    double dacc0 = %s[%s]", base(em, k, BASE_D), pos);
    for (int u = 1; u < dun; u++) out(em, ", dacc%d = 0.0", u);
    out(em, ";\n");
  }
  if (unroll > 1) {
    out(em, "    int k = 0;\n    for (; k < %d; k += %d) {\n", L - L % unroll, unroll);
    for (int u = 0; u < unroll; u++) {
      em->ntmp = 0;
      em->nvals = 0;
      em->kvar = kv[u];
      if (u) out(em, "     {\n      const int %s = k + %d;\n", kv[u], u);
      else out(em, "     {\n");
      v = expr(em, b->e);
      out(em, "      acc%d += %s;\n", u, v->p);
      if (with_d && v->d) out(em, "      dacc%d += %s;\n", u % dun, v->d);
      out(em, "     }\n");
    }
    em->kvar = "k";
    out(em, "    }\n");
    if (L % unroll) out(em, "    for (; k < %d; k++) {\n", L);
  } else {
    out(em, "    for (int k = 0; k < %d; k++) {\n", L);
  }
  if (unroll == 1 || L % unroll) {
    em->ntmp = 0;
    em->nvals = 0;
    v = expr(em, b->e);
    out(em, "      acc0 += %s;\n", v->p);
    if (with_d && v->d) out(em, "      dacc0 += %s;\n", v->d);
    out(em, "    }\n");
  }
  out(em, "    %s[%s] = %s;\n", base(em, k, BASE_P), pos, sum_text(em, unroll, ""));
  if (with_d) out(em, "    %s[%s] = %s;\n", base(em, k, BASE_D), pos, sum_text(em, dun, "d"));
  out(em, "  }\n");
}

/* A block whose points compress into many short loop nests (a sparse
   pattern without regular structure, such as a random sparse matrix written
   entry by entry) is emitted as loops over a table of its points' storage
   positions instead, so that code size follows blocks, not entries. */
static int tabled(const dsk_ir_block *b, int ng) { return ng > 8 && b->npts < 4 * ng; }

/* The name of block b's point table (its cols: npts rows of 1 + nreads
   positions, -1 for a structural zero), declared at file scope once. */
static const char *point_table(emitter *em, const dsk_ir_block *b) {
  int w = 1 + b->nreads, id;
  for (id = 0; id < em->nix; id++)
    if (em->ixblk[id] == b) return fmt(em, "dsk_ix%d", id);
  em->ixblk = dsk_grow(em->c, em->ixblk, (size_t)em->nix * sizeof *em->ixblk,
                       (size_t)(em->nix + 1) * sizeof *em->ixblk);
  em->ixblk[em->nix++] = b;
  swap_decl(em);
  out(em, "static const int dsk_ix%d[%d] = {", id, b->npts * w);
  for (int j = 0; j < b->npts * w; j++) out(em, "%s%s%d", j ? "," : "", j % 16 ? "" : "\n ", b->cols[j]);
  out(em, "};\n");
  swap_decl(em);
  return fmt(em, "dsk_ix%d", id);
}

/* One loop per stretch of points with the same structural zeros: forward
   code (mode MODE_PRIMAL/MODE_TANGENT) or adjoint code. */
static void tabled_loops(emitter *em, int k, const dsk_ir_block *b, int with_d, int adj) {
  int w = 1 + b->nreads;
  group G;
  memset(&G, 0, sizeof G);
  G.S = G.R = 1;
  G.start = dsk_alloc(em->c, (size_t)w * sizeof(int));
  G.ds = G.dr = G.dk = dsk_alloc(em->c, (size_t)w * sizeof(int));
  em->ix = point_table(em, b);
  em->ixw = w;
  for (int lo = 0; lo < b->npts;) {
    int hi = lo + 1;
    const int *r0 = b->cols + (size_t)lo * (size_t)w;
    const char *pos;
    while (hi < b->npts && compatible(r0, b->cols + (size_t)hi * (size_t)w, w)) hi++;
    for (int c = 0; c < w; c++) G.start[c] = r0[c] < 0 ? -1 : 0;
    G.L = hi - lo;
    em->g = &G;
    em->ntmp = 0;
    em->nvals = 0;
    pos = colidx(em, 0, ws_off(em, k));
    out(em, "  for (int k = %d; k < %d; k++) {\n", lo, hi);
    if (adj) {
      expr(em, b->e);
      adjoint(em, b->e, fmt(em, "%s[%s]", base(em, k, BASE_B), pos));
    } else {
      const char *op = b->contract ? "+=" : "=";
      const nodeval *v = expr(em, b->e);
      out(em, "      %s[%s] %s %s;\n", base(em, k, BASE_P), pos, op, v->p);
      if (with_d) out(em, "      %s[%s] %s %s;\n", base(em, k, BASE_D), pos, op, v->d ? v->d : "0.0");
    }
    out(em, "  }\n");
    lo = hi;
  }
  em->ix = NULL;
}

static void block(emitter *em, int k, const dsk_ir_block *b, int with_d) {
  int ng;
  group *gs = compress(em, b, &ng);
  const char *op = b->contract ? "+=" : "=";
  if (b->npts == 0) return;
  out(em, "  {\n");
  n_offsets(em, b);
  em->blk = b;
  if (tabled(b, ng)) {
    tabled_loops(em, k, b, with_d, 0);
    ng = 0;
  }
  for (int q = 0; q < ng; q++) {
    const nodeval *v;
    const char *pos;
    em->g = &gs[q];
    em->ntmp = 0;
    em->nvals = 0;
    pos = colidx(em, 0, ws_off(em, k));
    if (reduces(em, b)) {
      reduction(em, k, b, with_d, pos);
      continue;
    }
    open_loops(em);
    v = expr(em, b->e);
    out(em, "      %s[%s] %s %s;\n", base(em, k, BASE_P), pos, op, v->p);
    if (with_d) out(em, "      %s[%s] %s %s;\n", base(em, k, BASE_D), pos, op, v->d ? v->d : "0.0");
    close_loops(em);
  }
  out(em, "  }\n");
}

static void block_adjoint(emitter *em, int k, const dsk_ir_block *b) {
  int ng;
  group *gs;
  if (b->npts == 0 || !(b->e->dep & em->seed)) return;
  gs = compress(em, b, &ng);
  out(em, "  {\n");
  n_offsets(em, b);
  em->blk = b;
  if (tabled(b, ng)) {
    tabled_loops(em, k, b, 0, 1);
    ng = 0;
  }
  for (int q = ng - 1; q >= 0; q--) {
    const char *wbar;
    em->g = &gs[q];
    em->ntmp = 0;
    em->nvals = 0;
    wbar = fmt(em, "%s[%s]", base(em, k, BASE_B), colidx(em, 0, ws_off(em, k)));
    if (reduces(em, b)) { /* the result's adjoint is loaded once per row */
      open_outer(em);
      out(em, "    const double wb = %s;\n", wbar);
      out(em, "    for (int k = 0; k < %d; k++) {\n", em->g->L);
      expr(em, b->e);
      adjoint(em, b->e, "wb");
      out(em, "    }\n  }\n");
      continue;
    }
    open_loops(em);
    expr(em, b->e);
    adjoint(em, b->e, wbar);
    close_loops(em);
  }
  out(em, "  }\n");
}

static void zero(emitter *em, int k, int which) {
  const dsk_ir_tensor *t = &em->m->t[k];
  out(em, "  for (int i = 0; i < %d; i++) %s[%d + i] = 0.0;\n", t->nnz, base(em, k, which),
      ws_off(em, k));
}

/* Forward code for tensor k (tangents too in tangent mode when it has any). */
static void tensor(emitter *em, int k) {
  const dsk_ir_tensor *t = &em->m->t[k];
  int with_d = em->mode == MODE_TANGENT && ((t->dep & em->seed) || k == em->target);
  out(em, "  /* %s */\n", t->name);
  if (t->zero_fill) {
    zero(em, k, BASE_P);
    if (with_d) zero(em, k, BASE_D);
  }
  for (int j = 0; j < t->nblocks; j++) block(em, k, &t->blocks[j], with_d);
}

/* Mark the intermediates that tensor k reads, directly or not, whose
   dependencies meet `mask`. */
static void mark(const dsk_ir_model *m, int k, int mask, unsigned char *need) {
  for (int j = 0; j < m->nt; j++) {
    const dsk_ir_tensor *t = &m->t[j];
    if (!m->t[k].reads[j] || need[j] || t->role != ROLE_OTHER || !(t->dep & mask)) continue;
    need[j] = 1;
    mark(m, j, mask, need);
  }
}

static unsigned char *needed(emitter *em, int mask) {
  unsigned char *need = dsk_alloc(em->c, (size_t)em->m->nt);
  mark(em->m, em->target, mask, need);
  return need;
}

/* ---- constants -------------------------------------------------------------------- */

/* The run-time dsk_interp1d of the prelude, for constants. */
static double cinterp(const double *x, const double *y, int n, double q) {
  int lo = 0, hi = n - 1;
  double w;
  if (!(q > x[0])) return y[0];
  if (!(q < x[n - 1])) return y[n - 1];
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (x[mid] <= q) lo = mid;
    else hi = mid;
  }
  w = (q - x[lo]) / (x[lo + 1] - x[lo]);
  return (1.0 - w) * y[lo] + w * y[lo + 1];
}

/* Value of e at one point of block b, with the operations the generated code
   would do at run time; *ok = 0 when e reads something not known now. */
static double ceval(const emitter *em, const dsk_ir_block *b, const int *row,
                    const dsk_ir_expr *e, int *ok) {
  double x, y;
  switch (e->op) {
    case IR_NUM: return e->num;
    case IR_READ: {
      const dsk_ir_read *rd = &b->reads[e->read];
      int pos = row[1 + e->read];
      if (rd->noff || !em->cvals[rd->tensor]) break;
      return pos < 0 ? 0.0 : em->cvals[rd->tensor][pos];
    }
    case IR_NEG: return -ceval(em, b, row, e->a, ok);
    case IR_ADD: return ceval(em, b, row, e->a, ok) + ceval(em, b, row, e->b, ok);
    case IR_SUB: return ceval(em, b, row, e->a, ok) - ceval(em, b, row, e->b, ok);
    case IR_MUL: return ceval(em, b, row, e->a, ok) * ceval(em, b, row, e->b, ok);
    case IR_DIV: return ceval(em, b, row, e->a, ok) / ceval(em, b, row, e->b, ok);
    case IR_CALL:
      x = ceval(em, b, row, e->a, ok);
      y = e->b ? ceval(em, b, row, e->b, ok) : 0.0;
      return dsk_fn_eval(e->fn, x, y);
    case IR_INTERP: {
      const dsk_ir_read *rd = &b->reads[e->yr];
      if (rd->noff || !em->cvals[rd->tensor] || row[1 + e->yr] < 0) break;
      x = ceval(em, b, row, e->a, ok);
      return cinterp(e->grid, em->cvals[rd->tensor] + row[1 + e->yr], e->ngrid, x);
    }
    default: break;
  }
  *ok = 0;
  return 0.0;
}

/* Values of the constant intermediates, in definition order.  A constant
   whose blocks compress into few loops relative to its entries (a dense
   matrix written entry by entry) becomes a static table that the generated
   code reads directly; the others are computed in init() as before. */
static void constants(emitter *em) {
  const dsk_ir_model *m = em->m;
  em->cvals = dsk_alloc(em->c, (size_t)(m->nt ? m->nt : 1) * sizeof *em->cvals);
  em->ctab = dsk_alloc(em->c, (size_t)(m->nt ? m->nt : 1) * sizeof *em->ctab);
  for (int k = 0; k < m->nt; k++) {
    const dsk_ir_tensor *t = &m->t[k];
    double *v;
    int ok = 1, groups = 0;
    if (t->role != ROLE_OTHER || t->dep != 0) continue;
    if (t->from_file) {
      em->cvals[k] = t->consts;
      if (t->consts) em->ctab[k] = fmt(em, "dsk_c%d", k);
      continue;
    }
    v = dsk_alloc(em->c, (size_t)(t->nnz ? t->nnz : 1) * sizeof *v);
    for (int j = 0; j < t->nblocks && ok; j++) {
      const dsk_ir_block *b = &t->blocks[j];
      int w = 1 + b->nreads, ng = 0;
      for (int p = 0; p < b->npts && ok; p++) {
        const int *row = b->cols + (size_t)p * (size_t)w;
        double x = ceval(em, b, row, b->e, &ok);
        if (row[0] < 0 || row[0] >= t->nnz) ok = 0;
        else if (b->contract) v[row[0]] += x;
        else v[row[0]] = x;
      }
      if (b->npts) compress(em, b, &ng);
      groups += ng;
    }
    if (!ok) continue;
    em->cvals[k] = v;
    for (int j = 0; j < t->nnz && ok; j++) ok = isfinite(v[j]);
    if (ok && t->nnz <= 10 * groups) em->ctab[k] = fmt(em, "dsk_c%d", k);
  }
}

/* ---- functions -------------------------------------------------------------------- */

static const char *const fam_name[DSK_NFN] = {"u0", "rhs", "mass", "out", "stop", "reset", "dudt0"};

static int fam_target(const dsk_ir_model *m, int fam) {
  switch (fam) {
    case DSK_FN_U0: return m->iu;
    case DSK_FN_RHS: return m->iF;
    case DSK_FN_MASS: return m->iM;
    case DSK_FN_OUT: return m->iout;
    case DSK_FN_STOP: return m->istop;
    case DSK_FN_RESET: return m->ireset;
    default: return m->idudt;
  }
}

static void prologue(emitter *em) {
  out(em, "  const int N = (int)ws[%d];\n  (void)N; (void)t; (void)x;\n", em->m->n_slot);
}

static void emit_eval(emitter *em) {
  unsigned char *need = needed(em, DEP_DYNAMIC);
  em->mode = MODE_PRIMAL;
  out(em, "static int %s_eval(double t, const double *x, double *ws, double *y) {\n",
      fam_name[em->fam]);
  prologue(em);
  for (int j = 0; j < em->m->nt; j++)
    if (need[j]) tensor(em, j);
  tensor(em, em->target);
  if (em->fam == DSK_FN_RHS) /* a NaN or inf is reported (recoverable: a smaller step may help) */
    out(em, "  for (int i = 0; i < %d; i++)\n    if (!isfinite(y[i])) return 1;\n",
        em->m->t[em->target].nnz);
  out(em, "  return 0;\n}\n\n");
}

static int seed_of(const emitter *em, int wrt_p) {
  if (wrt_p) return DEP_IN;
  return em->xrole == ROLE_DUDT ? DEP_DUDT : DEP_STATE;
}

static void copy_in(emitter *em, const char *to, const char *from) {
  if (em->m->iin < 0) return;
  out(em, "  for (int i = 0; i < %d; i++) %s[%d + i] = %s[i];\n", em->m->nparams, to,
      em->m->t[em->m->iin].ws_off, from);
}

static void emit_jvp(emitter *em, int wrt_p) {
  unsigned char *need;
  em->mode = MODE_TANGENT;
  em->seed = seed_of(em, wrt_p);
  need = needed(em, DEP_DYNAMIC | em->seed);
  out(em, "static int %s_jvp_%c(double t, const double *x, const double *dx, double *ws,\n"
          "    double *dws, double *y, double *dy) {\n",
      fam_name[em->fam], wrt_p ? 'p' : 'x');
  prologue(em);
  out(em, "  (void)dx; (void)dws;\n");
  if (wrt_p) copy_in(em, "dws", "dx");
  for (int j = 0; j < em->m->nt; j++)
    if (need[j]) tensor(em, j);
  tensor(em, em->target);
  out(em, "  return 0;\n}\n\n");
}

/* wrt: 0 x, 1 p, 2 both in one sweep (vjp_xp: the primal and the adjoint of
   the tensors both need computed once). */
static void emit_vjp(emitter *em, int wrt) {
  unsigned char *need, *adj;
  const dsk_ir_model *m = em->m;
  int wrt_p = wrt != 0, nbar = wrt == 1 ? m->nparams : m->nstates;
  static const char *const suffix[] = {"x", "p", "xp"};
  em->seed = wrt == 2 ? seed_of(em, 0) | seed_of(em, 1) : seed_of(em, wrt_p);
  need = needed(em, DEP_DYNAMIC);
  adj = needed(em, em->seed);
  out(em, "static int %s_vjp_%s(double t, const double *x, const double *w, double *ws,\n"
          "    double *bws, double *bar%s) {\n",
      fam_name[em->fam], suffix[wrt], wrt == 2 ? ", double *pbar" : "");
  prologue(em);
  out(em, "  (void)w; (void)bws;\n");
  em->mode = MODE_PRIMAL;
  for (int j = 0; j < m->nt; j++)
    if (need[j]) tensor(em, j);
  em->mode = MODE_ADJOINT;
  out(em, "  for (int i = 0; i < %d; i++) bar[i] = 0.0;\n", nbar);
  for (int j = 0; j < m->nt; j++)
    if (adj[j] || (wrt_p && j == m->iin)) zero(em, j, BASE_B);
  for (int b = m->t[em->target].nblocks - 1; b >= 0; b--)
    block_adjoint(em, em->target, &m->t[em->target].blocks[b]);
  for (int j = m->nt - 1; j >= 0; j--) {
    if (!adj[j]) continue;
    for (int b = m->t[j].nblocks - 1; b >= 0; b--) block_adjoint(em, j, &m->t[j].blocks[b]);
  }
  if (wrt_p && m->iin >= 0)
    out(em, "  for (int i = 0; i < %d; i++) %s[i] = bws[%d + i];\n", m->nparams,
        wrt == 2 ? "pbar" : "bar", m->t[m->iin].ws_off);
  else if (wrt == 2)
    out(em, "  (void)pbar;\n");
  out(em, "  return 0;\n}\n\n");
}

/* Without `out`, the outputs are the states. */
static void emit_identity_out(emitter *em) {
  int n = em->m->nstates, np = em->m->nparams;
  out(em, "static int out_eval(double t, const double *x, double *ws, double *y) {\n"
          "  (void)t; (void)ws;\n  for (int i = 0; i < %d; i++) y[i] = x[i];\n  return 0;\n}\n\n", n);
  out(em, "static int out_jvp_x(double t, const double *x, const double *dx, double *ws,\n"
          "    double *dws, double *y, double *dy) {\n  (void)t; (void)ws; (void)dws;\n"
          "  for (int i = 0; i < %d; i++) { y[i] = x[i]; dy[i] = dx[i]; }\n  return 0;\n}\n\n", n);
  out(em, "static int out_jvp_p(double t, const double *x, const double *dx, double *ws,\n"
          "    double *dws, double *y, double *dy) {\n  (void)t; (void)dx; (void)ws; (void)dws;\n"
          "  for (int i = 0; i < %d; i++) { y[i] = x[i]; dy[i] = 0.0; }\n  return 0;\n}\n\n", n);
  out(em, "static int out_vjp_x(double t, const double *x, const double *w, double *ws,\n"
          "    double *bws, double *bar) {\n  (void)t; (void)x; (void)ws; (void)bws;\n"
          "  for (int i = 0; i < %d; i++) bar[i] = w[i];\n  return 0;\n}\n\n", n);
  out(em, "static int out_vjp_p(double t, const double *x, const double *w, double *ws,\n"
          "    double *bws, double *bar) {\n  (void)t; (void)x; (void)w; (void)ws; (void)bws;\n"
          "  for (int i = 0; i < %d; i++) bar[i] = 0.0;\n  return 0;\n}\n\n", np);
}

static void family(emitter *em, int fam, unsigned char *present) {
  const dsk_ir_model *m = em->m;
  em->fam = fam;
  em->target = fam_target(m, fam);
  em->xrole = fam == DSK_FN_MASS ? ROLE_DUDT : ROLE_U;
  present[fam] = 1;
  if (em->target < 0) {
    present[fam] = fam == DSK_FN_OUT;
    if (fam == DSK_FN_OUT) emit_identity_out(em);
    return;
  }
  emit_eval(em);
  if (fam != DSK_FN_U0 && fam != DSK_FN_DUDT0) {
    emit_jvp(em, 0);
    emit_vjp(em, 0);
    if (fam == DSK_FN_RHS) emit_vjp(em, 2); /* the only one used (the ARKODE adjoint) */
  }
  emit_jvp(em, 1);
  emit_vjp(em, 1);
}

static void header(emitter *em) {
  const dsk_ir_model *m = em->m;
  out(em, "/* generated by diffsol-pytorch from DiffSL: do not edit */\n");
  out(em, "#include <math.h>\n%s", DSK_GEN_TABLE_TEXT);
  out(em, "%s", dsk_fn_prelude());
  for (int k = 0; k < m->nt; k++) {
    if (!em->ctab[k]) continue;
    out(em, "static const double %s[%d] = {", em->ctab[k], m->t[k].nnz ? m->t[k].nnz : 1);
    for (int j = 0; j < m->t[k].nnz; j++)
      out(em, "%s%s%s", j ? "," : "", j % 8 ? " " : "\n  ", number(em, em->cvals[k][j]));
    out(em, "%s};\n", m->t[k].nnz ? "" : "0.0");
  }
  for (int g = 0; g < m->ngrids; g++) {
    const dsk_ir_expr *e = m->grids[g];
    out(em, "static const double dsk_grid%d[%d] = {", g, e->ngrid);
    for (int k = 0; k < e->ngrid; k++) out(em, "%s%s", k ? ", " : "", number(em, e->grid[k]));
    out(em, "};\n");
  }
  out(em, "static const char *const param_names[] = {");
  for (int k = 0; k < m->nparams; k++) out(em, "\"%s\", ", m->param_names[k]);
  out(em, "0};\nstatic const double default_params[] = {");
  for (int k = 0; k < m->nparams; k++) out(em, "%s, ", number(em, m->defaults[k]));
  out(em, "0.0};\n\n");
}

static void setup_functions(emitter *em) {
  const dsk_ir_model *m = em->m;
  em->mode = MODE_PRIMAL;
  em->target = -1;
  em->xrole = -1;
  out(em, "static int init(double *ws) {\n  const double t = 0.0; const double *x = 0;\n");
  out(em, "  for (int i = 0; i < %d; i++) ws[i] = 0.0;\n", m->nws);
  prologue(em);
  for (int k = 0; k < m->nt; k++) /* constants read from a table need no copy */
    if (m->t[k].role == ROLE_OTHER && m->t[k].dep == 0 && !em->ctab[k]) tensor(em, k);
  out(em, "  return 0;\n}\n\n");
  out(em, "static int set_inputs(const double *p, double *ws) {\n"
          "  const double t = 0.0; const double *x = 0;\n");
  prologue(em);
  copy_in(em, "ws", "p");
  for (int k = 0; k < m->nt; k++)
    if (m->t[k].role == ROLE_OTHER && m->t[k].dep == DEP_IN) tensor(em, k);
  out(em, "  (void)p;\n  return 0;\n}\n\n");
}

static void table(emitter *em, const unsigned char *present) {
  const dsk_ir_model *m = em->m;
  static const char *const kinds[] = {"eval", "jvp_x", "jvp_p", "vjp_x", "vjp_p", "vjp_xp"};
  out(em, "const dsk_gen_table *dsk_model_table(void);\n");
  out(em, "const dsk_gen_table *dsk_model_table(void) {\n  static const dsk_gen_table tab = {\n");
  out(em, "    .abi_version = %d, .nstates = %d, .nparams = %d, .nout = %d, .nstop = %d,\n",
      DSK_GEN_ABI_VERSION, m->nstates, m->nparams, m->nout, m->nstop);
  out(em, "    .has_mass = %d, .nws = %d, .n_slot = %d,\n", m->iM >= 0, m->nws, m->n_slot);
  out(em, "    .param_names = param_names, .default_params = default_params,\n"
          "    .init = init, .set_inputs = set_inputs,\n");
  for (int kd = 0; kd < 6; kd++) {
    out(em, "    .%s = {", kinds[kd]);
    for (int f = 0; f < DSK_NFN; f++) {
      int has = present[f] && !((f == DSK_FN_U0 || f == DSK_FN_DUDT0) && (kd == 1 || kd == 3)) &&
                (kd != 5 || f == DSK_FN_RHS);
      if (has) out(em, "[%d] = %s_%s, ", f, fam_name[f], kinds[kd]);
    }
    out(em, "},\n");
  }
  out(em, "  };\n  return &tab;\n}\n");
}

char *dsk_emit_c(dsk_cctx *c, const dsk_ir_model *m) {
  emitter em;
  unsigned char present[DSK_NFN] = {0};
  char *text;
  size_t hlen;
  memset(&em, 0, sizeof em);
  em.c = c;
  em.m = m;
  em.kvar = "k";
  constants(&em);
  header(&em);
  hlen = em.len;
  setup_functions(&em);
  for (int f = 0; f < DSK_NFN; f++) family(&em, f, present);
  table(&em, present);
  text = malloc(em.len + em.dlen + 1);
  if (!text) {
    dsk_status_set(c->st, DSK_E_NOMEM, "out of memory emitting C");
    longjmp(c->on_error, 1);
  }
  memcpy(text, em.buf, hlen);
  if (em.dlen) memcpy(text + hlen, em.decl, em.dlen);
  memcpy(text + hlen + em.dlen, em.buf + hlen, em.len - hlen);
  text[em.len + em.dlen] = 0;
  return text;
}
