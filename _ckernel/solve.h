/*
 * solve.h - internal: the dsk_solver structure shared by the solver front end
 * (solve.c), the integrator back ends (solve_cvodes.c, solve_idas.c,
 * solve_arkode.c) and the linear algebra (linsol.c).
 *
 * solve.c owns the public dsk_solver_* functions: options, the choice of back
 * end and linear solver, the output loops (dense output and internal steps),
 * events and error reports.  A back end only wraps one SUNDIALS integrator
 * behind dsk_backend; linsol.c builds the matrices, the linear solvers and
 * fills them from the model's Jacobian and mass matrix.
 */
#ifndef DSK_SOLVE_H
#define DSK_SOLVE_H

#include <nvector/nvector_serial.h>
#include <sundials/sundials_context.h>
#include <sundials/sundials_linearsolver.h>
#include <sundials/sundials_matrix.h>
#include <sundials/sundials_nonlinearsolver.h>

#include "dsk.h"
#include "model.h"

#if !defined(SUNDIALS_DOUBLE_PRECISION)
#error "the kernel needs SUNDIALS built with double precision"
#endif

/* Return values of dsk_backend.step, the same in CVODES, IDAS and ARKODE. */
#define DSK_STEP_SUCCESS 0
#define DSK_STEP_TSTOP 1
#define DSK_STEP_ROOT 2

typedef struct dsk_backend {
  const char *name; /* "CVODES", "IDAS", "ARKODE": used in messages */
  /* SUNDIALS memory, linear solvers attached, root functions set; once. */
  int (*create)(dsk_solver *s, dsk_status *st);
  /* Restart at t0 from s->y (and s->yp for IDAS) with the tolerances, h0
     and step limit of s->opt; IDAS also computes consistent initial values.
     tout1: a time in the direction of integration (for IDACalcIC). */
  int (*reinit)(dsk_solver *s, double t0, double tout1, dsk_status *st);
  int (*set_stop_time)(dsk_solver *s, double tstop);
  int (*set_max_steps)(dsk_solver *s, long max_steps);
  /* One call of CVode / IDASolve / ARKStepEvolve (one_step: ONE_STEP mode);
     writes the state at *tret into s->y.  Returns the SUNDIALS flag. */
  int (*step)(dsk_solver *s, double tout, int one_step, double *tret);
  int (*root_info)(dsk_solver *s, int *found);
  int (*current_time)(dsk_solver *s, double *t);
  int (*last_step)(dsk_solver *s, double *h);
  /* Counters since the last reinit (a failing getter leaves 0). */
  void (*stats)(dsk_solver *s, dsk_stats *out);
  /* Name of a flag, malloc'd (SUNDIALS 6 convention); NULL if unknown. */
  char *(*flag_name)(int flag);
  void (*free)(dsk_solver *s);
} dsk_backend;

extern const dsk_backend dsk_backend_cvodes;
extern const dsk_backend dsk_backend_idas;
extern const dsk_backend dsk_backend_arkode;

/* solve_arkode.c: the Butcher tables of `method` on ARKStep memory `mem`;
   returns the ARKODE flag. */
int dsk_arkode_set_tables(void *mem, int method);
/* solve_arkode.c: root finding on the stop elements on (on = 1) or off; returns
   the ARKODE flag. */
int dsk_arkode_set_roots(dsk_solver *s, int on);

struct dsk_solver {
  const dsk_model *model;
  const dsk_gen_table *tab;
  const dsk_backend *be;
  dsk_solver_options opt; /* opt.atol_vec is not kept; see atolv */
  int n;                  /* nstates */
  int has_mass;           /* the model defines M */
  int nstop, has_reset;   /* events */
  int implicit;           /* the method needs a Newton (linear) solver */
  int linsol;             /* resolved dsk_linsol: DSK_LS_SUNDENSE, _LAPACK, _KLU, or -1 (none) */

  SUNContext ctx;
  double *ws;    /* model workspace (nws), init'ed once */
  double *dws;   /* tangent workspace (nws) */
  double *jwork; /* 3 * nstates, for dsk_model_jac_values */
  double *jvals; /* values of the Jacobian pattern */
  double *mvals; /* values of the mass pattern */
  double *mwork; /* 2 * nstates: seed and M v */
  double *yout;  /* one column of outputs (nout) */
  double *gout;  /* nstop, for the root functions */
  int *rootsfound;
  N_Vector y, yp; /* state (and du/dt for IDAS) */
  N_Vector atolv; /* per-state absolute tolerances, or NULL */
  N_Vector id;    /* IDAS: 1 differential, 0 algebraic */
  SUNMatrix A, Mmat;          /* Newton matrix (or J) and mass matrix (ARKODE) */
  SUNLinearSolver LS, MLS;    /* their linear solvers */
  SUNNonlinearSolver NLS;     /* DSK_LS_FIXEDPOINT: the fixed-point iteration (CVODES) */
  SUNNonlinearSolver NLSS;    /* and its staggered one for the forward sensitivities */
  void *mem;                  /* CVODES / IDAS / ARKStep memory */

  /* Newton-matrix pattern: the union of the Jacobian, mass and diagonal
     patterns (CSC, rows sorted), and where each Jacobian / mass entry goes. */
  dsk_sparsity U;
  const dsk_sparsity *Mp; /* the model's mass pattern */
  int *jmap, *mmap;
  int *diagmap;                /* position of (i, i) in U */

  /* trajectory of dsk_solver_solve (owned, grown as needed) */
  double *traj_t, *traj_y;
  size_t traj_n, traj_cap;

  dsk_stats stats;     /* of the last solve */
  dsk_stats acc;       /* counters of earlier segments (before event resets) */
  char sun_msg[1024];  /* last SUNDIALS error message */
  const char *fn_name; /* first model function that failed in this solve */
  int fn_rc;
  double fn_t;
  int stopped;         /* the last solve ended at a stop root */
  double stop_t;
  int stop_index;
  double t_cur;        /* time of the state in y */

  struct dsk_adjoint *adj; /* sens_adjoint.c: checkpointed adjoint state, or NULL */
  double adj_scale;        /* reverse pass: largest |lambda| at a (re)start so far (DSK_ADJ_ATOL) */
  double adj_budget;       /* backward steps allowed per forward step, 0: no limit */
  long adj_budget_steps;   /* the current pass's limit from it (0: none) */
  long generation;         /* solves started so far: a checkpoint records its own */

  /* sens_forward.c: forward-sensitivity state (sensitivity vectors, the
     augmented ARKStep memory), created at the first dsk_solver_forward; NULL
     before.  CVODES/IDAS sensitivities are toggled off between forward solves. */
  struct dsk_forward *fwd;

  /* sens_adjoint_arkode.c: checkpointed adjoint of the ARKODE methods, or NULL */
  struct dsk_adjoint_ark *adj_ark;

  /* sens_discrete.c: the discrete adjoint of CVODES' BDF steps, or NULL */
  struct dsk_discrete *disc;
};

/* ---- solve.c: callbacks' helpers -------------------------------------------- */

/* Records the first failing model function of a solve; returns the code to
   hand to SUNDIALS: > 0 (recoverable) stays 1, < 0 becomes -1. */
int dsk_solver_model_failed(dsk_solver *s, const char *fn, int rc, double t);
/* Stores SUNDIALS error messages (error_code < 0) in s->sun_msg. */
void dsk_solver_err_handler(int error_code, const char *module, const char *function, char *msg,
                            void *data);
/* Fills st for a negative integrator flag (message with the time, the flag
   name, the SUNDIALS message and a suggestion); returns the dsk_code. */
int dsk_solver_fail(dsk_solver *s, int flag, dsk_status *st);
/* The root functions g = stop(t, y). */
int dsk_solver_eval_stop(dsk_solver *s, double t, const double *y, double *g);

/* solve.c: start a solve (parameters, N = 0, initial state, restart at t0
   towards tend); counts a new generation. */
int dsk_solver_begin(dsk_solver *s, const double *p, double tend, dsk_status *st);
/* solve.c: out(t, state in s->y) into column j of the row-major nout x nt y. */
int dsk_solver_store_output(dsk_solver *s, double t, double *y, int nt, int j, dsk_status *st);
/* solve.c: a += b, every counter. */
void dsk_stats_add(dsk_stats *a, const dsk_stats *b);
/* solve.c: the solve ended at a stop root at t (s->rootsfound filled, no
   reset): stopped, stop_t, the lowest root index, one more event. */
void dsk_solver_note_stop(dsk_solver *s, double t);
/* solve.c: the statistics of the current solve into s->stats. */
void dsk_solver_collect_stats(dsk_solver *s);
/* solve.c: the integrator's counters since its last reinit into s->acc
   (before an event restart). */
void dsk_solver_bank_stats(dsk_solver *s);
/* solve.c: the root-finding tolerance around an event time tr. */
double dsk_solver_event_tol(dsk_solver *s, double tr);
/* solve.c: one integrator call towards tout (one_step: ONE_STEP mode) within
   what is left of max_steps (a total over the solve, also across event
   restarts); sets *tret, *flag and s->t_cur. */
int dsk_solver_step_to(dsk_solver *s, double tout, int one_step, double *tret, int *flag,
                       dsk_status *st);
/* solve.c: checks of times and parameters shared by every solve. */
int dsk_solver_check_times(const dsk_solver *s, const double *times, int nt, dsk_status *st);
int dsk_solver_check_params(dsk_solver *s, const double *p, dsk_status *st);

/* ---- sens_forward.c ------------------------------------------------------------ */

typedef struct dsk_forward dsk_forward;
/* ARKODE methods: the augmented Newton / mass matrices (n (1 + nparams)
   unknowns) are dense up to this size, else KLU with the block pattern. */
#define DSK_FWD_DENSE_MAX 200
/* Frees s->fwd (the integrator memory it refers to is freed after it). */
void dsk_forward_free(dsk_solver *s);

/* ---- sens_adjoint.c ------------------------------------------------------------ */

/* Tolerances of the backward integrations: the adjoint options, else the
   forward's.  The default absolute tolerance is the forward's times the scale
   of lambda (s->adj_scale: the largest |lambda_i| at a start or restart of the
   backward problem in this pass, updated by dsk_adjoint_scale), so that the
   gradient's accuracy and cost do not depend on the loss's units: lambda and
   the quadrature are linear in grad_output, and a fixed atol would be loose
   for a loss scaled by 1e-9 (6-10% gradient errors) and tight for one scaled
   by 1e6.  An adjoint_atol set by the caller is absolute. */
#define DSK_ADJ_RTOL(s) ((s)->opt.adjoint_rtol > 0 ? (s)->opt.adjoint_rtol : (s)->opt.rtol)
#define DSK_ADJ_ATOL(s)                                                                  \
  ((s)->opt.adjoint_atol > 0                                                             \
       ? (s)->opt.adjoint_atol                                                           \
       : ((s)->opt.atol > 0 ? (s)->opt.atol : 1e-12) * ((s)->adj_scale > 0 ? (s)->adj_scale : 1.0))
/* DSK_OK, or DSK_E_BUDGET when a backward pass that took `steps` so far is
   over its budget (s->adj_budget_steps). */
int dsk_adjoint_over_budget(const dsk_solver *s, long steps, dsk_status *st);
/* adj_scale = max(adj_scale, max_i |lam_i|) (NaN and inf ignored); the
   caller then sets the backward problem's tolerances. */
void dsk_adjoint_scale(dsk_solver *s, const double *lam, int n);

void dsk_adjoint_free(dsk_solver *s);
/* DSK_OK for flag >= 0, else dsk_solver_fail with " (in CALL, adjoint)" appended. */
int dsk_adjoint_fail(dsk_solver *s, int flag, const char *call, dsk_status *st);
/* JB = -(dF/du)^T (dense) from the Jacobian values in s->jvals. */
void dsk_adjoint_dense_jt(const dsk_solver *s, SUNMatrix JB);
/* The transpose of the CSC pattern U (n x n) in CSC, and pos[k]: where entry k
   of U sits in it (malloc'd; the caller frees them); -1 when out of memory. */
int dsk_pattern_transpose(const dsk_sparsity *U, int n, int **colptr, int **rowidx, int **pos);
/* A sparse matrix on the transposed Newton pattern (tcolptr, trowidx from
   dsk_pattern_transpose) and its KLU solver (AMD, as the forward's), for the
   transposed solves of the adjoints; y: a vector of the state's size. */
int dsk_adjoint_klu_t(dsk_solver *s, N_Vector y, const int *tcolptr, const int *trowidx,
                      SUNMatrix *A, SUNLinearSolver *LS, dsk_status *st);

/* Scratch of dsk_event_adjoint: w 6 n, g12 2 nstop, ek nstop (kept zero),
   pg and pbar nparams, bws the adjoint workspace (nws). */
typedef struct dsk_event_work {
  double *w, *g12, *ek, *pg, *pbar, *bws;
} dsk_event_work;

/* The adjoint across one event: the root (t, u = u-) of stop element k, the
   model index N before it (the reset sets N = k), f- = fm (F(t, u-), or u'
   before it for IDAS) and f+ = fp_given (NULL: F(t, reset(t, u-))).  With
   lambda+ = lam (M^T lambda+ for IDAS), D = g_u f- + g_t, c = R_u f- + R_t - f+
   and w = lam . c / D: out = R_u^T lam - w g_u^T and grad += R_p^T lam - w g_p^T
   (the transpose of sens_forward.c's jump).  Leaves N = k in s->ws. */
int dsk_event_adjoint(dsk_solver *s, double t, const double *u, int k, int N, const double *fm,
                      const double *fp_given, const double *lam, double *grad, double *out,
                      const dsk_event_work *w, dsk_status *st);

/* ---- sens_adjoint_arkode.c (reverse mode of the ARKODE methods) ------------------ */

/* Called by dsk_solver_forward_checkpointed / dsk_solver_backward (and so
   dsk_solver_reverse) when the solver's back end is ARKODE; same contracts. */
int dsk_arkode_forward_checkpointed(dsk_solver *s, const double *p, const double *times, int nt,
                                    double *y, dsk_status *st);
int dsk_arkode_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st);
/* Frees s->adj_ark (called from dsk_adjoint_free). */
void dsk_adjoint_arkode_free(dsk_solver *s);

/* ---- sens_discrete.c: reverse mode by the discrete adjoint of CVODES' BDF ---- */
/* Returned by dsk_discrete_forward when it cannot record this pass exactly
   (a step it does not reproduce, memory): the caller runs the continuous
   adjoint instead.  Not a DSK_E_* code: it never reaches the user. */
#define DSK_DISC_FALLBACK 100
/* CVODES, bdf, no events, a dense or KLU Newton matrix, the adjoint code of F */
int dsk_discrete_supported(const dsk_solver *s);
/* The forward pass, recording every step; y as dsk_solver_solve_dense */
int dsk_discrete_forward(dsk_solver *s, const double *p, const double *times, int nt, double *y,
                         dsk_status *st);
/* 1 when the last forward pass is a recorded discrete one still valid */
int dsk_discrete_recorded(const dsk_solver *s);
/* grad = the gradient of sum g .* y over the recorded pass (dsk_solver_backward) */
int dsk_discrete_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st);
void dsk_discrete_free(dsk_solver *s);

/* ---- nvec_ops.c ------------------------------------------------------------- */

/* Enables the fused operations of a serial vector and installs the
   plain-loop operations of nvec_ops.c (bit-identical results to
   nvector_serial); clones inherit both. */
void dsk_nvec_tune(N_Vector v);
/* The same for a dense or sparse SUNMatrix: zero, copy, c A + I, clone
   (bit-identical results to sunmatrix_dense / sunmatrix_sparse). */
void dsk_mat_tune(SUNMatrix A);

/* ---- linsol.c ----------------------------------------------------------------- */

/* The Newton-matrix pattern, maps and the mass colouring (s->U etc.). */
int dsk_lin_patterns(dsk_solver *s, dsk_status *st);
/* Creates s->A and s->LS (and s->Mmat, s->MLS when with_mass) of the
   resolved kind s->linsol. */
int dsk_lin_create(dsk_solver *s, int with_mass, dsk_status *st);
/* Values of J = dF/du at (t, u) into s->jvals; returns the model's code. */
int dsk_lin_eval_jac(dsk_solver *s, double t, const double *u);
/* Values of M at t into s->mvals; returns the model's code. */
int dsk_lin_eval_mass(dsk_solver *s, double t);
/* max_j sum_i |J_ij| of the values in s->jvals (a bound of J's spectral radius). */
double dsk_lin_jac_norm1(const dsk_solver *s);
/* A = cj * J + cm * M (from s->jvals, s->mvals), dense or sparse. */
void dsk_lin_assemble(dsk_solver *s, SUNMatrix A, double cj, double cm);
/* Is M (at t0, current parameters, values in s->mvals) singular?  Sets
   *algebraic to the number of zero columns; returns 1 when singular. */
int dsk_lin_mass_singular(dsk_solver *s, int *algebraic);
void dsk_lin_free(dsk_solver *s);
/* Jv = (dF/du) v from the model's tangent code: the Jacobian-times-vector
   function of the matrix-free linear solver (DSK_LS_SPGMR), CVODES and ARKODE. */
int dsk_lin_jtimes(N_Vector v, N_Vector Jv, double t, N_Vector y, N_Vector fy, void *data,
                   N_Vector tmp);

/* Dense LU from LAPACK (OpenBLAS dgetrf / dgetrs) over a SUNDenseMatrix. */
SUNLinearSolver dsk_linsol_lapack(N_Vector y, SUNMatrix A, SUNContext ctx);

#endif
