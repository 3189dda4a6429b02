#define _POSIX_C_SOURCE 200809L /* clock_gettime */
/* du/dt = W2 tanh(W1 u + b1) - u, n = N states, u0 = 1; CVODES BDF, SUNDIALS dense LU,
   analytic Jacobian J = W2 diag(1 - tanh^2) W1 - I.  The weights (W1 row-major, b1, W2
   row-major: 2 N^2 + N doubles) are read from the raw file named by the environment
   variable NN_WEIGHTS (compare.py writes it from problems.nn_weights). */
#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>

static double *W1, *B1, *W2, *Z, *H;

static void load(int n) {
  const char *path = getenv("NN_WEIGHTS");
  FILE *f = path ? fopen(path, "rb") : NULL;
  if (!f) {
    fprintf(stderr, "set NN_WEIGHTS to the weights file\n");
    exit(1);
  }
  size_t nn = (size_t)n * (size_t)n;
  W1 = malloc(sizeof(double) * nn), W2 = malloc(sizeof(double) * nn);
  B1 = malloc(sizeof(double) * (size_t)n);
  Z = malloc(sizeof(double) * (size_t)n), H = malloc(sizeof(double) * (size_t)n);
  if (fread(W1, sizeof(double), nn, f) != nn || fread(B1, sizeof(double), (size_t)n, f) != (size_t)n ||
      fread(W2, sizeof(double), nn, f) != nn) {
    fprintf(stderr, "short weights file\n");
    exit(1);
  }
  fclose(f);
}

static int prob_n(int N) {
  load(N);
  return N;
}
static void prob_init(int N, double *y) {
  for (int i = 0; i < N; i++) y[i] = 1.0;
}

static void hidden(int n, const double *u) {
  for (int i = 0; i < n; i++) {
    double s = B1[i];
    for (int j = 0; j < n; j++) s += W1[i * n + j] * u[j];
    H[i] = tanh(s);
  }
}

static int prob_rhs(realtype t, N_Vector yv, N_Vector fv, void *ud) {
  (void)t;
  int n = *(int *)ud;
  const double *u = NV_DATA_S(yv);
  double *f = NV_DATA_S(fv);
  hidden(n, u);
  for (int i = 0; i < n; i++) {
    double s = -u[i];
    for (int j = 0; j < n; j++) s += W2[i * n + j] * H[j];
    f[i] = s;
  }
  return 0;
}

static int prob_jac(realtype t, N_Vector yv, N_Vector fy, SUNMatrix J, void *ud, N_Vector t1,
                    N_Vector t2, N_Vector t3) {
  (void)t, (void)fy, (void)t1, (void)t2, (void)t3;
  int n = *(int *)ud;
  hidden(n, NV_DATA_S(yv));
  for (int k = 0; k < n; k++) Z[k] = 1.0 - H[k] * H[k];
  for (int j = 0; j < n; j++) {
    double *col = SM_COLUMN_D(J, j);
    for (int i = 0; i < n; i++) {
      double s = i == j ? -1.0 : 0.0;
      for (int k = 0; k < n; k++) s += W2[i * n + k] * Z[k] * W1[k * n + j];
      col[i] = s;
    }
  }
  return 0;
}

#include "cvodes_driver.h"
