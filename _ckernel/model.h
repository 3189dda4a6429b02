/* model.h - internal: the definition of dsk_model (a loaded shared object). */
#ifndef DSK_MODEL_H
#define DSK_MODEL_H

#include "dsk.h"

#define DSK_PATH_MAX 4096

/* Columns grouped so that no two columns of one colour share a row:
   colour c holds cols[ptr[c] .. ptr[c+1]). */
typedef struct dsk_coloring {
  int n;
  int *ptr;
  int *cols;
} dsk_coloring;

struct dsk_model {
  const dsk_gen_table *tab; /* from the object's dsk_model_table(); ABI checked */
  void *dl;                 /* dlopen handle, closed by dsk_model_free */
  char path[DSK_PATH_MAX];  /* cache file the object was loaded from */
  dsk_sparsity jac;         /* d rhs / du; owned */
  dsk_sparsity mass;        /* d (M v) / dv; owned; nnz 0 without M */
  dsk_coloring jac_col;     /* colouring of jac's columns */
  dsk_coloring mass_col;    /* colouring of mass's columns */
  struct dsk_cb_data *cb;   /* model_callback.c: the callbacks and table, or NULL */
};

/* jit.c: dsk_jit_load without attaching a Jacobian pattern. */
int dsk_jit_open(const char *c_source, const dsk_jit_options *opt, dsk_model **out,
                 dsk_status *st);
/* jit.c: the model of this DiffSL text from the source index, patterns
   attached, without translating; *out NULL on a miss (DSK_OK). */
int dsk_jit_index_open(const char *diffsl, const dsk_jit_options *opt, dsk_model **out,
                       dsk_status *st);
/* jit.c: record m (compiled from diffsl) in the source index; best effort. */
void dsk_jit_index_store(const char *diffsl, const dsk_jit_options *opt, const dsk_model *m);

/* jac.c: take ownership of the patterns (or build a dense jac when jac is
   NULL) and colour the columns; frees what it was given on failure. */
int dsk_model_attach_patterns(dsk_model *m, dsk_sparsity *jac, dsk_sparsity *mass,
                              dsk_status *st);
/* jac.c: free the patterns and colouring. */
void dsk_model_free_patterns(dsk_model *m);
void dsk_sparsity_free(dsk_sparsity *s);

/* model_callback.c: for a callback model, store what its table functions
   need in a workspace just init'ed (a no-op for compiled models). */
void dsk_model_bind_ws(const dsk_model *m, double *ws);
/* model_callback.c: the dense Jacobian from the callback model's jac
   callback (m->cb set, with jac) in the dense pattern's order. */
int dsk_model_cb_jac(const dsk_model *m, double t, const double *u, const double *ws,
                     double *values);
/* model_callback.c: 1 when m is a callback model with a jac callback. */
int dsk_model_cb_has_jac(const dsk_model *m);
void dsk_model_cb_free(dsk_model *m);

#endif
