"""JIT compile time and the cost of one right-hand side for large sparse models.

For a tridiagonal heat-equation model with n states (n = 10^3, 10^4, 10^5):
- translate: DiffSL -> C (lexer, parser, sema with sparsity, emitter, Jacobian pattern);
- cold compile: translate + system C compiler + dlopen + Jacobian colouring, in a fresh cache;
- warm load: the same model again (content-hash cache hit, no compiler);
- rhs: one call of the generated right-hand side through ctypes, to show it is O(n);
- the size of the generated C, which grows with the number of blocks, not of states.

Targets (issue 3): the 10^5-state model compiles cold in under 2 s; rhs time per state is
flat in n. Run:  .venv/bin/python benchmarks/bench_compile.py [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import tempfile
import time

import numpy as np

from diffsol_pytorch import _kernel

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
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
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
