#define _POSIX_C_SOURCE 200809L /* clock_gettime */
/* Robertson kinetics, 3 states, CVODES BDF, dense LU, analytic Jacobian.
   Same model as examples/models/robertson_ode.ds (k1 = 0.04, k2 = 1e4, k3 = 3e7). */
#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>

static const double k1 = 0.04, k2 = 1e4, k3 = 3e7;

static int prob_n(int N) { (void)N; return 3; }
static void prob_init(int N, double *y) { (void)N; y[0] = 1.0; y[1] = 0.0; y[2] = 0.0; }

static int prob_rhs(realtype t, N_Vector yv, N_Vector fv, void *ud) {
  (void)t, (void)ud;
  const double *y = NV_DATA_S(yv);
  double *f = NV_DATA_S(fv);
  f[0] = -k1 * y[0] + k2 * y[1] * y[2];
  f[1] = k1 * y[0] - k2 * y[1] * y[2] - k3 * y[1] * y[1];
  f[2] = k3 * y[1] * y[1];
  return 0;
}

static int prob_jac(realtype t, N_Vector yv, N_Vector fy, SUNMatrix J, void *ud, N_Vector t1,
                    N_Vector t2, N_Vector t3) {
  (void)t, (void)fy, (void)ud, (void)t1, (void)t2, (void)t3;
  const double *y = NV_DATA_S(yv);
  SM_ELEMENT_D(J, 0, 0) = -k1;
  SM_ELEMENT_D(J, 0, 1) = k2 * y[2];
  SM_ELEMENT_D(J, 0, 2) = k2 * y[1];
  SM_ELEMENT_D(J, 1, 0) = k1;
  SM_ELEMENT_D(J, 1, 1) = -k2 * y[2] - 2.0 * k3 * y[1];
  SM_ELEMENT_D(J, 1, 2) = -k2 * y[1];
  SM_ELEMENT_D(J, 2, 0) = 0.0;
  SM_ELEMENT_D(J, 2, 1) = 2.0 * k3 * y[1];
  SM_ELEMENT_D(J, 2, 2) = 0.0;
  return 0;
}

#include "cvodes_driver.h"
