/*
 * linsol.c - linear algebra of the implicit solvers: the Newton-matrix
 * pattern, the matrices and linear solvers (SUNDIALS dense, LAPACK dense,
 * KLU sparse), and their values from the model.
 *
 * The Newton matrix of every integrator is a combination cj J + cm M of the
 * Jacobian J = dF/du and the mass matrix M (CVODES: I - gamma J, IDAS:
 * J - cj M, ARKODE: M - gamma J).  Its pattern U is the union of the
 * patterns of J, M and the diagonal, so that the SUNDIALS matrix operations
 * (ScaleAddI, ScaleAdd of two matrices of pattern U) work in place and a
 * sparse matrix is never reallocated.  J's values come from the coloured
 * tangent sweeps of jac.c; M's from one call of eval[DSK_FN_MASS] per colour
 * of M's pattern (M v is linear in v and does not depend on u).
 *
 * The LAPACK solver is a SUNLinearSolver of our own (Debian's SUNDIALS has
 * no sunlinsol_lapackdense): dgetrf/dgetrs of OpenBLAS on the column-major
 * data of a SUNDenseMatrix.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openblas_config.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunlinsol/sunlinsol_spgmr.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "solve.h"

#ifdef OPENBLAS_USE64BITINT
#error "the LAPACK prototypes below assume 32-bit LAPACK integers (OpenBLAS LP64)"
#endif

/* LAPACK (Fortran) prototypes; the trailing size_t is the hidden length of
   the character argument (gfortran convention; harmless otherwise). */
extern void dgetrf_(const int *m, const int *n, double *a, const int *lda, int *ipiv, int *info);
extern void dgetrs_(const char *trans, const int *n, const int *nrhs, const double *a,
                    const int *lda, const int *ipiv, double *b, const int *ldb, int *info,
                    size_t trans_len);

/* ---- patterns ---------------------------------------------------------------- */

/* The model's mass pattern (jac.c: from the IR, or dense for C-only models). */
static const dsk_sparsity *mass_pattern(dsk_solver *s) { return s->Mp; }

int dsk_lin_patterns(dsk_solver *s, dsk_status *st) {
  const dsk_sparsity *J = dsk_model_jac_pattern(s->model);
  const dsk_sparsity *M = NULL;
  int n = s->n;
  if (s->has_mass) {
    s->Mp = dsk_model_mass_pattern(s->model);
    if (!s->Mp || !s->Mp->colptr || s->Mp->ncols != n || s->Mp->nrows != n)
      return dsk_status_set(st, DSK_E_ARG, "the model has M but no mass pattern");
    M = s->Mp;
    s->mvals = calloc((size_t)M->nnz + 1, sizeof(double));
    s->mwork = calloc(2 * (size_t)n, sizeof(double));
    if (!s->mvals || !s->mwork) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  }
  /* count the union column by column (rows of J and M are sorted) */
  long nnz = 0;
  s->U.colptr = malloc(((size_t)n + 1) * sizeof(int));
  s->jmap = malloc(((size_t)J->nnz + 1) * sizeof(int));
  s->mmap = malloc(((size_t)(M ? M->nnz : 0) + 1) * sizeof(int));
  s->diagmap = malloc(((size_t)n + 1) * sizeof(int));
  if (!s->U.colptr || !s->jmap || !s->mmap || !s->diagmap)
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the Newton-matrix pattern");
  for (int pass = 0; pass < 2; pass++) {
    nnz = 0;
    for (int j = 0; j < n; j++) {
      int a = J->colptr[j], ae = J->colptr[j + 1];
      int b = M ? M->colptr[j] : 0, be = M ? M->colptr[j + 1] : 0;
      int d = 0; /* diagonal done */
      if (pass) s->U.colptr[j] = (int)nnz;
      for (;;) {
        int ra = a < ae ? J->rowidx[a] : n, rb = b < be ? M->rowidx[b] : n, rd = d ? n : j;
        int r = ra < rb ? ra : rb;
        if (rd < r) r = rd;
        if (r >= n) break;
        if (pass) {
          s->U.rowidx[nnz] = r;
          if (ra == r) s->jmap[a] = (int)nnz;
          if (rb == r) s->mmap[b] = (int)nnz;
          if (rd == r) s->diagmap[j] = (int)nnz;
        }
        if (ra == r) a++;
        if (rb == r) b++;
        if (rd == r) d = 1;
        nnz++;
      }
    }
    if (!pass) {
      if (nnz > 2147483000L)
        return dsk_status_set(st, DSK_E_NOMEM, "the Newton matrix has too many non-zeros");
      s->U.rowidx = malloc(((size_t)nnz + 1) * sizeof(int));
      if (!s->U.rowidx)
        return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the Newton-matrix pattern");
    }
  }
  s->U.colptr[n] = (int)nnz;
  s->U.nnz = (int)nnz;
  s->U.nrows = s->U.ncols = n;
  return DSK_OK;
}

/* ---- values ---------------------------------------------------------------------- */

int dsk_lin_eval_jac(dsk_solver *s, double t, const double *u) {
  return dsk_model_jac_values(s->model, t, u, s->ws, s->dws, s->jwork, s->jvals);
}

int dsk_lin_eval_mass(dsk_solver *s, double t) {
  return dsk_model_mass_values(s->model, t, s->ws, s->mwork, s->mvals);
}

double dsk_lin_jac_norm1(const dsk_solver *s) {
  const dsk_sparsity *J = dsk_model_jac_pattern(s->model);
  double norm = 0.0;
  for (int j = 0; j < s->n; j++) {
    double col = 0.0;
    for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++) col += fabs(s->jvals[k]);
    if (col > norm) norm = col;
  }
  return norm;
}

void dsk_lin_assemble(dsk_solver *s, SUNMatrix A, double cj, double cm) {
  const dsk_sparsity *J = dsk_model_jac_pattern(s->model);
  const dsk_sparsity *M = s->has_mass ? mass_pattern(s) : NULL;
  if (SUNMatGetID(A) == SUNMATRIX_DENSE) {
    SUNMatZero(A);
    for (int j = 0; j < s->n; j++) {
      double *col = SM_COLUMN_D(A, j);
      if (cj != 0.0)
        for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++) col[J->rowidx[k]] += cj * s->jvals[k];
      if (M && cm != 0.0)
        for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++) col[M->rowidx[k]] += cm * s->mvals[k];
    }
    return;
  }
  /* sparse CSC of pattern U (created with room for U.nnz; never shrinks) */
  if (SM_NNZ_S(A) < (sunindextype)s->U.nnz) SUNSparseMatrix_Reallocate(A, (sunindextype)s->U.nnz);
  sunindextype *cp = SM_INDEXPTRS_S(A), *ri = SM_INDEXVALS_S(A);
  double *x = SM_DATA_S(A);
  for (int j = 0; j <= s->n; j++) cp[j] = (sunindextype)s->U.colptr[j];
  for (int k = 0; k < s->U.nnz; k++) {
    ri[k] = (sunindextype)s->U.rowidx[k];
    x[k] = 0.0;
  }
  if (cj != 0.0)
    for (int k = 0; k < J->nnz; k++) x[s->jmap[k]] += cj * s->jvals[k];
  if (M && cm != 0.0)
    for (int k = 0; k < M->nnz; k++) x[s->mmap[k]] += cm * s->mvals[k];
}

/* Zero columns are algebraic states.  Singular when a column or a row is
   zero, or (up to 400 states) when LU finds a zero pivot. */
int dsk_lin_mass_singular(dsk_solver *s, int *algebraic) {
  const dsk_sparsity *M = mass_pattern(s);
  int n = s->n, zero_cols = 0, zero_rows = 0, singular = 0;
  char *rowseen = calloc((size_t)n + 1, 1);
  for (int j = 0; j < n; j++) {
    int nz = 0;
    for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++)
      if (s->mvals[k] != 0.0) {
        nz = 1;
        if (rowseen) rowseen[M->rowidx[k]] = 1;
      }
    if (!nz) zero_cols++;
  }
  if (rowseen)
    for (int i = 0; i < n; i++) zero_rows += !rowseen[i];
  free(rowseen);
  *algebraic = zero_cols;
  if (zero_cols || zero_rows) return 1;
  if (n <= 400) {
    double *a = calloc((size_t)n * (size_t)n, sizeof *a);
    int *ipiv = malloc((size_t)n * sizeof *ipiv);
    if (a && ipiv) {
      int info = 0;
      for (int j = 0; j < n; j++)
        for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++)
          a[(size_t)j * (size_t)n + (size_t)M->rowidx[k]] = s->mvals[k];
      dgetrf_(&n, &n, a, &n, ipiv, &info);
      singular = info > 0;
    }
    free(a);
    free(ipiv);
  }
  return singular;
}

/* ---- LAPACK dense linear solver ----------------------------------------------- */

typedef struct lapack_content {
  int n;
  int *ipiv;
  sunindextype last_flag;
} lapack_content;

#define LAP(S) ((lapack_content *)(S)->content)

static SUNLinearSolver_Type lap_gettype(SUNLinearSolver S) {
  (void)S;
  return SUNLINEARSOLVER_DIRECT;
}

static SUNLinearSolver_ID lap_getid(SUNLinearSolver S) {
  (void)S;
  return SUNLINEARSOLVER_CUSTOM;
}

static int lap_initialize(SUNLinearSolver S) {
  LAP(S)->last_flag = 0;
  return SUNLS_SUCCESS;
}

/* LU in place; a zero pivot is a recoverable failure (the integrator retries
   with a smaller step), as in SUNLinSol_Dense. */
static int lap_setup(SUNLinearSolver S, SUNMatrix A) {
  lapack_content *c = LAP(S);
  int n = (int)SM_COLUMNS_D(A), lda = (int)SM_ROWS_D(A), info = 0;
  if (SUNMatGetID(A) != SUNMATRIX_DENSE || n != c->n || SM_ROWS_D(A) != n) {
    c->last_flag = -1;
    return SUNLS_ILL_INPUT;
  }
  dgetrf_(&n, &n, SM_DATA_D(A), &lda, c->ipiv, &info);
  c->last_flag = info;
  if (info > 0) return SUNLS_LUFACT_FAIL;
  return info < 0 ? SUNLS_PACKAGE_FAIL_UNREC : SUNLS_SUCCESS;
}

static int lap_solve(SUNLinearSolver S, SUNMatrix A, N_Vector x, N_Vector b, realtype tol) {
  lapack_content *c = LAP(S);
  int n = c->n, lda = n, one = 1, info = 0;
  (void)tol;
  if (x != b) N_VScale(1.0, b, x);
  dgetrs_("N", &n, &one, SM_DATA_D(A), &lda, c->ipiv, NV_DATA_S(x), &n, &info, 1);
  c->last_flag = info;
  return info ? SUNLS_PACKAGE_FAIL_UNREC : SUNLS_SUCCESS;
}

static sunindextype lap_lastflag(SUNLinearSolver S) { return LAP(S)->last_flag; }

static int lap_space(SUNLinearSolver S, long *lrw, long *liw) {
  *lrw = 0;
  *liw = 2 + LAP(S)->n;
  return SUNLS_SUCCESS;
}

static int lap_free(SUNLinearSolver S) {
  if (!S) return SUNLS_SUCCESS;
  if (S->content) {
    free(LAP(S)->ipiv);
    free(S->content);
    S->content = NULL;
  }
  SUNLinSolFreeEmpty(S);
  return SUNLS_SUCCESS;
}

SUNLinearSolver dsk_linsol_lapack(N_Vector y, SUNMatrix A, SUNContext ctx) {
  if (!y || !A || SUNMatGetID(A) != SUNMATRIX_DENSE) return NULL;
  sunindextype n = SM_COLUMNS_D(A);
  if (SM_ROWS_D(A) != n || N_VGetLength(y) != n || n > 2147483647) return NULL;
  SUNLinearSolver S = SUNLinSolNewEmpty(ctx);
  if (!S) return NULL;
  S->ops->gettype = lap_gettype;
  S->ops->getid = lap_getid;
  S->ops->initialize = lap_initialize;
  S->ops->setup = lap_setup;
  S->ops->solve = lap_solve;
  S->ops->lastflag = lap_lastflag;
  S->ops->space = lap_space;
  S->ops->free = lap_free;
  lapack_content *c = calloc(1, sizeof *c);
  if (!c) {
    SUNLinSolFreeEmpty(S);
    return NULL;
  }
  S->content = c;
  c->n = (int)n;
  c->ipiv = malloc(((size_t)n + 1) * sizeof *c->ipiv);
  if (!c->ipiv) {
    lap_free(S);
    return NULL;
  }
  return S;
}

/* ---- matrices and solvers -------------------------------------------------------- */

static int make_pair(dsk_solver *s, SUNMatrix *A, SUNLinearSolver *LS, dsk_status *st) {
  sunindextype n = (sunindextype)s->n;
  if (s->linsol == DSK_LS_FIXEDPOINT) { /* no linear system (solve_cvodes.c) */
    *A = NULL, *LS = NULL;
    return DSK_OK;
  }
  if (s->linsol == DSK_LS_SPGMR) {
    *A = NULL;
    *LS = SUNLinSol_SPGMR(s->y, SUN_PREC_NONE, 0, s->ctx);
    if (!*LS) return dsk_status_set(st, DSK_E_NOMEM, "SUNLinSol_SPGMR failed");
    return DSK_OK;
  }
  if (s->linsol == DSK_LS_KLU) {
    *A = SUNSparseMatrix(n, n, (sunindextype)s->U.nnz, CSC_MAT, s->ctx);
    if (!*A) return dsk_status_set(st, DSK_E_NOMEM, "SUNSparseMatrix failed");
    /* start from a valid pattern: KLU's first symbolic analysis reads it */
    dsk_lin_assemble(s, *A, 0.0, 0.0);
    *LS = SUNLinSol_KLU(s->y, *A, s->ctx);
    if (!*LS) return dsk_status_set(st, DSK_E_NOMEM, "SUNLinSol_KLU failed");
    /* AMD on A + A^T (KLU's own default) instead of SUNDIALS' COLAMD: our
       Newton matrices are structurally symmetric or nearly so (diffusion,
       kinetics), where AMD gives much less fill-in: heat2d[100] factors and
       solves in 0.56x the time, robertson_grid[10] 0.88x. */
    if (SUNLinSol_KLUSetOrdering(*LS, 0) != SUNLS_SUCCESS)
      return dsk_status_set(st, DSK_E_SOLVER, "SUNLinSol_KLUSetOrdering failed");
    return DSK_OK;
  }
  *A = SUNDenseMatrix(n, n, s->ctx);
  if (!*A) return dsk_status_set(st, DSK_E_NOMEM, "SUNDenseMatrix failed");
  if (s->linsol == DSK_LS_LAPACK) {
    *LS = dsk_linsol_lapack(s->y, *A, s->ctx);
    if (!*LS) return dsk_status_set(st, DSK_E_NOMEM, "the LAPACK linear solver could not be created");
  } else {
    *LS = SUNLinSol_Dense(s->y, *A, s->ctx);
    if (!*LS) return dsk_status_set(st, DSK_E_NOMEM, "SUNLinSol_Dense failed");
  }
  return DSK_OK;
}

int dsk_lin_create(dsk_solver *s, int with_mass, dsk_status *st) {
  int rc = make_pair(s, &s->A, &s->LS, st);
  if (rc == DSK_OK && with_mass) rc = make_pair(s, &s->Mmat, &s->MLS, st);
  if (rc == DSK_OK) dsk_mat_tune(s->A), dsk_mat_tune(s->Mmat); /* nvec_ops.c */
  return rc;
}

int dsk_lin_jtimes(N_Vector v, N_Vector Jv, double t, N_Vector y, N_Vector fy, void *data,
                   N_Vector tmp) {
  dsk_solver *s = data;
  (void)fy;
  int rc = s->tab->jvp_x[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(v), s->ws, s->dws, NV_DATA_S(tmp),
                                     NV_DATA_S(Jv));
  return rc ? dsk_solver_model_failed(s, "rhs (Jacobian-vector product)", rc, t) : 0;
}

void dsk_lin_free(dsk_solver *s) {
  if (s->MLS) SUNLinSolFree(s->MLS);
  if (s->Mmat) SUNMatDestroy(s->Mmat);
  if (s->LS) SUNLinSolFree(s->LS);
  if (s->A) SUNMatDestroy(s->A);
  s->MLS = s->LS = NULL;
  s->Mmat = s->A = NULL;
  dsk_sparsity_free(&s->U);
  free(s->jmap), free(s->mmap), free(s->diagmap);
  free(s->mvals), free(s->mwork);
  s->jmap = s->mmap = s->diagmap = NULL;
  s->mvals = s->mwork = NULL;
}
