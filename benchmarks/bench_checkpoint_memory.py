"""Memory and time of reverse mode against the checkpoint spacing (issue 5).

Each configuration runs in a fresh subprocess: compile, one plain solve (its peak
resident memory is the baseline), then one reverse-mode gradient; reported are the
memory the gradient holds (below), its time
relative to the plain solve, and the gradient's largest relative difference from the
default configuration's (all configurations compute the same gradient up to the
solver tolerance).  Memory is the growth of the bytes allocated with malloc (glibc's mallinfo2) from
before the checkpointed forward pass to after its backward pass: the solver keeps
what the pass stored, for further backward passes.

The problem: a chain of NOSC harmonic oscillators with distinct frequencies
(2 * NOSC states) over a long horizon, so that the forward pass takes thousands of
steps and each stored step is large.  Two knobs:

* ``checkpoint_steps`` (module option): CVODES keeps a checkpoint every that many
  steps and the interpolation data of that many steps; every interval but the
  last is integrated again during the backward pass.
* ``checkpoint_times`` (``solve_dense_with_checkpointing``): the forward pass keeps
  only the state at those times; the backward pass integrates each stretch between
  two of them again, last first, holding one stretch's data at a time.

    .venv/bin/python benchmarks/bench_checkpoint_memory.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

NOSC = 200
T_END = 200.0

CHILD = r"""
import ctypes, json, sys, time


class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2


def heap_bytes():
    # bytes allocated by malloc (in use, arenas and mmapped blocks): what the
    # kernel and SUNDIALS hold, unlike the resident set which reuses freed memory
    mi = libc.mallinfo2()
    return mi.uordblks + mi.hblkhd
import numpy as np
import diffsol_pytorch as dsp
cfg = json.loads(sys.argv[1])
n = cfg["nosc"]
# x_i' = v_i, v_i' = -(a + b i)^2 x_i
code = "in_i { a = 1.0, b = 0.01 }\n"
code += "u_i { " + ", ".join(["1.0"] * n + ["0.0"] * n) + " }\n"
code += "F_i { " + ", ".join([f"u_i[{n + i}]" for i in range(n)]
                             + [f"-(a + b * {i}.0) * (a + b * {i}.0) * u_i[{i}]" for i in range(n)]) + " }\n"
code += "out_i { " + ", ".join(f"u_i[{i}]" for i in range(0, n, max(1, n // 4))) + " }\n"
opts = dict(rtol=1e-8, atol=1e-10)
if cfg.get("checkpoint_steps"):
    opts["checkpoint_steps"] = cfg["checkpoint_steps"]
m = dsp.DiffsolModule(code, **opts)
p = m.default_params.numpy()
times = np.linspace(0.0, cfg["t_end"], 3)
g = np.zeros((m.nout, len(times))); g[:, -1] = 1.0
t0 = time.perf_counter(); m.solve_dense(p, times); t_solve = time.perf_counter() - t0
steps = m.stats["steps"]
base = heap_bytes()
k = cfg.get("ncheckpoint_times", 0)
ck = None if not k else np.linspace(0.0, cfg["t_end"], k + 2)[1:-1]
t0 = time.perf_counter()
y, c = m.solve_dense_with_checkpointing(p, times, checkpoint_times=ck)
grad = c.backward(g).numpy()
t_rev = time.perf_counter() - t0
held = heap_bytes()  # the solver keeps the pass's data for more backward passes
print(json.dumps(dict(steps=steps, grow_mb=(held - base) / 2**20, ratio=t_rev / t_solve,
                      solve_ms=1e3 * t_solve, grad=grad.tolist())))
"""


def run(cfg):
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    base = dict(nosc=NOSC, t_end=T_END)
    configs = [("default", {})]
    configs += [(f"checkpoint_steps={k}", {"checkpoint_steps": k}) for k in (50, 200, 800, 3200)]
    configs += [(f"checkpoint_times: {k}", {"ncheckpoint_times": k}) for k in (4, 16, 64)]
    rows = []
    ref = None
    print(f"{2 * NOSC} states, t in [0, {T_END}]")
    print(f"{'configuration':<24} {'steps':>6} {'memory MB':>15} {'gradient/solve':>15} {'max rel diff':>13}")
    for name, extra in configs:
        r = run({**base, **extra})
        if ref is None:
            ref = r["grad"]
        diff = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(r["grad"], ref))
        rows.append(dict(configuration=name, **{k: v for k, v in r.items() if k != "grad"}, rel_diff=diff))
        print(f"{name:<24} {r['steps']:>6} {r['grow_mb']:>15.1f} {r['ratio']:>15.2f} {diff:>13.1e}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
