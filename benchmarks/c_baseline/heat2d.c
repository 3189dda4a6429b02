#define _POSIX_C_SOURCE 200809L /* clock_gettime */
/* 2-D heat equation u_t = kappa * Laplacian(u) on the unit square, N x N
   interior points (k = r N + c), zero Dirichlet boundary, 5-point stencil,
   u0 = 1 on the first half of the points (k < N^2 / 2), 0 elsewhere; kappa = 1.
   CVODES BDF with KLU and the (constant) analytic sparse Jacobian.  Same model
   as heat2d() in benchmarks/bench_linsol.py. */
#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunmatrix/sunmatrix_sparse.h>
#define PROB_SPARSE 1

static int prob_n(int N) { return N * N; }
static sunindextype prob_nnz(int N) { return 5 * N * N - 4 * N; }

static void prob_init(int N, double *y) {
  int n = N * N;
  for (int k = 0; k < n; k++) y[k] = k < n / 2 ? 1.0 : 0.0;
}

static int prob_rhs(realtype t, N_Vector yv, N_Vector fv, void *ud) {
  (void)t;
  int N = *(int *)ud;
  const double *u = NV_DATA_S(yv);
  double *f = NV_DATA_S(fv);
  double s = (double)(N + 1) * (double)(N + 1); /* 1 / dx^2, kappa = 1 */
  for (int r = 0; r < N; r++)
    for (int c = 0; c < N; c++) {
      int k = r * N + c;
      double v = -4.0 * u[k];
      if (c > 0) v += u[k - 1];
      if (c < N - 1) v += u[k + 1];
      if (r > 0) v += u[k - N];
      if (r < N - 1) v += u[k + N];
      f[k] = s * v;
    }
  return 0;
}

static int prob_jac(realtype t, N_Vector yv, N_Vector fy, SUNMatrix J, void *ud, N_Vector t1,
                    N_Vector t2, N_Vector t3) {
  (void)t, (void)yv, (void)fy, (void)t1, (void)t2, (void)t3;
  int N = *(int *)ud;
  double s = (double)(N + 1) * (double)(N + 1);
  sunindextype *cp = SM_INDEXPTRS_S(J), *ri = SM_INDEXVALS_S(J);
  double *v = SM_DATA_S(J);
  sunindextype nz = 0;
  for (int r = 0; r < N; r++)
    for (int c = 0; c < N; c++) {
      int k = r * N + c; /* column k: rows k-N, k-1, k, k+1, k+N (sorted) */
      cp[k] = nz;
      if (r > 0) ri[nz] = k - N, v[nz++] = s;
      if (c > 0) ri[nz] = k - 1, v[nz++] = s;
      ri[nz] = k, v[nz++] = -4.0 * s;
      if (c < N - 1) ri[nz] = k + 1, v[nz++] = s;
      if (r < N - 1) ri[nz] = k + N, v[nz++] = s;
    }
  cp[N * N] = nz;
  return 0;
}

#include "cvodes_driver.h"
