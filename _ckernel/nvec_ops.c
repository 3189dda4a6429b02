/*
 * nvec_ops.c - compiled-with-optimisation vector operations for the serial
 * N_Vector, and matrix operations for the dense and sparse SUNMatrix.
 *
 * Debian's SUNDIALS 6.4.1 is built without optimisation (-O0: objdump of
 * N_VWSqrSumLocal_Serial shows every variable loaded from and stored to the
 * stack), and CVODES / IDAS call about 60 vector operations per step (the
 * predictor alone is q (q + 1) / 2 linear sums).  For 2-3 states that was
 * half of every step; on the 900-state heat equation N_VWrmsNorm alone took
 * 14% of the solve.  Here the operations the integrators use are replaced by
 * plain loops on the same serial content, compiled with the kernel's flags,
 * so SUNDIALS still does all the integration; only the arithmetic kernels of
 * its vector are ours.  Every operation does the same floating-point
 * operations in the same order as nvector_serial (a * x with a = 1 is exact,
 * so the special cases of N_VLinearSum_Serial collapse, except a == b and
 * a == -b, which the serial version computes as a (x + y) and a (x - y)):
 * results are identical, bit for bit.
 *
 * The operations are installed in the ops table of one vector; N_VClone
 * copies the table, so every vector that CVODES / IDAS clone from it (the
 * history array, the Newton vectors, the sensitivity vectors) gets them.
 * Fused operations (N_VLinearCombination, N_VScaleAddMulti, ...) are enabled
 * too: they replace loops of N_VLinearSum in the integrators.
 */
#include <math.h>
#include <string.h>

#include <nvector/nvector_serial.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "solve.h"

#define LEN(v) NV_LENGTH_S(v)
#define DAT(v) NV_DATA_S(v)

static void sm_linearsum(realtype a, N_Vector x, realtype b, N_Vector y, N_Vector z) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x), *yd = DAT(y);
  realtype *zd = DAT(z);
  if (a == 1.0 && b == 1.0) { /* the predictor's sums: most calls */
    for (sunindextype i = 0; i < n; i++) zd[i] = xd[i] + yd[i];
    return;
  }
  int unit = a == 1.0 || a == -1.0 || b == 1.0 || b == -1.0;
  if (!unit && a == b) {
    for (sunindextype i = 0; i < n; i++) zd[i] = a * (xd[i] + yd[i]);
  } else if (!unit && a == -b) {
    for (sunindextype i = 0; i < n; i++) zd[i] = a * (xd[i] - yd[i]);
  } else if (a == 1.0 && b == -1.0) {
    for (sunindextype i = 0; i < n; i++) zd[i] = xd[i] - yd[i];
  } else if (a == -1.0 && b == 1.0) {
    for (sunindextype i = 0; i < n; i++) zd[i] = yd[i] - xd[i];
  } else {
    for (sunindextype i = 0; i < n; i++) zd[i] = a * xd[i] + b * yd[i];
  }
}

static void sm_const(realtype c, N_Vector z) {
  sunindextype n = LEN(z);
  realtype *zd = DAT(z);
  for (sunindextype i = 0; i < n; i++) zd[i] = c;
}

static void sm_prod(N_Vector x, N_Vector y, N_Vector z) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x), *yd = DAT(y);
  realtype *zd = DAT(z);
  for (sunindextype i = 0; i < n; i++) zd[i] = xd[i] * yd[i];
}

static void sm_div(N_Vector x, N_Vector y, N_Vector z) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x), *yd = DAT(y);
  realtype *zd = DAT(z);
  for (sunindextype i = 0; i < n; i++) zd[i] = xd[i] / yd[i];
}

static void sm_scale(realtype c, N_Vector x, N_Vector z) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x);
  realtype *zd = DAT(z);
  for (sunindextype i = 0; i < n; i++) zd[i] = c * xd[i];
}

static void sm_abs(N_Vector x, N_Vector z) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x);
  realtype *zd = DAT(z);
  for (sunindextype i = 0; i < n; i++) zd[i] = fabs(xd[i]);
}

static void sm_inv(N_Vector x, N_Vector z) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x);
  realtype *zd = DAT(z);
  for (sunindextype i = 0; i < n; i++) zd[i] = 1.0 / xd[i];
}

static void sm_addconst(N_Vector x, realtype b, N_Vector z) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x);
  realtype *zd = DAT(z);
  for (sunindextype i = 0; i < n; i++) zd[i] = xd[i] + b;
}

static realtype sm_dotprod(N_Vector x, N_Vector y) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x), *yd = DAT(y);
  realtype sum = 0.0;
  for (sunindextype i = 0; i < n; i++) sum += xd[i] * yd[i];
  return sum;
}

static realtype sm_maxnorm(N_Vector x) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x);
  realtype m = 0.0;
  for (sunindextype i = 0; i < n; i++)
    if (fabs(xd[i]) > m) m = fabs(xd[i]);
  return m;
}

static realtype sm_wsqrsum(N_Vector x, N_Vector w) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x), *wd = DAT(w);
  realtype sum = 0.0;
  for (sunindextype i = 0; i < n; i++) {
    realtype p = xd[i] * wd[i];
    sum += p * p;
  }
  return sum;
}

static realtype sm_wrmsnorm(N_Vector x, N_Vector w) {
  realtype q = sm_wsqrsum(x, w) / (realtype)LEN(x);
  return q <= 0.0 ? 0.0 : sqrt(q);
}

static realtype sm_wsqrsummask(N_Vector x, N_Vector w, N_Vector id) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x), *wd = DAT(w), *idd = DAT(id);
  realtype sum = 0.0;
  for (sunindextype i = 0; i < n; i++)
    if (idd[i] > 0.0) {
      realtype p = xd[i] * wd[i];
      sum += p * p;
    }
  return sum;
}

static realtype sm_wrmsnormmask(N_Vector x, N_Vector w, N_Vector id) {
  realtype q = sm_wsqrsummask(x, w, id) / (realtype)LEN(x);
  return q <= 0.0 ? 0.0 : sqrt(q);
}

static realtype sm_min(N_Vector x) {
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x);
  realtype m = xd[0];
  for (sunindextype i = 1; i < n; i++)
    if (xd[i] < m) m = xd[i];
  return m;
}

/* z = sum c[i] X[i], accumulated vector by vector as N_VLinearCombination_Serial. */
static int sm_linearcombination(int nvec, realtype *c, N_Vector *X, N_Vector z) {
  if (nvec < 1) return -1;
  if (nvec == 1) {
    sm_scale(c[0], X[0], z);
    return 0;
  }
  if (nvec == 2) {
    sm_linearsum(c[0], X[0], c[1], X[1], z);
    return 0;
  }
  sunindextype n = LEN(z);
  realtype *zd = DAT(z);
  if (X[0] == z) {
    if (c[0] != 1.0)
      for (sunindextype j = 0; j < n; j++) zd[j] *= c[0];
  } else {
    const realtype *xd = DAT(X[0]);
    for (sunindextype j = 0; j < n; j++) zd[j] = c[0] * xd[j];
  }
  for (int i = 1; i < nvec; i++) {
    const realtype *xd = DAT(X[i]);
    realtype ci = c[i];
    for (sunindextype j = 0; j < n; j++) zd[j] += ci * xd[j];
  }
  return 0;
}

/* Z[i] = a[i] x + Y[i]. */
static int sm_scaleaddmulti(int nvec, realtype *a, N_Vector x, N_Vector *Y, N_Vector *Z) {
  if (nvec < 1) return -1;
  sunindextype n = LEN(x);
  const realtype *xd = DAT(x);
  for (int i = 0; i < nvec; i++) {
    const realtype *yd = DAT(Y[i]);
    realtype *zd = DAT(Z[i]), ai = a[i];
    if (ai == 1.0)
      for (sunindextype j = 0; j < n; j++) zd[j] = xd[j] + yd[j];
    else if (ai == -1.0)
      for (sunindextype j = 0; j < n; j++) zd[j] = yd[j] - xd[j];
    else
      for (sunindextype j = 0; j < n; j++) zd[j] = ai * xd[j] + yd[j];
  }
  return 0;
}

static int sm_scalevectorarray(int nvec, realtype *c, N_Vector *X, N_Vector *Z) {
  if (nvec < 1) return -1;
  for (int i = 0; i < nvec; i++) sm_scale(c[i], X[i], Z[i]);
  return 0;
}

/* ---- vector arrays: the sensitivity vectors (CVODES / IDAS forward mode
   call these on all np of them at once) ---- */

static int sm_linearsumvectorarray(int nvec, realtype a, N_Vector *X, realtype b, N_Vector *Y,
                                   N_Vector *Z) {
  if (nvec < 1) return -1;
  for (int i = 0; i < nvec; i++) sm_linearsum(a, X[i], b, Y[i], Z[i]);
  return 0;
}

static int sm_constvectorarray(int nvec, realtype c, N_Vector *Z) {
  if (nvec < 1) return -1;
  for (int i = 0; i < nvec; i++) sm_const(c, Z[i]);
  return 0;
}

static int sm_wrmsnormvectorarray(int nvec, N_Vector *X, N_Vector *W, realtype *nrm) {
  if (nvec < 1) return -1;
  for (int i = 0; i < nvec; i++) nrm[i] = sm_wrmsnorm(X[i], W[i]);
  return 0;
}

static int sm_wrmsnormmaskvectorarray(int nvec, N_Vector *X, N_Vector *W, N_Vector id,
                                      realtype *nrm) {
  if (nvec < 1) return -1;
  for (int i = 0; i < nvec; i++) nrm[i] = sm_wrmsnormmask(X[i], W[i], id);
  return 0;
}

/* Z[j][i] = a[j] X[i] + Y[j][i] (j < nsum, i < nvec), as nvector_serial: its
   special cases (a linear sum, N_VScaleAddMulti) are the same arithmetic. */
static int sm_scaleaddmultivectorarray(int nvec, int nsum, realtype *a, N_Vector *X,
                                       N_Vector **Y, N_Vector **Z) {
  if (nvec < 1 || nsum < 1) return -1;
  for (int i = 0; i < nvec; i++) {
    sunindextype n = LEN(X[i]);
    const realtype *xd = DAT(X[i]);
    for (int j = 0; j < nsum; j++) {
      const realtype *yd = DAT(Y[j][i]);
      realtype *zd = DAT(Z[j][i]), aj = a[j];
      for (sunindextype k = 0; k < n; k++) zd[k] = aj * xd[k] + yd[k];
    }
  }
  return 0;
}

/* Z[i] = sum_j c[j] X[j][i] for each vector i: sm_linearcombination's
   arithmetic (nvector_serial's, with its special cases for 1 and 2 terms). */
static int sm_linearcombinationvectorarray(int nvec, int nsum, realtype *c, N_Vector **X,
                                           N_Vector *Z) {
  if (nvec < 1 || nsum < 1) return -1;
  for (int i = 0; i < nvec; i++) {
    if (nsum == 1) {
      sm_scale(c[0], X[0][i], Z[i]);
      continue;
    }
    if (nsum == 2) {
      sm_linearsum(c[0], X[0][i], c[1], X[1][i], Z[i]);
      continue;
    }
    sunindextype n = LEN(Z[i]);
    realtype *zd = DAT(Z[i]);
    if (X[0][i] == Z[i]) {
      if (c[0] != 1.0)
        for (sunindextype k = 0; k < n; k++) zd[k] *= c[0];
    } else {
      const realtype *xd = DAT(X[0][i]);
      for (sunindextype k = 0; k < n; k++) zd[k] = c[0] * xd[k];
    }
    for (int j = 1; j < nsum; j++) {
      const realtype *xd = DAT(X[j][i]);
      realtype cj = c[j];
      for (sunindextype k = 0; k < n; k++) zd[k] += cj * xd[k];
    }
  }
  return 0;
}

void dsk_nvec_tune(N_Vector v) {
  if (!v || N_VGetVectorID(v) != SUNDIALS_NVEC_SERIAL) return;
  N_VEnableFusedOps_Serial(v, SUNTRUE);
  N_Vector_Ops o = v->ops;
  o->nvlinearsum = sm_linearsum;
  o->nvconst = sm_const;
  o->nvprod = sm_prod;
  o->nvdiv = sm_div;
  o->nvscale = sm_scale;
  o->nvabs = sm_abs;
  o->nvinv = sm_inv;
  o->nvaddconst = sm_addconst;
  o->nvdotprod = sm_dotprod;
  o->nvmaxnorm = sm_maxnorm;
  o->nvwrmsnorm = sm_wrmsnorm;
  o->nvwrmsnormmask = sm_wrmsnormmask;
  o->nvmin = sm_min;
  o->nvdotprodlocal = sm_dotprod;
  o->nvmaxnormlocal = sm_maxnorm;
  o->nvminlocal = sm_min;
  o->nvwsqrsumlocal = sm_wsqrsum;
  o->nvwsqrsummasklocal = sm_wsqrsummask;
  o->nvlinearcombination = sm_linearcombination;
  o->nvscaleaddmulti = sm_scaleaddmulti;
  o->nvscalevectorarray = sm_scalevectorarray;
  o->nvlinearsumvectorarray = sm_linearsumvectorarray;
  o->nvconstvectorarray = sm_constvectorarray;
  o->nvwrmsnormvectorarray = sm_wrmsnormvectorarray;
  o->nvwrmsnormmaskvectorarray = sm_wrmsnormmaskvectorarray;
  o->nvscaleaddmultivectorarray = sm_scaleaddmultivectorarray;
  o->nvlinearcombinationvectorarray = sm_linearcombinationvectorarray;
}

/* ---- matrices ------------------------------------------------------------------
 * The same for the operations CVODES / IDAS / ARKODE apply to the Newton
 * matrix at every linear setup (zero, copy to and from the saved Jacobian,
 * c A + I): same arithmetic as sunmatrix_dense / sunmatrix_sparse; the rare
 * cases that need a new sparse structure (a missing diagonal entry, a copy
 * into a smaller matrix) go to SUNDIALS' own functions.  Clones get the same
 * operations (CVODES clones the matrix for its saved Jacobian). */

static void install_mat_ops(SUNMatrix A);

static int dm_zero(SUNMatrix A) {
  memset(SM_DATA_D(A), 0, (size_t)SM_LDATA_D(A) * sizeof(realtype));
  return SUNMAT_SUCCESS;
}

static int dm_copy(SUNMatrix A, SUNMatrix B) {
  if (SUNMatGetID(B) != SUNMATRIX_DENSE || SM_ROWS_D(A) != SM_ROWS_D(B) ||
      SM_COLUMNS_D(A) != SM_COLUMNS_D(B))
    return SUNMatCopy_Dense(A, B);
  memcpy(SM_DATA_D(B), SM_DATA_D(A), (size_t)SM_LDATA_D(A) * sizeof(realtype));
  return SUNMAT_SUCCESS;
}

static int dm_scaleaddi(realtype c, SUNMatrix A) {
  sunindextype m = SM_ROWS_D(A), n = SM_COLUMNS_D(A);
  realtype *a = SM_DATA_D(A);
  for (sunindextype j = 0; j < n; j++, a += m) {
    for (sunindextype i = 0; i < m; i++) a[i] *= c;
    if (j < m) a[j] += 1.0;
  }
  return SUNMAT_SUCCESS;
}

static SUNMatrix dm_clone(SUNMatrix A) {
  SUNMatrix B = SUNMatClone_Dense(A);
  if (B) install_mat_ops(B);
  return B;
}

static int sp_zero(SUNMatrix A) {
  memset(SM_DATA_S(A), 0, (size_t)SM_NNZ_S(A) * sizeof(realtype));
  memset(SM_INDEXVALS_S(A), 0, (size_t)SM_NNZ_S(A) * sizeof(sunindextype));
  memset(SM_INDEXPTRS_S(A), 0, ((size_t)SM_NP_S(A) + 1) * sizeof(sunindextype));
  return SUNMAT_SUCCESS;
}

static int sp_copy(SUNMatrix A, SUNMatrix B) {
  if (SUNMatGetID(B) != SUNMATRIX_SPARSE || SM_ROWS_S(A) != SM_ROWS_S(B) ||
      SM_COLUMNS_S(A) != SM_COLUMNS_S(B) || SM_SPARSETYPE_S(A) != SM_SPARSETYPE_S(B))
    return SUNMatCopy_Sparse(A, B);
  sunindextype nz = SM_INDEXPTRS_S(A)[SM_NP_S(A)], cap = SM_NNZ_S(B);
  if (cap < nz) return SUNMatCopy_Sparse(A, B); /* reallocates B */
  memcpy(SM_DATA_S(B), SM_DATA_S(A), (size_t)nz * sizeof(realtype));
  memcpy(SM_INDEXVALS_S(B), SM_INDEXVALS_S(A), (size_t)nz * sizeof(sunindextype));
  memset(SM_DATA_S(B) + nz, 0, (size_t)(cap - nz) * sizeof(realtype));
  memset(SM_INDEXVALS_S(B) + nz, 0, (size_t)(cap - nz) * sizeof(sunindextype));
  memcpy(SM_INDEXPTRS_S(B), SM_INDEXPTRS_S(A), ((size_t)SM_NP_S(A) + 1) * sizeof(sunindextype));
  return SUNMAT_SUCCESS;
}

static int sp_scaleaddi(realtype c, SUNMatrix A) {
  sunindextype m = SM_SPARSETYPE_S(A) == CSC_MAT ? SM_ROWS_S(A) : SM_COLUMNS_S(A);
  sunindextype n = SM_SPARSETYPE_S(A) == CSC_MAT ? SM_COLUMNS_S(A) : SM_ROWS_S(A);
  sunindextype k = m < n ? m : n;
  const sunindextype *ap = SM_INDEXPTRS_S(A), *ai = SM_INDEXVALS_S(A);
  realtype *ax = SM_DATA_S(A);
  for (sunindextype j = 0; j < k; j++) { /* every diagonal entry stored? */
    sunindextype p = ap[j];
    while (p < ap[j + 1] && ai[p] != j) p++;
    if (p == ap[j + 1]) return SUNMatScaleAddI_Sparse(c, A);
  }
  for (sunindextype j = 0; j < k; j++)
    for (sunindextype p = ap[j]; p < ap[j + 1]; p++) ax[p] = ai[p] == j ? 1.0 + c * ax[p] : c * ax[p];
  return SUNMAT_SUCCESS;
}

static SUNMatrix sp_clone(SUNMatrix A) {
  SUNMatrix B = SUNMatClone_Sparse(A);
  if (B) install_mat_ops(B);
  return B;
}

static void install_mat_ops(SUNMatrix A) {
  if (SUNMatGetID(A) == SUNMATRIX_DENSE) {
    A->ops->zero = dm_zero;
    A->ops->copy = dm_copy;
    A->ops->scaleaddi = dm_scaleaddi;
    A->ops->clone = dm_clone;
  } else if (SUNMatGetID(A) == SUNMATRIX_SPARSE) {
    A->ops->zero = sp_zero;
    A->ops->copy = sp_copy;
    A->ops->scaleaddi = sp_scaleaddi;
    A->ops->clone = sp_clone;
  }
}

void dsk_mat_tune(SUNMatrix A) {
  if (A) install_mat_ops(A);
}
