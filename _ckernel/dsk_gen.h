/*
 * dsk_gen.h - the ABI between the kernel and the C code it generates.
 *
 * Every compiled model exports one symbol, `dsk_model_table`, returning a
 * pointer to a constant dsk_gen_table.  The loader (jit.c) refuses a table whose
 * abi_version differs from DSK_GEN_ABI_VERSION.
 *
 * The declarations are written once, as macros, and used twice: here as C,
 * and by the emitter (emit_c.c) as text pasted at the top of every generated
 * file (DSK_GEN_TABLE_TEXT), so the two can never disagree.
 *
 * Contract of the generated functions (as for SUNDIALS callbacks): they
 * return 0 on success, > 0 for a recoverable failure (1: eval[DSK_FN_RHS]
 * produced a NaN or an infinity) and < 0 for an unrecoverable one (-2: an
 * index computed from N is out of range); they read their arguments and a caller-owned workspace `ws`
 * of `nws` doubles, write only their outputs and that workspace (and the
 * tangent workspace `dws` or adjoint workspace `bws`, also nws doubles, which
 * need no initialisation), and keep no state of their own, so one compiled
 * model serves any number of threads, each with its own workspaces.
 *
 * Order of calls on a workspace: init(ws) once; set_inputs(p, ws) whenever the
 * parameters change; ws[n_slot] holds the model index N (0 after init; the
 * solver writes it at a reset); then any function below.
 *
 * The functions come in families, one per model function X (DSK_FN_*):
 *   eval[X](t, x, ws, y)                 y = X(t, x)
 *   jvp_x[X](t, x, dx, ws, dws, y, dy)   y = X, dy = dX/dx . dx
 *   jvp_p[X](t, x, dp, ws, dws, y, dy)   y = X, dy = dX/dp . dp
 *   vjp_x[X](t, x, w, ws, bws, xbar)     xbar = (dX/dx)^T w   (overwritten)
 *   vjp_p[X](t, x, w, ws, bws, pbar)     pbar = (dX/dp)^T w   (overwritten)
 *   vjp_xp[X](t, x, w, ws, bws, xbar, pbar)  both in one sweep (the primal
 *                                        and the shared adjoints computed once);
 *                                        generated for DSK_FN_RHS only
 * where x is the state u, except for DSK_FN_MASS where x is the vector v that
 * plays du/dt (mass computes M v), and DSK_FN_U0 / DSK_FN_DUDT0 which ignore t
 * and x (their jvp_x/vjp_x are NULL).  A family is all NULL when the model
 * does not define that function (no M: mass is the identity; no out: the
 * outputs are the states).
 */
#ifndef DSK_GEN_H
#define DSK_GEN_H

#define DSK_GEN_ABI_VERSION 3

#define DSK_FN_U0 0    /* initial state u (from in) */
#define DSK_FN_RHS 1   /* F */
#define DSK_FN_MASS 2  /* M v */
#define DSK_FN_OUT 3   /* out */
#define DSK_FN_STOP 4  /* stop */
#define DSK_FN_RESET 5 /* reset */
#define DSK_FN_DUDT0 6 /* the values written in dudt (initial guess of du/dt) */
#define DSK_NFN 7

#define DSK_GEN_TYPES(...)                                                        \
  typedef int (*dsk_eval_fn)(double t, const double *x, double *ws, double *y);   \
  typedef int (*dsk_jvp_fn)(double t, const double *x, const double *dx,          \
                            double *ws, double *dws, double *y, double *dy);      \
  typedef int (*dsk_vjp_fn)(double t, const double *x, const double *w,           \
                            double *ws, double *bws, double *bar);                \
  typedef int (*dsk_vjp2_fn)(double t, const double *x, const double *w,          \
                             double *ws, double *bws, double *xbar, double *pbar);

#define DSK_GEN_TABLE_BODY(...)                                              \
  int abi_version;     /* DSK_GEN_ABI_VERSION of the generator */            \
  int nstates;         /* length of u */                                     \
  int nparams;         /* length of in */                                    \
  int nout;            /* length of out (nstates when out is absent) */      \
  int nstop;           /* length of stop (0 when absent) */                  \
  int has_mass;        /* 1 when the model defines M */                      \
  int nws;             /* workspace length in doubles */                     \
  int n_slot;          /* workspace entry holding the model index N */       \
  const char *const *param_names;   /* nparams names, in order of in */      \
  const double *default_params;     /* nparams literal values of in */       \
  int (*init)(double *ws);          /* constants: once per workspace */      \
  int (*set_inputs)(const double *p, double *ws);                            \
  dsk_eval_fn eval[DSK_NFN];                                                 \
  dsk_jvp_fn jvp_x[DSK_NFN];                                                 \
  dsk_jvp_fn jvp_p[DSK_NFN];                                                 \
  dsk_vjp_fn vjp_x[DSK_NFN];                                                 \
  dsk_vjp_fn vjp_p[DSK_NFN];                                                 \
  dsk_vjp2_fn vjp_xp[DSK_NFN]; /* NULL: call vjp_x and vjp_p */

DSK_GEN_TYPES()
typedef struct dsk_gen_table {
  DSK_GEN_TABLE_BODY()
} dsk_gen_table;

#define DSK_GEN_STR_(...) #__VA_ARGS__
#define DSK_GEN_STR(...) DSK_GEN_STR_(__VA_ARGS__)
/* The same declarations as text, for the emitter. */
#define DSK_GEN_TABLE_TEXT                                                   \
  DSK_GEN_STR(DSK_GEN_TYPES()) "\n"                                          \
  "typedef struct dsk_gen_table { " DSK_GEN_STR(DSK_GEN_TABLE_BODY()) " } dsk_gen_table;\n"

#endif
