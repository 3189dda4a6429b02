/*
 * dsk.h - public interface of the diffsol-pytorch C kernel.
 *
 * The kernel never prints, never aborts and never keeps global mutable state
 * except the JIT cache bookkeeping (guarded by a mutex).  Every fallible call
 * returns a dsk_code and fills a caller-owned dsk_status with a message.
 *
 * Pipeline:  DiffSL text --dsk_translate--> C source (+ model sizes)
 *            C source    --dsk_jit_load-->   dsk_model (shared object, cached)
 *            dsk_model   --dsk_solver_*-->   solutions
 * dsk_model_compile() runs the first two in one call.
 */
#ifndef DSK_H
#define DSK_H

#include <stddef.h>
#include "dsk_gen.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ------------------------------------------------------------ */

typedef enum dsk_code {
  DSK_OK = 0,
  DSK_E_SYNTAX = 1, /* DiffSL could not be parsed (line/col set) */
  DSK_E_MODEL = 2,  /* DiffSL parsed but is not a valid model (line/col set) */
  DSK_E_JIT = 3,    /* C compiler failed, cache unusable, dlopen failed */
  DSK_E_SOLVER = 4, /* SUNDIALS returned an error (t and flag set) */
  DSK_E_NOMEM = 5,  /* allocation failed */
  DSK_E_ARG = 6,    /* bad argument to a kernel call */
  DSK_E_MODELFN = 7, /* a model function returned non-zero */
  DSK_E_BUDGET = 8   /* a backward pass stopped at its step budget (no gradient) */
} dsk_code;

#define DSK_MSG_MAX 2048

typedef struct dsk_status {
  int code;              /* dsk_code */
  int line, col;         /* 1-based source position for DSK_E_SYNTAX/MODEL, else 0 */
  double t;              /* time reached, for DSK_E_SOLVER and DSK_E_MODELFN */
  char flag[64];         /* SUNDIALS flag name, for DSK_E_SOLVER */
  char msg[DSK_MSG_MAX]; /* full message; DiffSL errors end with the source line and a caret */
} dsk_status;

/* Reset to DSK_OK with empty fields. */
void dsk_status_clear(dsk_status *st);
/* Set code and printf-style message; returns code.  line, col, t and flag
   are left as they are (callers set them). */
int dsk_status_set(dsk_status *st, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- compiler: DiffSL -> C ---------------------------------------------- */

/* Translate DiffSL source to deterministic C source (malloc'd, caller frees
   with free()).  On error returns DSK_E_SYNTAX or DSK_E_MODEL with line, col
   and a message of the form
     "3:7: error: unknown name 'kk'\n  F { -kk * u }\n      ^"           */
int dsk_translate(const char *src, char **c_source, dsk_status *st);

/* A sparsity pattern in compressed sparse column form (row indices sorted
   within each column). */
typedef struct dsk_sparsity {
  int nrows, ncols, nnz;
  int *colptr; /* ncols + 1 */
  int *rowidx; /* nnz */
} dsk_sparsity;

/* What the translator knows about a model besides its C source. */
typedef struct dsk_translation {
  char *c_source;   /* the generated C */
  dsk_sparsity jac; /* d rhs / du (nstates x nstates) */
  dsk_sparsity mass;/* d (M v) / dv; empty (nnz 0, colptr NULL) when there is no M */
} dsk_translation;

/* dsk_translate plus the sparsity patterns derived from the IR.  On success
   the caller frees with dsk_translation_free; on error *out is zeroed. */
int dsk_translate_ex(const char *src, dsk_translation *out, dsk_status *st);
void dsk_translation_free(dsk_translation *tr);

/* ---- JIT ---------------------------------------------------------------- */

typedef struct dsk_jit_options {
  const char *cache_dir; /* NULL: $DIFFSOL_PYTORCH_CACHE, else $XDG_CACHE_HOME/diffsol_pytorch,
                            else $HOME/.cache/diffsol_pytorch */
  const char *cc;        /* NULL: $CC, else "cc"; split on whitespace, no quoting, so it
                            may carry arguments ("ccache gcc") but not a path with spaces */
} dsk_jit_options;

typedef struct dsk_model dsk_model;

/* Compile (or find in the cache) and load a generated C source. */
int dsk_jit_load(const char *c_source, const dsk_jit_options *opt, dsk_model **out,
                 dsk_status *st);
/* dsk_translate + dsk_jit_load. */
int dsk_model_compile(const char *diffsl, const dsk_jit_options *opt, dsk_model **out,
                      dsk_status *st);
/* Number of times this process has invoked the C compiler (cache misses). */
long dsk_jit_compile_count(void);

const dsk_gen_table *dsk_model_table(const dsk_model *m);

/* The pattern of d rhs / du: from the IR for compiled DiffSL, dense for a
   model loaded from C text alone.  Its columns are coloured (no two columns
   of one colour share a row), so the values cost ncolors tangent sweeps. */
const dsk_sparsity *dsk_model_jac_pattern(const dsk_model *m);
int dsk_model_jac_ncolors(const dsk_model *m);
/* The values of d rhs / du at (t, u) in the pattern's order, from
   ncolors calls of the generated tangent code.  ws: a workspace after
   set_inputs; dws: a tangent workspace; work: 3 * nstates doubles. */
int dsk_model_jac_values(const dsk_model *m, double t, const double *u, double *ws, double *dws,
                         double *work, double *values);
/* Pattern of the mass matrix (nnz 0 when the model has no M). */
const dsk_sparsity *dsk_model_mass_pattern(const dsk_model *m);
/* Values of the mass matrix at t in its pattern's order, from one call of
   the generated M per colour (M is linear in du/dt). ws: after set_inputs;
   work: 2 * nstates doubles.  Does nothing without M. */
int dsk_model_mass_values(const dsk_model *m, double t, double *ws, double *work,
                          double *values);
/* Path of the loaded shared object in the cache. */
const char *dsk_model_path(const dsk_model *m);
void dsk_model_free(dsk_model *m);

/* ---- callback models (model_callback.c) ---------------------------------------
   A model whose right-hand side is a set of C callbacks (with a user pointer)
   instead of generated code: du/dt = F(t, u; theta), u(t0) = y0, outputs =
   the states.  Its parameter vector is p = [y0 (nstates); theta (ntheta)], so
   reverse mode returns d/dy0 in grad[0 .. nstates) and d/dtheta after it.
   Every callback returns 0 on success, > 0 for a recoverable failure and < 0
   for an unrecoverable one, which stops the solve (DSK_E_MODELFN / SOLVER).
   The solver may call them from the thread that runs the solve only. */
typedef struct dsk_callbacks {
  void *user;
  int nstates; /* n >= 1 */
  int ntheta;  /* parameters besides y0 (>= 0) */
  int nstop;   /* number of stop (event) functions; 0 without */
  /* f = F(t, y; theta); required.  A non-finite f counts as recoverable. */
  int (*rhs)(void *user, double t, const double *y, const double *theta, double *f);
  /* dense J = dF/dy, column-major: J[j * n + i] = dF_i / dy_j (optional) */
  int (*jac)(void *user, double t, const double *y, const double *theta, double *J);
  /* f = F and jv = dF/dy . v (optional; builds J with n products when jac is
     NULL; an implicit method needs jac or jvp) */
  int (*jvp)(void *user, double t, const double *y, const double *theta, const double *v,
             double *f, double *jv);
  /* ybar = (dF/dy)^T w, thbar = (dF/dtheta)^T w (ntheta); needed by reverse mode */
  int (*vjp)(void *user, double t, const double *y, const double *theta, const double *w,
             double *ybar, double *thbar);
  /* g = stop(t, y) (nstop values); needed when nstop > 0 */
  int (*stop)(void *user, double t, const double *y, const double *theta, double *g);
} dsk_callbacks;

/* A model over the callbacks (copied; cb->user must outlive the model).
   Forward sensitivities are not available (DSK_E_ARG); reverse mode needs
   vjp and no stop functions.  With jac the Jacobian pattern is dense; without,
   the implicit methods use the matrix-free DSK_LS_SPGMR (jvp required).  Its
   table functions find the callbacks through the workspace, which only a
   dsk_solver prepares: use such a model through a solver. */
int dsk_model_from_callbacks(const dsk_callbacks *cb, dsk_model **out, dsk_status *st);
/* The callbacks of a callback model, or NULL for a compiled one. */
const dsk_callbacks *dsk_model_callbacks(const dsk_model *m);

/* ---- solvers ------------------------------------------------------------ */

/* Integration methods.  DSK_BDF is CVODES BDF for a model without M and
   IDAS (a DAE solver) for a model with one; the ARKODE methods take a
   non-singular M and refuse a singular one (algebraic states). */
typedef enum dsk_method {
  DSK_BDF = 0,     /* CVODES BDF, or IDAS when the model has M */
  DSK_ADAMS = 1,   /* CVODES Adams-Moulton (Newton iteration); no M */
  DSK_TSIT45 = 2,  /* ARKODE explicit, Tsitouras 5(4) */
  DSK_DOPRI5 = 3,  /* ARKODE explicit, Dormand-Prince 5(4) (ARKODE_DORMAND_PRINCE_7_4_5) */
  DSK_TR_BDF2 = 4, /* ARKODE implicit, TR-BDF2 (ARKODE_TRBDF2_3_3_2, gamma = 2 - sqrt 2) */
  DSK_ESDIRK34 = 5 /* ARKODE implicit, ESDIRK 3(2), 4 stages (ARKODE_ESDIRK324L2SA_4_2_3) */
} dsk_method;
#define DSK_NMETHODS 6

/* Linear solvers of the Newton iteration (ignored by explicit methods). */
typedef enum dsk_linsol {
  DSK_LS_AUTO = 0,    /* KLU when the pattern is sparse and large enough, else DENSE */
  DSK_LS_DENSE = 1,   /* SUNDENSE for small systems, LAPACK above DSK_LS_LAPACK_MIN */
  DSK_LS_KLU = 2,     /* SUNSparseMatrix (CSC) + SUNLinSol_KLU */
  DSK_LS_LAPACK = 3,  /* SUNDenseMatrix + OpenBLAS dgetrf/dgetrs */
  DSK_LS_SUNDENSE = 4, /* SUNDenseMatrix + SUNLinSol_Dense */
  DSK_LS_SPGMR = 5,    /* matrix-free Newton-Krylov: SUNLinSol_SPGMR (no preconditioner)
                          with Jacobian-vector products from the model's tangent code;
                          models without M.  The default of callback models without jac. */
  DSK_LS_FIXEDPOINT = 6 /* no linear solver: fixed-point (functional) iteration,
                          SUNNonlinSol_FixedPoint; method adams on ODEs without M (the
                          non-stiff case: no Jacobian at all, as LSODA's Adams mode) */
} dsk_linsol;

/* Thresholds of DSK_LS_AUTO / DSK_LS_DENSE (docs/solvers.md,
   benchmarks/bench_linsol.py): LAPACK from this many states on; KLU from
   DSK_LS_KLU_MIN states on when at most DSK_LS_KLU_DENSITY of the Newton
   matrix is stored. */
#define DSK_LS_LAPACK_MIN 20
#define DSK_LS_KLU_MIN 16
#define DSK_LS_KLU_DENSITY 0.2

typedef struct dsk_solver_options {
  int method;            /* dsk_method */
  double rtol;           /* relative tolerance */
  double atol;           /* scalar absolute tolerance (used when atol_vec is NULL) */
  const double *atol_vec;/* per-state absolute tolerances, or NULL */
  double t0;             /* initial time */
  double h0;             /* initial step, 0 = solver's choice */
  long max_steps;        /* per output interval as well as in total */
  int linear_solver;     /* dsk_linsol */
  int checkpoint_steps;  /* reverse mode: integration steps between checkpoints
                            (0: bdf/adams as many as 8 MB of interpolation data
                            hold, 100 to 20000; 20 for the ARKODE methods) */
  double adjoint_rtol;   /* reverse mode: tolerances of the backward (adjoint and */
  double adjoint_atol;   /* quadrature) integration; 0: rtol, and atol times the scale of lambda */
  double sens_rtol;      /* forward sensitivities: tolerances of their error control; the */
  double sens_atol;      /* tolerance of s_k is sens_atol / |p_k|; 0: rtol, and atol (SUNDIALS'
                            "estimated" tolerances, the default) */
  int sketch_min;        /* reverse mode, compiled models on CVODES/IDAS: above this many
                            parameters the gradient integral is the kernel's sketched
                            quadrature (sens_adjoint.c); 0: DSK_SKETCH_MIN (256) */
  int adjoint_discrete;  /* reverse mode: 1 = the discrete adjoint of CVODES' BDF steps
                            (sens_discrete.c) where it applies, else the continuous one */
} dsk_solver_options;

void dsk_solver_options_default(dsk_solver_options *o);

typedef struct dsk_stats {
  long steps, rhs_evals, jac_evals, lin_setups, err_test_fails, nonlin_iters, nonlin_fails;
  long events; /* stop roots met (resets applied, or the final stop) */
  /* reverse mode: steps of the last backward pass and its restarts (at output
     times with a gradient, events, segments); 0 after other solves */
  long backward_steps, backward_restarts;
} dsk_stats;

typedef struct dsk_solver dsk_solver;

/* A solver keeps a reference to the model (the model must outlive it) and
   copies atol_vec.  All SUNDIALS objects are created here and reused by
   every solve.  DSK_E_ARG when the method cannot take the model (adams with
   M; an ARKODE method with a singular M: the message suggests bdf). */
int dsk_solver_create(const dsk_model *m, const dsk_solver_options *o, dsk_solver **out,
                      dsk_status *st);
/* Solve with parameters p (nparams) and write outputs at the nt times
   (non-decreasing, times[0] >= t0) into y, row-major (nout x nt):
   y[i*nt + j] = out_i(times[j]), from the integrator's dense output.
   Events: with reset, at a root of stop element k the model index N is set
   to k, u = reset(t, u) and the integration restarts; an output time equal
   to an event time (within the root tolerance) gets the value after the
   reset.  Without reset the solve ends at the root: later outputs are NaN
   and dsk_solver_last_stop reports the root.  Safe to call without the GIL;
   a solver is used by one thread at a time. */
int dsk_solver_solve_dense(dsk_solver *s, const double *p, const double *times, int nt,
                           double *y, dsk_status *st);
/* Solve from t0 to t_final and return every internal step (one-step mode):
   *nt times in *ts and the outputs row by row in *ys (nt x nout:
   ys[j*nout + i] = out_i(ts[j])), starting with t0.  At a reset the time
   appears twice, before and after.  The arrays belong to the solver and are
   valid until its next solve or free. */
int dsk_solver_solve(dsk_solver *s, const double *p, double t_final, int *nt, const double **ts,
                     const double **ys, dsk_status *st);
/* 1 when the last solve ended at a stop root without reset (*t and *index
   set), else 0. */
int dsk_solver_last_stop(const dsk_solver *s, double *t, int *index);
/* Statistics of the last solve, also when it failed (zeros when it failed
   before integrating). */
void dsk_solver_stats(const dsk_solver *s, dsk_stats *out);
/* What was chosen: "CVODES BDF", "IDAS BDF", "ARKODE ERK Tsitouras 5(4)", ...
   and the linear solver: "none", "dense", "lapack", "klu". */
const char *dsk_solver_integrator_name(const dsk_solver *s);
const char *dsk_solver_linsol_name(const dsk_solver *s);
void dsk_solver_free(dsk_solver *s);

/* ---- forward mode (sens_forward.c) ------------------------------------------ */

/* Solve with parameters p and return the outputs y (as dsk_solver_solve_dense,
   nout x nt row-major) and their sensitivities to every parameter,
   sens[((size_t)k * nout + i) * nt + j] = d out_i(times[j]) / d p_k
   (nparams x nout x nt, row-major), from the sensitivity equations built
   with the model's generated tangent code: CVODES / IDAS forward
   sensitivity analysis for bdf and adams, the augmented system
   [u; du/dp_1; ...] for the ARKODE methods.  Exact through stop/reset events
   (the change of the event time with p included).  After a stop root
   without reset the remaining columns of y and sens are NaN.  Costs grow
   with the number of parameters; see docs/gradients.md. */
int dsk_solver_forward(dsk_solver *s, const double *p, const double *times, int nt, double *y,
                       double *sens, dsk_status *st);

/* ---- reverse mode (sens_adjoint.c) ------------------------------------------
   The checkpointed adjoint, for method bdf/adams on models without M
   (CVODES) and bdf on models with M (IDAS: index-1 DAEs, M independent of
   t).  Events (stop/reset) on CVODES: the forward pass is a plain solve that
   records the segments between events; each backward pass re-runs every
   segment with checkpoints (CVodeF) before integrating back over it and
   applies the adjoint jump at each event (docs/gradients.md); the same on
   IDAS.  Without reset, a non-zero g after the stop: DSK_E_ARG. */

/* The ARKODE methods (tsit45, dopri5, tr_bdf2, esdirk34) on models without M
   and events: the same functions, by sens_adjoint_arkode.c (checkpoints every
   20 steps; the backward pass recomputes each interval and integrates the
   adjoint with the same method); with M or events: DSK_E_ARG. */

/* Forward pass that records checkpoints (every checkpoint_steps) and the state at
   each output time; y as dsk_solver_solve_dense (may be NULL). */
int dsk_solver_forward_checkpointed(dsk_solver *s, const double *p, const double *times, int nt,
                                    double *y, dsk_status *st);
/* The same with checkpoint times of the caller (CVODES and IDAS: bdf, adams):
   the forward pass records the state at each of the nck times (strictly
   increasing, in (t0, times[nt-1]]) without restarting, and the backward pass
   integrates each stretch between two of them again, last first, before going
   back over it; memory then holds one stretch's checkpoints at a time.
   nck = 0 is dsk_solver_forward_checkpointed.  DSK_E_ARG for bad times or an
   ARKODE method. */
int dsk_solver_forward_checkpointed_at(dsk_solver *s, const double *p, const double *times,
                                       int nt, const double *ck, int nck, double *y,
                                       dsk_status *st);
/* One backward pass over the last checkpointed forward pass:
   grad[k] = d/dp_k sum_ij g[i*nt + j] out_i(t_j) (g: nout x nt, row-major).
   Output times whose g column is zero cost nothing, and the pass starts at
   the last non-zero one.  May be repeated with other g; DSK_E_ARG once the
   solver has solved again. */
int dsk_solver_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st);
/* A number that changes with every solve the solver starts: a checkpointed
   forward pass is the current one while it is unchanged. */
long dsk_solver_generation(const dsk_solver *s);
/* Options.adjoint_discrete (sens_discrete.c): 1 when reverse mode on this
   solver takes the discrete adjoint of CVODES' BDF steps (adjoint_discrete
   set, method bdf, no events, a dense or KLU Newton matrix) unless a pass
   asks for checkpoint times or cannot be recorded exactly; 0 otherwise. */
int dsk_solver_discrete_adjoint(const dsk_solver *s);
/* 1 when the solver's last checkpointed forward pass is a discrete one (its
   backward passes are the discrete adjoint's), 0 otherwise. */
int dsk_solver_discrete_recorded(const dsk_solver *s);
/* Both; the forward pass only goes as far as the last time with a non-zero g. */
int dsk_solver_reverse(dsk_solver *s, const double *p, const double *times, int nt,
                       const double *g, double *grad, dsk_status *st);
/* Limits the backward passes of the dsk_solver_backward / dsk_solver_reverse
   calls that follow to `ratio` backward steps per step of their forward pass
   (0, the default: no limit).  A pass over it stops with DSK_E_BUDGET
   (stats.backward_steps: the steps it took) and the solver stays usable:
   gradient_method="auto" takes forward sensitivities instead of an adjoint
   that its restarts made dearer than they would be (docs/gradients.md). */
void dsk_solver_set_backward_budget(dsk_solver *s, double ratio);

/* ---- batches (batch.c) ---------------------------------------------------------
   Many parameter sets of one model, solved on threads: a dsk_batch keeps
   worker solvers (each with its own SUNContext, created on first use and
   reused by later calls); a call with nthreads threads runs on the calling
   thread plus nthreads - 1 threads spawned for the call, at most one per row.
   Rows are independent: row r's result is bit-identical to the same call of
   dsk_solver_solve_dense / _forward / _reverse with p + r * nparams on a
   solver with the same options, whatever the thread count.  Arrays are
   row-major with the row first: p (nrows x nparams), y (nrows x nout x nt),
   sens (nrows x nparams x nout x nt), g (nrows x nout x nt), grad
   (nrows x nparams).  row_status (nrows, may be NULL) gets each row's
   dsk_code, or -1 for a row not run: after a failure no new row starts, and
   the call returns the error of the lowest failing row with "row R: " in
   front of its message.  stop_t / stop_index (nrows, may be NULL) get the
   stop root that ended each row (dsk_solver_last_stop), index -1 when none.
   nrows = 0 does nothing.  Calls on one batch from several threads are
   serialised by the batch's mutex. */
#define DSK_BATCH_MAX_THREADS 1024

typedef struct dsk_batch dsk_batch;

/* Copies the options (and atol_vec); creates the first worker, so an
   option the model cannot take fails here as in dsk_solver_create.  The
   model must outlive the batch. */
int dsk_batch_create(const dsk_model *m, const dsk_solver_options *o, dsk_batch **out,
                     dsk_status *st);
int dsk_batch_solve_dense(dsk_batch *b, int nthreads, int nrows, const double *p,
                          const double *times, int nt, double *y, int *row_status,
                          double *stop_t, int *stop_index, dsk_status *st);
int dsk_batch_forward(dsk_batch *b, int nthreads, int nrows, const double *p,
                      const double *times, int nt, double *y, double *sens, int *row_status,
                      double *stop_t, int *stop_index, dsk_status *st);
/* dsk_solver_reverse per row, each with its own g (row r: g + r * nout * nt). */
int dsk_batch_reverse(dsk_batch *b, int nthreads, int nrows, const double *p,
                      const double *times, int nt, const double *g, double *grad,
                      int *row_status, dsk_status *st);
/* The same with dsk_solver_set_backward_budget(budget) on every row: a row
   over it stops the batch with DSK_E_BUDGET (that row's status; rows not yet
   started do not run).  steps, unless NULL: the forward and the backward
   steps of the rows that ran, summed (also over the budget). */
int dsk_batch_reverse_budget(dsk_batch *b, int nthreads, int nrows, const double *p,
                             const double *times, int nt, const double *g, double *grad,
                             int *row_status, double budget, long steps[2], dsk_status *st);
/* Number of worker solvers created so far. */
int dsk_batch_workers(dsk_batch *b);
void dsk_batch_free(dsk_batch *b);


#ifdef __cplusplus
}
#endif
#endif
