#define _POSIX_C_SOURCE 200809L /* clock_gettime */
/* Lotka-Volterra, CVODES BDF, dense LU, analytic Jacobian.
   Same model as examples/models/lotka_volterra.ds. */
#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>

static const double alpha = 1.1, beta = 0.4, delta = 0.1, gamma_ = 0.4;

static int prob_n(int N) { (void)N; return 2; }
static void prob_init(int N, double *y) { (void)N; y[0] = 10.0; y[1] = 10.0; }

static int prob_rhs(realtype t, N_Vector yv, N_Vector fv, void *ud) {
  (void)t, (void)ud;
  const double *y = NV_DATA_S(yv);
  double *f = NV_DATA_S(fv);
  f[0] = alpha * y[0] - beta * y[0] * y[1];
  f[1] = delta * y[0] * y[1] - gamma_ * y[1];
  return 0;
}

static int prob_jac(realtype t, N_Vector yv, N_Vector fy, SUNMatrix J, void *ud, N_Vector t1,
                    N_Vector t2, N_Vector t3) {
  (void)t, (void)fy, (void)ud, (void)t1, (void)t2, (void)t3;
  const double *y = NV_DATA_S(yv);
  SM_ELEMENT_D(J, 0, 0) = alpha - beta * y[1];
  SM_ELEMENT_D(J, 0, 1) = -beta * y[0];
  SM_ELEMENT_D(J, 1, 0) = delta * y[1];
  SM_ELEMENT_D(J, 1, 1) = delta * y[0] - gamma_;
  return 0;
}

#include "cvodes_driver.h"
