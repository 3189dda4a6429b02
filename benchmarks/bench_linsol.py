"""Dense (SUNDIALS), dense (LAPACK) and sparse (KLU) linear solvers on
heat equations and a densely coupled model, to pick linear_solver="auto".

    .venv/bin/python benchmarks/bench_linsol.py [--quick] [--big]

Prints one table row per (model, size, linear solver): median wall time of a
BDF solve (rtol 1e-6) and the peak RSS growth. The thresholds in
_ckernel/dsk.h (DSK_LS_LAPACK_MIN, DSK_LS_KLU_MIN, DSK_LS_KLU_DENSITY) and
docs/solvers.md come from this script's output.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import diffsol_pytorch as dsp


def heat1d(n: int) -> str:
    return f"""
in_i {{ kappa = 0.5, tb = 1.0 }}
dx {{ 1.0 / {n + 1}.0 }}
L_ij {{ (0..{n}, 0..{n}): -2.0, (0..{n - 1}, 1..{n}): 1.0, (1..{n}, 0..{n - 1}): 1.0 }}
b_i {{ (0): tb, (1:{n - 1}): 0.0, ({n - 1}): tb }}
u_i {{ (0:{n // 2}): 0.0, ({n // 2}:{n}): 1.0 }}
lap_i {{ L_ij * u_j }}
F_i {{ kappa * (lap_i + b_i) / (dx * dx) }}
"""


def heat2d(m: int) -> str:
    """5-point Laplacian on an m x m grid (n = m^2 states), zero boundary."""
    n = m * m
    blocks = [f"(0..{n}, 0..{n}): -4.0"]
    # east/west neighbours inside each grid row, north/south between rows
    for r in range(m):
        a = r * m
        blocks.append(f"({a}..{a + m - 1}, {a + 1}..{a + m}): 1.0")
        blocks.append(f"({a + 1}..{a + m}, {a}..{a + m - 1}): 1.0")
    blocks.append(f"(0..{n - m}, {m}..{n}): 1.0")
    blocks.append(f"({m}..{n}, 0..{n - m}): 1.0")
    return f"""
in_i {{ kappa = 1.0 }}
dx {{ 1.0 / {m + 1}.0 }}
L_ij {{ {", ".join(blocks)} }}
u_i {{ (0:{n // 2}): 1.0, ({n // 2}:{n}): 0.0 }}
lap_i {{ L_ij * u_j }}
F_i {{ kappa * lap_i / (dx * dx) }}
"""


def coupled(n: int) -> str:
    """Every state couples to every other one: a dense Jacobian."""
    return f"""
in_i {{ k = 1.0, eps = 0.01 }}
A_ij {{ (0:{n}, 0:{n}): 1.0 }}
u_i {{ (0:{n}): 1.0 }}
s_i {{ sin(u_i) }}
c_i {{ A_ij * s_j }}
F_i {{ -k * u_i + eps * c_i }}
"""


def bench(code: str, solver: str, t_final: float, repeat: int) -> tuple[float, int]:
    m = dsp.DiffsolModule(code, linear_solver=solver, rtol=1e-6, atol=1e-8)
    times = torch.tensor([0.0, t_final], dtype=torch.float64)
    m.solve_dense(m.default_params, times)  # warm up
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        m.solve_dense(m.default_params, times)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), m.stats["steps"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--big", action="store_true",
                    help="only the 2,500- and 10,000-state 2-D heat equations with KLU")
    args = ap.parse_args()
    repeat = 3 if args.quick else 7
    cases = []
    for n in ([10, 30, 60, 120] if args.quick else [10, 20, 30, 45, 60, 90, 120, 200]):
        cases.append(("coupled", n, coupled(n), 5.0, ["sundials_dense", "lapack", "klu"]))
    for n in ([16, 32, 64, 256] if args.quick else [8, 16, 24, 32, 48, 64, 128, 256, 512]):
        cases.append(("heat1d", n, heat1d(n), 0.05, ["sundials_dense", "lapack", "klu"]))
    for m in ([6, 10] if args.quick else [4, 6, 8, 10, 16]):
        cases.append(("heat2d", m * m, heat2d(m), 0.05, ["sundials_dense", "lapack", "klu"]))
    if args.big:  # only the large case: memory and time of KLU at 10^4 states
        cases = [("heat2d", 2500, heat2d(50), 0.01, ["klu"]),
                 ("heat2d", 10000, heat2d(100), 0.01, ["klu"])]
    print(f"{'model':8} {'n':>6} {'solver':>15} {'median ms':>10} {'steps':>6}")
    for name, n, code, tf, solvers in cases:
        best = None
        rows = []
        for s in solvers:
            ms, steps = bench(code, s, tf, repeat if n < 5000 else 1)
            rows.append((s, ms * 1e3, steps))
            best = min(best or ms * 1e3, ms * 1e3)
        for s, ms, steps in rows:
            mark = " *" if ms == best else ""
            print(f"{name:8} {n:>6} {s:>15} {ms:>10.3f} {steps:>6}{mark}")


if __name__ == "__main__":
    main()
