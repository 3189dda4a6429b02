/*
 * emit_c.c - tensor IR -> C source implementing the dsk_gen.h ABI.
 *
 * The output is deterministic (same IR -> byte-identical text): no
 * addresses, times or hash-order in it.  Each block becomes a loop over its
 * entries (or one statement for a single entry) whose body evaluates the
 * element expression as straight-line code, one temporary per node.  With
 * tangents on, every node that depends on the state also gets its
 * directional derivative from the rules in diff.c.
 *
 * Where each tensor is computed follows its class: constants in init(),
 * parameter-dependent tensors in set_inputs(), time- and state-dependent
 * ones inside each function that needs them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

typedef struct emitter {
  dsk_cctx *c;
  const dsk_ir_model *m;
  char *buf;
  size_t len, cap;
  int ntmp;      /* temporaries in the current block */
  int tangent;   /* emitting tangent code too */
  int in_u0;     /* u0(): the state tensor is the output */
} emitter;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void out(emitter *em, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
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

static char *fmt(emitter *em, const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
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
  return dsk_strndup(em->c, tmp, strlen(tmp));
}

/* Where tensor k lives in the function being emitted (d: its tangent). */
static const char *base(const emitter *em, int k, int d) {
  const dsk_ir_tensor *t = &em->m->t[k];
  switch (t->role) {
    case ROLE_U: return em->in_u0 ? "u" : d ? "v" : "u";
    case ROLE_F: return d ? "df" : "f";
    case ROLE_OUT: return "y";
    default: return d ? "dws" : "ws";
  }
}

static int ws_off(const emitter *em, int k) {
  int off = em->m->t[k].ws_off;
  return off < 0 ? 0 : off;
}

/* The text of entry `off` (+ i when vec) of tensor k. */
static char *entry(emitter *em, int k, int off, int vec, int d) {
  int o = ws_off(em, k) + off;
  if (vec) return fmt(em, "%s[%d + i]", base(em, k, d), o);
  return fmt(em, "%s[%d]", base(em, k, d), o);
}

typedef struct val {
  const char *p; /* primal */
  const char *d; /* tangent, NULL when zero */
} val;

static val expr(emitter *em, const dsk_ir_expr *e);

static val temp(emitter *em, const char *p, const char *d) {
  val v;
  int k = em->ntmp++;
  out(em, "    const double p%d = %s;\n", k, p);
  v.p = fmt(em, "p%d", k);
  v.d = NULL;
  if (d) {
    out(em, "    const double d%d = %s;\n", k, d);
    v.d = fmt(em, "d%d", k);
  }
  return v;
}

static val expr(emitter *em, const dsk_ir_expr *e) {
  char pbuf[512], dbuf[1024];
  val v = {NULL, NULL}, a, b = {NULL, NULL};
  int want_d = em->tangent && e->dep == DEP_STATE;
  switch (e->op) {
    case IR_NUM: v.p = number(em, e->num); return v;
    case IR_T: v.p = "t"; return v;
    case IR_READ:
      v.p = entry(em, e->tensor, e->off, e->len > 1, 0);
      if (want_d) v.d = entry(em, e->tensor, e->off, e->len > 1, 1);
      return v;
    case IR_NEG:
      a = expr(em, e->a);
      snprintf(pbuf, sizeof pbuf, "-%s", a.p);
      dsk_op_tangent(dbuf, sizeof dbuf, e->op, a.p, NULL, NULL, a.d, NULL);
      return temp(em, pbuf, want_d ? dbuf : NULL);
    case IR_ADD:
    case IR_SUB:
    case IR_MUL:
    case IR_DIV: {
      static const char ops[] = {'+', '-', '*', '/'};
      a = expr(em, e->a);
      b = expr(em, e->b);
      snprintf(pbuf, sizeof pbuf, "%s %c %s", a.p, ops[e->op - IR_ADD], b.p);
      v = temp(em, pbuf, NULL);
      if (want_d) {
        dsk_op_tangent(dbuf, sizeof dbuf, e->op, a.p, b.p, v.p, a.d, b.d);
        out(em, "    const double d%d = %s;\n", em->ntmp - 1, dbuf);
        v.d = fmt(em, "d%d", em->ntmp - 1);
      }
      return v;
    }
    case IR_CALL:
      a = expr(em, e->a);
      if (e->b) b = expr(em, e->b);
      dsk_fn_primal(pbuf, sizeof pbuf, e->fn, a.p, b.p);
      v = temp(em, pbuf, NULL);
      if (want_d) {
        dsk_fn_tangent(dbuf, sizeof dbuf, e->fn, a.p, b.p, v.p, a.d, b.d);
        out(em, "    const double d%d = %s;\n", em->ntmp - 1, dbuf);
        v.d = fmt(em, "d%d", em->ntmp - 1);
      }
      return v;
  }
  v.p = "0.0";
  return v;
}

/* One block: a loop over its entries (or a single statement). */
static void block(emitter *em, int k, const dsk_ir_block *b) {
  const dsk_ir_tensor *t = &em->m->t[k];
  int with_d = em->tangent && (t->dep == DEP_STATE || t->role == ROLE_F);
  val v;
  em->ntmp = 0;
  if (b->len > 1)
    out(em, "  for (int i = 0; i < %d; i++) {\n", b->len);
  else
    out(em, "  {\n");
  v = expr(em, b->e);
  out(em, "    %s = %s;\n", entry(em, k, b->off, b->len > 1, 0), v.p);
  if (with_d) out(em, "    %s = %s;\n", entry(em, k, b->off, b->len > 1, 1), v.d ? v.d : "0.0");
  out(em, "  }\n");
}

static void tensor(emitter *em, int k) {
  const dsk_ir_tensor *t = &em->m->t[k];
  out(em, "  /* %s */\n", t->name);
  for (int j = 0; j < t->nblocks; j++) block(em, k, &t->blocks[j]);
}

/* Mark the time- and state-dependent intermediates that tensor k needs. */
static void mark_needed(const dsk_ir_model *m, int k, unsigned char *need) {
  for (int j = 0; j < m->nt; j++) {
    const dsk_ir_tensor *t = &m->t[j];
    if (!m->t[k].reads[j] || need[j] || t->role != ROLE_OTHER || t->dep < DEP_TIME) continue;
    need[j] = 1;
    mark_needed(m, j, need);
  }
}

/* The intermediates tensor k needs, in definition order, then k itself. */
static void tensor_with_deps(emitter *em, int k) {
  unsigned char *need = dsk_alloc(em->c, (size_t)em->m->nt);
  mark_needed(em->m, k, need);
  for (int j = 0; j < em->m->nt; j++)
    if (need[j]) tensor(em, j);
  tensor(em, k);
}

static void classed(emitter *em, int dep) {
  for (int k = 0; k < em->m->nt; k++)
    if (em->m->t[k].role == ROLE_OTHER && em->m->t[k].dep == dep) tensor(em, k);
}

static void header(emitter *em) {
  const dsk_ir_model *m = em->m;
  out(em, "/* generated by diffsol-pytorch from DiffSL: do not edit */\n");
  out(em, "#include <math.h>\n%s", DSK_GEN_TABLE_TEXT);
  out(em, "%s", dsk_fn_prelude());
  out(em, "static const char *const param_names[] = {");
  for (int k = 0; k < m->nparams; k++) out(em, "\"%s\", ", m->param_names[k]);
  out(em, "0};\nstatic const double default_params[] = {");
  for (int k = 0; k < m->nparams; k++) out(em, "%s, ", number(em, m->defaults[k]));
  out(em, "0.0};\n\n");
}

static void functions(emitter *em) {
  const dsk_ir_model *m = em->m;
  out(em, "static int init(double *ws) {\n  (void)ws;\n");
  classed(em, DEP_CONST);
  out(em, "  return 0;\n}\n\n");

  out(em, "static int set_inputs(const double *p, double *ws) {\n  (void)p; (void)ws;\n");
  if (m->iin >= 0)
    out(em, "  for (int i = 0; i < %d; i++) ws[%d + i] = p[i];\n", m->nparams,
        m->t[m->iin].ws_off);
  classed(em, DEP_INPUT);
  out(em, "  return 0;\n}\n\n");

  out(em, "static int u0(double *ws, double *u) {\n  (void)ws;\n");
  em->in_u0 = 1;
  tensor(em, m->iu);
  em->in_u0 = 0;
  out(em, "  return 0;\n}\n\n");

  out(em, "static int rhs(double t, const double *u, double *ws, double *f) {\n"
          "  (void)t; (void)u; (void)ws;\n");
  tensor_with_deps(em, m->iF);
  out(em, "  return 0;\n}\n\n");

  out(em, "static int rhs_jvp(double t, const double *u, const double *v, double *ws,\n"
          "                   double *dws, double *f, double *df) {\n"
          "  (void)t; (void)u; (void)v; (void)ws; (void)dws;\n");
  em->tangent = 1;
  tensor_with_deps(em, m->iF);
  em->tangent = 0;
  out(em, "  return 0;\n}\n\n");

  out(em, "static int out(double t, const double *u, double *ws, double *y) {\n"
          "  (void)t; (void)u; (void)ws;\n");
  if (m->iout >= 0)
    tensor_with_deps(em, m->iout);
  else
    out(em, "  for (int i = 0; i < %d; i++) y[i] = u[i];\n", m->nstates);
  out(em, "  return 0;\n}\n\n");
}

static void table(emitter *em) {
  const dsk_ir_model *m = em->m;
  out(em, "const dsk_gen_table *dsk_model_table(void);\n");
  out(em, "const dsk_gen_table *dsk_model_table(void) {\n"
          "  static const dsk_gen_table tab = {\n");
  out(em, "    %d, %d, %d, %d, 0, 0, %d,\n", DSK_GEN_ABI_VERSION, m->nstates, m->nparams, m->nout,
      m->nws);
  out(em, "    param_names, default_params,\n"
          "    init, set_inputs, u0, rhs, rhs_jvp, out,\n  };\n  return &tab;\n}\n");
}

char *dsk_emit_c(dsk_cctx *c, const dsk_ir_model *m) {
  emitter em;
  char *text;
  memset(&em, 0, sizeof em);
  em.c = c;
  em.m = m;
  header(&em);
  functions(&em);
  table(&em);
  text = malloc(em.len + 1);
  if (!text) {
    dsk_status_set(c->st, DSK_E_NOMEM, "out of memory emitting C");
    longjmp(c->on_error, 1);
  }
  memcpy(text, em.buf, em.len);
  text[em.len] = 0;
  return text;
}
