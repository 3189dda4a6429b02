"""JIT compile time and the cost of the generated functions.

Large sparse models: a tridiagonal heat-equation model with n states (n = 10^3, 10^4, 10^5):
- translate: DiffSL -> C (lexer, parser, sema with sparsity, emitter, Jacobian pattern);
- cold compile: translate + system C compiler + dlopen + Jacobian colouring, in a fresh cache;
- warm load: the same model again (content-hash cache hit, no compiler);
- rhs: one call of the generated right-hand side through ctypes, to show it is O(n);
- the size of the generated C, which grows with the number of blocks, not of states.

Small models (under 100 lines) of benchmarks/problems.py: heat2d[30] (63 sparse blocks),
nn_tanh[16/32/64] (two dense constant matrices written entry by entry) and a 200-state
model with an irregular sparse constant matrix (1000 entries): cold compile (best and
median of 3 fresh caches), generated C bytes, and the time of one call of rhs, jvp_x and
vjp_x measured in a loop by a small C program (ctypes adds microseconds per call); for
nn_tanh also the same right-hand side as plain C loops (the one of c_baseline/nn_tanh.c).

Targets: the 10^5-state model compiles cold in under 2 s (issue 3); rhs time per state is
flat in n; every small model compiles cold in at most 0.5 s. Run:
    .venv/bin/python benchmarks/bench_compile.py [--json out.json] [--small-only]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from diffsol_pytorch import _kernel

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import problems as P  # noqa: E402

NFN = 7
EvalFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, ctypes.POINTER(ctypes.c_double),
                          ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double))


class GenTable(ctypes.Structure):
    """dsk_gen_table of dsk_gen.h (ABI 2): the fields the benchmark reads."""

    _fields_ = [
        ("abi_version", ctypes.c_int), ("nstates", ctypes.c_int), ("nparams", ctypes.c_int),
        ("nout", ctypes.c_int), ("nstop", ctypes.c_int), ("has_mass", ctypes.c_int),
        ("nws", ctypes.c_int), ("n_slot", ctypes.c_int),
        ("param_names", ctypes.c_void_p), ("default_params", ctypes.POINTER(ctypes.c_double)),
        ("init", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_double))),
        ("set_inputs", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_double),
                                        ctypes.POINTER(ctypes.c_double))),
        ("eval", EvalFn * NFN),
    ]


def heat_model(n: int) -> str:
    return (
        "in_i { kappa = 1.0 }\n"
        f"L_ij {{ (0..{n}, 0..{n}): -2.0, (0..{n - 1}, 1..{n}): 1.0, (1..{n}, 0..{n - 1}): 1.0 }}\n"
        f"u_i {{ (0:{n}): 1.0 }}\n"
        "lap_i { L_ij * u_j }\n"
        "F_i { kappa * lap_i + sin(u_i) }\n"
    )


def rhs_seconds(path: str, reps: int) -> tuple[float, int]:
    lib = ctypes.CDLL(path)
    lib.dsk_model_table.restype = ctypes.POINTER(GenTable)
    tab = lib.dsk_model_table().contents
    assert tab.abi_version == 2, tab.abi_version
    n = tab.nstates
    ws = np.zeros(tab.nws)
    u = np.linspace(0.0, 1.0, n)
    f = np.zeros(n)
    dp = ctypes.POINTER(ctypes.c_double)
    wsp, up, fp = ws.ctypes.data_as(dp), u.ctypes.data_as(dp), f.ctypes.data_as(dp)
    tab.init(wsp)
    tab.set_inputs(tab.default_params, wsp)
    rhs = tab.eval[1]
    rhs(0.0, up, wsp, fp)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            rhs(0.0, up, wsp, fp)
        best = min(best, (time.perf_counter() - t0) / reps)
    # check one value against NumPy: F = L u + sin(u)
    lap = -2 * u
    lap[1:] += u[:-1]
    lap[:-1] += u[1:]
    np.testing.assert_allclose(f, lap + np.sin(u), rtol=1e-12, atol=1e-12)
    return best, n


# ---- small models: per-call cost of the generated functions, timed in C -------------------
HARNESS = r"""
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "dsk_gen.h"
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double *W1, *B1, *W2, *H;
/* du/dt = W2 tanh(W1 u + b1) - u as in c_baseline/nn_tanh.c */
static void plain_rhs(int n, const double *u, double *f) {
  for (int i = 0; i < n; i++) {
    double s = B1[i];
    for (int j = 0; j < n; j++) s += W1[i * n + j] * u[j];
    H[i] = tanh(s);
  }
  for (int i = 0; i < n; i++) {
    double s = -u[i];
    for (int j = 0; j < n; j++) s += W2[i * n + j] * H[j];
    f[i] = s;
  }
}
int main(int argc, char **argv) {
  void *h = dlopen(argv[1], RTLD_NOW);
  if (!h) return 2;
  const dsk_gen_table *(*tf)(void) = (const dsk_gen_table *(*)(void))dlsym(h, "dsk_model_table");
  const dsk_gen_table *t = tf();
  long reps = atol(argv[2]);
  int n = t->nstates;
  double *ws = calloc((size_t)t->nws, 8), *dws = calloc((size_t)t->nws, 8);
  double *u = malloc(8 * (size_t)n), *du = malloc(8 * (size_t)n), *f = malloc(8 * (size_t)n);
  double *df = malloc(8 * (size_t)n), best[4] = {1e9, 1e9, 1e9, 1e9}, sum = 0;
  for (int i = 0; i < n; i++) u[i] = (double)i / n, du[i] = 1.0;
  t->init(ws);
  t->set_inputs(t->default_params, ws);
  if (argc > 3) {
    FILE *fw = fopen(argv[3], "rb");
    size_t nn = (size_t)n * (size_t)n;
    W1 = malloc(8 * nn), W2 = malloc(8 * nn), B1 = malloc(8 * (size_t)n), H = malloc(8 * (size_t)n);
    if (!fw || fread(W1, 8, nn, fw) != nn || fread(B1, 8, (size_t)n, fw) != (size_t)n ||
        fread(W2, 8, nn, fw) != nn)
      return 3;
    fclose(fw);
    /* the generated rhs and the plain loops agree */
    t->eval[1](0.0, u, ws, f);
    plain_rhs(n, u, df);
    for (int i = 0; i < n; i++)
      if (fabs(f[i] - df[i]) > 1e-12 * (1 + fabs(df[i]))) return 4;
  }
  for (int rep = 0; rep < 7; rep++) {
    double t0 = now(), t1, t2, t3, t4;
    for (long i = 0; i < reps; i++) u[0] += 1e-15, t->eval[1](0.0, u, ws, f), sum += f[0];
    t1 = now();
    for (long i = 0; i < reps; i++) u[0] += 1e-15, t->jvp_x[1](0.0, u, du, ws, dws, f, df), sum += df[0];
    t2 = now();
    for (long i = 0; i < reps; i++) u[0] += 1e-15, t->vjp_x[1](0.0, u, du, ws, dws, f), sum += f[0];
    t3 = now();
    if (argc > 3)
      for (long i = 0; i < reps; i++) u[0] += 1e-15, plain_rhs(n, u, f), sum += f[0];
    t4 = now();
    if (t1 - t0 < best[0]) best[0] = t1 - t0;
    if (t2 - t1 < best[1]) best[1] = t2 - t1;
    if (t3 - t2 < best[2]) best[2] = t3 - t2;
    if (t4 - t3 < best[3]) best[3] = t4 - t3;
  }
  printf("%.6g %.6g %.6g %.6g %d\n", 1e6 * best[0] / reps, 1e6 * best[1] / reps,
         1e6 * best[2] / reps, argc > 3 ? 1e6 * best[3] / reps : -1.0, sum != 0.0);
  return 0;
}
"""


def build_harness(tmp: pathlib.Path) -> pathlib.Path:
    src = tmp / "harness.c"
    src.write_text(HARNESS)
    exe = tmp / "harness"
    cc = shutil.which("cc") or "gcc"
    subprocess.run([cc, "-O2", "-std=c99", "-D_POSIX_C_SOURCE=200809L",
                    f"-I{HERE.parent / '_ckernel'}", str(src), "-o", str(exe), "-ldl", "-lm"],
                   check=True)
    return exe


def sparse_code(n: int = 200, nnz: int = 1000, seed: int = 1) -> str:
    """An irregular sparse constant matrix written entry by entry (3 lines)."""
    rng = np.random.default_rng(seed)
    ent: set = set()
    while len(ent) < nnz:
        i, j = int(rng.integers(n)), int(rng.integers(n))
        if i != j:
            ent.add((i, j))
    items = ", ".join(f"({i}, {j}): {float(rng.normal()):.6f}" for i, j in sorted(ent))
    return (f"A_ij {{ (0..{n}, 0..{n}): -2.0, {items} }}\n"
            f"u_i {{ (0:{n}): 1.0 }}\n"
            "F_i { A_ij * tanh(u_j) }\n")


def small_rows(tmp: pathlib.Path) -> list[dict]:
    exe = build_harness(tmp)
    models = [("heat2d[30]", P.heat2d_code(30), None)]
    for n in (16, 32, 64):
        models.append((f"nn_tanh[{n}]", P.nn_code(n), P.nn_weights(n)))
    models.append(("sparse[200]", sparse_code(), None))
    rows = []
    print(f"{'model':<12} {'lines':>5} {'C bytes':>8} {'translate':>9} {'cold best':>9} "
          f"{'median':>7} {'warm':>7} {'rhs':>8} {'jvp_x':>8} {'vjp_x':>8} {'plain C rhs':>11}")
    for name, code, weights in models:
        t0 = time.perf_counter()
        csrc = _kernel.translate(code)
        t_tr = time.perf_counter() - t0
        colds = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as cache:
                t0 = time.perf_counter()
                _kernel.Model(code, cache_dir=cache)
                colds.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as cache:
            model = _kernel.Model(code, cache_dir=cache)
            t0 = time.perf_counter()
            _kernel.Model(code, cache_dir=cache)
            t_warm = time.perf_counter() - t0
            args = [str(exe), model.path, "2000"]
            if weights is not None:
                wpath = tmp / f"{name}.f8"
                w1, b1, w2 = weights
                np.concatenate([w1.ravel(), b1, w2.ravel()]).astype("<f8").tofile(wpath)
                args.append(str(wpath))
            out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
        rhs, jvp, vjp, plain = (float(x) for x in out[:4])
        row = dict(model=name, lines=len(code.splitlines()), c_bytes=len(csrc),
                   translate_s=t_tr, cold_s=min(colds), cold_median_s=statistics.median(colds),
                   warm_s=t_warm, rhs_us=rhs, jvp_x_us=jvp, vjp_x_us=vjp,
                   plain_c_rhs_us=plain if plain >= 0 else None)
        rows.append(row)
        pl = f"{plain:>9.2f}us" if plain >= 0 else f"{'-':>11}"
        print(f"{name:<12} {row['lines']:>5} {len(csrc):>8} {t_tr:>8.3f}s {min(colds):>8.3f}s "
              f"{row['cold_median_s']:>6.3f}s {t_warm:>6.3f}s {rhs:>6.2f}us {jvp:>6.2f}us "
              f"{vjp:>6.2f}us {pl}")
    worst = max(r["cold_s"] for r in rows)
    print(f"cold compile of every small model within 0.5 s: {'PASS' if worst <= 0.5 else 'FAIL'} "
          f"(worst best-of-3 {worst:.3f} s)")
    return rows


def large_rows() -> list[dict]:
    rows = []
    print(f"{'states':>8} {'translate':>10} {'cold':>8} {'warm':>8} {'C bytes':>9} "
          f"{'rhs':>10} {'rhs/state':>10}")
    for n in (1_000, 10_000, 100_000):
        code = heat_model(n)
        t0 = time.perf_counter()
        csrc = _kernel.translate(code)
        t_translate = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            model = _kernel.Model(code, cache_dir=cache)
            t_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            _kernel.Model(code, cache_dir=cache)
            t_warm = time.perf_counter() - t0
            t_rhs, nst = rhs_seconds(model.path, reps=max(10, 2_000_000 // n))
        rows.append(dict(states=nst, translate_s=t_translate, cold_compile_s=t_cold,
                         warm_load_s=t_warm, c_bytes=len(csrc), rhs_s=t_rhs,
                         rhs_ns_per_state=1e9 * t_rhs / nst))
        r = rows[-1]
        print(f"{nst:>8} {t_translate:>9.3f}s {t_cold:>7.3f}s {t_warm:>7.3f}s {len(csrc):>9} "
              f"{1e6 * t_rhs:>8.1f}us {r['rhs_ns_per_state']:>8.2f}ns")
    big = rows[-1]
    flat = rows[-1]["rhs_ns_per_state"] / rows[0]["rhs_ns_per_state"]
    print(f"cold compile of {big['states']} states under 2 s: "
          f"{'PASS' if big['cold_compile_s'] < 2.0 else 'FAIL'} ({big['cold_compile_s']:.2f} s)")
    print(f"rhs cost per state, 10^5 vs 10^3: {flat:.2f}x "
          f"({'PASS' if flat < 3.0 else 'FAIL'}: O(n) within cache effects)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--small-only", action="store_true", help="only the small models")
    args = ap.parse_args()
    large = [] if args.small_only else large_rows()
    with tempfile.TemporaryDirectory() as tmp:
        small = small_rows(pathlib.Path(tmp))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(large=large, small=small), fh, indent=2)


if __name__ == "__main__":
    main()
