#define _POSIX_C_SOURCE 200809L /* clock_gettime */
/* Robertson kinetics as an index-1 DAE (third state algebraic: a + b + c = 1),
   IDAS BDF, dense LU, analytic Jacobian; IDACalcIC before every solve, as
   diffsol-pytorch does.  Same model as examples/models/robertson_dae.ds. */
#include "common.h"
#include <idas/idas.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>

static const double k1 = 0.04, k2 = 1e4, k3 = 3e7;

static int res(realtype t, N_Vector yv, N_Vector ypv, N_Vector rv, void *ud) {
  (void)t, (void)ud;
  const double *y = NV_DATA_S(yv), *yp = NV_DATA_S(ypv);
  double *r = NV_DATA_S(rv);
  r[0] = -k1 * y[0] + k2 * y[1] * y[2] - yp[0];
  r[1] = k1 * y[0] - k2 * y[1] * y[2] - k3 * y[1] * y[1] - yp[1];
  r[2] = 1.0 - y[0] - y[1] - y[2];
  return 0;
}

static int jac(realtype t, realtype cj, N_Vector yv, N_Vector ypv, N_Vector rr, SUNMatrix J,
               void *ud, N_Vector t1, N_Vector t2, N_Vector t3) {
  (void)t, (void)ypv, (void)rr, (void)ud, (void)t1, (void)t2, (void)t3;
  const double *y = NV_DATA_S(yv);
  SM_ELEMENT_D(J, 0, 0) = -k1 - cj;
  SM_ELEMENT_D(J, 0, 1) = k2 * y[2];
  SM_ELEMENT_D(J, 0, 2) = k2 * y[1];
  SM_ELEMENT_D(J, 1, 0) = k1;
  SM_ELEMENT_D(J, 1, 1) = -k2 * y[2] - 2.0 * k3 * y[1] - cj;
  SM_ELEMENT_D(J, 1, 2) = -k2 * y[1];
  SM_ELEMENT_D(J, 2, 0) = -1.0;
  SM_ELEMENT_D(J, 2, 1) = -1.0;
  SM_ELEMENT_D(J, 2, 2) = -1.0;
  return 0;
}

int main(int argc, char **argv) {
  bench_args a;
  bench_parse(argc, argv, &a);
  SUNContext ctx;
  BENCH_CHECK(SUNContext_Create(NULL, &ctx));
  N_Vector y = N_VNew_Serial(3, ctx), yp = N_VNew_Serial(3, ctx), id = N_VNew_Serial(3, ctx);
  double *Y = NV_DATA_S(y), *YP = NV_DATA_S(yp), *ID = NV_DATA_S(id);
  ID[0] = ID[1] = 1.0, ID[2] = 0.0;
  Y[0] = 1.0, Y[1] = Y[2] = 0.0;
  YP[0] = YP[1] = YP[2] = 0.0;
  SUNMatrix A = SUNDenseMatrix(3, 3, ctx);
  SUNLinearSolver LS = SUNLinSol_Dense(y, A, ctx);
  void *mem = IDACreate(ctx);
  BENCH_CHECK(IDAInit(mem, res, 0.0, y, yp));
  BENCH_CHECK(IDASetLinearSolver(mem, LS, A));
  BENCH_CHECK(IDASetJacFn(mem, jac));
  double *secs = malloc(sizeof(double) * (size_t)a.reps);
  double tfirst = a.times[0] > 0.0 ? a.times[0] : (a.nt > 1 ? a.times[1] : 1.0);
  for (int r = 0; r < a.reps; r++) {
    double t0 = bench_now();
    Y[0] = 1.0, Y[1] = Y[2] = 0.0;
    YP[0] = 1.0, YP[1] = YP[2] = 0.0; /* the model's dudt guess */
    BENCH_CHECK(IDAReInit(mem, 0.0, y, yp));
    BENCH_CHECK(IDASStolerances(mem, a.rtol, a.atol));
    BENCH_CHECK(IDASetMaxNumSteps(mem, 100000));
    BENCH_CHECK(IDASetId(mem, id));
    BENCH_CHECK(IDACalcIC(mem, IDA_YA_YDP_INIT, tfirst));
    BENCH_CHECK(IDAGetConsistentIC(mem, y, yp));
    BENCH_CHECK(IDASetStopTime(mem, a.times[a.nt - 1]));
    realtype tret = 0.0;
    for (int k = 0; k < a.nt; k++) {
      if (a.times[k] <= 0.0) continue;
      BENCH_CHECK(IDASolve(mem, a.times[k], &tret, y, yp, IDA_NORMAL));
    }
    secs[r] = bench_now() - t0;
  }
  long steps = 0;
  BENCH_CHECK(IDAGetNumSteps(mem, &steps));
  bench_report(3, steps, secs, a.reps, Y);
  IDAFree(&mem);
  SUNLinSolFree(LS);
  SUNMatDestroy(A);
  N_VDestroy(y), N_VDestroy(yp), N_VDestroy(id);
  SUNContext_Free(&ctx);
  free(secs);
  free(a.times);
  return 0;
}
