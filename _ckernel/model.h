/* model.h - internal: the definition of dsk_model (a loaded shared object). */
#ifndef DSK_MODEL_H
#define DSK_MODEL_H

#include "dsk.h"

#define DSK_PATH_MAX 4096

struct dsk_model {
  const dsk_gen_table *tab; /* from the object's dsk_model_table(); ABI checked */
  void *dl;                 /* dlopen handle, closed by dsk_model_free */
  char path[DSK_PATH_MAX];  /* cache file the object was loaded from */
  dsk_sparsity jac;         /* d rhs / du; owned */
  dsk_sparsity mass;        /* d (M v) / dv; owned; nnz 0 without M */
  int ncolors;              /* colours of jac's columns */
  int *color_ptr;           /* ncolors + 1: columns of colour c are */
  int *color_cols;          /*   color_cols[color_ptr[c] .. color_ptr[c+1]) */
};

/* jit.c: dsk_jit_load without attaching a Jacobian pattern. */
int dsk_jit_open(const char *c_source, const dsk_jit_options *opt, dsk_model **out,
                 dsk_status *st);

/* jac.c: take ownership of the patterns (or build a dense jac when jac is
   NULL) and colour the columns; frees what it was given on failure. */
int dsk_model_attach_patterns(dsk_model *m, dsk_sparsity *jac, dsk_sparsity *mass,
                              dsk_status *st);
/* jac.c: free the patterns and colouring. */
void dsk_model_free_patterns(dsk_model *m);
void dsk_sparsity_free(dsk_sparsity *s);

#endif
