/*
 * diff.c - differentiation rules: the DiffSL functions, their C definitions
 * and exact derivatives, and the tangent (forward-mode) rule of every IR
 * operation.  The emitter builds tangent code node by node from these rules,
 * so the Jacobian of rhs is exact, not a finite difference.
 *
 * At kinks the one-sided rule of the C library is used: abs'(0) = 0,
 * heaviside' = 0, min/max follow the argument they return (a on ties).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir.h"

typedef struct fn_info {
  const char *name;  /* DiffSL name */
  int nargs;
  const char *cname; /* C function (libm or prelude) */
  const char *d1;    /* prelude function d1(a, [b,] p): partial w.r.t. a */
  const char *d2;    /* partial w.r.t. b (two-argument functions), or NULL */
} fn_info;

/* ORDER: indices are stored in the IR (dsk_ir_expr.fn). */
static const fn_info fns[] = {
    {"sin", 1, "sin", "dsk_d_sin", NULL},
    {"cos", 1, "cos", "dsk_d_cos", NULL},
    {"tan", 1, "tan", "dsk_d_tan", NULL},
    {"exp", 1, "exp", "dsk_d_exp", NULL},
    {"log", 1, "log", "dsk_d_log", NULL},
    {"log10", 1, "log10", "dsk_d_log10", NULL},
    {"sqrt", 1, "sqrt", "dsk_d_sqrt", NULL},
    {"abs", 1, "fabs", "dsk_d_abs", NULL},
    {"sigmoid", 1, "dsk_sigmoid", "dsk_d_sigmoid", NULL},
    {"arcsinh", 1, "asinh", "dsk_d_arcsinh", NULL},
    {"arccosh", 1, "acosh", "dsk_d_arccosh", NULL},
    {"heaviside", 1, "dsk_heaviside", NULL, NULL},
    {"tanh", 1, "tanh", "dsk_d_tanh", NULL},
    {"sinh", 1, "sinh", "dsk_d_sinh", NULL},
    {"cosh", 1, "cosh", "dsk_d_cosh", NULL},
    {"pow", 2, "pow", "dsk_d_pow_a", "dsk_d_pow_b"},
    {"min", 2, "dsk_min", "dsk_d_min_a", "dsk_d_min_b"},
    {"max", 2, "dsk_max", "dsk_d_max_a", "dsk_d_max_b"},
    {"copysign", 2, "copysign", "dsk_d_copysign_a", NULL},
};

#define NFNS ((int)(sizeof fns / sizeof fns[0]))

int dsk_fn_lookup(const char *name) {
  for (int k = 0; k < NFNS; k++)
    if (strcmp(fns[k].name, name) == 0) return k;
  return -1;
}

int dsk_fn_nargs(int fn) { return fns[fn].nargs; }
const char *dsk_fn_name(int fn) { return fns[fn].name; }

/* Partials take (a, p) or (a, b, p), where p is the primal value. */
const char *dsk_fn_prelude(void) {
  return "static double dsk_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }\n"
         /* interp1d: value at q; *k, *w: value = (1 - w) y[k] + w y[k + 1];
            *s: slope dvalue/dq (0 outside the grid, where it is clamped) */
         "static double dsk_interp1d(const double *x, const double *y, int n, double q, int *k,\n"
         "                           double *w, double *s) {\n"
         "  int lo = 0, hi = n - 1;\n"
         "  if (!(q > x[0])) { *k = 0; *w = 0.0; *s = 0.0; return y[0]; }\n"
         "  if (!(q < x[n - 1])) { *k = n - 2; *w = 1.0; *s = 0.0; return y[n - 1]; }\n"
         "  while (hi - lo > 1) { int mid = (lo + hi) / 2; if (x[mid] <= q) lo = mid; else hi = mid; }\n"
         "  *k = lo; *s = (y[lo + 1] - y[lo]) / (x[lo + 1] - x[lo]);\n"
         "  *w = (q - x[lo]) / (x[lo + 1] - x[lo]);\n"
         "  return (1.0 - *w) * y[lo] + *w * y[lo + 1];\n"
         "}\n"
         /* index arithmetic on N (sema.c, int_text): values beyond +-2^31 and a
            division by zero give DSK_IBAD, which propagates and fails the range check */
         "#define DSK_IBAD (-9223372036854775807LL - 1)\n"
         "static long long dsk_iop(long long x, long long y, int op) {\n"
         "  long long r;\n"
         "  if (x == DSK_IBAD || y == DSK_IBAD) return DSK_IBAD;\n"
         "  switch (op) {\n"
         "    case '+': r = x + y; break;\n"
         "    case '-': r = x - y; break;\n"
         "    case '*': r = x * y; break;\n"
         "    case '/': if (y == 0) return DSK_IBAD; r = x / y; break;\n"
         "    default: if (y == 0) return DSK_IBAD; r = x % y; break;\n"
         "  }\n"
         "  return r > 2147483647LL || r < -2147483647LL ? DSK_IBAD : r;\n"
         "}\n"
         "static double dsk_heaviside(double x) { return x >= 0.0 ? 1.0 : 0.0; }\n"
         "static double dsk_min(double a, double b) { return a <= b ? a : b; }\n"
         "static double dsk_max(double a, double b) { return a >= b ? a : b; }\n"
         "static double dsk_d_sin(double a, double p) { (void)p; return cos(a); }\n"
         "static double dsk_d_cos(double a, double p) { (void)p; return -sin(a); }\n"
         "static double dsk_d_tan(double a, double p) { (void)a; return 1.0 + p * p; }\n"
         "static double dsk_d_exp(double a, double p) { (void)a; return p; }\n"
         "static double dsk_d_log(double a, double p) { (void)p; return 1.0 / a; }\n"
         "static double dsk_d_log10(double a, double p) { (void)p; "
         "return 1.0 / (a * 2.302585092994045684); }\n"
         "static double dsk_d_sqrt(double a, double p) { (void)a; return 0.5 / p; }\n"
         "static double dsk_d_abs(double a, double p) { (void)p; "
         "return a > 0.0 ? 1.0 : (a < 0.0 ? -1.0 : 0.0); }\n"
         "static double dsk_d_sigmoid(double a, double p) { (void)a; return p * (1.0 - p); }\n"
         "static double dsk_d_arcsinh(double a, double p) { (void)p; "
         "return 1.0 / sqrt(a * a + 1.0); }\n"
         "static double dsk_d_arccosh(double a, double p) { (void)p; "
         "return 1.0 / sqrt(a * a - 1.0); }\n"
         "static double dsk_d_tanh(double a, double p) { (void)a; return 1.0 - p * p; }\n"
         "static double dsk_d_sinh(double a, double p) { (void)p; return cosh(a); }\n"
         "static double dsk_d_cosh(double a, double p) { (void)p; return sinh(a); }\n"
         "static double dsk_d_pow_a(double a, double b, double p) { (void)p; "
         "return b == 0.0 ? 0.0 : b * pow(a, b - 1.0); }\n"
         "static double dsk_d_pow_b(double a, double b, double p) { (void)b; "
         "return p == 0.0 ? 0.0 : p * log(a); }\n"
         "static double dsk_d_min_a(double a, double b, double p) { (void)p; "
         "return a <= b ? 1.0 : 0.0; }\n"
         "static double dsk_d_min_b(double a, double b, double p) { (void)p; "
         "return a <= b ? 0.0 : 1.0; }\n"
         "static double dsk_d_max_a(double a, double b, double p) { (void)p; "
         "return a >= b ? 1.0 : 0.0; }\n"
         "static double dsk_d_max_b(double a, double b, double p) { (void)p; "
         "return a >= b ? 0.0 : 1.0; }\n"
         "static double dsk_d_copysign_a(double a, double b, double p) { (void)p; "
         "return (signbit(a) != 0) == (signbit(b) != 0) ? 1.0 : -1.0; }\n";
}

double dsk_fn_eval(int fn, double a, double b) {
  switch (fn) {
    case 0: return sin(a);
    case 1: return cos(a);
    case 2: return tan(a);
    case 3: return exp(a);
    case 4: return log(a);
    case 5: return log10(a);
    case 6: return sqrt(a);
    case 7: return fabs(a);
    case 8: return 1.0 / (1.0 + exp(-a));
    case 9: return asinh(a);
    case 10: return acosh(a);
    case 11: return a >= 0.0 ? 1.0 : 0.0;
    case 12: return tanh(a);
    case 13: return sinh(a);
    case 14: return cosh(a);
    case 15: return pow(a, b);
    case 16: return a <= b ? a : b;
    case 17: return a >= b ? a : b;
    default: return copysign(a, b);
  }
}

void dsk_fn_primal(char *buf, size_t n, int fn, const char *a, const char *b) {
  if (fns[fn].nargs == 1)
    snprintf(buf, n, "%s(%s)", fns[fn].cname, a);
  else
    snprintf(buf, n, "%s(%s, %s)", fns[fn].cname, a, b);
}

void dsk_fn_tangent(char *buf, size_t n, int fn, const char *a, const char *b, const char *p,
                    const char *da, const char *db) {
  const fn_info *f = &fns[fn];
  char ta[256] = "", tb[256] = "";
  if (da && f->d1) {
    if (f->nargs == 1)
      snprintf(ta, sizeof ta, "%s(%s, %s) * %s", f->d1, a, p, da);
    else
      snprintf(ta, sizeof ta, "%s(%s, %s, %s) * %s", f->d1, a, b, p, da);
  }
  if (db && f->d2) snprintf(tb, sizeof tb, "%s(%s, %s, %s) * %s", f->d2, a, b, p, db);
  if (ta[0] && tb[0])
    snprintf(buf, n, "%s + %s", ta, tb);
  else if (ta[0] || tb[0])
    snprintf(buf, n, "%s", ta[0] ? ta : tb);
  else
    snprintf(buf, n, "0.0");
}

void dsk_op_tangent(char *buf, size_t n, dsk_ir_op op, const char *a, const char *b,
                    const char *p, const char *da, const char *db) {
  switch (op) {
    case IR_NEG: snprintf(buf, n, "-%s", da ? da : "0.0"); return;
    case IR_ADD:
    case IR_SUB:
      if (da && db)
        snprintf(buf, n, "%s %c %s", da, op == IR_ADD ? '+' : '-', db);
      else if (da)
        snprintf(buf, n, "%s", da);
      else if (db)
        snprintf(buf, n, "%s%s", op == IR_ADD ? "" : "-", db);
      else
        snprintf(buf, n, "0.0");
      return;
    case IR_MUL:
      if (da && db)
        snprintf(buf, n, "%s * %s + %s * %s", da, b, a, db);
      else if (da)
        snprintf(buf, n, "%s * %s", da, b);
      else if (db)
        snprintf(buf, n, "%s * %s", a, db);
      else
        snprintf(buf, n, "0.0");
      return;
    case IR_DIV: /* p = a / b: dp = (da - p db) / b */
      if (da && db)
        snprintf(buf, n, "(%s - %s * %s) / %s", da, p, db, b);
      else if (da)
        snprintf(buf, n, "%s / %s", da, b);
      else if (db)
        snprintf(buf, n, "-(%s * %s) / %s", p, db, b);
      else
        snprintf(buf, n, "0.0");
      return;
    default: snprintf(buf, n, "0.0"); return;
  }
}

const char *dsk_fn_partial(char *buf, size_t n, int fn, int which, const char *a, const char *b,
                           const char *p) {
  const fn_info *f = &fns[fn];
  const char *d = which == 0 ? f->d1 : f->d2;
  if (!d) return NULL;
  if (f->nargs == 1)
    snprintf(buf, n, "%s(%s, %s)", d, a, p);
  else
    snprintf(buf, n, "%s(%s, %s, %s)", d, a, b, p);
  return buf;
}

/* ---- Jacobian sparsity ----------------------------------------------------
 * For every stored entry of every tensor, the set of seed entries (states,
 * or dudt for M) it depends on, propagated block by block through the
 * operand positions sema recorded: a point's result depends on everything its
 * reads depend on.  Sets are kept as sorted lists per entry (CSR); a tensor
 * whose sets would grow past PATTERN_LIMIT pairs is marked as depending on
 * everything, and a Jacobian built from one is dense. */

#include <stdlib.h>

#define PATTERN_LIMIT 20000000L

typedef struct depset {
  int *ptr; /* nnz + 1 */
  int *idx;
  int all;  /* depends on every seed entry */
} depset;

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return x < y ? -1 : x > y;
}

/* Sets of tensor k from the sets of what it reads. */
static void tensor_deps(dsk_cctx *c, const dsk_ir_model *m, int k, int seedbit, int nseed,
                        depset *ds) {
  const dsk_ir_tensor *t = &m->t[k];
  long cap = 1024, n = 0;
  long long *pairs = dsk_alloc(c, (size_t)cap * sizeof *pairs);
  for (int b = 0; b < t->nblocks && !ds[k].all; b++) {
    const dsk_ir_block *bl = &t->blocks[b];
    int w = 1 + bl->nreads;
    for (int p = 0; p < bl->npts && !ds[k].all; p++) {
      const int *row = bl->cols + (size_t)p * (size_t)w;
      for (int r = 0; r < bl->nreads && !ds[k].all; r++) {
        const dsk_ir_read *rd = &bl->reads[r];
        const depset *src = &ds[rd->tensor];
        int lo = row[1 + r], hi = lo;
        if (!(rd->dep & seedbit) || lo < 0) continue;
        if (src->all) {
          ds[k].all = 1;
          break;
        }
        if (rd->noff || rd->whole) hi = lo + rd->ext[0] - 1; /* every entry it may use */
        for (int pos = lo; pos <= hi; pos++)
          for (int q = src->ptr[pos]; q < src->ptr[pos + 1]; q++) {
            if (n == cap) {
              if (cap > PATTERN_LIMIT) {
                ds[k].all = 1;
                break;
              }
              pairs = dsk_grow(c, pairs, (size_t)cap * sizeof *pairs,
                               (size_t)cap * 2 * sizeof *pairs);
              cap *= 2;
            }
            pairs[n++] = (long long)row[0] * nseed + src->idx[q];
          }
      }
    }
  }
  ds[k].ptr = dsk_alloc(c, ((size_t)t->nnz + 1) * sizeof(int));
  if (ds[k].all) return;
  /* the pairs by entry (a counting sort), then each entry's seeds without
     repeats (a stamp per seed) and sorted: linear in the pairs, which repeat
     a lot (a dense product reads each seed through every term: 262,144 pairs
     for 4,096 distinct ones in a 64-state two-layer network) */
  {
    int nnz = t->nnz;
    int *start = dsk_alloc(c, ((size_t)nnz + 2) * sizeof(int));
    int *seeds = dsk_alloc(c, (size_t)(n ? n : 1) * sizeof(int));
    int *stamp = dsk_alloc(c, ((size_t)nseed + 1) * sizeof(int));
    long u = 0;
    for (long q = 0; q < n; q++) start[pairs[q] / nseed + 2]++;
    for (int e = 0; e < nnz; e++) start[e + 2] += start[e + 1];
    for (long q = 0; q < n; q++) seeds[start[pairs[q] / nseed + 1]++] = (int)(pairs[q] % nseed);
    for (int j = 0; j < nseed; j++) stamp[j] = -1;
    ds[k].idx = dsk_alloc(c, (size_t)(n ? n : 1) * sizeof(int));
    for (int e = 0; e < nnz; e++) {
      long first = u;
      for (int q = start[e]; q < start[e + 1]; q++)
        if (stamp[seeds[q]] != e) stamp[seeds[q]] = e, ds[k].idx[u++] = seeds[q];
      qsort(ds[k].idx + first, (size_t)(u - first), sizeof(int), cmp_int);
      ds[k].ptr[e + 1] = (int)u;
    }
  }
}

/* CSC pattern of d target / d seed, malloc'd; left empty (dense) when the
   target depends on everything or memory runs out. */
static void pattern(dsk_cctx *c, const dsk_ir_model *m, int target, int seed_role, int seedbit,
                    dsk_sparsity *out) {
  int nseed = m->nstates, nrow;
  depset *ds;
  memset(out, 0, sizeof *out);
  if (target < 0) return;
  nrow = m->t[target].nnz;
  ds = dsk_alloc(c, (size_t)m->nt * sizeof *ds);
  for (int k = 0; k < m->nt; k++) {
    const dsk_ir_tensor *t = &m->t[k];
    if (t->role == seed_role) {
      ds[k].ptr = dsk_alloc(c, ((size_t)t->nnz + 1) * sizeof(int));
      ds[k].idx = dsk_alloc(c, ((size_t)t->nnz + 1) * sizeof(int));
      for (int e = 0; e < t->nnz; e++) {
        ds[k].ptr[e + 1] = e + 1;
        ds[k].idx[e] = e;
      }
    } else if (!(t->dep & seedbit)) {
      ds[k].ptr = dsk_alloc(c, ((size_t)t->nnz + 1) * sizeof(int));
    } else {
      tensor_deps(c, m, k, seedbit, nseed, ds);
    }
  }
  if (ds[target].all) return;
  {
    const depset *d = &ds[target];
    int nnz = d->ptr[nrow];
    int *colptr = calloc((size_t)nseed + 2, sizeof *colptr);
    int *rowidx = malloc((size_t)(nnz ? nnz : 1) * sizeof *rowidx);
    if (!colptr || !rowidx) {
      free(colptr);
      free(rowidx);
      return; /* dense fallback */
    }
    for (int q = 0; q < nnz; q++) colptr[d->idx[q] + 2]++;
    for (int j = 0; j < nseed; j++) colptr[j + 2] += colptr[j + 1];
    for (int i = 0; i < nrow; i++) /* rows in increasing order: sorted columns */
      for (int q = d->ptr[i]; q < d->ptr[i + 1]; q++) rowidx[colptr[d->idx[q] + 1]++] = i;
    out->nrows = nrow;
    out->ncols = nseed;
    out->nnz = nnz;
    out->colptr = colptr;
    out->rowidx = rowidx;
  }
}

void dsk_ir_patterns(dsk_cctx *c, const dsk_ir_model *m, dsk_sparsity *jac, dsk_sparsity *mass) {
  pattern(c, m, m->iF, ROLE_U, DEP_STATE, jac);
  pattern(c, m, m->iM, ROLE_DUDT, DEP_DUDT, mass);
}
