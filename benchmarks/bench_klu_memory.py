"""Memory of a KLU solve against the number of non-zeros (issue 4).

For 2-D heat equations on m x m grids (n = m^2 states, 5n - 4m non-zeros in the
Jacobian), each size runs in a fresh process: the peak resident memory after
the solve minus the resident memory before the model is built. With KLU and the
IR's sparsity pattern the growth is linear in the non-zeros (no n x n array is
ever allocated): bytes per non-zero stay roughly constant while n grows 30x.

    .venv/bin/python benchmarks/bench_klu_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np, torch
sys.path.insert(0, "benchmarks")
from bench_linsol import heat2d
import diffsol_pytorch as dsp
m = int(sys.argv[1])
code = heat2d(m)
import psutil
proc = psutil.Process()
before = proc.memory_info().rss
mod = dsp.DiffsolModule(code, linear_solver="klu", rtol=1e-6, atol=1e-8)
y = mod.solve_dense(mod.default_params, torch.tensor([0.0, 0.01], dtype=torch.float64))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
after = proc.memory_info().rss
print(json.dumps(dict(m=m, n=m * m, nnz=5 * m * m - 4 * m, growth=after - before,
                      linear_solver=mod.linear_solver_used, steps=mod.stats["steps"])))
"""


def main() -> None:
    rows = []
    for m in (25, 50, 100, 140):
        out = subprocess.run([sys.executable, "-c", CHILD, str(m)], capture_output=True,
                             text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'n':>7} {'nnz':>8} {'solver':>7} {'steps':>6} {'growth MB':>10} {'bytes/nnz':>10}")
    for r in rows:
        print(f"{r['n']:>7} {r['nnz']:>8} {r['linear_solver']:>7} {r['steps']:>6} "
              f"{r['growth'] / 2**20:>10.1f} {r['growth'] / r['nnz']:>10.0f}")
    ratio = (rows[-1]["growth"] / rows[-1]["nnz"]) / max(rows[1]["growth"] / rows[1]["nnz"], 1)
    print(f"bytes per non-zero, largest vs second size: {ratio:.2f}x "
          f"({'PASS' if ratio < 2.0 else 'FAIL'}: linear in the non-zeros)")


if __name__ == "__main__":
    main()
