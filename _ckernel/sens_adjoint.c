/*
 * sens_adjoint.c - reverse mode: the checkpointed adjoint of CVODES.
 *
 * For L = sum_j g_j . out(t_j, u(t_j), p) the gradient is
 *   dL/dp = sum_j (d out/dp)^T g_j + lambda(t0)^T du0/dp + int_t0^T lambda^T dF/dp dt
 * where lambda' = -(dF/du)^T lambda runs backward from the last time with a
 * non-zero g, and jumps by (d out/du)^T g_j as it crosses each t_j.
 *
 * The forward pass (CVodeF) stores checkpoints every `nd` steps and the
 * state at each output time; the backward problem (CVodeCreateB, BDF with
 * the transposed Jacobian) integrates lambda with the generated adjoint code
 * (vjp_x of F), and the integral is a backward quadrature of vjp_p of F.  At
 * each output time the backward problem is re-initialised with the jump.  A
 * forward pass can be followed by any number of backward passes (different
 * g) until the solver solves again.  All SUNDIALS objects of the backward
 * problem are created once and re-initialised.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "solve.h"

#define DSK_ADJ_STEPS 100 /* integration steps between checkpoints */

struct dsk_adjoint {
  int initialised;   /* CVodeAdjInit done */
  int which;         /* index of the backward problem, -1 before it exists */
  long generation;   /* solver generation of the recorded forward pass, -1: none */
  int nt;            /* recorded output times */
  int cap;           /* capacity of times / us */
  double *times;     /* nt */
  double *us;        /* nstates x nt: the state at each output time (column j) */
  N_Vector yB, qB;   /* lambda and the quadrature */
  SUNMatrix AB;
  SUNLinearSolver LSB;
  double *bws;       /* adjoint workspace (nws) */
  double *gj;        /* nout: one column of g */
  double *ubar;      /* nstates */
  double *pbar;      /* nparams */
  /* with KLU: the transposed Newton pattern U^T (CSC) and where each entry
     of U lands in it */
  int *tcolptr, *trowidx, *tpos;
};

void dsk_adjoint_free(dsk_solver *s) {
  struct dsk_adjoint *a = s->adj;
  if (!a) return;
  if (a->LSB) SUNLinSolFree(a->LSB);
  if (a->AB) SUNMatDestroy(a->AB);
  if (a->yB) N_VDestroy(a->yB);
  if (a->qB) N_VDestroy(a->qB);
  free(a->times), free(a->us), free(a->bws), free(a->gj), free(a->ubar), free(a->pbar);
  free(a->tcolptr), free(a->trowidx), free(a->tpos);
  free(a);
  s->adj = NULL;
}

static int adjoint_state(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint *a;
  int n = s->n, np = s->tab->nparams;
  if (s->adj) return DSK_OK;
  a = calloc(1, sizeof *a);
  if (!a) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  s->adj = a;
  a->which = -1;
  a->generation = -1;
  a->yB = N_VNew_Serial(n, s->ctx);
  a->qB = np > 0 ? N_VNew_Serial(np, s->ctx) : NULL;
  a->bws = calloc((size_t)s->tab->nws + 1, sizeof(double));
  a->gj = calloc((size_t)s->tab->nout + 1, sizeof(double));
  a->ubar = calloc((size_t)n + 1, sizeof(double));
  a->pbar = calloc((size_t)np + 1, sizeof(double));
  if (!a->yB || (np > 0 && !a->qB) || !a->bws || !a->gj || !a->ubar || !a->pbar) {
    dsk_adjoint_free(s);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint");
  }
  return DSK_OK;
}

/* Reverse mode runs on CVODES (bdf and adams on models without M) without
   events, so far. */
static int check_supported(const dsk_solver *s, dsk_status *st) {
  if (s->be != &dsk_backend_cvodes)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode is available for method 'bdf' or 'adams' on models "
                          "without M (CVODES); this solver uses %s",
                          s->be->name);
  if (s->nstop > 0)
    return dsk_status_set(st, DSK_E_ARG,
                          "reverse mode through events (stop/reset) is not available yet");
  return DSK_OK;
}

/* ---- the backward problem's callbacks --------------------------------------- */

/* lambda' = -(dF/du)^T lambda */
static int rhs_b(realtype t, N_Vector y, N_Vector yB, N_Vector yBdot, void *data) {
  dsk_solver *s = data;
  double *out = NV_DATA_S(yBdot);
  int rc = s->tab->vjp_x[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(yB), s->ws, s->adj->bws, out);
  if (rc) return dsk_solver_model_failed(s, "rhs (adjoint)", rc, t);
  for (int i = 0; i < s->n; i++) out[i] = -out[i];
  return 0;
}

/* q' = lambda^T dF/dp */
static int quad_b(realtype t, N_Vector y, N_Vector yB, N_Vector qBdot, void *data) {
  dsk_solver *s = data;
  int rc = s->tab->vjp_p[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(yB), s->ws, s->adj->bws,
                                      NV_DATA_S(qBdot));
  return rc ? dsk_solver_model_failed(s, "rhs (adjoint quadrature)", rc, t) : 0;
}

/* U^T in CSC (the rows of U), and tpos[k]: where entry k of U sits in it. */
static int transpose_pattern(dsk_solver *s, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const dsk_sparsity *U = &s->U;
  int n = s->n, *next;
  a->tcolptr = calloc((size_t)n + 1, sizeof(int));
  a->trowidx = malloc(((size_t)U->nnz + 1) * sizeof(int));
  a->tpos = malloc(((size_t)U->nnz + 1) * sizeof(int));
  next = malloc(((size_t)n + 1) * sizeof(int));
  if (!a->tcolptr || !a->trowidx || !a->tpos || !next) {
    free(next);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory for the adjoint's pattern");
  }
  for (int k = 0; k < U->nnz; k++) a->tcolptr[U->rowidx[k] + 1]++;
  for (int i = 0; i < n; i++) a->tcolptr[i + 1] += a->tcolptr[i];
  memcpy(next, a->tcolptr, (size_t)n * sizeof(int));
  for (int j = 0; j < n; j++) /* columns of U in order: rows of U^T sorted */
    for (int k = U->colptr[j]; k < U->colptr[j + 1]; k++) {
      int q = next[U->rowidx[k]]++;
      a->trowidx[q] = j;
      a->tpos[k] = q;
    }
  free(next);
  return DSK_OK;
}

/* d(lambda')/d(lambda) = -(dF/du)^T, from the coloured Jacobian. */
static int jac_b(realtype t, N_Vector y, N_Vector yB, N_Vector fyB, SUNMatrix JB, void *data,
                 N_Vector tmp1, N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  const dsk_sparsity *P = dsk_model_jac_pattern(s->model);
  (void)yB, (void)fyB, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_model_jac_values(s->model, t, NV_DATA_S(y), s->ws, s->dws, s->jwork, s->jvals);
  if (rc) return dsk_solver_model_failed(s, "rhs_jvp (adjoint)", rc, t);
  if (SUNMatGetID(JB) == SUNMATRIX_SPARSE) {
    struct dsk_adjoint *a = s->adj;
    sunindextype *cp = SM_INDEXPTRS_S(JB), *ri = SM_INDEXVALS_S(JB);
    double *x = SM_DATA_S(JB);
    for (int j = 0; j <= s->n; j++) cp[j] = (sunindextype)a->tcolptr[j];
    for (int k = 0; k < s->U.nnz; k++) {
      ri[k] = (sunindextype)a->trowidx[k];
      x[k] = 0.0;
    }
    for (int k = 0; k < P->nnz; k++) x[a->tpos[s->jmap[k]]] = -s->jvals[k];
    return 0;
  }
  SUNMatZero(JB);
  for (int j = 0; j < s->n; j++)
    for (int k = P->colptr[j]; k < P->colptr[j + 1]; k++)
      SM_ELEMENT_D(JB, j, P->rowidx[k]) = -s->jvals[k];
  return 0;
}

static int cv_fail(dsk_solver *s, int flag, const char *call, dsk_status *st) {
  if (flag >= 0) return DSK_OK;
  int rc = dsk_solver_fail(s, flag, st);
  size_t len = strlen(st->msg);
  if (len + strlen(call) + 24 < sizeof st->msg)
    snprintf(st->msg + len, sizeof st->msg - len, " (in %s)", call);
  return rc;
}

/* Create the backward problem at tB0 with yB (first use) or restart it. */
static int start_backward(dsk_solver *s, double tB0, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  int np = s->tab->nparams, flag;
  if (a->qB) N_VConst(0.0, a->qB);
  if (a->which >= 0) {
    flag = CVodeReInitB(s->mem, a->which, tB0, a->yB);
    if (flag == CV_SUCCESS && np > 0) flag = CVodeQuadReInitB(s->mem, a->which, a->qB);
    return cv_fail(s, flag, "CVodeReInitB", st);
  }
  flag = CVodeCreateB(s->mem, s->opt.method == DSK_ADAMS ? CV_ADAMS : CV_BDF, &a->which);
  if (flag < 0) return cv_fail(s, flag, "CVodeCreateB", st);
  /* the linear solver of the forward problem, on the transposed pattern */
  if (s->linsol == DSK_LS_KLU) {
    int rc = transpose_pattern(s, st);
    if (rc != DSK_OK) return rc;
    a->AB = SUNSparseMatrix(s->n, s->n, s->U.nnz, CSC_MAT, s->ctx);
    if (a->AB) {
      sunindextype *cp = SM_INDEXPTRS_S(a->AB), *ri = SM_INDEXVALS_S(a->AB);
      for (int j = 0; j <= s->n; j++) cp[j] = (sunindextype)a->tcolptr[j];
      for (int k = 0; k < s->U.nnz; k++) ri[k] = (sunindextype)a->trowidx[k];
    }
    a->LSB = a->AB ? SUNLinSol_KLU(a->yB, a->AB, s->ctx) : NULL;
  } else {
    a->AB = SUNDenseMatrix(s->n, s->n, s->ctx);
    a->LSB = !a->AB ? NULL
             : s->linsol == DSK_LS_LAPACK ? dsk_linsol_lapack(a->yB, a->AB, s->ctx)
                                          : SUNLinSol_Dense(a->yB, a->AB, s->ctx);
  }
  if (!a->AB || !a->LSB) return dsk_status_set(st, DSK_E_NOMEM, "out of memory (adjoint)");
  const char *call = "CVodeInitB";
  flag = CVodeInitB(s->mem, a->which, rhs_b, tB0, a->yB);
  if (flag == CV_SUCCESS) call = "CVodeSetUserDataB", flag = CVodeSetUserDataB(s->mem, a->which, s);
  if (flag == CV_SUCCESS)
    call = "CVodeSStolerancesB",
    flag = CVodeSStolerancesB(s->mem, a->which, s->opt.rtol, s->opt.atol > 0 ? s->opt.atol : 1e-12);
  if (flag == CV_SUCCESS)
    call = "CVodeSetMaxNumStepsB", flag = CVodeSetMaxNumStepsB(s->mem, a->which, s->opt.max_steps);
  if (flag == CV_SUCCESS)
    call = "CVodeSetLinearSolverB", flag = CVodeSetLinearSolverB(s->mem, a->which, a->LSB, a->AB);
  if (flag == CV_SUCCESS) call = "CVodeSetJacFnB", flag = CVodeSetJacFnB(s->mem, a->which, jac_b);
  if (flag == CV_SUCCESS && np > 0) {
    call = "CVodeQuadInitB", flag = CVodeQuadInitB(s->mem, a->which, quad_b, a->qB);
    if (flag == CV_SUCCESS)
      call = "CVodeQuadSStolerancesB",
      flag = CVodeQuadSStolerancesB(s->mem, a->which, s->opt.rtol,
                                    s->opt.atol > 0 ? s->opt.atol : 1e-12);
    if (flag == CV_SUCCESS)
      call = "CVodeSetQuadErrConB", flag = CVodeSetQuadErrConB(s->mem, a->which, SUNTRUE);
  }
  return cv_fail(s, flag, call, st);
}

/* ---- public ------------------------------------------------------------------- */

int dsk_solver_forward_checkpointed(dsk_solver *s, const double *p, const double *times, int nt,
                                    double *y, dsk_status *st) {
  struct dsk_adjoint *a;
  int n, nout, rc;
  dsk_status_clear(st);
  if (!s) return dsk_status_set(st, DSK_E_ARG, "solver is NULL");
  rc = dsk_solver_check_times(s, times, nt, st);
  if (rc == DSK_OK) rc = dsk_solver_check_params(s, p, st);
  if (rc == DSK_OK) rc = check_supported(s, st);
  if (rc == DSK_OK) rc = adjoint_state(s, st);
  if (rc != DSK_OK) return rc;
  a = s->adj;
  n = s->n;
  nout = s->tab->nout;
  if (nt > a->cap) {
    double *tt = realloc(a->times, (size_t)nt * sizeof *tt);
    if (tt) a->times = tt;
    double *uu = tt ? realloc(a->us, (size_t)nt * (size_t)n * sizeof *uu) : NULL;
    if (uu) a->us = uu;
    if (!tt || !uu) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for %d states", nt);
    a->cap = nt;
  }
  a->generation = -1;
  rc = dsk_solver_begin(s, p, times[nt - 1], st);
  if (rc != DSK_OK) return rc;
  {
    int flag = a->initialised ? CVodeAdjReInit(s->mem)
                              : CVodeAdjInit(s->mem, DSK_ADJ_STEPS, CV_HERMITE);
    if (flag < 0) return cv_fail(s, flag, "CVodeAdjInit", st);
    a->initialised = 1;
  }
  for (int j = 0; j < nt && rc == DSK_OK; j++) {
    double *u = NV_DATA_S(s->y);
    if (times[j] > s->t_cur) {
      double tret = s->t_cur;
      int ncheck = 0;
      int flag = CVodeF(s->mem, times[j], s->y, &tret, CV_NORMAL, &ncheck);
      if (flag < 0) {
        rc = dsk_solver_fail(s, flag, st);
        break;
      }
      s->t_cur = tret;
    }
    memcpy(a->us + (size_t)j * (size_t)n, u, (size_t)n * sizeof *u);
    a->times[j] = times[j];
    if (y) {
      int frc = s->tab->eval[DSK_FN_OUT](times[j], u, s->ws, s->yout);
      if (frc) {
        rc = dsk_status_set(st, DSK_E_MODELFN, "model function out returned %d at t = %g", frc,
                            times[j]);
        st->t = times[j];
        break;
      }
      for (int i = 0; i < nout; i++) y[(size_t)i * (size_t)nt + (size_t)j] = s->yout[i];
    }
  }
  dsk_solver_collect_stats(s);
  if (rc != DSK_OK) return rc;
  a->nt = nt;
  a->generation = s->generation;
  return DSK_OK;
}

/* lambda += (d out/du)^T g_j and grad += (d out/dp)^T g_j at output j. */
static int add_output_term(dsk_solver *s, int j, double *grad, dsk_status *st) {
  struct dsk_adjoint *a = s->adj;
  const double *u = a->us + (size_t)j * (size_t)s->n;
  double t = a->times[j], *lam = NV_DATA_S(a->yB);
  int rc = s->tab->vjp_x[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, a->ubar);
  if (rc == 0) rc = s->tab->vjp_p[DSK_FN_OUT](t, u, a->gj, s->ws, a->bws, a->pbar);
  if (rc) {
    st->t = t;
    return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of out returned %d at t = %g", rc, t);
  }
  for (int i = 0; i < s->n; i++) lam[i] += a->ubar[i];
  for (int k = 0; k < s->tab->nparams; k++) grad[k] += a->pbar[k];
  return DSK_OK;
}

/* Column j of g into a->gj; returns 1 when it has a non-zero. */
static int column(const dsk_solver *s, const double *g, int j) {
  int nt = s->adj->nt, any = 0;
  for (int i = 0; i < s->tab->nout; i++) {
    s->adj->gj[i] = g[(size_t)i * (size_t)nt + (size_t)j];
    any |= s->adj->gj[i] != 0.0;
  }
  return any;
}

int dsk_solver_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st) {
  struct dsk_adjoint *a;
  int np, jlast = -1, rc = DSK_OK;
  double t_cur;
  dsk_status_clear(st);
  if (!s || !g || (!grad && s->tab->nparams > 0))
    return dsk_status_set(st, DSK_E_ARG, "dsk_solver_backward: NULL argument");
  a = s->adj;
  if (!a || a->generation < 0 || a->generation != s->generation)
    return dsk_status_set(st, DSK_E_ARG,
                          "no checkpointed forward pass to go back over: the solver has not run "
                          "one, or has solved again since; run the forward pass again");
  np = s->tab->nparams;
  for (int k = 0; k < np; k++) grad[k] = 0.0;
  for (int j = a->nt - 1; j >= 0 && jlast < 0; j--)
    if (column(s, g, j)) jlast = j;
  if (jlast < 0) return DSK_OK; /* a zero gradient costs nothing */
  N_VConst(0.0, a->yB);
  column(s, g, jlast);
  rc = add_output_term(s, jlast, grad, st);
  t_cur = a->times[jlast];
  if (rc == DSK_OK && t_cur > s->opt.t0) rc = start_backward(s, t_cur, st);
  for (int j = jlast - 1; j >= -1 && rc == DSK_OK; j--) {
    double target = j >= 0 ? a->times[j] : s->opt.t0, tret = t_cur;
    int jump = j >= 0 && column(s, g, j);
    if (target < t_cur) {
      int flag = CVodeB(s->mem, target, CV_NORMAL);
      if (flag >= 0) flag = CVodeGetB(s->mem, a->which, &tret, a->yB);
      if (flag >= 0 && np > 0) flag = CVodeGetQuadB(s->mem, a->which, &tret, a->qB);
      if (flag < 0) {
        rc = cv_fail(s, flag, "CVodeB", st);
        break;
      }
      t_cur = target;
    }
    if (jump) {
      rc = add_output_term(s, j, grad, st);
      if (rc == DSK_OK && t_cur > s->opt.t0) {
        /* restart with the jump, keeping the quadrature accumulated so far */
        int flag = CVodeReInitB(s->mem, a->which, t_cur, a->yB);
        if (flag == CV_SUCCESS && np > 0) flag = CVodeQuadReInitB(s->mem, a->which, a->qB);
        rc = cv_fail(s, flag, "CVodeReInitB", st);
      }
    }
  }
  if (rc != DSK_OK) return rc;
  /* the integral: q(t0) = int_T^t0 lambda^T F_p = -int_t0^T lambda^T F_p */
  if (np > 0 && a->which >= 0 && a->times[jlast] > s->opt.t0)
    for (int k = 0; k < np; k++) grad[k] -= NV_Ith_S(a->qB, k);
  /* the initial state: lambda(t0)^T du0/dp */
  if (np > 0) {
    int frc = s->tab->vjp_p[DSK_FN_U0](s->opt.t0, NULL, NV_DATA_S(a->yB), s->ws, a->bws, a->pbar);
    if (frc) return dsk_status_set(st, DSK_E_MODELFN, "the adjoint of u0 returned %d", frc);
    for (int k = 0; k < np; k++) grad[k] += a->pbar[k];
  }
  return DSK_OK;
}

int dsk_solver_reverse(dsk_solver *s, const double *p, const double *times, int nt,
                       const double *g, double *grad, dsk_status *st) {
  int last = -1, nout;
  if (!s || !g) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_reverse: NULL argument");
  nout = s->tab->nout;
  for (int j = 0; j < nt && times; j++)
    for (int i = 0; i < nout; i++)
      if (g[(size_t)i * (size_t)nt + (size_t)j] != 0.0) last = j;
  if (last < 0) { /* nothing to differentiate: check the arguments, return zeros */
    int rc = dsk_solver_check_times(s, times, nt, st);
    if (rc == DSK_OK) rc = dsk_solver_check_params(s, p, st);
    for (int k = 0; rc == DSK_OK && k < s->tab->nparams; k++) grad[k] = 0.0;
    return rc;
  }
  /* the forward pass stops at the last time with a non-zero g */
  int rc = dsk_solver_forward_checkpointed(s, p, times, last + 1, NULL, st);
  if (rc != DSK_OK) return rc;
  {
    /* g restricted to the first last+1 columns */
    double *gs = malloc((size_t)nout * (size_t)(last + 1) * sizeof *gs + 1);
    if (!gs) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
    for (int i = 0; i < nout; i++)
      memcpy(gs + (size_t)i * (size_t)(last + 1), g + (size_t)i * (size_t)nt,
             (size_t)(last + 1) * sizeof *gs);
    rc = dsk_solver_backward(s, gs, grad, st);
    free(gs);
  }
  return rc;
}
