/*
 * batch.c - many parameter sets of one model solved on a pool of threads.
 *
 * A dsk_batch holds the model (shared, immutable: dsk_gen.h), a copy of the
 * solver options and worker solvers, each with its own SUNContext,
 * workspaces and SUNDIALS memory (dsk_solver_create).  A call with k threads
 * uses the first k workers (created on first use, kept for later calls); the
 * calling thread is worker 0 and k - 1 threads are spawned for the call and
 * joined before it returns.  Rows are handed out in increasing order from a
 * counter under a mutex, so a row runs on whichever worker is free.
 *
 * Why threads per call rather than a persistent pool: creating and joining a
 * thread costs tens of microseconds (benchmarks/bench_batch.py measures the
 * whole call overhead), small next to one solve, and it keeps the batch free
 * of idle threads, of shutdown ordering and of fork() hazards (a forked
 * child would inherit a pool whose threads do not exist).
 *
 * Determinism: each row is one call of dsk_solver_solve_dense /
 * dsk_solver_forward / dsk_solver_reverse, which restart everything from
 * the parameters (set_inputs, u0, integrator reinit, linear solver
 * re-initialised at the first step), so a row's result does not depend on
 * the worker or on the rows it solved before: it is bit-identical to the
 * same call on any solver with the same options.
 *
 * Errors: each row gets a status code; after a failure no further row is
 * started, and the reported error is the one of the lowest failing row
 * ("row 3: ..."), which is deterministic because rows are claimed in
 * increasing order (every row before a failing one was started).
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsk.h"
#include "solve.h"

struct dsk_batch {
  const dsk_model *model;
  dsk_solver_options opt; /* opt.atol_vec points to atol below (or NULL) */
  double *atol;
  pthread_mutex_t lock;   /* one call at a time */
  dsk_solver **workers;   /* nworkers slots, NULL until first used */
  int nworkers;
  dsk_solver *first;      /* workers[0], created with the batch: argument checks */
  const dsk_gen_table *tab;
};

enum { OP_DENSE, OP_FORWARD, OP_REVERSE };

typedef struct batch_job {
  dsk_batch *b;
  int op, nrows, nt, np, nout;
  const double *p, *times, *g;
  double *y, *sens, *grad;
  double *stop_t;
  int *stop_index, *row_status;
  double budget;     /* reverse: backward steps per forward step, 0: no limit */
  long *steps;       /* reverse, unless NULL: forward and backward steps of all rows */
  pthread_mutex_t m; /* guards the fields below */
  int next;          /* next row to start */
  int failed;        /* a row failed: start no more */
  int fail_row;      /* lowest failing row, or -1 */
  dsk_status fail_st;
} batch_job;

typedef struct batch_worker {
  batch_job *job;
  int index;
  pthread_t thread;
} batch_worker;

void dsk_batch_free(dsk_batch *b) {
  if (!b) return;
  for (int i = 0; i < b->nworkers; i++) dsk_solver_free(b->workers[i]);
  free(b->workers);
  free(b->atol);
  pthread_mutex_destroy(&b->lock);
  free(b);
}

int dsk_batch_create(const dsk_model *m, const dsk_solver_options *o, dsk_batch **out,
                     dsk_status *st) {
  dsk_status_clear(st);
  if (!out) return dsk_status_set(st, DSK_E_ARG, "dsk_batch_create: out is NULL");
  *out = NULL;
  const dsk_gen_table *tab = dsk_model_table(m);
  if (!tab) return dsk_status_set(st, DSK_E_ARG, "dsk_batch_create: no model");
  dsk_batch *b = calloc(1, sizeof *b);
  if (!b) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  if (pthread_mutex_init(&b->lock, NULL) != 0) {
    free(b);
    return dsk_status_set(st, DSK_E_NOMEM, "pthread_mutex_init failed");
  }
  b->model = m;
  if (o) {
    b->opt = *o;
  } else {
    dsk_solver_options_default(&b->opt);
  }
  if (o && o->atol_vec && tab->nstates > 0) {
    b->atol = malloc((size_t)tab->nstates * sizeof(double));
    if (!b->atol) {
      dsk_batch_free(b);
      return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
    }
    memcpy(b->atol, o->atol_vec, (size_t)tab->nstates * sizeof(double));
  }
  b->opt.atol_vec = b->atol;
  /* worker 0 now: the options and the method are checked against the model here */
  b->workers = calloc(1, sizeof *b->workers);
  if (!b->workers) {
    dsk_batch_free(b);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  }
  b->nworkers = 1;
  int rc = dsk_solver_create(m, &b->opt, &b->workers[0], st);
  if (rc != DSK_OK) {
    dsk_batch_free(b);
    return rc;
  }
  b->first = b->workers[0];
  b->tab = tab;
  *out = b;
  return DSK_OK;
}

int dsk_batch_workers(dsk_batch *b) {
  if (!b) return 0;
  int k = 0;
  pthread_mutex_lock(&b->lock);
  for (int i = 0; i < b->nworkers; i++) k += b->workers[i] != NULL;
  pthread_mutex_unlock(&b->lock);
  return k;
}

/* Room for k workers (slots NULL until used); under b->lock. */
static int reserve_workers(dsk_batch *b, int k, dsk_status *st) {
  if (k <= b->nworkers) return DSK_OK;
  dsk_solver **w = realloc(b->workers, (size_t)k * sizeof *w);
  if (!w) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for %d batch workers", k);
  for (int i = b->nworkers; i < k; i++) w[i] = NULL;
  b->workers = w;
  b->nworkers = k;
  return DSK_OK;
}

/* One row on solver s. */
static int run_row(batch_job *j, dsk_solver *s, int row, dsk_status *st) {
  size_t r = (size_t)row, np = (size_t)j->np, ny = (size_t)j->nout * (size_t)j->nt;
  const double *p = j->np > 0 ? j->p + r * np : NULL;
  int rc = DSK_OK;
  switch (j->op) {
  case OP_DENSE:
    rc = dsk_solver_solve_dense(s, p, j->times, j->nt, ny ? j->y + r * ny : NULL, st);
    break;
  case OP_FORWARD:
    rc = dsk_solver_forward(s, p, j->times, j->nt, ny ? j->y + r * ny : NULL,
                            ny && np ? j->sens + r * np * ny : NULL, st);
    break;
  default:
    dsk_solver_set_backward_budget(s, j->budget);
    rc = dsk_solver_reverse(s, p, j->times, j->nt, ny ? j->g + r * ny : NULL,
                            np ? j->grad + r * np : NULL, st);
    dsk_solver_set_backward_budget(s, 0.0);
    if (j->steps && (rc == DSK_OK || rc == DSK_E_BUDGET)) {
      dsk_stats stats;
      dsk_solver_stats(s, &stats);
      pthread_mutex_lock(&j->m);
      j->steps[0] += stats.steps;
      j->steps[1] += stats.backward_steps;
      pthread_mutex_unlock(&j->m);
    }
    break;
  }
  if (j->op != OP_REVERSE && (j->stop_t || j->stop_index)) {
    double t = 0.0;
    int index = -1;
    if (rc != DSK_OK || !dsk_solver_last_stop(s, &t, &index)) t = 0.0, index = -1;
    if (j->stop_t) j->stop_t[row] = t;
    if (j->stop_index) j->stop_index[row] = index;
  }
  return rc;
}

/* Claims the next row, or -1 when done or after a failure. */
static int claim_row(batch_job *j) {
  pthread_mutex_lock(&j->m);
  int row = (!j->failed && j->next < j->nrows) ? j->next++ : -1;
  pthread_mutex_unlock(&j->m);
  return row;
}

static void record_failure(batch_job *j, int row, const dsk_status *st) {
  pthread_mutex_lock(&j->m);
  j->failed = 1;
  if (j->fail_row < 0 || row < j->fail_row) {
    j->fail_row = row;
    j->fail_st = *st;
  }
  pthread_mutex_unlock(&j->m);
}

static void *worker_main(void *arg) {
  batch_worker *w = arg;
  batch_job *j = w->job;
  dsk_batch *b = j->b;
  dsk_status st;
  int row = claim_row(j);
  if (row < 0) return NULL;
  if (!b->workers[w->index]) { /* only this thread touches this slot now */
    int rc = dsk_solver_create(b->model, &b->opt, &b->workers[w->index], &st);
    if (rc != DSK_OK) {
      if (j->row_status) j->row_status[row] = rc;
      record_failure(j, row, &st);
      return NULL;
    }
  }
  dsk_solver *s = b->workers[w->index];
  for (; row >= 0; row = claim_row(j)) {
    int rc = run_row(j, s, row, &st);
    if (j->row_status) j->row_status[row] = rc;
    if (rc != DSK_OK) record_failure(j, row, &st);
  }
  return NULL;
}

/* Checks shared by every batch call (before any thread starts). */
static int check_call(dsk_batch *b, int nthreads, int nrows, const double *p,
                      const double *times, int nt, dsk_status *st) {
  if (!b) return dsk_status_set(st, DSK_E_ARG, "dsk_batch: batch is NULL");
  if (nthreads < 1 || nthreads > DSK_BATCH_MAX_THREADS)
    return dsk_status_set(st, DSK_E_ARG, "threads must be between 1 and %d, got %d",
                          DSK_BATCH_MAX_THREADS, nthreads);
  if (nrows < 0) return dsk_status_set(st, DSK_E_ARG, "negative number of rows (%d)", nrows);
  if (nrows == 0) return DSK_OK;
  int rc = dsk_solver_check_times(b->first, times, nt, st);
  if (rc != DSK_OK) return rc;
  if (!p && b->tab->nparams > 0)
    return dsk_status_set(st, DSK_E_ARG, "the model needs %d parameters per row but p is NULL",
                          b->tab->nparams);
  return DSK_OK;
}

static int run_job(batch_job *j, int nthreads, dsk_status *st) {
  dsk_batch *b = j->b;
  for (int i = 0; i < j->nrows; i++) {
    if (j->row_status) j->row_status[i] = -1; /* not run */
    if (j->stop_index) j->stop_index[i] = -1;
    if (j->stop_t) j->stop_t[i] = 0.0;
  }
  if (j->nrows == 0) return DSK_OK;
  int k = nthreads < j->nrows ? nthreads : j->nrows;
  batch_worker *w = calloc((size_t)k, sizeof *w);
  if (!w) return dsk_status_set(st, DSK_E_NOMEM, "out of memory for %d batch threads", k);
  if (pthread_mutex_init(&j->m, NULL) != 0) {
    free(w);
    return dsk_status_set(st, DSK_E_NOMEM, "pthread_mutex_init failed");
  }
  j->next = 0;
  j->failed = 0;
  j->fail_row = -1;
  pthread_mutex_lock(&b->lock);
  int rc = reserve_workers(b, k, st);
  if (rc == DSK_OK) {
    int started = 1; /* worker 0 is this thread */
    for (int i = 0; i < k; i++) w[i].job = j, w[i].index = i;
    /* a thread that cannot be created leaves its rows to the others */
    for (int i = 1; i < k; i++)
      if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) == 0)
        started = i + 1;
      else
        break;
    worker_main(&w[0]);
    for (int i = 1; i < started; i++) pthread_join(w[i].thread, NULL);
    if (j->fail_row >= 0) {
      *st = j->fail_st;
      char msg[DSK_MSG_MAX];
      snprintf(msg, sizeof msg, "row %d: %.*s", j->fail_row, DSK_MSG_MAX - 32, j->fail_st.msg);
      memcpy(st->msg, msg, sizeof msg);
      rc = st->code ? st->code : DSK_E_SOLVER;
    }
  }
  pthread_mutex_unlock(&b->lock);
  pthread_mutex_destroy(&j->m);
  free(w);
  return rc;
}

static void init_job(batch_job *j, dsk_batch *b, int op, int nrows, const double *p,
                     const double *times, int nt) {
  memset(j, 0, sizeof *j);
  j->b = b;
  j->op = op;
  j->nrows = nrows;
  j->p = p;
  j->times = times;
  j->nt = nt;
  j->np = b->tab->nparams;
  j->nout = b->tab->nout;
}

int dsk_batch_solve_dense(dsk_batch *b, int nthreads, int nrows, const double *p,
                          const double *times, int nt, double *y, int *row_status,
                          double *stop_t, int *stop_index, dsk_status *st) {
  dsk_status_clear(st);
  int rc = check_call(b, nthreads, nrows, p, times, nt, st);
  if (rc != DSK_OK || nrows == 0) return rc;
  if (!y && b->tab->nout > 0)
    return dsk_status_set(st, DSK_E_ARG, "output array y is NULL");
  batch_job j;
  init_job(&j, b, OP_DENSE, nrows, p, times, nt);
  j.y = y;
  j.row_status = row_status;
  j.stop_t = stop_t;
  j.stop_index = stop_index;
  return run_job(&j, nthreads, st);
}

int dsk_batch_forward(dsk_batch *b, int nthreads, int nrows, const double *p,
                      const double *times, int nt, double *y, double *sens, int *row_status,
                      double *stop_t, int *stop_index, dsk_status *st) {
  dsk_status_clear(st);
  int rc = check_call(b, nthreads, nrows, p, times, nt, st);
  if (rc != DSK_OK || nrows == 0) return rc;
  const dsk_gen_table *tab = b->tab;
  if (tab->nout > 0 && (!y || (tab->nparams > 0 && !sens)))
    return dsk_status_set(st, DSK_E_ARG, "output array y or sens is NULL");
  batch_job j;
  init_job(&j, b, OP_FORWARD, nrows, p, times, nt);
  j.y = y;
  j.sens = sens;
  j.row_status = row_status;
  j.stop_t = stop_t;
  j.stop_index = stop_index;
  return run_job(&j, nthreads, st);
}

int dsk_batch_reverse(dsk_batch *b, int nthreads, int nrows, const double *p,
                      const double *times, int nt, const double *g, double *grad,
                      int *row_status, dsk_status *st) {
  return dsk_batch_reverse_budget(b, nthreads, nrows, p, times, nt, g, grad, row_status, 0.0,
                                  NULL, st);
}

int dsk_batch_reverse_budget(dsk_batch *b, int nthreads, int nrows, const double *p,
                             const double *times, int nt, const double *g, double *grad,
                             int *row_status, double budget, long steps[2], dsk_status *st) {
  dsk_status_clear(st);
  if (steps) steps[0] = steps[1] = 0;
  int rc = check_call(b, nthreads, nrows, p, times, nt, st);
  if (rc != DSK_OK || nrows == 0) return rc;
  const dsk_gen_table *tab = b->tab;
  if ((tab->nout > 0 && !g) || (tab->nparams > 0 && !grad))
    return dsk_status_set(st, DSK_E_ARG, "g or grad is NULL");
  batch_job j;
  init_job(&j, b, OP_REVERSE, nrows, p, times, nt);
  j.g = g;
  j.grad = grad;
  j.row_status = row_status;
  j.budget = budget;
  j.steps = steps;
  return run_job(&j, nthreads, st);
}
