/*
 * jac.c - Jacobians at run time: the sparsity patterns the translator derived
 * (or a dense one), a greedy column colouring of the rhs Jacobian, and its
 * values from one tangent sweep per colour.  A tridiagonal Jacobian costs 3
 * sweeps whatever its size, and no dense matrix is ever built.
 */
#include <stdlib.h>
#include <string.h>

#include "dsk.h"
#include "model.h"

void dsk_sparsity_free(dsk_sparsity *s) {
  if (!s) return;
  free(s->colptr);
  free(s->rowidx);
  memset(s, 0, sizeof *s);
}

static int dense_pattern(dsk_sparsity *s, int n, dsk_status *st) {
  size_t nnz = (size_t)n * (size_t)n;
  memset(s, 0, sizeof *s);
  if (nnz > 100000000u)
    return dsk_status_set(st, DSK_E_NOMEM, "a dense Jacobian of %d states is too large", n);
  s->colptr = malloc(((size_t)n + 1) * sizeof *s->colptr);
  s->rowidx = malloc((nnz ? nnz : 1) * sizeof *s->rowidx);
  if (!s->colptr || !s->rowidx) {
    dsk_sparsity_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for a dense Jacobian pattern");
  }
  s->nrows = s->ncols = n;
  s->nnz = (int)nnz;
  for (int j = 0; j <= n; j++) s->colptr[j] = j * n;
  for (size_t k = 0; k < nnz; k++) s->rowidx[k] = (int)(k % (size_t)n);
  return DSK_OK;
}

/* Greedy colouring: column j takes the smallest colour not used by a column
   that shares a row with it.  Returns DSK_OK or DSK_E_NOMEM. */
static int color_columns(const dsk_sparsity *J, dsk_coloring *col, dsk_status *st) {
  int n = J->ncols, nr = J->nrows, rc = DSK_OK;
  int *color = malloc(((size_t)n + 1) * sizeof *color);
  int *forbid = malloc(((size_t)n + 1) * sizeof *forbid);
  int *rptr = calloc((size_t)nr + 2, sizeof *rptr);
  int *rcol = malloc(((size_t)J->nnz + 1) * sizeof *rcol);
  int *count = NULL;
  if (!color || !forbid || !rptr || !rcol) {
    rc = dsk_status_set(st, DSK_E_NOMEM, "out of memory colouring the Jacobian");
    goto done;
  }
  /* rows -> columns */
  for (int k = 0; k < J->nnz; k++) rptr[J->rowidx[k] + 2]++;
  for (int i = 0; i < nr; i++) rptr[i + 2] += rptr[i + 1];
  for (int j = 0; j < n; j++)
    for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++) rcol[rptr[J->rowidx[k] + 1]++] = j;
  col->n = 0;
  if ((long)J->nnz == (long)n * nr) {
    for (int j = 0; j < n; j++) color[j] = j; /* dense: one column per colour */
    col->n = n;
  } else {
    for (int c = 0; c <= n; c++) forbid[c] = -1;
    for (int j = 0; j < n; j++) {
      int c = 0;
      for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++) {
        int i = J->rowidx[k];
        for (int q = rptr[i]; q < rptr[i + 1]; q++)
          if (rcol[q] < j) forbid[color[rcol[q]]] = j;
      }
      while (forbid[c] == j) c++;
      color[j] = c;
      if (c + 1 > col->n) col->n = c + 1;
    }
  }
  count = calloc((size_t)col->n + 2, sizeof *count);
  col->ptr = calloc((size_t)col->n + 1, sizeof *col->ptr);
  col->cols = malloc(((size_t)n + 1) * sizeof *col->cols);
  if (!count || !col->ptr || !col->cols) {
    rc = dsk_status_set(st, DSK_E_NOMEM, "out of memory colouring the Jacobian");
    goto done;
  }
  for (int j = 0; j < n; j++) count[color[j] + 1]++;
  for (int c = 0; c < col->n; c++) count[c + 1] += count[c];
  memcpy(col->ptr, count, ((size_t)col->n + 1) * sizeof *count);
  for (int j = 0; j < n; j++) col->cols[count[color[j]]++] = j;
done:
  free(color), free(forbid), free(rptr), free(rcol), free(count);
  return rc;
}

int dsk_model_attach_patterns(dsk_model *m, dsk_sparsity *jac, dsk_sparsity *mass,
                              dsk_status *st) {
  int rc = DSK_OK;
  int n = m->tab->nstates;
  dsk_model_free_patterns(m);
  if (jac && jac->colptr && jac->ncols == n && jac->nrows == n) {
    m->jac = *jac;
    memset(jac, 0, sizeof *jac);
  } else {
    rc = dense_pattern(&m->jac, n, st);
  }
  if (mass && mass->colptr && mass->ncols == n && mass->nrows == n) {
    m->mass = *mass;
    memset(mass, 0, sizeof *mass);
  } else if (rc == DSK_OK && m->tab->has_mass) {
    rc = dense_pattern(&m->mass, n, st); /* M from C text alone: dense */
  }
  if (rc == DSK_OK) rc = color_columns(&m->jac, &m->jac_col, st);
  if (rc == DSK_OK && m->mass.colptr) rc = color_columns(&m->mass, &m->mass_col, st);
  if (rc != DSK_OK) dsk_model_free_patterns(m);
  dsk_sparsity_free(jac);
  dsk_sparsity_free(mass);
  return rc;
}

void dsk_model_free_patterns(dsk_model *m) {
  dsk_sparsity_free(&m->jac);
  dsk_sparsity_free(&m->mass);
  free(m->jac_col.ptr);
  free(m->jac_col.cols);
  free(m->mass_col.ptr);
  free(m->mass_col.cols);
  memset(&m->jac_col, 0, sizeof m->jac_col);
  memset(&m->mass_col, 0, sizeof m->mass_col);
}

const dsk_sparsity *dsk_model_jac_pattern(const dsk_model *m) {
  return m && m->jac.colptr ? &m->jac : NULL;
}

const dsk_sparsity *dsk_model_mass_pattern(const dsk_model *m) { return m ? &m->mass : NULL; }

int dsk_model_jac_ncolors(const dsk_model *m) { return m ? m->jac_col.n : 0; }

/* values[k] for the pattern P from one call of `sweep` per colour: the
   sweep returns in out the product of the matrix with v (the sum of the
   colour's unit vectors). */
typedef int (*sweep_fn)(const dsk_model *m, const void *ctx, const double *v, double *out);

static int coloured_values(const dsk_model *m, const dsk_sparsity *P, const dsk_coloring *col,
                           sweep_fn sweep, const void *ctx, double *v, double *out,
                           double *values) {
  memset(v, 0, (size_t)P->ncols * sizeof *v);
  for (int c = 0; c < col->n; c++) {
    int rc;
    for (int q = col->ptr[c]; q < col->ptr[c + 1]; q++) v[col->cols[q]] = 1.0;
    rc = sweep(m, ctx, v, out);
    for (int q = col->ptr[c]; q < col->ptr[c + 1]; q++) {
      int j = col->cols[q];
      v[j] = 0.0;
      for (int k = P->colptr[j]; k < P->colptr[j + 1]; k++) values[k] = out[P->rowidx[k]];
    }
    if (rc) return rc;
  }
  return 0;
}

typedef struct sweep_ctx {
  double t;
  const double *u;
  double *ws, *dws, *f;
} sweep_ctx;

static int rhs_sweep(const dsk_model *m, const void *ctx, const double *v, double *out) {
  const sweep_ctx *c = ctx;
  return m->tab->jvp_x[DSK_FN_RHS](c->t, c->u, v, c->ws, c->dws, c->f, out);
}

static int mass_sweep(const dsk_model *m, const void *ctx, const double *v, double *out) {
  const sweep_ctx *c = ctx;
  return m->tab->eval[DSK_FN_MASS](c->t, v, c->ws, out);
}

int dsk_model_jac_values(const dsk_model *m, double t, const double *u, double *ws, double *dws,
                         double *work, double *values) {
  int n = m->jac.ncols;
  sweep_ctx c = {t, u, ws, dws, work + n};
  if (dsk_model_cb_has_jac(m)) return dsk_model_cb_jac(m, t, u, ws, values); /* dense */
  if (!m->tab->jvp_x[DSK_FN_RHS]) return -1; /* refused by dsk_solver_create */
  return coloured_values(m, &m->jac, &m->jac_col, rhs_sweep, &c, work, work + 2 * (size_t)n,
                         values);
}

int dsk_model_mass_values(const dsk_model *m, double t, double *ws, double *work,
                          double *values) {
  sweep_ctx c = {t, NULL, ws, NULL, NULL};
  if (!m->mass.colptr || !m->tab->eval[DSK_FN_MASS]) return 0;
  return coloured_values(m, &m->mass, &m->mass_col, mass_sweep, &c, work,
                         work + m->mass.ncols, values);
}
