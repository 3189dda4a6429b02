#define _POSIX_C_SOURCE 200809L /* clock_gettime */
/* Robertson kinetics on an N x N grid of cells (3 N^2 states: all x, then all
   y, then all z; cell k = r N + c) coupled by diffusion of every species with
   zero-flux boundaries: F_s,k += D (sum over neighbours j of s_j - deg_k s_k),
   D = 1.  The initial state is uniform (1, 0, 0) in every cell, so each cell
   follows the 3-state Robertson solution, while the Jacobian carries the full
   5-point coupling.  CVODES BDF, KLU, analytic sparse Jacobian.  The N = 1 case
   is the 3-state problem.  Same model as robertson_grid() in compare.py. */
#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunmatrix/sunmatrix_sparse.h>
#define PROB_SPARSE 1

static const double k1 = 0.04, k2 = 1e4, k3 = 3e7, D = 1.0;

static int prob_n(int N) { return 3 * N * N; }
/* per species: 5-point pattern (5 G - 4 N entries); kinetics: 4 more per cell
   (x<-y, x<-z, y<-x, y<-z, z<-y; y's diagonal is shared): 5 off-diagonal entries */
static sunindextype prob_nnz(int N) { return 3 * (5 * N * N - 4 * N) + 5 * N * N; }

static void prob_init(int N, double *y) {
  int G = N * N;
  for (int k = 0; k < G; k++) y[k] = 1.0, y[G + k] = 0.0, y[2 * G + k] = 0.0;
}

static int deg(int N, int r, int c) { return (r > 0) + (r < N - 1) + (c > 0) + (c < N - 1); }

static double diffuse(int N, const double *s, int r, int c) {
  int k = r * N + c;
  double v = -deg(N, r, c) * s[k];
  if (c > 0) v += s[k - 1];
  if (c < N - 1) v += s[k + 1];
  if (r > 0) v += s[k - N];
  if (r < N - 1) v += s[k + N];
  return D * v;
}

static int prob_rhs(realtype t, N_Vector yv, N_Vector fv, void *ud) {
  (void)t;
  int N = *(int *)ud, G = N * N;
  const double *x = NV_DATA_S(yv), *y = x + G, *z = x + 2 * G;
  double *fx = NV_DATA_S(fv), *fy = fx + G, *fz = fx + 2 * G;
  for (int r = 0; r < N; r++)
    for (int c = 0; c < N; c++) {
      int k = r * N + c;
      fx[k] = -k1 * x[k] + k2 * y[k] * z[k] + diffuse(N, x, r, c);
      fy[k] = k1 * x[k] - k2 * y[k] * z[k] - k3 * y[k] * y[k] + diffuse(N, y, r, c);
      fz[k] = k3 * y[k] * y[k] + diffuse(N, z, r, c);
    }
  return 0;
}

/* rows of the diffusion stencil of species block `off` in column k, in order;
   `diag` is added to the diagonal */
static sunindextype stencil(int N, int r, int c, sunindextype off, double diag,
                            sunindextype *ri, double *v, sunindextype nz) {
  int k = r * N + c;
  if (r > 0) ri[nz] = off + k - N, v[nz++] = D;
  if (c > 0) ri[nz] = off + k - 1, v[nz++] = D;
  ri[nz] = off + k, v[nz++] = -D * deg(N, r, c) + diag;
  if (c < N - 1) ri[nz] = off + k + 1, v[nz++] = D;
  if (r < N - 1) ri[nz] = off + k + N, v[nz++] = D;
  return nz;
}

static int prob_jac(realtype t, N_Vector yv, N_Vector fyv, SUNMatrix J, void *ud, N_Vector t1,
                    N_Vector t2, N_Vector t3) {
  (void)t, (void)fyv, (void)t1, (void)t2, (void)t3;
  int N = *(int *)ud, G = N * N;
  const double *y = NV_DATA_S(yv) + G, *z = NV_DATA_S(yv) + 2 * G;
  sunindextype *cp = SM_INDEXPTRS_S(J), *ri = SM_INDEXVALS_S(J);
  double *v = SM_DATA_S(J);
  sunindextype nz = 0;
  /* columns of x: rows x-stencil, then y_k (d fy / dx = k1) */
  for (int r = 0; r < N; r++)
    for (int c = 0; c < N; c++) {
      int k = r * N + c;
      cp[k] = nz;
      nz = stencil(N, r, c, 0, -k1, ri, v, nz);
      ri[nz] = G + k, v[nz++] = k1;
    }
  /* columns of y: x_k, y-stencil, z_k */
  for (int r = 0; r < N; r++)
    for (int c = 0; c < N; c++) {
      int k = r * N + c;
      cp[G + k] = nz;
      ri[nz] = k, v[nz++] = k2 * z[k];
      nz = stencil(N, r, c, G, -k2 * z[k] - 2.0 * k3 * y[k], ri, v, nz);
      ri[nz] = 2 * G + k, v[nz++] = 2.0 * k3 * y[k];
    }
  /* columns of z: x_k, y_k, z-stencil */
  for (int r = 0; r < N; r++)
    for (int c = 0; c < N; c++) {
      int k = r * N + c;
      cp[2 * G + k] = nz;
      ri[nz] = k, v[nz++] = k2 * y[k];
      ri[nz] = G + k, v[nz++] = -k2 * y[k];
      nz = stencil(N, r, c, 2 * G, 0.0, ri, v, nz);
    }
  cp[3 * G] = nz;
  return 0;
}

#include "cvodes_driver.h"
