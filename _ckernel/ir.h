/*
 * ir.h - the tensor IR built by sema.c and read by diff.c and emit_c.c.
 *
 * A model is its tensors in definition order.  A tensor is a dense vector
 * (rank 0 or 1 so far) written by blocks; a block writes entries
 * [off, off+len) from one element expression evaluated over the block's index
 * `i`.  An expression node of length 1 is broadcast along the block; one of
 * length len is read at `i`.
 */
#ifndef DSK_IR_H
#define DSK_IR_H

#include "compile.h"

/* What a value depends on, ordered: a tensor's class is the most variable
   thing it reads.  ORDER MATTERS: comparisons use it. */
typedef enum dsk_dep {
  DEP_CONST = 0, /* computed once per workspace (init) */
  DEP_INPUT = 1, /* once per set_inputs */
  DEP_TIME = 2,  /* in every model function, does not depend on u */
  DEP_STATE = 3  /* depends on u: has a tangent */
} dsk_dep;

typedef enum dsk_ir_op {
  IR_NUM,  /* constant: num */
  IR_T,    /* the time t */
  IR_READ, /* tensor `tensor`, entry off (+ i when len > 1) */
  IR_NEG,  /* -a */
  IR_ADD,  /* a + b */
  IR_SUB,  /* a - b */
  IR_MUL,  /* a * b */
  IR_DIV,  /* a / b */
  IR_CALL  /* function fn (diff.c table) of a [, b] */
} dsk_ir_op;

typedef struct dsk_ir_expr {
  dsk_ir_op op;
  dsk_span sp;
  double num;                /* IR_NUM */
  int tensor, off;           /* IR_READ */
  int fn;                    /* IR_CALL */
  int len;                   /* 1 (broadcast) or the block's length */
  int dep;                   /* dsk_dep */
  struct dsk_ir_expr *a, *b;
} dsk_ir_expr;

typedef struct dsk_ir_block {
  int off, len;              /* entries written */
  dsk_ir_expr *e;
  dsk_span sp;
} dsk_ir_block;

typedef enum dsk_role {
  ROLE_OTHER, /* intermediate: lives in the workspace */
  ROLE_IN,    /* parameters: in the workspace, copied from p */
  ROLE_U,     /* the state (argument u; written by u0) */
  ROLE_F,     /* right-hand side (argument f) */
  ROLE_OUT    /* outputs (argument y) */
} dsk_role;

typedef struct dsk_ir_tensor {
  const char *name, *idx;
  dsk_span sp;
  int rank, len;
  int role;                  /* dsk_role */
  int dep;                   /* dsk_dep; u counts as DEP_STATE for readers */
  int ws_off;                /* offset in the workspace, or -1 */
  dsk_ir_block *blocks;
  int nblocks;
  unsigned char *reads;      /* reads[k] = 1 when a block reads tensor k */
} dsk_ir_tensor;

typedef struct dsk_ir_model {
  dsk_ir_tensor *t;
  int nt;
  int iu, iF, iin, iout;     /* tensor indices, -1 when absent */
  int nstates, nparams, nout, nws;
  const char **param_names;
  double *defaults;
} dsk_ir_model;

dsk_ir_model *dsk_sema(dsk_cctx *c, const dsk_ast_model *ast);

/* ---- functions and their derivatives (diff.c) --------------------------- */

/* Index of a DiffSL function by name, or -1. */
int dsk_fn_lookup(const char *name);
int dsk_fn_nargs(int fn);
const char *dsk_fn_name(int fn);
/* C definitions of every function and partial derivative used by generated
   code (static, pure). */
const char *dsk_fn_prelude(void);
/* C expression for the primal value of fn at args a, b. */
void dsk_fn_primal(char *buf, size_t n, int fn, const char *a, const char *b);
/* C expression of the tangent of node value p = fn(a, b) given the tangents
   da, db of the arguments (NULL when an argument's tangent is zero). */
void dsk_fn_tangent(char *buf, size_t n, int fn, const char *a, const char *b, const char *p,
                    const char *da, const char *db);
/* Tangent of an arithmetic node (IR_NEG..IR_DIV), same conventions. */
void dsk_op_tangent(char *buf, size_t n, dsk_ir_op op, const char *a, const char *b,
                    const char *p, const char *da, const char *db);

/* ---- back end (emit_c.c) ------------------------------------------------ */

/* The whole C translation unit, malloc'd (caller frees). */
char *dsk_emit_c(dsk_cctx *c, const dsk_ir_model *m);

#endif
