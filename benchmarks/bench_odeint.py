"""dsp.odeint against torchdiffeq on neural ODEs (issue 9).

1. Stiff neural ODE: dy/dt = A y + net(y) with A = diag(-1, -10, -1e3, -1e4) (stiffness
   ratio 1e4) and a 4->32->4 MLP, fitted to a trajectory for a few epochs (Adam) with
   dsp.odeint_adjoint(method="bdf") and with torchdiffeq dopri5 (odeint: backpropagation
   through the solver's operations; odeint_adjoint: its adjoint, which integrates y
   backwards in time and blows up on this problem): calls of func per epoch (forward and
   backward; torchdiffeq's odeint calls func in the forward pass only), time per epoch,
   and the losses.
2. Non-stiff neural ODE: torchdiffeq's spiral example (2->50->2 MLP on y**3, 20 initial
   states of 10 times each), one training step (forward + backward) with
   dsp.odeint_adjoint (tsit45, dopri5, bdf) and torchdiffeq.odeint_adjoint (dopri5).
3. The Python-callback overhead: the time per right-hand-side call of a solve through
   the kernel minus the time of calling func directly, in microseconds, next to a
   compiled DiffSL model of the same ODE (no Python in the loop).

    .venv/bin/python benchmarks/bench_odeint.py [--epochs 3] [--json out.json]

Times are medians on this machine and noisy under load; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import diffsol_pytorch as dsp
from diffsol_pytorch.odeint import last_stats

try:
    import torchdiffeq
except ImportError as exc:  # pragma: no cover
    raise SystemExit("bench_odeint needs torchdiffeq: pip install -c constraints.txt torchdiffeq") from exc

torch.set_default_dtype(torch.float64)


class Counted(torch.nn.Module):
    """Counts the calls of the wrapped field (batched calls count once)."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.f(t, y)


# ---- 1. stiff neural ODE -------------------------------------------------------------------


class StiffField(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.register_buffer("lam", torch.tensor([-1.0, -10.0, -1e3, -1e4]))
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(),
                                       torch.nn.Linear(32, 4))

    def forward(self, t, y):
        return self.lam * y + self.net(y)


def stiff_training(epochs: int):
    true = StiffField(seed=1)
    y0 = torch.tensor([1.0, 1.0, 1.0, 1.0])
    t = torch.linspace(0.0, 1.0, 11)
    with torch.no_grad():
        target = dsp.odeint(true, y0, t, method="bdf", rtol=1e-8, atol=1e-10)
    # warm up torch.func (its first jacrev costs about a second)
    dsp.odeint_adjoint(true, y0, t, method="bdf").sum().backward()
    rows = {}
    kinds = ("dsp bdf (odeint_adjoint)", "torchdiffeq dopri5 (odeint)",
             "torchdiffeq dopri5 (odeint_adjoint)")
    for name in kinds:
        model = Counted(StiffField(seed=0))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        nfes, times, losses = [], [], []
        failed = None
        for _ in range(epochs):
            model.nfe = 0
            t0 = time.perf_counter()
            opt.zero_grad()
            try:
                if name.startswith("dsp"):
                    pred = dsp.odeint_adjoint(model, y0, t, method="bdf", rtol=1e-6, atol=1e-8)
                elif name.endswith("(odeint)"):
                    pred = torchdiffeq.odeint(model, y0, t, method="dopri5", rtol=1e-6,
                                              atol=1e-8)
                else:
                    pred = torchdiffeq.odeint_adjoint(model, y0, t, method="dopri5", rtol=1e-6,
                                                      atol=1e-8)
                loss = ((pred - target) ** 2).mean()
                loss.backward()
            except AssertionError as exc:  # torchdiffeq: non-finite values / underflow in dt
                failed = str(exc).split("\n")[0][:80]
                break
            opt.step()
            times.append(time.perf_counter() - t0)
            nfes.append(model.nfe)
            losses.append(float(loss.detach()))
        rows[name] = {"nfe_per_epoch": statistics.median(nfes) if nfes else None,
                      "seconds_per_epoch": statistics.median(times) if times else None,
                      "losses": losses, "failed": failed}
    return rows


# ---- 2. the spiral (non-stiff) -------------------------------------------------------------


class Spiral(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(),
                                       torch.nn.Linear(50, 2))
        for m in self.net.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, mean=0, std=0.1)
                torch.nn.init.constant_(m.bias, val=0)

    def forward(self, t, y):
        return self.net(y ** 3)


def spiral_step(repeat: int):
    true_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
    t_all = torch.linspace(0.0, 25.0, 1000)
    y0_true = torch.tensor([[2.0, 0.0]])
    with torch.no_grad():
        true_y = torchdiffeq.odeint(lambda t, y: (y ** 3) @ true_A, y0_true, t_all,
                                    method="dopri5")
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 1000 - 10, (20,), generator=g)
    batch_y0 = true_y[s]  # (20, 1, 2)
    batch_t = t_all[:10]
    batch_y = torch.stack([true_y[s + i] for i in range(10)], dim=0)  # (10, 20, 1, 2)

    def step(kind):
        model = Counted(Spiral())
        if kind == "torchdiffeq dopri5":
            pred = torchdiffeq.odeint_adjoint(model, batch_y0, batch_t, method="dopri5",
                                              rtol=1e-7, atol=1e-9)
        else:
            pred = dsp.odeint_adjoint(model, batch_y0, batch_t, method=kind.split()[1],
                                      rtol=1e-7, atol=1e-9)
        loss = (pred - batch_y).abs().mean()
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        return model.nfe, float(loss), grad

    rows = {}
    ref = None
    for kind in ("torchdiffeq dopri5", "dsp tsit45", "dsp dopri5", "dsp bdf"):
        nfe, loss, grad = step(kind)
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            step(kind)
            samples.append(time.perf_counter() - t0)
        if ref is None:
            ref = grad
        rows[kind] = {"nfe": nfe, "loss": loss, "seconds": statistics.median(samples),
                      "grad_rel_diff_vs_torchdiffeq": float((grad - ref).norm() / ref.norm())}
    base = rows["torchdiffeq dopri5"]["seconds"]
    for r in rows.values():
        r["time_ratio_vs_torchdiffeq"] = r["seconds"] / base
    return rows


# ---- 3. per-callback overhead --------------------------------------------------------------


def callback_overhead():
    k = torch.tensor([0.5, 1.0, 1.5, 2.0])

    def func(t, y):
        return -k * y

    y0 = torch.ones(4)
    t = torch.linspace(0.0, 50.0, 2)
    with torch.no_grad():
        dsp.odeint(func, y0, t, method="tsit45", rtol=1e-10, atol=1e-12)  # warm up
        t0 = time.perf_counter()
        dsp.odeint(func, y0, t, method="tsit45", rtol=1e-10, atol=1e-12)
        solve = time.perf_counter() - t0
    calls = last_stats()["func_evals"]
    ts = torch.tensor(0.3)
    t0 = time.perf_counter()
    for _ in range(calls):
        func(ts, y0)
    direct = time.perf_counter() - t0
    # the same ODE compiled from DiffSL: the kernel alone
    m = dsp.DiffsolModule("in_i { k1 = 0.5 }\nu_i { a = 1, b = 1, c = 1, d = 1 }\n"
                          "F_i { -k1 * a, -2 * k1 * b, -3 * k1 * c, -4 * k1 * d }\n",
                          method="tsit45", rtol=1e-10, atol=1e-12)
    m.solve_dense(m.default_params, t)
    t0 = time.perf_counter()
    m.solve_dense(m.default_params, t)
    compiled = time.perf_counter() - t0
    return {
        "rhs_calls": calls,
        "solve_seconds": solve,
        "us_per_call_total": 1e6 * solve / calls,
        "us_per_call_func_alone": 1e6 * direct / calls,
        "us_per_call_overhead": 1e6 * (solve - direct) / calls,
        "compiled_diffsl_solve_seconds": compiled,
        "python_rhs_vs_compiled_ratio": solve / compiled,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}

    print("1. stiff neural ODE (A = diag(-1, -10, -1e3, -1e4) + 4->32->4 MLP), per epoch")
    out["stiff"] = stiff_training(args.epochs)
    for name, r in out["stiff"].items():
        if r["failed"]:
            print(f"   {name:38s} FAILED: {r['failed']}")
            continue
        print(f"   {name:38s} nfe {r['nfe_per_epoch']:>8.0f}  {r['seconds_per_epoch']:8.3f} s"
              f"  losses {', '.join(f'{x:.3e}' for x in r['losses'])}")
    a, b = out["stiff"]["dsp bdf (odeint_adjoint)"], out["stiff"]["torchdiffeq dopri5 (odeint)"]
    print(f"   torchdiffeq dopri5 / dsp bdf: {b['nfe_per_epoch'] / a['nfe_per_epoch']:.0f}x the "
          f"evaluations of func, {b['seconds_per_epoch'] / a['seconds_per_epoch']:.1f}x the time")

    print("2. spiral (2->50->2 MLP, batch 20 x 10 times), one training step (odeint_adjoint)")
    out["spiral"] = spiral_step(args.repeat)
    for name, r in out["spiral"].items():
        print(f"   {name:20s} nfe {r['nfe']:>6d}  {r['seconds']:.3f} s"
              f"  ({r['time_ratio_vs_torchdiffeq']:.2f}x torchdiffeq)"
              f"  grad rel. diff {r['grad_rel_diff_vs_torchdiffeq']:.1e}")

    print("3. Python-callback overhead (4 states, tsit45)")
    out["overhead"] = o = callback_overhead()
    print(f"   {o['rhs_calls']} rhs calls: {o['us_per_call_total']:.1f} us per call in the solve, "
          f"{o['us_per_call_func_alone']:.1f} us of it in func, overhead {o['us_per_call_overhead']:.1f} us;"
          f" the compiled DiffSL model is {o['python_rhs_vs_compiled_ratio']:.0f}x faster")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
