/*
 * dsk_gen.h - the ABI between the kernel and the C code it generates.
 *
 * Every compiled model exports one symbol, `dsk_model_table`, returning a
 * pointer to a constant dsk_gen_table.  The loader (jit.c) refuses a table whose
 * abi_version differs from DSK_GEN_ABI_VERSION.
 *
 * The struct body is written once, as a macro, and used twice: here as C, and
 * by the emitter (emit_c.c) as text pasted at the top of every generated file
 * (DSK_GEN_TABLE_TEXT), so the two can never disagree.
 *
 * Contract of the generated functions (same as SUNDIALS callbacks): they
 * return 0 on success, non-zero on failure; they read their arguments and a
 * caller-owned workspace `ws` of `nws` doubles, write only their outputs and
 * that workspace, and keep no state of their own, so one compiled model
 * serves any number of threads, each with its own workspace.
 *
 * Order of calls on a workspace: init(ws) once; set_inputs(p, ws) whenever the
 * parameters change; then u0/rhs/out/... any number of times.  The tangent
 * workspace `dws` (also nws doubles) holds directional derivatives of the
 * intermediates and needs no initialisation.
 */
#ifndef DSK_GEN_H
#define DSK_GEN_H

#define DSK_GEN_ABI_VERSION 1

#define DSK_GEN_TABLE_BODY(...)                                              \
  int abi_version;     /* DSK_GEN_ABI_VERSION of the generator */            \
  int nstates;         /* length of u */                                     \
  int nparams;         /* length of in */                                    \
  int nout;            /* length of out (nstates when out is absent) */      \
  int nstop;           /* length of stop (0 when absent) */                  \
  int has_mass;        /* 1 when the model defines M */                      \
  int nws;             /* workspace length in doubles */                     \
  const char *const *param_names;   /* nparams names, in order of in */      \
  const double *default_params;     /* nparams literal values of in */       \
  /* constants: once per workspace */                                        \
  int (*init)(double *ws);                                                   \
  /* copies p into the workspace, computes input-dependent tensors */        \
  int (*set_inputs)(const double *p, double *ws);                            \
  /* initial state u0 (after set_inputs) */                                  \
  int (*u0)(double *ws, double *u);                                          \
  /* f = F(t, u) */                                                          \
  int (*rhs)(double t, const double *u, double *ws, double *f);              \
  /* f = F(t, u) and df = dF/du . v (exact tangent code) */                  \
  int (*rhs_jvp)(double t, const double *u, const double *v, double *ws,     \
                 double *dws, double *f, double *df);                        \
  /* y = out(t, u) */                                                        \
  int (*out)(double t, const double *u, double *ws, double *y);

typedef struct dsk_gen_table {
  DSK_GEN_TABLE_BODY()
} dsk_gen_table;

#define DSK_GEN_STR_(...) #__VA_ARGS__
#define DSK_GEN_STR(...) DSK_GEN_STR_(__VA_ARGS__)
/* The same declaration as text, for the emitter. */
#define DSK_GEN_TABLE_TEXT \
  "typedef struct dsk_gen_table { " DSK_GEN_STR(DSK_GEN_TABLE_BODY()) " } dsk_gen_table;\n"

#endif
