/*
 * common.h - shared driver for the hand-written CVODES/IDAS baselines of
 * benchmarks/compare.py.
 *
 * Every baseline program is called as
 *
 *     prog RTOL ATOL REPS N T_1 ... T_K
 *
 * (N is the problem size parameter, ignored by fixed-size problems; T_k are
 * the output times, non-decreasing, T_1 >= 0 = t0).  It solves the problem
 * REPS times with the integrator created once and restarted with ReInit
 * before each solve (as diffsol-pytorch does), stops at each output time in
 * NORMAL mode with the stop time set to T_K, and prints, one per line,
 *
 *     nstates <n>
 *     steps <internal steps of the last solve>
 *     seconds_median <median wall time of one solve>
 *     seconds_min <fastest solve>
 *     y_final <n values: the state at T_K>
 *
 * compare.py parses these lines.  Errors go to stderr with exit status 1.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  double rtol, atol;
  int reps;
  int n;
  int nt;
  double *times;
} bench_args;

static double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench_parse(int argc, char **argv, bench_args *a) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s RTOL ATOL REPS N T_1 ... T_K\n", argv[0]);
    exit(1);
  }
  a->rtol = atof(argv[1]);
  a->atol = atof(argv[2]);
  a->reps = atoi(argv[3]);
  a->n = atoi(argv[4]);
  a->nt = argc - 5;
  a->times = malloc(sizeof(double) * (size_t)a->nt);
  for (int k = 0; k < a->nt; k++) a->times[k] = atof(argv[5 + k]);
  if (a->reps < 1 || !(a->rtol > 0) || !(a->atol > 0)) {
    fprintf(stderr, "bad RTOL/ATOL/REPS\n");
    exit(1);
  }
}

static int bench_cmp(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

static void bench_report(int n, long steps, double *secs, int reps, const double *y) {
  qsort(secs, (size_t)reps, sizeof(double), bench_cmp);
  double med = reps % 2 ? secs[reps / 2] : 0.5 * (secs[reps / 2 - 1] + secs[reps / 2]);
  printf("nstates %d\nsteps %ld\nseconds_median %.9e\nseconds_min %.9e\ny_final", n, steps, med,
         secs[0]);
  for (int i = 0; i < n; i++) printf(" %.17e", y[i]);
  printf("\n");
}

#define BENCH_CHECK(call)                                                  \
  do {                                                                     \
    int flag_ = (call);                                                    \
    if (flag_ < 0) {                                                       \
      fprintf(stderr, "%s failed with flag %d (line %d)\n", #call, flag_, __LINE__); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#endif
