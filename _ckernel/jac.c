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
static int color_columns(dsk_model *m, dsk_status *st) {
  const dsk_sparsity *J = &m->jac;
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
  m->ncolors = 0;
  if ((long)J->nnz == (long)n * nr) {
    for (int j = 0; j < n; j++) color[j] = j; /* dense: one column per colour */
    m->ncolors = n;
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
      if (c + 1 > m->ncolors) m->ncolors = c + 1;
    }
  }
  count = calloc((size_t)m->ncolors + 2, sizeof *count);
  m->color_ptr = calloc((size_t)m->ncolors + 1, sizeof *m->color_ptr);
  m->color_cols = malloc(((size_t)n + 1) * sizeof *m->color_cols);
  if (!count || !m->color_ptr || !m->color_cols) {
    rc = dsk_status_set(st, DSK_E_NOMEM, "out of memory colouring the Jacobian");
    goto done;
  }
  for (int j = 0; j < n; j++) count[color[j] + 1]++;
  for (int c = 0; c < m->ncolors; c++) count[c + 1] += count[c];
  memcpy(m->color_ptr, count, ((size_t)m->ncolors + 1) * sizeof *count);
  for (int j = 0; j < n; j++) m->color_cols[count[color[j]]++] = j;
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
  if (mass) {
    m->mass = *mass;
    memset(mass, 0, sizeof *mass);
  }
  if (rc == DSK_OK) rc = color_columns(m, st);
  if (rc != DSK_OK) dsk_model_free_patterns(m);
  dsk_sparsity_free(jac);
  dsk_sparsity_free(mass);
  return rc;
}

void dsk_model_free_patterns(dsk_model *m) {
  dsk_sparsity_free(&m->jac);
  dsk_sparsity_free(&m->mass);
  free(m->color_ptr);
  free(m->color_cols);
  m->color_ptr = m->color_cols = NULL;
  m->ncolors = 0;
}

const dsk_sparsity *dsk_model_jac_pattern(const dsk_model *m) {
  return m && m->jac.colptr ? &m->jac : NULL;
}

const dsk_sparsity *dsk_model_mass_pattern(const dsk_model *m) { return m ? &m->mass : NULL; }

int dsk_model_jac_ncolors(const dsk_model *m) { return m ? m->ncolors : 0; }

int dsk_model_jac_values(const dsk_model *m, double t, const double *u, double *ws, double *dws,
                         double *work, double *values) {
  const dsk_sparsity *J = &m->jac;
  int n = J->ncols;
  double *v = work, *f = work + n, *df = work + 2 * (size_t)n;
  memset(v, 0, (size_t)n * sizeof *v);
  for (int c = 0; c < m->ncolors; c++) {
    int rc;
    for (int q = m->color_ptr[c]; q < m->color_ptr[c + 1]; q++) v[m->color_cols[q]] = 1.0;
    rc = m->tab->jvp_x[DSK_FN_RHS](t, u, v, ws, dws, f, df);
    for (int q = m->color_ptr[c]; q < m->color_ptr[c + 1]; q++) {
      int j = m->color_cols[q];
      v[j] = 0.0;
      for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++) values[k] = df[J->rowidx[k]];
    }
    if (rc) return rc;
  }
  return 0;
}
