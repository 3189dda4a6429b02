/*
 * ir.h - the tensor IR built by sema.c and read by diff.c and emit_c.c.
 *
 * A model is its tensors in definition order.  A tensor has a shape and a
 * layout (dense, diagonal, or sparse: an ordered list of stored index tuples)
 * and is written by blocks.  A block evaluates one element expression over an
 * iteration domain whose axes are the tensor's indices followed by the
 * contraction indices (those that appear only on the right); each domain
 * point writes (or, with contraction, accumulates into) one stored entry.
 *
 * sema.c fixes shapes, layouts and the list of active points of every block;
 * for each point it also records where every operand read comes from (a
 * storage position, or -1 for a structural zero).  emit_c.c compresses those
 * position columns into affine loops, so code size follows the number of
 * blocks, not the number of entries.
 */
#ifndef DSK_IR_H
#define DSK_IR_H

#include "compile.h"

/* What a value depends on, as a bit mask.  A tensor is computed where its
   most variable dependency says: no bit (constant) in init(), only DEP_IN in
   set_inputs(), anything else inside each function that needs it. */
enum {
  DEP_IN = 1,    /* the parameters */
  DEP_TIME = 2,  /* t */
  DEP_STATE = 4, /* u */
  DEP_DUDT = 8,  /* dudt (only M may read it) */
  DEP_N = 16     /* the model index N */
};
#define DEP_DYNAMIC (DEP_TIME | DEP_STATE | DEP_DUDT | DEP_N)

typedef enum dsk_ir_op {
  IR_NUM,    /* constant: num */
  IR_T,      /* the time t */
  IR_NIDX,   /* the model index N, as a double */
  IR_READ,   /* operand `read` (an index into the block's reads) */
  IR_NEG,    /* -a */
  IR_ADD,    /* a + b */
  IR_SUB,    /* a - b */
  IR_MUL,    /* a * b */
  IR_DIV,    /* a / b */
  IR_CALL,   /* function fn (diff.c table) of a [, b] */
  IR_INTERP  /* interp1d(grid, values, a): grid constant, values = read yr (whole) */
} dsk_ir_op;

typedef struct dsk_ir_expr {
  dsk_ir_op op;
  dsk_span sp;
  double num;       /* IR_NUM */
  int read;         /* IR_READ: index into the block's reads */
  int fn;           /* IR_CALL */
  int yr;           /* IR_INTERP: the read holding the values (whole vector) */
  int ngrid;        /* IR_INTERP: grid length */
  const double *grid; /* IR_INTERP: the grid, strictly increasing (compile-time) */
  int gid;          /* IR_INTERP: index of the grid in the model's list */
  int dep;          /* DEP_* mask */
  struct dsk_ir_expr *a, *b;
} dsk_ir_expr;

/* An operand read: tensor `tensor`, coordinates (domain axis ax[k] or 0 when
   ax[k] < 0) + off[k] per tensor axis k; `noff` is a C int expression added
   to axis 0 at run time (indexing by N), or NULL. */
typedef struct dsk_ir_read {
  int tensor;
  int rank;
  int ax[DSK_MAX_RANK];
  int off[DSK_MAX_RANK];
  int ext[DSK_MAX_RANK]; /* extent of the view per axis (for run-time bounds) */
  const char *noff;
  int whole;        /* the whole view ext[0] entries from the position is used */
  int seq;          /* position = the point's index (values read from a file) */
  int dep;
} dsk_ir_read;

typedef struct dsk_ir_block {
  dsk_span sp;
  dsk_ir_expr *e;
  dsk_ir_read *reads;
  int nreads;
  int ndom;                 /* domain axes: tensor rank + contraction axes */
  int dext[DSK_MAX_RANK * 2];
  int lo[DSK_MAX_RANK];     /* origin of the block in the tensor */
  int ext[DSK_MAX_RANK];    /* extent of the block in the tensor */
  int diag;                 /* region is a diagonal */
  int contract;             /* has contraction axes: accumulates */
  /* active points, in iteration order: npts rows of (1 + nreads) ints:
     the storage position written, then each read's storage position or -1 */
  int npts;
  int *cols;
  const void *src_points;   /* sema: the points of a read('file') element */
} dsk_ir_block;

typedef enum dsk_layout { LAYOUT_DENSE, LAYOUT_DIAG, LAYOUT_SPARSE } dsk_layout;

typedef enum dsk_role {
  ROLE_OTHER, /* intermediate: lives in the workspace */
  ROLE_IN,    /* parameters: in the workspace, copied from p */
  ROLE_U,     /* the state (argument u; written by u0) */
  ROLE_DUDT,  /* names for du/dt (argument v of mass) */
  ROLE_F,     /* right-hand side */
  ROLE_M,     /* M du/dt */
  ROLE_OUT,   /* outputs */
  ROLE_STOP,  /* event functions */
  ROLE_RESET  /* state after an event */
} dsk_role;

typedef struct dsk_ir_tensor {
  const char *name, *idx;
  dsk_span sp;
  int rank;
  int shape[DSK_MAX_RANK];
  int layout;                /* dsk_layout */
  int nnz;                   /* stored entries */
  int *entries;              /* LAYOUT_SPARSE: nnz tuples of rank ints, storage order */
  void *lookup;              /* sema's tuple -> position table (sparse) */
  int role;                  /* dsk_role */
  int dep;                   /* DEP_* mask of what its values depend on */
  int ws_off;                /* offset in the workspace, or -1 */
  int zero_fill;             /* entries not covered by blocks (or accumulated) start at 0 */
  dsk_ir_block *blocks;
  int nblocks;
  unsigned char *reads;      /* reads[k] = 1 when a block reads tensor k */
  double *consts;            /* values known at compile time (nnz), else NULL */
  int from_file;             /* values read by read('file.tns'): copied in init() */
} dsk_ir_tensor;

typedef struct dsk_ir_model {
  dsk_ir_tensor *t;
  int nt;                   /* tensors: the model's, then one per read('file') */
  int ndefined;             /* the model's own tensors */
  int iu, iF, iin, iout, idudt, iM, istop, ireset; /* -1 when absent */
  int nstates, nparams, nout, nstop, nws;
  int n_slot;                /* workspace slot holding N */
  const char **param_names;
  double *defaults;
  const dsk_ir_expr **grids; /* interp1d nodes, in order of appearance */
  int ngrids, capgrids;
} dsk_ir_model;

dsk_ir_model *dsk_sema(dsk_cctx *c, const dsk_ast_model *ast);

/* ---- functions and their derivatives (diff.c) --------------------------- */

int dsk_fn_lookup(const char *name);
int dsk_fn_nargs(int fn);
const char *dsk_fn_name(int fn);
/* C definitions of every function and partial derivative used by generated
   code (static, pure). */
const char *dsk_fn_prelude(void);
/* C expression for the primal value of fn at args a, b. */
void dsk_fn_primal(char *buf, size_t n, int fn, const char *a, const char *b);
/* C expression of the tangent of p = fn(a, b) given the argument tangents
   da, db (NULL when zero). */
void dsk_fn_tangent(char *buf, size_t n, int fn, const char *a, const char *b, const char *p,
                    const char *da, const char *db);
/* Tangent of an arithmetic node (IR_NEG..IR_DIV), same conventions. */
void dsk_op_tangent(char *buf, size_t n, dsk_ir_op op, const char *a, const char *b,
                    const char *p, const char *da, const char *db);
/* Value of fn at a, b, with the same definitions as the generated code
   (for constants evaluated at compile time). */
double dsk_fn_eval(int fn, double a, double b);
/* Partial derivative of fn w.r.t. argument `which` (0 or 1) as a C
   expression, for the adjoint code; NULL when identically zero. */
const char *dsk_fn_partial(char *buf, size_t n, int fn, int which, const char *a,
                           const char *b, const char *p);

/* Sparsity of d rhs / du and d (M v) / dv as CSC, malloc'd into *jac and
   *mass (left empty, meaning dense, when too dense to track). Never jumps
   after allocating. */
void dsk_ir_patterns(dsk_cctx *c, const dsk_ir_model *m, dsk_sparsity *jac, dsk_sparsity *mass);

/* ---- back end (emit_c.c) ------------------------------------------------ */

/* The whole C translation unit, malloc'd (caller frees). */
char *dsk_emit_c(dsk_cctx *c, const dsk_ir_model *m);

#endif
