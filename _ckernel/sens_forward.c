/*
 * sens_forward.c - forward sensitivities s_k = du/dp_k of every output with
 * respect to every parameter, for every method, exact through events.
 *
 * The sensitivity equations come from the generated tangent code only (no
 * finite differences of the right-hand side):
 *
 *   ODE    s_k' = J s_k + F_p e_k                       J s_k: jvp_x[RHS], F_p e_k: jvp_p[RHS]
 *   M u' = F    M s_k' = J s_k + F_p e_k - (M_p e_k) u'   M s': eval[MASS], (M_p e_k) u': jvp_p[MASS]
 *   s_k(t0) = du0/dp e_k                                 jvp_p[U0]
 *   d out_i/dp_k = out_u s_k + out_p e_k                 jvp_x[OUT] + jvp_p[OUT]
 *
 * Per integrator:
 *   CVODES (bdf, adams without M)  CVodeSensInit1 (once per solver, lazily)
 *       with the per-parameter right-hand side above, CV_STAGGERED, error
 *       control on the sensitivities with CVodeSensEEtolerances (rtol and
 *       atol/|p_k|), or, with opt.sens_rtol / sens_atol, CVodeSensSVtolerances
 *       (sens_rtol and sens_atol/|p_k|; the same for IDAS and ARKODE),
 *       CVodeGetSens at the output times (dense output); CVodeSensReInit per
 *       solve and after every event, CVodeSensToggleOff when done so plain
 *       solves stay as cheap as before.
 *   IDAS (bdf with M)  IDASensInit with the residual sensitivities
 *       F_u s + F_p e - M s' - (M_p e) u' (the derivative of IDAS' residual
 *       F - M u'), IDA_STAGGERED, EE tolerances, consistent initial
 *       sensitivities from IDACalcIC (it corrects the sensitivities too when
 *       they are active), IDAGetSens at the output times.
 *   ARKODE (tsit45, dopri5, tr_bdf2, esdirk34)  the augmented system
 *       Y = [u; s_1; ...; s_np] integrated with the same method by a second
 *       ARKStep memory (created lazily, size n (1 + np)), tolerances
 *       [atol; atol/|p_1|; ...].  Implicit methods: the Jacobian of the
 *       augmented system is block lower triangular, J on the diagonal blocks
 *       and B_k = d(J s_k + F_p e_k)/du in the first block column.  B_k
 *       holds second derivatives of F, which the generated code does not
 *       give: they come from central differences of the (exact) tangent code
 *       over the colours of J's pattern (B_k's pattern is within J's).  They
 *       only shape the Newton matrix, not the equations solved.  Without
 *       them (block-diagonal Newton matrix) ARKODE's Newton iteration sees the
 *       s-corrections of its second iteration as divergence on stiff problems
 *       (Robertson) and fails.  The matrix is dense up to n (1 + np) =
 *       DSK_FWD_DENSE_MAX unknowns (and when the solver's own is dense), else
 *       KLU CSC with the Newton pattern of linsol.c on the diagonal blocks and
 *       J's pattern below.
 *       A (non-singular) M gives a block-diagonal augmented mass matrix of
 *       the same kind; when M depends on the parameters, u' = M^-1 F (needed
 *       by the (M_p e) u' term) comes from an LU of M of our own.
 *
 * Events (stop/reset): at a root tau of stop element k, g = stop_k,
 *   dtau/dp = -(g_u s + g_p e) / (g_u f- + g_t),
 *   s+ = R_u (s- + f- dtau/dp) + R_p e + R_t dtau/dp - f+ dtau/dp,
 * with R = reset (N = k), f-/f+ = u' before and after the reset (after: at the
 * new N; for IDAS the consistent u' of IDACalcIC).  g_t and R_t, the partial
 * derivatives in t, are central differences of eval[STOP] / eval[RESET] in t
 * alone (h = 6e-6 max(1, |tau|), exact for functions linear in t and exactly
 * zero for functions without t); everything else is the generated code.
 * Without reset the solve ends at the root: later outputs and sensitivities
 * are NaN, as in dsk_solver_solve_dense.
 */
#define _POSIX_C_SOURCE 200809L

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>
#include <cvodes/cvodes.h>
#include <sunnonlinsol/sunnonlinsol_fixedpoint.h>
#include <idas/idas.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunlinsol/sunlinsol_klu.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "solve.h"


enum { FWD_CV = 1, FWD_IDA = 2, FWD_ARK = 3 };

struct dsk_forward {
  int kind, n, np;
  int sens_init;   /* CVodeSensInit1 / IDASensInit done */
  N_Vector *S, *Sp;/* CVODES/IDAS: sensitivities (and their derivatives, IDAS) */
  N_Vector *atolS; /* CVODES/IDAS with opt.sens_rtol / sens_atol: their absolute tolerances */
  double *pbar;    /* |p_k|, or 1 when p_k = 0: scales of the EE tolerances */
  double *ek;      /* unit vector e_k (np) */
  double *dtau;    /* dtau/dp at an event (np) */
  double *w;       /* scratch: 8 n */
  double *ow;      /* scratch: 2 nout + 2 nstop + 2 */
  /* ARKODE: the augmented system */
  void *amem;
  N_Vector Y, atolY;
  SUNMatrix A, M;
  SUNLinearSolver LS, MLS;
  int sparse;       /* A, M are KLU CSC matrices of the block pattern */
  double *bvals;    /* np blocks B_k in J's pattern order */
  int mass_p;       /* M depends on the parameters: (M_p e) u' is needed */
  SUNMatrix Mn;     /* n x n M and its LU, for u' = M^-1 F (mass_p or events) */
  SUNLinearSolver MnLS;
  N_Vector vn;
  double mn_t;      /* time of the factorised Mn (NAN: none) */
};

/* ---- helpers ---------------------------------------------------------------------- */

/* The sensitivities' tolerances: the state's (SUNDIALS' EE tolerances) unless
   opt.sens_rtol or opt.sens_atol is set; s_k's absolute tolerance is scaled by
   1 / |p_k| either way. */
static int sens_custom_tol(const dsk_solver *s) {
  return s->opt.sens_rtol > 0 || s->opt.sens_atol > 0;
}

static double sens_rtol(const dsk_solver *s) {
  return s->opt.sens_rtol > 0 ? s->opt.sens_rtol : s->opt.rtol;
}

/* The state's absolute tolerance of component i. */
static double state_atol(const dsk_solver *s, int i) {
  return s->atolv ? NV_Ith_S(s->atolv, i) : s->opt.atol;
}

static double sens_atol(const dsk_solver *s, int i) {
  return s->opt.sens_atol > 0 ? s->opt.sens_atol : state_atol(s, i);
}

/* CVODES / IDAS: f->atolS (created on first use) from f->pbar; -1 when out of memory. */
static int fill_atol_s(dsk_solver *s, dsk_forward *f) {
  if (!f->atolS) f->atolS = N_VCloneVectorArray(f->np, s->y);
  if (!f->atolS) return -1;
  for (int k = 0; k < f->np; k++) {
    double *a = NV_DATA_S(f->atolS[k]);
    for (int i = 0; i < f->n; i++) a[i] = sens_atol(s, i) / f->pbar[k];
  }
  return 0;
}

static int model_err(dsk_solver *s, const char *fn, int rc, double t, dsk_status *st) {
  dsk_solver_model_failed(s, fn, rc, t);
  int code = dsk_status_set(st, DSK_E_MODELFN, "model function %s returned %d at t = %.6g%s", fn,
                            rc, t, rc == 1 ? " (NaN or Inf)" : "");
  if (st) st->t = t;
  return code;
}

/* Calls of the back end's functions that read s->mem, on the augmented
   ARKStep memory when there is one. */
#define WITH_MEM(s, f, expr)                                                   \
  do {                                                                         \
    void *saved_mem_ = (s)->mem;                                               \
    if ((f)->amem) (s)->mem = (f)->amem;                                       \
    expr;                                                                      \
    (s)->mem = saved_mem_;                                                     \
  } while (0)

static int fwd_fail(dsk_solver *s, dsk_forward *f, int flag, dsk_status *st) {
  int rc;
  WITH_MEM(s, f, rc = dsk_solver_fail(s, flag, st));
  return rc;
}

static void fwd_stats(dsk_solver *s, dsk_forward *f, dsk_stats *cur) {
  memset(cur, 0, sizeof *cur);
  WITH_MEM(s, f, s->be->stats(s, cur));
}

/* State u and sensitivity k at the integrator's current point. */
static double *fwd_u(dsk_solver *s, dsk_forward *f) {
  return f->kind == FWD_ARK ? NV_DATA_S(f->Y) : NV_DATA_S(s->y);
}
static double *fwd_s(dsk_forward *f, int k) {
  return f->kind == FWD_ARK ? NV_DATA_S(f->Y) + (size_t)f->n * (size_t)(k + 1)
                            : NV_DATA_S(f->S[k]);
}

/* y += jvp_p[fn](t, x, e_k) (the derivative w.r.t. parameter k); tmp: the
   function's value (discarded). */
static int add_jvp_p(dsk_solver *s, dsk_forward *f, int fn, int k, double t, const double *x,
                     double *tmp, double *dy, double *y, int len) {
  f->ek[k] = 1.0;
  int rc = s->tab->jvp_p[fn](t, x, f->ek, s->ws, s->dws, tmp, dy);
  f->ek[k] = 0.0;
  if (rc == 0)
    for (int i = 0; i < len; i++) y[i] += dy[i];
  return rc;
}

/* ---- the n x n mass solve (ARKODE with M) -------------------------------------------- */

/* x = M(t)^-1 x, with the LU of M refreshed when t changes. */
static int mass_solve(dsk_solver *s, dsk_forward *f, double t, double *x) {
  if (!(t == f->mn_t)) {
    int rc = dsk_lin_eval_mass(s, t);
    if (rc) return dsk_solver_model_failed(s, "M", rc, t);
    dsk_lin_assemble(s, f->Mn, 0.0, 1.0);
    rc = SUNLinSolSetup(f->MnLS, f->Mn);
    if (rc) return rc > 0 ? 1 : -1;
    f->mn_t = t;
  }
  double *v = NV_DATA_S(f->vn);
  memcpy(v, x, (size_t)f->n * sizeof *v);
  int rc = SUNLinSolSolve(f->MnLS, f->Mn, f->vn, f->vn, 0.0);
  memcpy(x, v, (size_t)f->n * sizeof *v);
  return rc ? (rc > 0 ? 1 : -1) : 0;
}

/* u'(t) for the state u (ODE: F; ARKODE with M: M^-1 F).  IDAS uses its own u'. */
static int fwd_udot(dsk_solver *s, dsk_forward *f, double t, const double *u, double *out) {
  int rc = s->tab->eval[DSK_FN_RHS](t, u, s->ws, out);
  if (rc) return dsk_solver_model_failed(s, "rhs", rc, t);
  if (s->has_mass) return mass_solve(s, f, t, out);
  return 0;
}

/* ---- CVODES ------------------------------------------------------------------------------ */

/* fS_k = J s_k + F_p e_k */
static int cv_sens_rhs(int Ns, realtype t, N_Vector y, N_Vector ydot, int iS, N_Vector yS,
                       N_Vector ySdot, void *data, N_Vector tmp1, N_Vector tmp2) {
  dsk_solver *s = data;
  dsk_forward *f = s->fwd;
  (void)Ns, (void)ydot, (void)tmp2;
  double *out = NV_DATA_S(ySdot), *tmp = NV_DATA_S(tmp1), *dy = f->w;
  int rc = s->tab->jvp_x[DSK_FN_RHS](t, NV_DATA_S(y), NV_DATA_S(yS), s->ws, s->dws, tmp, out);
  if (rc == 0) rc = add_jvp_p(s, f, DSK_FN_RHS, iS, t, NV_DATA_S(y), tmp, dy, out, f->n);
  return rc ? dsk_solver_model_failed(s, "rhs (sensitivities)", rc, t) : 0;
}

static int cv_sens_restart(dsk_solver *s, dsk_forward *f, dsk_status *st) {
  int flag;
  const char *call = "CVodeSensInit1";
  if (!f->sens_init) {
    flag = CVodeSensInit1(s->mem, f->np, CV_STAGGERED, cv_sens_rhs, f->S);
    if (flag == CV_SUCCESS) f->sens_init = 1;
    if (flag == CV_SUCCESS && s->linsol == DSK_LS_FIXEDPOINT) {
      /* no linear solver to lean on: the sensitivities iterate to a fixed point too */
      if (!s->NLSS) s->NLSS = SUNNonlinSol_FixedPointSens(f->np, s->y, 0, s->ctx);
      call = "CVodeSetNonlinearSolverSensStg";
      flag = s->NLSS ? CVodeSetNonlinearSolverSensStg(s->mem, s->NLSS) : CV_MEM_FAIL;
    }
  } else {
    call = "CVodeSensReInit";
    flag = CVodeSensReInit(s->mem, CV_STAGGERED, f->S);
  }
  if (flag == CV_SUCCESS)
    call = "CVodeSetSensParams", flag = CVodeSetSensParams(s->mem, NULL, f->pbar, NULL);
  if (flag == CV_SUCCESS && sens_custom_tol(s)) {
    call = "CVodeSensSVtolerances";
    flag = fill_atol_s(s, f) ? CV_MEM_FAIL : CVodeSensSVtolerances(s->mem, sens_rtol(s), f->atolS);
  } else if (flag == CV_SUCCESS) {
    call = "CVodeSensEEtolerances", flag = CVodeSensEEtolerances(s->mem);
  }
  if (flag == CV_SUCCESS) call = "CVodeSetSensErrCon", flag = CVodeSetSensErrCon(s->mem, SUNTRUE);
  (void)call;
  return flag == CV_SUCCESS ? DSK_OK : dsk_solver_fail(s, flag, st);
}

/* ---- IDAS --------------------------------------------------------------------------------- */

/* resS_k = J s_k + F_p e_k - M s'_k - (M_p e_k) u' */
static int ida_sens_res(int Ns, realtype t, N_Vector yy, N_Vector yp, N_Vector resval,
                        N_Vector *yyS, N_Vector *ypS, N_Vector *resvalS, void *data,
                        N_Vector tmp1, N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  dsk_forward *f = s->fwd;
  (void)resval, (void)tmp3;
  const double *u = NV_DATA_S(yy), *up = NV_DATA_S(yp);
  double *tmp = NV_DATA_S(tmp1), *dy = NV_DATA_S(tmp2), *ms = f->w;
  int n = f->n;
  for (int k = 0; k < Ns; k++) {
    double *out = NV_DATA_S(resvalS[k]);
    int rc = s->tab->jvp_x[DSK_FN_RHS](t, u, NV_DATA_S(yyS[k]), s->ws, s->dws, tmp, out);
    if (rc == 0) rc = add_jvp_p(s, f, DSK_FN_RHS, k, t, u, tmp, dy, out, n);
    if (rc) return dsk_solver_model_failed(s, "rhs (sensitivities)", rc, t);
    rc = s->tab->eval[DSK_FN_MASS](t, NV_DATA_S(ypS[k]), s->ws, ms);
    if (rc == 0) {
      for (int i = 0; i < n; i++) out[i] -= ms[i];
      for (int i = 0; i < n; i++) ms[i] = 0.0;
      rc = add_jvp_p(s, f, DSK_FN_MASS, k, t, up, tmp, dy, ms, n);
    }
    if (rc) return dsk_solver_model_failed(s, "M (sensitivities)", rc, t);
    for (int i = 0; i < n; i++) out[i] -= ms[i];
  }
  return 0;
}

/* Sensitivities on (from f->S, guesses of s' in f->Sp), consistent initial
   values of everything at t (IDACalcIC), written back. */
static int ida_sens_restart(dsk_solver *s, dsk_forward *f, double t, double tout1,
                            dsk_status *st) {
  int flag;
  if (!f->sens_init) {
    flag = IDASensInit(s->mem, f->np, IDA_STAGGERED, ida_sens_res, f->S, f->Sp);
    if (flag == IDA_SUCCESS) f->sens_init = 1;
  } else {
    flag = IDASensReInit(s->mem, IDA_STAGGERED, f->S, f->Sp);
  }
  if (flag == IDA_SUCCESS) flag = IDASetSensParams(s->mem, NULL, f->pbar, NULL);
  if (flag == IDA_SUCCESS && sens_custom_tol(s))
    flag = fill_atol_s(s, f) ? IDA_MEM_FAIL : IDASensSVtolerances(s->mem, sens_rtol(s), f->atolS);
  else if (flag == IDA_SUCCESS)
    flag = IDASensEEtolerances(s->mem);
  if (flag == IDA_SUCCESS) flag = IDASetSensErrCon(s->mem, SUNTRUE);
  if (flag == IDA_SUCCESS) flag = IDACalcIC(s->mem, IDA_YA_YDP_INIT, tout1 > t ? tout1 : t + 1.0);
  if (flag == IDA_SUCCESS) flag = IDAGetConsistentIC(s->mem, s->y, s->yp);
  if (flag == IDA_SUCCESS) flag = IDAGetSensConsistentIC(s->mem, f->S, f->Sp);
  return flag == IDA_SUCCESS ? DSK_OK : dsk_solver_fail(s, flag, st);
}

/* ---- ARKODE: the augmented system ------------------------------------------------------------ */

static int aug_rhs(realtype t, N_Vector Yv, N_Vector Ydot, void *data) {
  dsk_solver *s = data;
  dsk_forward *f = s->fwd;
  int n = f->n, rc;
  const double *u = NV_DATA_S(Yv);
  double *du = NV_DATA_S(Ydot), *tmp = f->w, *dy = f->w + n, *udot = f->w + 2 * (size_t)n;
  rc = s->tab->eval[DSK_FN_RHS](t, u, s->ws, du);
  if (rc) return dsk_solver_model_failed(s, "rhs", rc, t);
  if (f->mass_p) {
    memcpy(udot, du, (size_t)n * sizeof *udot);
    rc = mass_solve(s, f, t, udot);
    if (rc) return rc;
  }
  for (int k = 0; k < f->np; k++) {
    const double *sk = u + (size_t)n * (size_t)(k + 1);
    double *dsk = du + (size_t)n * (size_t)(k + 1);
    rc = s->tab->jvp_x[DSK_FN_RHS](t, u, sk, s->ws, s->dws, tmp, dsk);
    if (rc == 0) rc = add_jvp_p(s, f, DSK_FN_RHS, k, t, u, tmp, dy, dsk, n);
    if (rc) return dsk_solver_model_failed(s, "rhs (sensitivities)", rc, t);
    if (f->mass_p) {
      double *mp = f->w + 3 * (size_t)n;
      for (int i = 0; i < n; i++) mp[i] = 0.0;
      rc = add_jvp_p(s, f, DSK_FN_MASS, k, t, udot, tmp, dy, mp, n);
      if (rc) return dsk_solver_model_failed(s, "M (sensitivities)", rc, t);
      for (int i = 0; i < n; i++) dsk[i] -= mp[i];
    }
  }
  return 0;
}

/* A = cj J_aug + cm M_aug: blockdiag(cj J + cm M) over the 1 + np blocks,
   plus cj B_k in block (k + 1, 0).  Sparse: column j of block column 0 holds
   U's rows then J's rows of each B_k; the other columns U's rows only. */
static void aug_assemble(dsk_solver *s, dsk_forward *f, SUNMatrix A, double cj, double cm) {
  const dsk_sparsity *J = dsk_model_jac_pattern(s->model);
  const dsk_sparsity *M = s->has_mass ? s->Mp : NULL;
  int n = f->n, nb = f->np + 1;
  if (SUNMatGetID(A) == SUNMATRIX_DENSE) {
    SUNMatZero(A);
    for (int b = 0; b < nb; b++) {
      size_t off = (size_t)b * (size_t)n;
      for (int j = 0; j < n; j++) {
        double *col = SM_COLUMN_D(A, (sunindextype)(off + (size_t)j)) + off;
        if (cj != 0.0)
          for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++)
            col[J->rowidx[k]] += cj * s->jvals[k];
        if (M && cm != 0.0)
          for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++)
            col[M->rowidx[k]] += cm * s->mvals[k];
        if (b > 0 && cj != 0.0) { /* B_(b-1) below the first diagonal block */
          double *c0 = SM_COLUMN_D(A, (sunindextype)j) + off;
          const double *bv = f->bvals + (size_t)(b - 1) * (size_t)J->nnz;
          for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++) c0[J->rowidx[k]] += cj * bv[k];
        }
      }
    }
    return;
  }
  sunindextype *cp = SM_INDEXPTRS_S(A), *ri = SM_INDEXVALS_S(A);
  double *x = SM_DATA_S(A);
  size_t q = 0;
  for (int b = 0; b < nb; b++) {
    size_t off = (size_t)b * (size_t)n;
    for (int j = 0; j < n; j++) {
      cp[off + (size_t)j] = (sunindextype)q;
      size_t base = q;
      for (int k = s->U.colptr[j]; k < s->U.colptr[j + 1]; k++, q++) {
        ri[q] = (sunindextype)(off + (size_t)s->U.rowidx[k]);
        x[q] = 0.0;
      }
      base -= (size_t)s->U.colptr[j]; /* x[base + U index] */
      if (cj != 0.0)
        for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++) x[base + s->jmap[k]] += cj * s->jvals[k];
      if (M && cm != 0.0)
        for (int k = M->colptr[j]; k < M->colptr[j + 1]; k++) x[base + s->mmap[k]] += cm * s->mvals[k];
      if (b == 0)
        for (int c = 1; c < nb; c++) {
          const double *bv = f->bvals + (size_t)(c - 1) * (size_t)J->nnz;
          for (int k = J->colptr[j]; k < J->colptr[j + 1]; k++, q++) {
            ri[q] = (sunindextype)((size_t)c * (size_t)n + (size_t)J->rowidx[k]);
            x[q] = cj != 0.0 ? cj * bv[k] : 0.0;
          }
        }
    }
  }
  cp[(size_t)nb * (size_t)n] = (sunindextype)q;
}

/* B_k = d(J s_k + F_p e_k)/du at (t, u) into f->bvals: central differences of
   the tangent code along the colours of J (no two columns of a colour share
   a row, and B_k's pattern is within J's), step 6e-6 max(|u_l|, atol_l/rtol). */
static int aug_eval_b(dsk_solver *s, dsk_forward *f, double t, const double *Yd) {
  const dsk_sparsity *J = dsk_model_jac_pattern(s->model);
  const dsk_coloring *col = &s->model->jac_col;
  int n = f->n, rc = 0;
  double *up = f->w, *um = f->w + n, *gp = f->w + 2 * (size_t)n, *gm = f->w + 3 * (size_t)n;
  double *tmp = f->w + 4 * (size_t)n, *dy = f->w + 5 * (size_t)n, *eps = f->w + 6 * (size_t)n;
  double rtol = s->opt.rtol > 1e-14 ? s->opt.rtol : 1e-14;
  for (int l = 0; l < n; l++) {
    double a = state_atol(s, l);
    eps[l] = 6e-6 * fmax(fmax(fabs(Yd[l]), a / rtol), 1e-12);
  }
  for (int c = 0; c < col->n; c++) {
    memcpy(up, Yd, (size_t)n * sizeof *up);
    memcpy(um, Yd, (size_t)n * sizeof *um);
    for (int q = col->ptr[c]; q < col->ptr[c + 1]; q++) {
      int l = col->cols[q];
      up[l] += eps[l];
      um[l] -= eps[l];
    }
    for (int k = 0; k < f->np; k++) {
      const double *sk = Yd + (size_t)n * (size_t)(k + 1);
      rc = s->tab->jvp_x[DSK_FN_RHS](t, up, sk, s->ws, s->dws, tmp, gp);
      if (rc == 0) rc = add_jvp_p(s, f, DSK_FN_RHS, k, t, up, tmp, dy, gp, n);
      if (rc == 0) rc = s->tab->jvp_x[DSK_FN_RHS](t, um, sk, s->ws, s->dws, tmp, gm);
      if (rc == 0) rc = add_jvp_p(s, f, DSK_FN_RHS, k, t, um, tmp, dy, gm, n);
      if (rc) return rc;
      double *bv = f->bvals + (size_t)k * (size_t)J->nnz;
      for (int q = col->ptr[c]; q < col->ptr[c + 1]; q++) {
        int l = col->cols[q];
        for (int e = J->colptr[l]; e < J->colptr[l + 1]; e++) {
          int i = J->rowidx[e];
          bv[e] = (gp[i] - gm[i]) / (2.0 * eps[l]);
        }
      }
    }
  }
  return 0;
}

static int aug_jac(realtype t, N_Vector Yv, N_Vector fy, SUNMatrix J, void *data, N_Vector tmp1,
                   N_Vector tmp2, N_Vector tmp3) {
  dsk_solver *s = data;
  (void)fy, (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_lin_eval_jac(s, t, NV_DATA_S(Yv));
  if (rc == 0) rc = aug_eval_b(s, s->fwd, t, NV_DATA_S(Yv));
  if (rc) return dsk_solver_model_failed(s, "rhs (Jacobian)", rc, t);
  aug_assemble(s, s->fwd, J, 1.0, 0.0);
  return 0;
}

static int aug_mass(realtype t, SUNMatrix M, void *data, N_Vector tmp1, N_Vector tmp2,
                    N_Vector tmp3) {
  dsk_solver *s = data;
  (void)tmp1, (void)tmp2, (void)tmp3;
  int rc = dsk_lin_eval_mass(s, t);
  if (rc) return dsk_solver_model_failed(s, "M", rc, t);
  aug_assemble(s, s->fwd, M, 0.0, 1.0);
  return 0;
}

static int aug_root(realtype t, N_Vector Yv, realtype *g, void *data) {
  return dsk_solver_eval_stop(data, t, NV_DATA_S(Yv), g);
}

/* A matrix of the augmented size and its linear solver. */
static int aug_pair(dsk_solver *s, dsk_forward *f, SUNMatrix *A, SUNLinearSolver *LS,
                    dsk_status *st) {
  sunindextype N = (sunindextype)f->n * (sunindextype)(f->np + 1);
  if (f->sparse) {
    sunindextype nnz = (sunindextype)s->U.nnz * (sunindextype)(f->np + 1) +
                       (sunindextype)dsk_model_jac_pattern(s->model)->nnz * (sunindextype)f->np;
    *A = SUNSparseMatrix(N, N, nnz, CSC_MAT, s->ctx);
    if (!*A) return dsk_status_set(st, DSK_E_NOMEM, "SUNSparseMatrix failed");
    aug_assemble(s, f, *A, 0.0, 0.0); /* a valid pattern for KLU's analysis */
    *LS = SUNLinSol_KLU(f->Y, *A, s->ctx);
    /* AMD, as the forward's (linsol.c) */
    if (*LS && SUNLinSol_KLUSetOrdering(*LS, 0) != SUNLS_SUCCESS)
      return dsk_status_set(st, DSK_E_SOLVER, "SUNLinSol_KLUSetOrdering failed");
  } else {
    *A = SUNDenseMatrix(N, N, s->ctx);
    if (!*A) return dsk_status_set(st, DSK_E_NOMEM, "SUNDenseMatrix failed");
    *LS = N >= DSK_LS_LAPACK_MIN ? dsk_linsol_lapack(f->Y, *A, s->ctx)
                                 : SUNLinSol_Dense(f->Y, *A, s->ctx);
  }
  if (!*LS) return dsk_status_set(st, DSK_E_NOMEM, "the linear solver could not be created");
  dsk_mat_tune(*A); /* nvec_ops.c */
  return DSK_OK;
}

static int ark_aug_create(dsk_solver *s, dsk_forward *f, dsk_status *st) {
  size_t N = (size_t)f->n * (size_t)(f->np + 1);
  size_t jnnz = (size_t)dsk_model_jac_pattern(s->model)->nnz;
  if (N > 2147483647u || (size_t)s->U.nnz * (size_t)(f->np + 1) + jnnz * (size_t)f->np > 2147483000u)
    return dsk_status_set(st, DSK_E_ARG, "the sensitivity system is too large (%zu unknowns)", N);
  f->bvals = calloc(jnnz * (size_t)f->np + 1, sizeof(double));
  if (!f->bvals) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  f->Y = N_VNew_Serial((sunindextype)N, s->ctx);
  f->atolY = N_VNew_Serial((sunindextype)N, s->ctx);
  if (!f->Y || !f->atolY) return dsk_status_set(st, DSK_E_NOMEM, "N_VNew_Serial failed");
  dsk_nvec_tune(f->Y); /* nvec_ops.c, before ARKODE clones it */
  N_VConst(0.0, f->Y);
  f->sparse = s->linsol == DSK_LS_KLU || N > DSK_FWD_DENSE_MAX;
  if (s->has_mass) {
    /* n x n M and its LU for u' = M^-1 F */
    f->vn = N_VNew_Serial((sunindextype)f->n, s->ctx);
    if (!f->vn) return dsk_status_set(st, DSK_E_NOMEM, "N_VNew_Serial failed");
    if (s->linsol == DSK_LS_KLU) {
      f->Mn = SUNSparseMatrix((sunindextype)f->n, (sunindextype)f->n, (sunindextype)s->U.nnz,
                              CSC_MAT, s->ctx);
      if (f->Mn) dsk_lin_assemble(s, f->Mn, 0.0, 0.0);
      f->MnLS = f->Mn ? SUNLinSol_KLU(f->vn, f->Mn, s->ctx) : NULL;
    } else {
      f->Mn = SUNDenseMatrix((sunindextype)f->n, (sunindextype)f->n, s->ctx);
      f->MnLS = f->Mn ? SUNLinSol_Dense(f->vn, f->Mn, s->ctx) : NULL;
    }
    if (!f->Mn || !f->MnLS) return dsk_status_set(st, DSK_E_NOMEM, "the M solver could not be created");
    if (SUNLinSolInitialize(f->MnLS) != 0)
      return dsk_status_set(st, DSK_E_NOMEM, "the M solver could not be initialised");
  }
  int expl = !s->implicit;
  f->amem = ARKStepCreate(expl ? aug_rhs : NULL, expl ? NULL : aug_rhs, s->opt.t0, f->Y, s->ctx);
  if (!f->amem) return dsk_status_set(st, DSK_E_NOMEM, "ARKStepCreate failed");
  const char *call = "ARKStepSetErrHandlerFn";
  int flag = ARKStepSetErrHandlerFn(f->amem, dsk_solver_err_handler, s);
  if (flag == ARK_SUCCESS) call = "ARKStepSetUserData", flag = ARKStepSetUserData(f->amem, s);
  if (flag == ARK_SUCCESS) {
    call = "ARKStepSetTables";
    flag = dsk_arkode_set_tables(f->amem, s->opt.method);
  }
  if (flag == ARK_SUCCESS && s->implicit) {
    int rc = aug_pair(s, f, &f->A, &f->LS, st);
    if (rc != DSK_OK) return rc;
    call = "ARKStepSetLinearSolver", flag = ARKStepSetLinearSolver(f->amem, f->LS, f->A);
    if (flag == ARK_SUCCESS) call = "ARKStepSetJacFn", flag = ARKStepSetJacFn(f->amem, aug_jac);
    /* as solve_arkode.c: a tight Newton tolerance keeps the DIRK tables robust */
    if (flag == ARK_SUCCESS)
      call = "ARKStepSetNonlinConvCoef", flag = ARKStepSetNonlinConvCoef(f->amem, 1e-4);
    if (flag == ARK_SUCCESS)
      call = "ARKStepSetMaxErrTestFails", flag = ARKStepSetMaxErrTestFails(f->amem, 20);
  }
  if (flag == ARK_SUCCESS && s->has_mass) {
    int rc = aug_pair(s, f, &f->M, &f->MLS, st);
    if (rc != DSK_OK) return rc;
    call = "ARKStepSetMassLinearSolver";
    flag = ARKStepSetMassLinearSolver(f->amem, f->MLS, f->M, SUNTRUE);
    if (flag == ARK_SUCCESS) call = "ARKStepSetMassFn", flag = ARKStepSetMassFn(f->amem, aug_mass);
    if (flag == ARK_SUCCESS)
      call = "ARKStepSetInterpolantType",
      flag = ARKStepSetInterpolantType(f->amem, ARK_INTERP_LAGRANGE);
  }
  if (flag == ARK_SUCCESS && s->nstop > 0)
    call = "ARKStepRootInit", flag = ARKStepRootInit(f->amem, s->nstop, aug_root);
  if (flag == ARK_SUCCESS && s->nstop > 0)
    call = "ARKStepSetNoInactiveRootWarn", flag = ARKStepSetNoInactiveRootWarn(f->amem);
  if (flag != ARK_SUCCESS)
    return dsk_status_set(st, DSK_E_SOLVER, "%s failed (%d): %s", call, flag, s->sun_msg);
  return DSK_OK;
}

/* ARKODE's error weights of Y = [u; s_1; ...] when the s_k have their own
   rtol (opt.sens_rtol): 1 / (rtol_b |Y_i| + atol_i), atol_i from f->atolY. */
static int aug_ewt(N_Vector Yv, N_Vector ewt, void *data) {
  dsk_solver *s = data;
  dsk_forward *f = s->fwd;
  const double *Y = NV_DATA_S(Yv), *at = NV_DATA_S(f->atolY);
  double *w = NV_DATA_S(ewt);
  size_t n = (size_t)f->n, N = n * (size_t)(f->np + 1);
  double rs = sens_rtol(s);
  for (size_t i = 0; i < N; i++) {
    double d = (i < n ? s->opt.rtol : rs) * fabs(Y[i]) + at[i];
    if (!(d > 0)) return -1;
    w[i] = 1.0 / d;
  }
  return 0;
}

/* Restart the augmented system at t from f->Y towards tend. */
static int ark_aug_restart(dsk_solver *s, dsk_forward *f, double t, dsk_status *st) {
  int expl = !s->implicit;
  f->mn_t = NAN;
  int flag = ARKStepReInit(f->amem, expl ? aug_rhs : NULL, expl ? NULL : aug_rhs, t, f->Y);
  if (flag == ARK_SUCCESS && sens_rtol(s) == s->opt.rtol)
    flag = ARKStepSVtolerances(f->amem, s->opt.rtol, f->atolY);
  else if (flag == ARK_SUCCESS)
    flag = ARKStepWFtolerances(f->amem, aug_ewt); /* another rtol for the s_k */
  if (flag == ARK_SUCCESS) flag = ARKStepSetMaxNumSteps(f->amem, s->opt.max_steps);
  if (flag == ARK_SUCCESS) flag = ARKStepSetInitStep(f->amem, s->opt.h0);
  return flag == ARK_SUCCESS ? DSK_OK : fwd_fail(s, f, flag, st);
}

/* ---- create / free ------------------------------------------------------------------------ */

void dsk_forward_free(dsk_solver *s) {
  if (!s || !s->fwd) return;
  dsk_forward *f = s->fwd;
  if (f->amem) ARKStepFree(&f->amem);
  if (f->LS) SUNLinSolFree(f->LS);
  if (f->A) SUNMatDestroy(f->A);
  if (f->MLS) SUNLinSolFree(f->MLS);
  if (f->M) SUNMatDestroy(f->M);
  if (f->MnLS) SUNLinSolFree(f->MnLS);
  if (f->Mn) SUNMatDestroy(f->Mn);
  if (f->vn) N_VDestroy(f->vn);
  if (f->Y) N_VDestroy(f->Y);
  if (f->atolY) N_VDestroy(f->atolY);
  if (f->S) N_VDestroyVectorArray(f->S, f->np);
  if (f->Sp) N_VDestroyVectorArray(f->Sp, f->np);
  if (f->atolS) N_VDestroyVectorArray(f->atolS, f->np);
  free(f->pbar), free(f->ek), free(f->dtau), free(f->w), free(f->ow), free(f->bvals);
  free(f);
  s->fwd = NULL;
}

/* The model must have the tangent code the sensitivities need. */
static int check_model(const dsk_solver *s, dsk_status *st) {
  const dsk_gen_table *t = s->tab;
  const char *missing = NULL;
  if (!t->jvp_p[DSK_FN_U0]) missing = "u0 w.r.t. the parameters (jvp_p[U0])";
  else if (!t->jvp_x[DSK_FN_RHS] || !t->jvp_p[DSK_FN_RHS]) missing = "F (jvp_x/jvp_p[RHS])";
  else if (t->eval[DSK_FN_OUT] && (!t->jvp_x[DSK_FN_OUT] || !t->jvp_p[DSK_FN_OUT]))
    missing = "out (jvp_x/jvp_p[OUT])";
  else if (s->has_mass && !t->jvp_p[DSK_FN_MASS]) missing = "M (jvp_p[MASS])";
  else if (s->nstop > 0 && (!t->jvp_x[DSK_FN_STOP] || !t->jvp_p[DSK_FN_STOP]))
    missing = "stop (jvp_x/jvp_p[STOP])";
  else if (s->has_reset && (!t->jvp_x[DSK_FN_RESET] || !t->jvp_p[DSK_FN_RESET]))
    missing = "reset (jvp_x/jvp_p[RESET])";
  if (missing)
    return dsk_status_set(st, DSK_E_ARG,
                          "forward sensitivities need the tangent code of %s, which this model "
                          "does not have",
                          missing);
  return DSK_OK;
}

static int forward_create(dsk_solver *s, dsk_status *st) {
  int rc = check_model(s, st);
  if (rc != DSK_OK) return rc;
  dsk_forward *f = calloc(1, sizeof *f);
  if (!f) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  s->fwd = f;
  f->n = s->n;
  f->np = s->tab->nparams;
  f->kind = s->be == &dsk_backend_cvodes ? FWD_CV : s->be == &dsk_backend_idas ? FWD_IDA : FWD_ARK;
  f->mn_t = NAN;
  size_t np1 = (size_t)f->np + 1, nout = (size_t)s->tab->nout, nstop = (size_t)s->nstop;
  f->pbar = calloc(np1, sizeof(double));
  f->ek = calloc(np1, sizeof(double));
  f->dtau = calloc(np1, sizeof(double));
  f->w = calloc(8 * (size_t)f->n + 1, sizeof(double));
  f->ow = calloc(2 * nout + 2 * nstop + 2, sizeof(double));
  if (!f->pbar || !f->ek || !f->dtau || !f->w || !f->ow)
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  if (f->kind == FWD_ARK) return ark_aug_create(s, f, st);
  f->S = N_VCloneVectorArray(f->np, s->y);
  if (!f->S) return dsk_status_set(st, DSK_E_NOMEM, "N_VCloneVectorArray failed");
  if (f->kind == FWD_IDA) {
    f->Sp = N_VCloneVectorArray(f->np, s->y);
    if (!f->Sp) return dsk_status_set(st, DSK_E_NOMEM, "N_VCloneVectorArray failed");
  }
  return DSK_OK;
}

/* ---- the solve ---------------------------------------------------------------------------- */

/* Parameters, N = 0, u0, du0/dp and the integrator (with sensitivities) at t0. */
static int fwd_start(dsk_solver *s, dsk_forward *f, const double *p, double tend,
                     dsk_status *st) {
  int n = f->n, np = f->np, rc;
  rc = dsk_solver_begin(s, p, tend, st); /* IDAS: consistent u, u' (sensitivities off) */
  if (rc != DSK_OK) return rc;
  double t0 = s->opt.t0;
  for (int k = 0; k < np; k++) f->pbar[k] = p[k] != 0.0 ? fabs(p[k]) : 1.0;
  double *tmp = f->w, *dy = f->w + n;
  if (f->kind == FWD_ARK) {
    double *Y = NV_DATA_S(f->Y), *at = NV_DATA_S(f->atolY);
    memcpy(Y, NV_DATA_S(s->y), (size_t)n * sizeof *Y);
    for (int b = 0; b <= np; b++)
      for (int i = 0; i < n; i++)
        at[(size_t)b * n + i] =
            b ? sens_atol(s, i) / f->pbar[b - 1] : state_atol(s, i);
  }
  for (int k = 0; k < np; k++) {
    double *sk = fwd_s(f, k);
    memset(sk, 0, (size_t)n * sizeof *sk);
    rc = add_jvp_p(s, f, DSK_FN_U0, k, t0, NULL, tmp, dy, sk, n);
    if (rc) return model_err(s, "u0 (sensitivities)", rc, t0, st);
    if (f->kind == FWD_IDA) {
      double *spk = NV_DATA_S(f->Sp[k]);
      memset(spk, 0, (size_t)n * sizeof *spk);
      if (s->tab->eval[DSK_FN_DUDT0] && s->tab->jvp_p[DSK_FN_DUDT0]) {
        rc = add_jvp_p(s, f, DSK_FN_DUDT0, k, t0, NULL, tmp, dy, spk, n);
        if (rc) return model_err(s, "dudt (sensitivities)", rc, t0, st);
      }
    }
  }
  if (f->kind == FWD_CV) return cv_sens_restart(s, f, st);
  if (f->kind == FWD_IDA) {
    rc = ida_sens_restart(s, f, t0, tend, st);
    if (rc == DSK_OK && tend > t0) {
      int flag = s->be->set_stop_time(s, tend);
      if (flag < 0) rc = dsk_solver_fail(s, flag, st);
    }
    return rc;
  }
  /* ARKODE: M depends on the parameters?  (M_p e_k) r at two times for a
     fixed vector r (a structural zero gives exact zeros). */
  f->mass_p = 0;
  if (s->has_mass) {
    double *r = f->w + 2 * (size_t)n, *mp = f->w + 3 * (size_t)n;
    for (int i = 0; i < n; i++) r[i] = 1.0 + 0.37 * sin(1.0 + i);
    for (int k = 0; k < np && !f->mass_p; k++)
      for (int q = 0; q < 2 && !f->mass_p; q++) {
        double tq = t0 + q * 0.7311;
        memset(mp, 0, (size_t)n * sizeof *mp);
        rc = add_jvp_p(s, f, DSK_FN_MASS, k, tq, r, tmp, dy, mp, n);
        if (rc) return model_err(s, "M (sensitivities)", rc, tq, st);
        for (int i = 0; i < n; i++)
          if (mp[i] != 0.0) f->mass_p = 1;
      }
  }
  rc = ark_aug_restart(s, f, t0, st);
  if (rc == DSK_OK && tend > t0) {
    int flag = ARKStepSetStopTime(f->amem, tend);
    if (flag < 0) rc = fwd_fail(s, f, flag, st);
  }
  return rc;
}

/* Outputs and their sensitivities at time t (state of the integrator) into
   column j. */
static int fwd_store(dsk_solver *s, dsk_forward *f, double t, double *y, double *sens, int nt,
                     int j, dsk_status *st) {
  int nout = s->tab->nout, n = f->n;
  const double *u = fwd_u(s, f);
  double *yo = f->ow, *dy = f->ow + nout;
  if (!s->tab->eval[DSK_FN_OUT]) {
    for (int i = 0; i < nout; i++) y[(size_t)i * nt + j] = u[i];
    for (int k = 0; k < f->np; k++) {
      const double *sk = fwd_s(f, k);
      for (int i = 0; i < nout && i < n; i++) sens[((size_t)k * nout + i) * nt + j] = sk[i];
    }
    return DSK_OK;
  }
  int rc = s->tab->eval[DSK_FN_OUT](t, u, s->ws, yo);
  if (rc) return model_err(s, "out", rc, t, st);
  for (int i = 0; i < nout; i++) y[(size_t)i * nt + j] = yo[i];
  for (int k = 0; k < f->np; k++) {
    /* d out = out_u s_k + out_p e_k */
    rc = s->tab->jvp_x[DSK_FN_OUT](t, u, fwd_s(f, k), s->ws, s->dws, yo, dy);
    if (rc) return model_err(s, "out (sensitivities)", rc, t, st);
    for (int i = 0; i < nout; i++) sens[((size_t)k * nout + i) * nt + j] = dy[i];
    f->ek[k] = 1.0;
    rc = s->tab->jvp_p[DSK_FN_OUT](t, u, f->ek, s->ws, s->dws, yo, dy);
    f->ek[k] = 0.0;
    if (rc) return model_err(s, "out (sensitivities)", rc, t, st);
    for (int i = 0; i < nout; i++) sens[((size_t)k * nout + i) * nt + j] += dy[i];
  }
  return DSK_OK;
}

static void fwd_nan(dsk_solver *s, dsk_forward *f, double *y, double *sens, int nt, int j) {
  int nout = s->tab->nout;
  for (int i = 0; i < nout; i++) y[(size_t)i * nt + j] = NAN;
  for (int k = 0; k < f->np; k++)
    for (int i = 0; i < nout; i++) sens[((size_t)k * nout + i) * nt + j] = NAN;
}

/* One integrator call towards tout (normal mode, within what is left of
   max_steps); the state and sensitivities at *tret afterwards. */
static int fwd_step(dsk_solver *s, dsk_forward *f, double tout, double *tret, int *flag,
                    dsk_status *st) {
  dsk_stats cur;
  fwd_stats(s, f, &cur);
  long left = s->opt.max_steps - (s->acc.steps + cur.steps);
  if (left <= 0) {
    snprintf(s->sun_msg, sizeof s->sun_msg,
             "max_steps = %ld steps taken in total before reaching t = %g", s->opt.max_steps,
             tout);
    return fwd_fail(s, f, -1, st);
  }
  int fl;
  WITH_MEM(s, f, fl = s->be->set_max_steps(s, left));
  if (fl < 0) return fwd_fail(s, f, fl, st);
  realtype tr = tout;
  if (f->kind == FWD_ARK) {
    *flag = ARKStepEvolve(f->amem, tout, f->Y, &tr, ARK_NORMAL);
  } else {
    double t_ = tout;
    *flag = s->be->step(s, tout, 0, &t_);
    tr = t_;
  }
  if (*flag < 0) return fwd_fail(s, f, *flag, st);
  *tret = tr;
  s->t_cur = tr;
  if (f->kind != FWD_ARK) {
    realtype ts;
    fl = f->kind == FWD_CV ? CVodeGetSens(s->mem, &ts, f->S) : IDAGetSens(s->mem, &ts, f->S);
    if (fl < 0) return dsk_solver_fail(s, fl, st);
  }
  return DSK_OK;
}

/* The root-finding tolerance around an event time tr (as in solve.c). */
static double fwd_event_tol(dsk_solver *s, dsk_forward *f, double tr) {
  double h = 0.0;
  int fl;
  WITH_MEM(s, f, fl = s->be->last_step(s, &h));
  if (fl != 0) h = 0.0;
  return 1000.0 * DBL_EPSILON * (fabs(tr) + fabs(h) + 1e-300);
}

/* After the resets at t: IDAS recomputes consistent u, u' without
   sensitivities (then u' after the reset is known). */
static int ida_plain_restart(dsk_solver *s, double t, double tend, dsk_status *st) {
  IDASensToggleOff(s->mem);
  return s->be->reinit(s, t, tend, st);
}

/* The jump of the sensitivities at an event of stop element k at time t
   (state u, before the reset), then the reset itself:
     dtau = -(g_u s + g_p e) / (g_u f- + g_t)
     s+ = R_u (s- + f- dtau) + R_p e + R_t dtau - f+ dtau.                  */
static int fwd_jump(dsk_solver *s, dsk_forward *f, int k, double t, double tend, dsk_status *st) {
  const dsk_gen_table *tab = s->tab;
  int n = f->n, np = f->np, ns = s->nstop, rc;
  double *u = fwd_u(s, f);
  double *fm = f->w + 2 * (size_t)n, *up = f->w + 3 * (size_t)n, *rt = f->w + 4 * (size_t)n;
  double *v = f->w + 5 * (size_t)n, *a = f->w + 6 * (size_t)n, *b = f->w + 7 * (size_t)n;
  double *g1 = f->ow + 2 * (size_t)tab->nout, *g2 = g1 + ns;
  double h = 6e-6 * fmax(1.0, fabs(t));
  /* f- */
  if (f->kind == FWD_IDA) {
    memcpy(fm, NV_DATA_S(s->yp), (size_t)n * sizeof *fm);
  } else {
    rc = fwd_udot(s, f, t, u, fm);
    if (rc) return model_err(s, s->has_mass ? "M^-1 F" : "rhs", rc, t, st);
  }
  /* g_t (central difference in t alone) and g_u f- */
  rc = tab->eval[DSK_FN_STOP](t + h, u, s->ws, g1);
  if (rc == 0) rc = tab->eval[DSK_FN_STOP](t - h, u, s->ws, g2);
  if (rc) return model_err(s, "stop", rc, t, st);
  double gt = (g1[k] - g2[k]) / (2.0 * h);
  rc = tab->jvp_x[DSK_FN_STOP](t, u, fm, s->ws, s->dws, g1, g2);
  if (rc) return model_err(s, "stop (sensitivities)", rc, t, st);
  double den = g2[k] + gt;
  for (int q = 0; q < np; q++) {
    rc = tab->jvp_x[DSK_FN_STOP](t, u, fwd_s(f, q), s->ws, s->dws, g1, g2);
    double num = g2[k];
    if (rc == 0) {
      f->ek[q] = 1.0;
      rc = tab->jvp_p[DSK_FN_STOP](t, u, f->ek, s->ws, s->dws, g1, g2);
      f->ek[q] = 0.0;
      num += g2[k];
    }
    if (rc) return model_err(s, "stop (sensitivities)", rc, t, st);
    if (num == 0.0)
      f->dtau[q] = 0.0;
    else if (den == 0.0 || !isfinite(den))
      return dsk_status_set(st, DSK_E_SOLVER,
                            "the event time of stop element %d at t = %.6g has no derivative: "
                            "stop touches zero without crossing it (d stop/dt = 0)",
                            k, t);
    else
      f->dtau[q] = -num / den;
  }
  /* the reset at N = k, its partial derivative in t, and the new s */
  s->ws[tab->n_slot] = (double)k;
  rc = tab->eval[DSK_FN_RESET](t + h, u, s->ws, a);
  if (rc == 0) rc = tab->eval[DSK_FN_RESET](t - h, u, s->ws, b);
  if (rc == 0) rc = tab->eval[DSK_FN_RESET](t, u, s->ws, up);
  if (rc) return model_err(s, "reset", rc, t, st);
  for (int i = 0; i < n; i++) rt[i] = (a[i] - b[i]) / (2.0 * h);
  for (int q = 0; q < np; q++) {
    double *sq = fwd_s(f, q), dt = f->dtau[q];
    for (int i = 0; i < n; i++) v[i] = sq[i] + fm[i] * dt;
    rc = tab->jvp_x[DSK_FN_RESET](t, u, v, s->ws, s->dws, b, a);
    if (rc == 0) {
      for (int i = 0; i < n; i++) sq[i] = a[i] + rt[i] * dt;
      rc = add_jvp_p(s, f, DSK_FN_RESET, q, t, u, b, a, sq, n);
    }
    if (rc) return model_err(s, "reset (sensitivities)", rc, t, st);
  }
  memcpy(u, up, (size_t)n * sizeof *u);
  /* f+ */
  double *fp = fm;
  if (f->kind == FWD_IDA) {
    rc = ida_plain_restart(s, t, tend, st);
    if (rc != DSK_OK) return rc;
    fp = NV_DATA_S(s->yp);
  } else {
    rc = fwd_udot(s, f, t, u, fm);
    if (rc) return model_err(s, s->has_mass ? "M^-1 F" : "rhs", rc, t, st);
  }
  for (int q = 0; q < np; q++) {
    double *sq = fwd_s(f, q), dt = f->dtau[q];
    if (dt != 0.0)
      for (int i = 0; i < n; i++) sq[i] -= fp[i] * dt;
  }
  return DSK_OK;
}

/* The resets of the roots found at t with their sensitivity jumps, in the
   order of k, and the restart of the integrator there. */
static int fwd_events(dsk_solver *s, dsk_forward *f, double t, double tend, dsk_status *st) {
  int fl;
  WITH_MEM(s, f, fl = s->be->root_info(s, s->rootsfound));
  if (fl < 0) return fwd_fail(s, f, fl, st);
  int fired = 0, rc = DSK_OK;
  for (int k = 0; k < s->nstop && rc == DSK_OK; k++) {
    if (!s->rootsfound[k]) continue;
    fired++;
    rc = fwd_jump(s, f, k, t, tend, st);
  }
  if (rc != DSK_OK) return rc;
  dsk_stats cur;
  fwd_stats(s, f, &cur);
  dsk_stats_add(&s->acc, &cur);
  s->acc.events += fired ? fired : 1;
  s->t_cur = t;
  if (f->kind == FWD_CV) {
    rc = s->be->reinit(s, t, tend, st);
    if (rc == DSK_OK) rc = cv_sens_restart(s, f, st);
  } else if (f->kind == FWD_IDA) {
    if (!fired) rc = ida_plain_restart(s, t, tend, st);
    for (int q = 0; q < f->np && rc == DSK_OK; q++) N_VConst(0.0, f->Sp[q]);
    if (rc == DSK_OK) rc = ida_sens_restart(s, f, t, tend, st);
  } else {
    rc = ark_aug_restart(s, f, t, st);
  }
  if (rc == DSK_OK && tend > t) {
    if (f->kind == FWD_ARK)
      fl = ARKStepSetStopTime(f->amem, tend);
    else
      fl = s->be->set_stop_time(s, tend);
    if (fl < 0) rc = fwd_fail(s, f, fl, st);
  }
  return rc;
}

static int fwd_record_stop(dsk_solver *s, dsk_forward *f, double t, dsk_status *st) {
  int fl;
  WITH_MEM(s, f, fl = s->be->root_info(s, s->rootsfound));
  if (fl < 0) return fwd_fail(s, f, fl, st);
  dsk_solver_note_stop(s, t);
  return DSK_OK;
}

static void fwd_sens_off(dsk_solver *s, dsk_forward *f) {
  if (!f->sens_init || !s->mem) return;
  if (f->kind == FWD_CV) CVodeSensToggleOff(s->mem);
  if (f->kind == FWD_IDA) IDASensToggleOff(s->mem);
}

int dsk_solver_forward(dsk_solver *s, const double *p, const double *times, int nt, double *y,
                       double *sens, dsk_status *st) {
  dsk_status_clear(st);
  if (!s) return dsk_status_set(st, DSK_E_ARG, "dsk_solver_forward: solver is NULL");
  int rc = dsk_solver_check_times(s, times, nt, st);
  if (rc != DSK_OK) return rc;
  rc = dsk_solver_check_params(s, p, st);
  if (rc != DSK_OK) return rc;
  int nout = s->tab->nout, np = s->tab->nparams;
  if (nout > 0 && !y) return dsk_status_set(st, DSK_E_ARG, "output array y is NULL");
  if (nout > 0 && np > 0 && !sens)
    return dsk_status_set(st, DSK_E_ARG, "output array sens is NULL");
  if (np == 0) return dsk_solver_solve_dense(s, p, times, nt, y, st);
  if (!s->tab->jvp_p[DSK_FN_RHS] || !s->tab->jvp_x[DSK_FN_RHS])
    return dsk_status_set(st, DSK_E_ARG, "forward sensitivities need the model's tangent code "
                                         "(not available for callback models): use reverse mode");
  if (!s->fwd) {
    rc = forward_create(s, st);
    if (rc != DSK_OK) {
      dsk_forward_free(s);
      return rc;
    }
  }
  dsk_forward *f = s->fwd;
  rc = fwd_start(s, f, p, times[nt - 1], st);
  double tol = 0.0; /* > 0 right after an event restart */
  int j = 0;
  while (rc == DSK_OK && j < nt) {
    double tout = times[j], tret = s->t_cur;
    int flag = 0;
    if (tout <= s->t_cur || tout - s->t_cur <= tol) {
      rc = fwd_store(s, f, tout, y, sens, nt, j++, st);
      continue;
    }
    rc = fwd_step(s, f, tout, &tret, &flag, st);
    if (rc != DSK_OK) break;
    if (flag == DSK_STEP_ROOT) {
      tol = fwd_event_tol(s, f, tret);
      if (!s->has_reset) {
        rc = fwd_record_stop(s, f, tret, st);
        for (; rc == DSK_OK && j < nt && times[j] <= tret + tol; j++)
          rc = fwd_store(s, f, times[j], y, sens, nt, j, st);
        for (; j < nt; j++) fwd_nan(s, f, y, sens, nt, j);
        break;
      }
      rc = fwd_events(s, f, tret, times[nt - 1], st);
      /* outputs already stored at the event time get the value after it */
      for (int q = j - 1; rc == DSK_OK && q >= 0 && times[q] >= tret - tol; q--)
        rc = fwd_store(s, f, times[q], y, sens, nt, q, st);
      continue;
    }
    tol = 0.0;
    rc = fwd_store(s, f, tout, y, sens, nt, j++, st);
  }
  dsk_stats cur;
  fwd_stats(s, f, &cur);
  s->stats = s->acc;
  dsk_stats_add(&s->stats, &cur);
  fwd_sens_off(s, f);
  return rc;
}
