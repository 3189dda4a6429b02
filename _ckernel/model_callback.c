/*
 * model_callback.c - a dsk_model whose functions are C callbacks with a user
 * pointer (dsk_callbacks), e.g. the Python right-hand sides of
 * diffsol_pytorch.odeint, instead of generated code.
 *
 * The solvers only call through a dsk_gen_table, whose functions get the
 * workspace ws and no user pointer.  So the model's table functions find the
 * callbacks in the workspace: its last slot holds a pointer to them, written
 * by dsk_model_bind_ws when the solver initialises the workspace (solve.c).
 *
 * Workspace layout (doubles):
 *   [0]                   the model index N (unused: no resets)
 *   [1]                   nws
 *   [P, P + np)           p = [y0; theta], set by set_inputs
 *   [C]                   1 when the cache below is valid
 *   [C + 1]               t of the cache
 *   [C + 2, + n)          x of the cache
 *   [.., + n)             w of the cache
 *   [.., + ntheta)        thbar = (dF/dtheta)^T w
 *   [nws - 1]             pointer to the model's dsk_callbacks
 * The cache lets the adjoint's two products at one point (vjp_x of the
 * backward rhs, vjp_p of its quadrature: same t, x, w) cost one callback.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsk.h"
#include "model.h"

/* the pointer slot holds a pointer in one double */
typedef char dsk_ptr_fits_a_double[sizeof(void *) <= sizeof(double) ? 1 : -1];

struct dsk_cb_data {
  dsk_gen_table tab;
  dsk_callbacks cb;
  int P, C; /* workspace offsets */
};

/* ws[1] holds nws (as a double), so that a table function, which gets ws
   alone, finds the pointer slot at its end; p starts at ws[2]. */
#define SLOT_NWS 1
#define SLOT_P 2

static const struct dsk_cb_data *cbd(const double *ws) {
  const struct dsk_cb_data *d;
  memcpy(&d, &ws[(int)ws[SLOT_NWS] - 1], sizeof d);
  return d;
}

static int cb_init(double *ws) {
  (void)ws; /* sizes and pointer: dsk_model_bind_ws */
  return 0;
}

static int cb_set_inputs(const double *p, double *ws) {
  const struct dsk_cb_data *d = cbd(ws);
  memcpy(ws + d->P, p, (size_t)d->tab.nparams * sizeof *p);
  ws[d->C] = 0.0; /* the cache is stale */
  return 0;
}

static int cb_u0(double t, const double *x, double *ws, double *y) {
  const struct dsk_cb_data *d = cbd(ws);
  (void)t, (void)x;
  memcpy(y, ws + d->P, (size_t)d->cb.nstates * sizeof *y);
  return 0;
}

static int cb_u0_vjp_p(double t, const double *x, const double *w, double *ws, double *bws,
                       double *pbar) {
  const struct dsk_cb_data *d = cbd(ws);
  int n = d->cb.nstates;
  (void)t, (void)x, (void)bws;
  memcpy(pbar, w, (size_t)n * sizeof *pbar);
  memset(pbar + n, 0, (size_t)d->cb.ntheta * sizeof *pbar);
  return 0;
}

static int finite(const double *v, int n) {
  for (int i = 0; i < n; i++)
    if (!isfinite(v[i])) return 0;
  return 1;
}

static int cb_rhs(double t, const double *x, double *ws, double *y) {
  const struct dsk_cb_data *d = cbd(ws);
  int rc = d->cb.rhs(d->cb.user, t, x, ws + d->P + d->cb.nstates, y);
  if (rc == 0 && !finite(y, d->cb.nstates)) rc = 1;
  return rc;
}

static int cb_rhs_jvp_x(double t, const double *x, const double *dx, double *ws, double *dws,
                        double *y, double *dy) {
  const struct dsk_cb_data *d = cbd(ws);
  (void)dws;
  return d->cb.jvp(d->cb.user, t, x, ws + d->P + d->cb.nstates, dx, y, dy);
}

/* (dF/dx)^T w and (dF/dtheta)^T w in one callback, the latter cached */
static int vjp_both(const struct dsk_cb_data *d, double t, const double *x, const double *w,
                    double *ws, double *xbar) {
  int n = d->cb.nstates, nth = d->cb.ntheta;
  double *c = ws + d->C, *cx = c + 2, *cw = cx + n, *cth = cw + n;
  c[0] = 0.0;
  int rc = d->cb.vjp(d->cb.user, t, x, ws + d->P + n, w, xbar, cth);
  if (rc) return rc;
  c[0] = 1.0;
  c[1] = t;
  memcpy(cx, x, (size_t)n * sizeof *x);
  memcpy(cw, w, (size_t)n * sizeof *w);
  (void)nth;
  return 0;
}

static int cb_rhs_vjp_x(double t, const double *x, const double *w, double *ws, double *bws,
                        double *xbar) {
  (void)bws;
  return vjp_both(cbd(ws), t, x, w, ws, xbar);
}

static int cb_rhs_vjp_p(double t, const double *x, const double *w, double *ws, double *bws,
                        double *pbar) {
  const struct dsk_cb_data *d = cbd(ws);
  int n = d->cb.nstates, nth = d->cb.ntheta;
  double *c = ws + d->C, *cx = c + 2, *cw = cx + n, *cth = cw + n;
  if (!(c[0] == 1.0 && c[1] == t && memcmp(cx, x, (size_t)n * sizeof *x) == 0 &&
        memcmp(cw, w, (size_t)n * sizeof *w) == 0)) {
    int rc = vjp_both(d, t, x, w, ws, bws); /* bws (nws >= n) takes xbar */
    if (rc) return rc;
  }
  memset(pbar, 0, (size_t)n * sizeof *pbar);
  memcpy(pbar + n, cth, (size_t)nth * sizeof *pbar);
  return 0;
}

/* out = u (the adjoints read its products) */
static int cb_out(double t, const double *x, double *ws, double *y) {
  (void)t;
  memcpy(y, x, (size_t)cbd(ws)->cb.nstates * sizeof *y);
  return 0;
}

static int cb_out_jvp_x(double t, const double *x, const double *dx, double *ws, double *dws,
                        double *y, double *dy) {
  int n = cbd(ws)->cb.nstates;
  (void)t, (void)dws;
  memcpy(y, x, (size_t)n * sizeof *y);
  memcpy(dy, dx, (size_t)n * sizeof *dy);
  return 0;
}

static int cb_out_vjp_x(double t, const double *x, const double *w, double *ws, double *bws,
                        double *xbar) {
  (void)t, (void)x, (void)bws;
  memcpy(xbar, w, (size_t)cbd(ws)->cb.nstates * sizeof *xbar);
  return 0;
}

static int cb_out_vjp_p(double t, const double *x, const double *w, double *ws, double *bws,
                        double *pbar) {
  (void)t, (void)x, (void)w, (void)bws;
  memset(pbar, 0, (size_t)cbd(ws)->tab.nparams * sizeof *pbar);
  return 0;
}

static int cb_stop(double t, const double *x, double *ws, double *y) {
  const struct dsk_cb_data *d = cbd(ws);
  return d->cb.stop(d->cb.user, t, x, ws + d->P + d->cb.nstates, y);
}

int dsk_model_from_callbacks(const dsk_callbacks *cb, dsk_model **out, dsk_status *st) {
  dsk_status_clear(st);
  if (!out) return dsk_status_set(st, DSK_E_ARG, "dsk_model_from_callbacks: out is NULL");
  *out = NULL;
  if (!cb || !cb->rhs)
    return dsk_status_set(st, DSK_E_ARG, "dsk_model_from_callbacks: no rhs callback");
  if (cb->nstates < 1 || cb->ntheta < 0 || cb->nstop < 0)
    return dsk_status_set(st, DSK_E_ARG,
                          "dsk_model_from_callbacks: bad sizes (nstates %d, ntheta %d, nstop %d)",
                          cb->nstates, cb->ntheta, cb->nstop);
  if (cb->nstop > 0 && !cb->stop)
    return dsk_status_set(st, DSK_E_ARG, "dsk_model_from_callbacks: nstop > 0 without stop");
  long n = cb->nstates, nth = cb->ntheta;
  long nws = SLOT_P + (n + nth) + 2 + 2 * n + nth + 1;
  if (n + nth > 100000000L || nws > 2000000000L)
    return dsk_status_set(st, DSK_E_ARG, "dsk_model_from_callbacks: model too large");
  dsk_model *m = calloc(1, sizeof *m);
  struct dsk_cb_data *d = calloc(1, sizeof *d);
  if (!m || !d) {
    free(m), free(d);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  }
  d->cb = *cb;
  d->P = SLOT_P;
  d->C = SLOT_P + (int)(n + nth);
  dsk_gen_table *t = &d->tab;
  t->abi_version = DSK_GEN_ABI_VERSION;
  t->nstates = (int)n;
  t->nparams = (int)(n + nth);
  t->nout = (int)n;
  t->nstop = cb->nstop;
  t->has_mass = 0;
  t->nws = (int)nws;
  t->n_slot = 0;
  t->param_names = NULL;
  t->default_params = NULL;
  t->init = cb_init;
  t->set_inputs = cb_set_inputs;
  t->eval[DSK_FN_U0] = cb_u0;
  t->vjp_p[DSK_FN_U0] = cb_u0_vjp_p;
  t->eval[DSK_FN_RHS] = cb_rhs;
  if (cb->jvp) t->jvp_x[DSK_FN_RHS] = cb_rhs_jvp_x;
  if (cb->vjp) {
    t->vjp_x[DSK_FN_RHS] = cb_rhs_vjp_x;
    t->vjp_p[DSK_FN_RHS] = cb_rhs_vjp_p;
  }
  t->eval[DSK_FN_OUT] = cb_out;
  t->jvp_x[DSK_FN_OUT] = cb_out_jvp_x;
  t->vjp_x[DSK_FN_OUT] = cb_out_vjp_x;
  t->vjp_p[DSK_FN_OUT] = cb_out_vjp_p;
  if (cb->nstop > 0) t->eval[DSK_FN_STOP] = cb_stop;
  m->tab = t;
  m->cb = d;
  /* a dense Jacobian pattern with jac; without, the Newton iteration is
     matrix-free (solve.c: SPGMR only) and the pattern, the diagonal, is a
     placeholder of size n */
  int rc;
  if (cb->jac) {
    rc = dsk_model_attach_patterns(m, NULL, NULL, st);
  } else {
    dsk_sparsity diag;
    diag.nrows = diag.ncols = diag.nnz = (int)n;
    diag.colptr = malloc(((size_t)n + 1) * sizeof(int));
    diag.rowidx = malloc((size_t)n * sizeof(int));
    if (!diag.colptr || !diag.rowidx) {
      free(diag.colptr), free(diag.rowidx), free(d), free(m);
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
    }
    for (int j = 0; j <= n; j++) diag.colptr[j] = j;
    for (int j = 0; j < n; j++) diag.rowidx[j] = j;
    rc = dsk_model_attach_patterns(m, &diag, NULL, st);
  }
  if (rc != DSK_OK) {
    free(d), free(m);
    return rc;
  }
  *out = m;
  return DSK_OK;
}

const dsk_callbacks *dsk_model_callbacks(const dsk_model *m) {
  return m && m->cb ? &m->cb->cb : NULL;
}

void dsk_model_bind_ws(const dsk_model *m, double *ws) {
  if (!m || !m->cb) return;
  const struct dsk_cb_data *d = m->cb;
  ws[SLOT_NWS] = (double)d->tab.nws;
  memcpy(&ws[d->tab.nws - 1], &d, sizeof d);
}

int dsk_model_cb_jac(const dsk_model *m, double t, const double *u, const double *ws,
                     double *values) {
  const struct dsk_cb_data *d = m->cb;
  return d->cb.jac(d->cb.user, t, u, ws + d->P + d->cb.nstates, values);
}

int dsk_model_cb_has_jac(const dsk_model *m) { return m && m->cb && m->cb->cb.jac; }

void dsk_model_cb_free(dsk_model *m) {
  free(m->cb);
  m->cb = NULL;
}
