/*
 * cvodes_driver.h - main() for the CVODES BDF baselines.  The including file
 * defines, before including this header:
 *
 *   static int prob_n(int N);                     number of states
 *   static void prob_init(int N, double *y);      initial state
 *   static int prob_rhs(realtype, N_Vector, N_Vector, void *);
 *   static int prob_jac(realtype, N_Vector, N_Vector, SUNMatrix, void *,
 *                       N_Vector, N_Vector, N_Vector);   analytic Jacobian
 *   PROB_SPARSE + static sunindextype prob_nnz(int N)    for KLU (CSC),
 *   otherwise SUNDIALS' dense matrix and LU (what diffsol-pytorch uses
 *   below 20 states).
 *
 * The user data pointer is &N (an int).
 */
#ifndef CVODES_DRIVER_H
#define CVODES_DRIVER_H

#include <math.h>

#include "common.h"

/* diffsol-pytorch's Jacobian reuse by stiffness (_ckernel/solve_cvodes.c,
   jac_frequency; docs/performance.md): a new Jacobian at least every 20 steps
   where gamma ||J||_1 > 1, SUNDIALS' default elsewhere.  It uses CVODES'
   public API only, so the baseline does the same: both take the same steps
   and the ratio measures the overhead per step. */
static void *driver_mem;

static double driver_norm1(SUNMatrix J) {
  double norm = 0.0;
#ifdef PROB_SPARSE
  const sunindextype *cp = SM_INDEXPTRS_S(J);
  const double *x = SM_DATA_S(J);
  for (sunindextype j = 0; j < SM_COLUMNS_S(J); j++) {
    double col = 0.0;
    for (sunindextype k = cp[j]; k < cp[j + 1]; k++) col += fabs(x[k]);
    if (col > norm) norm = col;
  }
#else
  for (sunindextype j = 0; j < SM_COLUMNS_D(J); j++) {
    const double *c = SM_COLUMN_D(J, j);
    double col = 0.0;
    for (sunindextype i = 0; i < SM_ROWS_D(J); i++) col += fabs(c[i]);
    if (col > norm) norm = col;
  }
#endif
  return norm;
}

static int driver_jac(realtype t, N_Vector y, N_Vector fy, SUNMatrix J, void *ud, N_Vector t1,
                      N_Vector t2, N_Vector t3) {
  int rc = prob_jac(t, y, fy, J, ud, t1, t2, t3);
  realtype gamma;
  if (rc == 0 && CVodeGetCurrentGamma(driver_mem, &gamma) == CV_SUCCESS)
    CVodeSetJacEvalFrequency(driver_mem, gamma * driver_norm1(J) > 1.0 ? 20 : 0);
  return rc;
}

int main(int argc, char **argv) {
  bench_args a;
  bench_parse(argc, argv, &a);
  int N = a.n;
  int n = prob_n(N);
  SUNContext ctx;
  BENCH_CHECK(SUNContext_Create(NULL, &ctx));
  N_Vector y = N_VNew_Serial(n, ctx);
  double *y0 = malloc(sizeof(double) * (size_t)n);
  prob_init(N, y0);
  memcpy(NV_DATA_S(y), y0, sizeof(double) * (size_t)n);
#ifdef PROB_SPARSE
  SUNMatrix A = SUNSparseMatrix(n, n, prob_nnz(N), CSC_MAT, ctx);
  SUNLinearSolver LS = SUNLinSol_KLU(y, A, ctx);
#else
  SUNMatrix A = SUNDenseMatrix(n, n, ctx);
  SUNLinearSolver LS = SUNLinSol_Dense(y, A, ctx);
#endif
  void *mem = CVodeCreate(CV_BDF, ctx);
  BENCH_CHECK(CVodeInit(mem, prob_rhs, 0.0, y));
  BENCH_CHECK(CVodeSetUserData(mem, &N));
  BENCH_CHECK(CVodeSetLinearSolver(mem, LS, A));
  BENCH_CHECK(CVodeSetJacFn(mem, driver_jac));
  driver_mem = mem;
  double *secs = malloc(sizeof(double) * (size_t)a.reps);
  long steps = 0;
  for (int r = 0; r < a.reps; r++) {
    double t0 = bench_now();
    memcpy(NV_DATA_S(y), y0, sizeof(double) * (size_t)n);
    BENCH_CHECK(CVodeReInit(mem, 0.0, y));
    BENCH_CHECK(CVodeSStolerances(mem, a.rtol, a.atol));
    BENCH_CHECK(CVodeSetMaxNumSteps(mem, 100000));
    BENCH_CHECK(CVodeSetStopTime(mem, a.times[a.nt - 1]));
    realtype tret = 0.0;
    for (int k = 0; k < a.nt; k++) {
      if (a.times[k] <= 0.0) continue; /* the initial state */
      BENCH_CHECK(CVode(mem, a.times[k], y, &tret, CV_NORMAL));
    }
    secs[r] = bench_now() - t0;
  }
  BENCH_CHECK(CVodeGetNumSteps(mem, &steps));
  bench_report(n, steps, secs, a.reps, NV_DATA_S(y));
  CVodeFree(&mem);
  SUNLinSolFree(LS);
  SUNMatDestroy(A);
  N_VDestroy(y);
  SUNContext_Free(&ctx);
  free(secs);
  free(y0);
  free(a.times);
  return 0;
}

#endif
