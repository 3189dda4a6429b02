"""diffsol-pytorch against the field: C (CVODES/IDAS), SciPy, torchdiffeq, torchode, pydiffsol.

For every problem of benchmarks/problems.py (Robertson ODE and DAE, Lotka-Volterra,
Van der Pol mu=1000, 2-D heat equation, diffusion-coupled Robertson grid, a tanh-network
right-hand side) and tolerance: the best wall time of one solve over K repetitions with the same output
times for each method, the ratio peer/ours, and the max abs error of the final state
against a reference (the C baseline at rtol 1e-12, atol 1e-14; the 3-state Radau
solution at rtol 1e-12 for the Robertson grid, whose cells all follow it). Then the
gradient workloads (reverse and forward mode vs pydiffsol and torchdiffeq), JIT compile and cached load,
and the per-call overhead of solve_dense; each target gets PASS/FAIL.

    .venv/bin/python benchmarks/compare.py [--quick] [--json out.json] [--plot out.png]

Peers that are not installed are skipped with the reason (pip install -c constraints.txt
'.[bench]' installs them). The C baselines are compiled here with the system cc into
build/c_baseline/, against the SUNDIALS our extension links (the -O2 static build of
`make setup`, or the system's libsundials-dev: the header line says which) and KLU.
Numbers depend on the machine's load; the ratios, measured in one run, are what count.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import problems as P  # noqa: E402

import diffsol_pytorch as dsp  # noqa: E402

ROOT = P.HERE.parent
C_DIR = P.HERE / "c_baseline"
C_BUILD = ROOT / "build" / "c_baseline"
SUNDIALS_LIBS = ["sundials_cvodes", "sundials_idas", "sundials_nvecserial",
                 "sundials_sunmatrixdense", "sundials_sunlinsoldense", "sundials_sunmatrixsparse",
                 "sundials_sunlinsolklu"]


def _rebuild_sundials() -> str:
    """The same optimised SUNDIALS, built into build/ for the C baselines ('' if that fails)."""
    prefix = ROOT / "build" / "sundials-6.4.1"
    script = ROOT / "scripts" / "build_sundials.sh"
    if script.is_file():
        r = subprocess.run(["bash", str(script), str(prefix)], capture_output=True, text=True)
        if r.returncode == 0:
            return str(prefix)
        print(f"scripts/build_sundials.sh failed: {r.stderr.strip()[-300:]}", file=sys.stderr)
    print("the C baselines use the system's SUNDIALS (Debian's is not optimised): "
          "their ratios understate them", file=sys.stderr)
    return ""


@functools.lru_cache(maxsize=None)
def sundials_flags() -> tuple[list[str], list[str], str]:
    """Include flags, link arguments and a label for the SUNDIALS ours links (the C baselines').

    The same library on both sides: the optimised static build of `make setup`
    (scripts/build_sundials.sh), or Debian's shared libraries (compiled without -O2).
    """
    version, prefix = dsp._kernel.sundials_build()
    if prefix and not (pathlib.Path(prefix) / "lib" / "libsundials_cvodes.a").is_file():
        prefix = _rebuild_sundials()  # a wheel's: its temporary build directory is gone
    if prefix:
        lib = pathlib.Path(prefix) / "lib"
        return ([f"-I{prefix}/include"], [str(lib / f"lib{n}.a") for n in SUNDIALS_LIBS] + ["-lklu", "-lm"],
                f"SUNDIALS {version}, -O2 static build in {prefix}")
    return ([], [f"-l{n}" for n in SUNDIALS_LIBS] + ["-lklu", "-lm"],
            f"SUNDIALS {version}, the system's shared libraries")


class Budget(Exception):
    """A peer ran out of its time budget."""


# ---- timing --------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], target_s: float, max_reps: int = 50) -> tuple[float, int, Any]:
    """Best seconds of fn() over reps chosen to take about target_s (>= 3 unless slow).

    The minimum, not the median: on a machine shared with other work, interference only
    ever adds time, and the minimum of a few repetitions is the most stable statistic
    (the C baselines report theirs the same way, seconds_min)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    reps = int(max(1, min(max_reps, target_s / max(first, 1e-9))))
    if first > target_s:
        return first, 1, out
    samples = []
    for _ in range(max(reps, 3)):
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return min(samples), len(samples), out


# ---- C baselines ---------------------------------------------------------------------------
def build_c(prog: str) -> tuple[Optional[pathlib.Path], str]:
    C_BUILD.mkdir(parents=True, exist_ok=True)
    src = C_DIR / f"{prog}.c"
    incs, libs, _ = sundials_flags()
    # one executable per SUNDIALS build, so that switching builds relinks
    tag = hashlib.sha256(" ".join(incs + libs).encode()).hexdigest()[:8]
    exe = C_BUILD / f"{prog}-{tag}"
    deps = [src, C_DIR / "common.h", C_DIR / "cvodes_driver.h"]
    if exe.exists() and exe.stat().st_mtime > max(d.stat().st_mtime for d in deps):
        return exe, ""
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-O2", "-std=c99", *incs, "-I/usr/include/suitesparse", str(src), "-o", str(exe), *libs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return None, f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}"
    return exe, ""


def run_c(prob: P.Problem, rtol: float, atol: float, reps: int) -> dict:
    exe, why = build_c(prob.c_prog)
    if exe is None:
        raise RuntimeError(why)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if "weights" in prob.extra:
            w1, b1, w2 = prob.extra["weights"]
            path = pathlib.Path(tmp) / "w.bin"
            np.concatenate([w1.ravel(), b1, w2.ravel()]).astype("<f8").tofile(path)
            env["NN_WEIGHTS"] = str(path)
        args = [str(exe), repr(rtol), repr(atol), str(reps), str(prob.c_size)]
        args += [repr(float(t)) for t in prob.times]
        r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{prob.c_prog}: {r.stderr.strip()[-300:]}")
    out: dict[str, Any] = {}
    for line in r.stdout.splitlines():
        key, _, rest = line.partition(" ")
        out[key] = np.array([float(v) for v in rest.split()]) if key == "y_final" else float(rest)
    return out


# ---- peers ----------------------------------------------------------------------------------
def peer_module(name: str) -> tuple[Any, str]:
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # ImportError, or a broken install
        return None, f"{name} not importable ({type(exc).__name__}: {exc}); pip install '.[bench]'"


def with_budget(fn: Callable, budget_s: float) -> Callable:
    """Wrap a right-hand side so that it raises Budget once budget_s have passed."""
    state = {"t0": None}

    def wrapped(*a):
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        elif time.perf_counter() - state["t0"] > budget_s:
            raise Budget()
        return fn(*a)

    def reset():
        state["t0"] = None

    wrapped.reset = reset  # type: ignore[attr-defined]
    return wrapped


def scipy_solver(prob: P.Problem, method: str, rtol: float, atol: float, budget: float):
    from scipy.integrate import solve_ivp

    if prob.dae:
        return None, "SciPy solve_ivp has no DAE solver"
    f = with_budget(prob.rhs, budget)
    kw: dict[str, Any] = {} if method == "LSODA" and prob.sparse else {"jac": prob.jac}
    if method == "LSODA" and prob.sparse:
        # LSODA takes only a dense Jacobian; give it the sparsity-free finite differences
        if prob.nstates > 2000:
            return None, "LSODA: dense Jacobian of more than 2000 states (no sparse option)"

    def run():
        f.reset()
        sol = solve_ivp(f, (0.0, float(prob.times[-1])), prob.y0, method=method,
                        t_eval=prob.times, rtol=rtol, atol=atol, **kw)
        if sol.status != 0:
            raise RuntimeError(sol.message)
        return sol.y[:, -1]

    return run, ""


def torchdiffeq_solver(prob, rtol, atol, budget, method="dopri5"):
    import torch

    tde, why = peer_module("torchdiffeq")
    if tde is None:
        return None, why
    if prob.dae:
        return None, "torchdiffeq solves ODEs only (no mass matrix)"
    f = with_budget(prob.torch_rhs, budget)
    y0 = torch.tensor(prob.y0)
    t = torch.tensor(prob.times)

    def run():
        f.reset()
        with torch.no_grad():
            return tde.odeint(f, y0, t, rtol=rtol, atol=atol, method=method)[-1].numpy()

    return run, ""


def torchode_solver(prob, rtol, atol, budget):
    import torch

    to, why = peer_module("torchode")
    if to is None:
        return None, why
    if prob.dae:
        return None, "torchode solves ODEs only"
    f = with_budget(prob.torch_rhs, budget)
    term = to.ODETerm(f)
    step = to.Dopri5(term=term)
    ctrl = to.IntegralController(atol=atol, rtol=rtol, term=term)
    solver = to.AutoDiffAdjoint(step, ctrl)
    y0 = torch.tensor(prob.y0)[None]
    t = torch.tensor(prob.times)[None]

    def run():
        f.reset()
        with torch.no_grad():
            sol = solver.solve(to.InitialValueProblem(y0=y0, t_eval=t))
        if not bool((sol.status == 0).all()):
            raise RuntimeError(f"torchode status {sol.status.tolist()}")
        return sol.ys[0, -1].numpy()

    return run, ""


def pydiffsol_ode(prob, rtol, atol, sens_tol=False):
    """(pydiffsol.Ode of the problem at rtol, atol, or None; why not). sens_tol: its
    sensitivities' error control at rtol, atol too (pydiffsol's default leaves them out)."""
    ds, why = peer_module("pydiffsol")
    if ds is None:
        return None, why
    sparse = prob.sparse and prob.nstates >= 16
    try:
        # faer's sparse LU: pydiffsol 0.6.2's KLU option (ds.klu) segfaults on heat2d here
        ode = ds.Ode(prob.code, matrix_type=ds.faer_sparse if sparse else ds.nalgebra_dense)
        ode.rtol, ode.atol = rtol, atol
        if sens_tol:
            ode.sens_rtol, ode.sens_atol = rtol, atol
    except Exception as exc:
        return None, f"pydiffsol refused the model: {type(exc).__name__}: {str(exc)[:120]}"
    return ode, ""


def pydiffsol_solver(prob, rtol, atol):
    ode, why = pydiffsol_ode(prob, rtol, atol)
    if ode is None:
        return None, why
    p = dsp.DiffsolModule(prob.code).default_params.numpy()

    def run():
        return np.asarray(ode.solve_dense(p, prob.times).ys)[:, -1]

    # pydiffsol exposes no counters; its internal steps are the points of Ode.solve
    run.steps = lambda: len(ode.solve(p, float(prob.times[-1])).ts) - 1  # type: ignore[attr-defined]
    return run, ""


# ---- references ----------------------------------------------------------------------------
_REF: dict[str, np.ndarray] = {}


def reference(prob: P.Problem) -> np.ndarray:
    if prob.label in _REF:
        return _REF[prob.label]
    if prob.name == "robertson_grid":
        from scipy.integrate import solve_ivp

        s = solve_ivp(P._rob_rhs, (0, prob.times[-1]), [1.0, 0, 0], method="Radau", rtol=1e-12,
                      atol=1e-16, jac=P._rob_jac)
        g = prob.size ** 2
        ref = np.repeat(s.y[:, -1], g)
    else:
        ref = run_c(prob, 1e-12, 1e-14, 1)["y_final"]
    _REF[prob.label] = ref
    return ref


def max_err(y: Optional[np.ndarray], ref: np.ndarray) -> Optional[float]:
    return None if y is None else float(np.max(np.abs(np.asarray(y) - ref)))


# ---- the solve table -----------------------------------------------------------------------
PEERS = ["c", "pydiffsol", "scipy_bdf", "scipy_lsoda", "scipy_radau", "torchdiffeq", "torchode"]


def solve_row(prob: P.Problem, rtol: float, atol: float, args) -> dict:
    row: dict[str, Any] = dict(problem=prob.name, size=prob.size, nstates=prob.nstates,
                               rtol=rtol, atol=atol, times={}, errors={}, skipped={})
    ref = reference(prob)
    m = dsp.DiffsolModule(prob.code, rtol=rtol, atol=atol)
    p = m.default_params.numpy()
    t_ours, reps, y = timed(lambda: m.solve_dense(p, prob.times), args.target)
    row["times"]["ours"] = t_ours
    row["errors"]["ours"] = max_err(y.numpy()[:, -1], ref)
    row["linear_solver"] = m.linear_solver_used
    row["ours_stats"] = dict(m.stats)  # steps, rhs_evals, jac_evals, lin_setups, ...
    row["reps"] = reps
    # C, with the same number of repetitions
    try:
        c = run_c(prob, rtol, atol, reps)
        row["times"]["c"] = c["seconds_min"]
        row["errors"]["c"] = max_err(c["y_final"], ref)
        row["c_steps"] = int(c["steps"])
    except Exception as exc:
        row["skipped"]["c"] = str(exc)
    # non-stiff problems: also what the docs recommend there, Adams with fixed-point
    # iteration (no Jacobian, no linear solve; LSODA's Adams mode is the SciPy analogue)
    if not prob.stiff:
        mf = dsp.DiffsolModule(prob.code, rtol=rtol, atol=atol, method="adams",
                               linear_solver="fixedpoint")
        t_fp, _, yf = timed(lambda: mf.solve_dense(p, prob.times), args.target)
        row["times"]["adams_fp"] = t_fp
        row["errors"]["adams_fp"] = max_err(yf.numpy()[:, -1], ref)
    budget = args.budget
    small = prob.nstates <= 64
    makers = {
        "pydiffsol": lambda: pydiffsol_solver(prob, rtol, atol),
        "scipy_bdf": lambda: scipy_solver(prob, "BDF", rtol, atol, budget),
        "scipy_lsoda": lambda: scipy_solver(prob, "LSODA", rtol, atol, budget),
        "scipy_radau": lambda: scipy_solver(prob, "Radau", rtol, atol, budget),
        "torchdiffeq": lambda: torchdiffeq_solver(prob, rtol, atol, budget),
        "torchode": lambda: torchode_solver(prob, rtol, atol, budget),
    }
    for name, make in makers.items():
        if name.startswith("torch") and not small and prob.stiff:
            row["skipped"][name] = "explicit solver on a large stiff problem (not attempted)"
            continue
        run, why = make()
        if run is None:
            row["skipped"][name] = why
            continue
        try:
            t, _, yv = timed(run, args.target, max_reps=reps if reps > 3 else 3)
            row["times"][name] = t
            row["errors"][name] = max_err(yv, ref)
            if hasattr(run, "steps"):
                row[f"{name}_steps"] = run.steps()
        except Budget:
            row["skipped"][name] = f"did not finish within the {budget:g} s budget"
        except Exception as exc:
            row["skipped"][name] = f"failed: {type(exc).__name__}: {str(exc)[:100]}"
    row["ratios"] = {k: v / t_ours for k, v in row["times"].items() if k != "ours"}
    # targets: C against our bdf (the same method); the peers against our best
    # configuration for the problem (bdf, or for a non-stiff one adams + fixed point)
    best = min(t_ours, row["times"].get("adams_fp", t_ours))
    tg = {}
    if "c" in row["ratios"]:
        tg["within 1.2x of C"] = 1.0 / row["ratios"]["c"] <= 1.2
    if "pydiffsol" in row["ratios"] and small:
        tg["faster than pydiffsol (small)"] = row["times"]["pydiffsol"] >= best
    sc = [row["times"][k] for k in ("scipy_bdf", "scipy_lsoda", "scipy_radau") if k in row["times"]]
    if sc:
        tg["faster than SciPy's best"] = min(sc) >= best
    row["targets"] = tg
    return row


def fmt_t(t: Optional[float]) -> str:
    if t is None:
        return "-"
    return f"{t * 1e3:.3g}ms" if t < 1 else f"{t:.3g}s"


def print_steps(rows: list[dict]) -> None:
    """Internal steps of ours, the C baseline and pydiffsol (the same accuracy is the
    error columns): where a speed gap comes from the step count, not the time per step."""
    print("steps (ours / c / pydiffsol) and ours' time per step:")
    for r in rows:
        st = r.get("ours_stats", {}).get("steps")
        if not st:
            continue
        name = f"{r['problem']}[{r['size']}]"
        per = r["times"]["ours"] / st * 1e6
        print(f"  {name:<20} rtol {r['rtol']:.0e}: {st} / {r.get('c_steps', '-')} / "
              f"{r.get('pydiffsol_steps', '-')}  ({per:.2f} us per step)")


def print_solve_table(rows: list[dict]) -> None:
    cols = ["adams_fp", "c", "pydiffsol", "scipy_bdf", "scipy_lsoda", "scipy_radau", "torchdiffeq",
            "torchode"]
    head = f"{'problem':<18} {'n':>6} {'rtol':>6} {'ours':>9} {'err':>8} " + " ".join(
        f"{c[:11]:>17}" for c in cols) + "  targets"
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for c in cols:
            if c in r["times"]:
                e = r["errors"].get(c)
                cells.append(f"{r['ratios'][c]:>7.2f}x {e:>8.1e}" if e is not None
                             else f"{r['ratios'][c]:>7.2f}x {'':>8}")
            else:
                cells.append(f"{'skip':>17}")
        tg = ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in r["targets"].items())
        name = r["problem"] + (f"[{r['size']}]" if r["problem"] in ("heat2d", "robertson_grid",
                                                                    "nn_tanh") else "")
        print(f"{name:<18} {r['nstates']:>6} {r['rtol']:>6.0e} {fmt_t(r['times']['ours']):>9} "
              f"{r['errors']['ours']:>8.1e} " + " ".join(cells) + f"  {tg}")
    print("columns: peer time / ours (higher = we are faster) and the peer's max abs error of "
          "the final state; adams_fp: ours with method='adams', linear_solver='fixedpoint' on "
          "the non-stiff problems (below 1 = faster than our bdf); the pydiffsol and SciPy "
          "targets compare with the faster of the two; 'skip' reasons follow")
    for r in rows:
        for k, why in r["skipped"].items():
            print(f"  {r['problem']}[{r['size']}] {k}: {why}")


# ---- gradients -----------------------------------------------------------------------------
def gradient_rows(args) -> list[dict]:
    import torch

    out = []
    probs = [P.lotka_volterra(), P.robertson_ode(), P.robertson_dae(), P.vanderpol(),
             P.heat2d(10 if args.quick else 30), P.nn(16)]
    for prob in probs:
        m = dsp.DiffsolModule(prob.code, rtol=prob.rtol, atol=prob.atol)
        p = m.default_params.numpy()
        # fixed random weights: with all ones Robertson's gradient is zero (y1 + y2 + y3 = 1)
        # and its adjoint trivial
        g = np.random.default_rng(0).standard_normal((m.nout, len(prob.times)))
        t_solve, reps, _ = timed(lambda: m.solve_dense(p, prob.times), args.target)
        t_rev, _, grad = timed(lambda: m.reverse_mode(p, prob.times, g), args.target)
        t_fwd, _, fwd = timed(lambda: m.forward_mode(p, prob.times), args.target)
        # the same gradient with gradient_method="auto" (forward sensitivities for few
        # parameters against many output times, else the adjoint)
        ma = dsp.DiffsolModule(prob.code, rtol=prob.rtol, atol=prob.atol, gradient_method="auto")
        t_auto, _, _ = timed(lambda: ma.reverse_mode(p, prob.times, g), args.target)
        row = dict(problem=prob.name, size=prob.size, nstates=prob.nstates, nparams=m.nparams,
                   solve_s=t_solve, reverse_s=t_rev, forward_s=t_fwd, auto_s=t_auto,
                   reverse_over_solve=t_rev / t_solve, forward_over_solve=t_fwd / t_solve,
                   auto_over_solve=t_auto / t_solve, auto_method=ma.last_gradient_method,
                   skipped={}, targets={"reverse <= 3x solve": t_rev / t_solve <= 3.0,
                                        "gradient (auto) <= 3x solve": t_auto / t_solve <= 3.0})
        # the sensitivities' error: against forward_mode at rtol 1e-12 (a tight run of the
        # same solver; the C baselines have no sensitivities)
        sref = dsp.DiffsolModule(prob.code, rtol=1e-12, atol=prob.atol * 1e-4).forward_mode(
            p, prob.times)[1].numpy()
        row["sens_err"] = sens_error(fwd[1].numpy(), sref)
        row.update(pydiffsol_gradients(prob, p, g, grad, t_rev, t_fwd, args, row["skipped"],
                                       sref))
        if prob.name == "lotka_volterra":
            extra = torchdiffeq_gradients(prob, m, t_rev, args)
            row["targets"].update(extra.pop("peer_targets", {}))
            row["skipped"].update(extra.pop("skipped", {}))
            row.update(extra)
        out.append(row)
    return out


def sens_error(sens: np.ndarray, ref: np.ndarray) -> float:
    """Max error of sensitivities (nparams, nout, nt) relative to each parameter's largest
    reference entry, the worst parameter (Robertson's span 1e-2 to 1e7 in magnitude: one
    scale for all would hide the small ones)."""
    scale = np.max(np.abs(ref), axis=(1, 2), keepdims=True)
    return float(np.max(np.abs(np.asarray(sens).reshape(ref.shape) - ref) / scale))


def pydiffsol_gradients(prob: P.Problem, p, g, grad, t_rev: float, t_fwd: float, args,
                        skipped: dict, sref: np.ndarray) -> dict:
    """The same gradient from pydiffsol: its discrete adjoint (solve_adjoint_fwd, then
    solve_adjoint_bkwd with the same grad_output) and its forward sensitivities
    (solve_fwd_sens, at its default sensitivity tolerances), each as peer time / ours
    (reverse_mode, forward_mode), the gradient's max difference relative to ours and the
    sensitivities' error against sref like ours (sens_err). A failed solve is reported,
    not raised."""
    ode, why = pydiffsol_ode(prob, prob.rtol, prob.atol)
    if ode is None:
        skipped["pydiffsol"] = why
        return {}
    # pydiffsol leaves the sensitivities out of the error control unless sens_rtol and
    # sens_atol are set (its default, "forward"); "forward_ec" sets them to rtol and atol,
    # the error control ours has by default
    ode_ec, _ = pydiffsol_ode(prob, prob.rtol, prob.atol, sens_tol=True)
    g = np.ascontiguousarray(g, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64).ravel()
    res: dict[str, Any] = {}

    def reverse():
        sol, ck = ode.solve_adjoint_fwd(p, prob.times)
        return np.asarray(ode.solve_adjoint_bkwd(sol, ck, g)).ravel()

    def forward():
        return np.asarray(ode.solve_fwd_sens(p, prob.times).sens)

    def forward_ec():
        return np.asarray(ode_ec.solve_fwd_sens(p, prob.times).sens)

    runs = [("reverse", reverse, t_rev), ("forward", forward, t_fwd)]
    if ode_ec is not None:
        runs.append(("forward_ec", forward_ec, t_fwd))
    for key, fn, ours_t in runs:
        try:
            tt, _, out = timed(fn, args.target, max_reps=20)
        except Exception as exc:  # pydiffsol raises RuntimeError when its solver gives up
            skipped[f"pydiffsol {key}"] = f"failed: {str(exc)[:100]}"
            continue
        res[f"pydiffsol_{key}_s"] = tt
        res[f"pydiffsol_{key}_ratio"] = tt / ours_t
        if key == "reverse":
            res["pydiffsol_grad_relerr"] = float(np.max(np.abs(out - grad)) / np.max(np.abs(grad)))
        else:
            res[f"pydiffsol_{key.replace('forward', 'sens')}_err"] = sens_error(out, sref)
    return res


def torchdiffeq_gradients(prob: P.Problem, m, t_rev: float, args) -> dict:
    """The same gradient, d sum(y) / d params, with torchdiffeq (adjoint and backprop)."""
    import torch

    tde, why = peer_module("torchdiffeq")
    if tde is None:
        return {"skipped": {"torchdiffeq": why}}

    class LV(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor(P.LV, dtype=torch.float64))

        def forward(self, t, y):
            a, b, d, g = self.p
            x, v = y[..., 0], y[..., 1]
            return torch.stack([a * x - b * x * v, d * x * v - g * v], -1)

    f = LV()
    y0 = torch.tensor(prob.y0)
    t = torch.tensor(prob.times)
    res: dict[str, Any] = {"skipped": {}}
    ours = np.asarray(m.reverse_mode(m.default_params.numpy(), prob.times,
                                     np.ones((2, len(prob.times)))))
    for name, solve in (("torchdiffeq_adjoint", tde.odeint_adjoint), ("torchdiffeq_backprop", tde.odeint)):
        def run():
            f.zero_grad()
            y = solve(f, y0, t, rtol=prob.rtol, atol=prob.atol, method="dopri5")
            y.sum().backward()
            return f.p.grad.detach().numpy().copy()

        tt, _, gr = timed(run, args.target, max_reps=10)
        # our parameters are (alpha, beta, delta, gamma) in the model's order too
        res[f"{name}_s"] = tt
        res[f"{name}_ratio"] = tt / t_rev
        res[f"{name}_grad_relerr"] = float(np.max(np.abs(gr - ours) / np.abs(ours)))
    res["peer_targets"] = {"reverse >= 50x faster than torchdiffeq adjoint":
                           res["torchdiffeq_adjoint_ratio"] >= 50.0}
    return res


def print_gradient_table(rows: list[dict]) -> None:
    print(f"\n{'problem':<16} {'n':>5} {'np':>3} {'solve':>9} {'reverse':>9} {'rev/solve':>9} "
          f"{'fwd/solve':>9} {'auto/solve':>17}  pydiffsol (reverse, forward) / ours;  "
          f"torchdiffeq (adjoint, backprop) / ours reverse")
    for r in rows:
        extra = ""
        if "pydiffsol_reverse_ratio" in r or "pydiffsol_forward_ratio" in r:
            rv = r.get("pydiffsol_reverse_ratio")
            fw = r.get("pydiffsol_forward_ratio")
            extra = (f"pydiffsol {'-' if rv is None else f'{rv:.2f}x'}, "
                     f"{'-' if fw is None else f'{fw:.2f}x'}")
            if "pydiffsol_grad_relerr" in r:
                extra += f" (grad rel. diff {r['pydiffsol_grad_relerr']:.1e})"
            if "pydiffsol_sens_err" in r:
                extra += (f" (sens. error {r['pydiffsol_sens_err']:.0e}, ours "
                          f"{r['sens_err']:.0e})")
            if "pydiffsol_forward_ec_ratio" in r:
                extra += (f", with sens_rtol {r['pydiffsol_forward_ec_ratio']:.2f}x (error "
                          f"{r['pydiffsol_sens_ec_err']:.0e})")
            extra += ";  "
        if "torchdiffeq_adjoint_ratio" in r:
            extra += (f"torchdiffeq {r['torchdiffeq_adjoint_ratio']:.1f}x, "
                      f"{r['torchdiffeq_backprop_ratio']:.1f}x"
                      f" (grad rel. diff {r['torchdiffeq_adjoint_grad_relerr']:.1e})")
        for k, why in r.get("skipped", {}).items():
            extra += f" {k}: {why}"
        tg = ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in r["targets"].items())
        print(f"{r['problem']:<16} {r['nstates']:>5} {r['nparams']:>3} {fmt_t(r['solve_s']):>9} "
              f"{fmt_t(r['reverse_s']):>9} {r['reverse_over_solve']:>9.2f} "
              f"{r['forward_over_solve']:>9.2f} {r['auto_over_solve']:>8.2f} ({r['auto_method']:>7})"
              f"  {extra}  {tg}")


# ---- compile and overhead ------------------------------------------------------------------
def compile_rows() -> list[dict]:
    """Cold compile (translate + cc + dlopen into a fresh cache; the best and the median of
    3, since other processes share the machine) and cached load (median of 5) per model."""
    from diffsol_pytorch import _kernel

    rows = []
    models = (("robertson_ode", P.robertson_ode().code), ("heat2d[30]", P.heat2d_code(30)),
              ("nn_tanh[16]", P.nn_code(16)), ("nn_tanh[32]", P.nn_code(32)),
              ("nn_tanh[64]", P.nn_code(64)))
    for name, code in models:
        colds = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as cache:
                t0 = time.perf_counter()
                _kernel.Model(code, cache_dir=cache)
                colds.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as cache:
            _kernel.Model(code, cache_dir=cache)
            loads = []
            for _ in range(5):
                t0 = time.perf_counter()
                _kernel.Model(code, cache_dir=cache)
                loads.append(time.perf_counter() - t0)
        lines = len(code.splitlines())
        cold = min(colds)
        rows.append(dict(model=name, lines=lines, bytes=len(code),
                         c_bytes=len(_kernel.translate(code)), cold_s=cold,
                         cold_median_s=statistics.median(colds),
                         cached_s=statistics.median(loads),
                         targets={"cold <= 0.5 s": cold <= 0.5 or lines >= 100,
                                  "cached <= 10 ms": statistics.median(loads) <= 0.010}))
    return rows


def overhead_row() -> dict:
    """Per-call cost of solve_dense on du/dt = -k u with one output time (t = t0)."""
    import torch

    m = dsp.DiffsolModule(P.trivial_code())
    p_np = np.array([1.0])
    p_t = torch.tensor([1.0], dtype=torch.float64)
    t_np = np.array([0.0])
    t_t = torch.tensor([0.0], dtype=torch.float64)
    res = {}
    for name, p, t in (("numpy", p_np, t_np), ("torch", p_t, t_t)):
        for _ in range(200):
            m.solve_dense(p, t)
        best = float("inf")
        for _ in range(7):
            n = 2000
            t0 = time.perf_counter()
            for _ in range(n):
                m.solve_dense(p, t)
            best = min(best, (time.perf_counter() - t0) / n)
        res[f"{name}_us"] = best * 1e6
    # the kernel alone (Cython call, no Python checks)
    solver = m._solver
    best = float("inf")
    for _ in range(7):
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            solver.solve_dense(p_np, t_np)
        best = min(best, (time.perf_counter() - t0) / n)
    res["kernel_us"] = best * 1e6
    res["targets"] = {"solve_dense overhead <= 20 us": res["torch_us"] <= 20.0}
    return res


# ---- plot ----------------------------------------------------------------------------------
def write_plot(rows: list[dict], path: str) -> None:
    from diffsol_pytorch import viz

    # one tolerance per problem (the default, loosest one), so each size has one point
    loosest = {}
    for r in rows:
        loosest[r["problem"]] = max(loosest.get(r["problem"], 0.0), r["rtol"])
    scaled = [r for r in rows if r["problem"] in ("heat2d", "robertson_grid")
              and r["rtol"] == loosest[r["problem"]]]
    if not scaled:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    for k, name in enumerate(("heat2d", "robertson_grid")):
        ax = fig.add_subplot(1, 2, k + 1)
        viz.plot_scaling([r for r in scaled if r["problem"] == name], ax=ax, title=name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(data: dict) -> str:
    """The tables of a --json file as Markdown (docs/performance_comparison.md)."""
    cols = ["adams_fp", "c", "pydiffsol", "scipy_bdf", "scipy_lsoda", "scipy_radau", "torchdiffeq",
            "torchode"]
    out = ["| problem | states | rtol | ours | ours err | " + " | ".join(cols) + " | targets |",
           "|---|---|---|---|---|" + "---|" * len(cols) + "---|"]
    for r in data["solves"]:
        name = r["problem"] + (f"[{r['size']}]" if r["problem"] in ("heat2d", "robertson_grid",
                                                                    "nn_tanh") else "")
        cells = []
        for c in cols:
            if c in r["times"] and c in r["ratios"]:
                cells.append(f"{r['ratios'][c]:.2f}x ({r['errors'][c]:.0e})")
            elif "budget" in r["skipped"].get(c, ""):
                cells.append("over budget")
            else:
                cells.append("-")
        fails = [k for k, v in r["targets"].items() if not v]
        tg = "all pass" if not fails else "FAIL: " + "; ".join(fails)
        out.append(f"| {name} | {r['nstates']} | {r['rtol']:.0e} | {fmt_t(r['times']['ours'])} | "
                   f"{r['errors']['ours']:.0e} | " + " | ".join(cells) + f" | {tg} |")
    out += ["", "| problem | states | params | solve | reverse | reverse/solve | forward/solve | "
                "auto/solve (picked) | pydiffsol adjoint / ours reverse | "
                "pydiffsol forward / ours forward (sensitivity error: pydiffsol, ours) | "
                "the same, pydiffsol with sens_rtol, sens_atol = rtol, atol (its error) | "
                "torchdiffeq adjoint / ours reverse | "
                "torchdiffeq backprop / ours reverse |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["gradients"]:
        def peer(key, what):
            if key in r:
                return f"{r[key]:.2f}x"
            why = r.get("skipped", {}).get(f"pydiffsol {what}", "")
            return "failed" if why.startswith("failed") else "-"
        pr, pf = peer("pydiffsol_reverse_ratio", "reverse"), peer("pydiffsol_forward_ratio", "forward")
        if "pydiffsol_sens_err" in r:
            pf += f" ({r['pydiffsol_sens_err']:.0e}, {r['sens_err']:.0e})"
        pe = peer("pydiffsol_forward_ec_ratio", "forward_ec")
        if "pydiffsol_sens_ec_err" in r:
            pe += f" ({r['pydiffsol_sens_ec_err']:.0e})"
        a = f"{r['torchdiffeq_adjoint_ratio']:.0f}x" if "torchdiffeq_adjoint_ratio" in r else "-"
        b = f"{r['torchdiffeq_backprop_ratio']:.0f}x" if "torchdiffeq_backprop_ratio" in r else "-"
        auto = (f"{r['auto_over_solve']:.2f} ({r['auto_method']})" if "auto_over_solve" in r
                else "-")
        out.append(f"| {r['problem']} | {r['nstates']} | {r['nparams']} | {fmt_t(r['solve_s'])} | "
                   f"{fmt_t(r['reverse_s'])} | {r['reverse_over_solve']:.2f} | "
                   f"{r['forward_over_solve']:.2f} | {auto} | {pr} | {pf} | {pe} | {a} | {b} |")
    out += ["", "| model | lines | bytes | generated C | cold compile (best / median of 3) | "
                "cached load |", "|---|---|---|---|---|---|"]
    for r in data["compile"]:
        med = f" / {r['cold_median_s']:.3f} s" if "cold_median_s" in r else ""
        cb = f"{r['c_bytes']}" if "c_bytes" in r else "-"
        out.append(f"| {r['model']} | {r['lines']} | {r['bytes']} | {cb} | {r['cold_s']:.3f} s{med} | "
                   f"{r['cached_s'] * 1e3:.2f} ms |")
    o = data.get("overhead") or {}
    if o:
        out += ["", f"solve_dense per call on a trivial model: {o['torch_us']:.1f} us (torch "
                    f"tensors), {o['numpy_us']:.1f} us (NumPy), of which the kernel call "
                    f"{o['kernel_us']:.1f} us."]
    return "\n".join(out)


# ---- main ----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one tolerance")
    ap.add_argument("--json", help="write every row here")
    ap.add_argument("--plot", help="time vs problem size per method (PNG)")
    ap.add_argument("--only", help="comma-separated problem names (solve table only)")
    ap.add_argument("--replot", metavar="JSON",
                    help="no run: print an earlier --json as Markdown tables (and redraw --plot)")
    ap.add_argument("--no-solves", action="store_true", help="skip the solve table")
    ap.add_argument("--target", type=float, default=None,
                    help="seconds of repetitions per measurement (default 0.3, --quick 0.1)")
    ap.add_argument("--budget", type=float, default=None,
                    help="time budget of one peer solve (default 20 s, --quick 5 s)")
    args = ap.parse_args()
    if args.replot:
        data = json.loads(pathlib.Path(args.replot).read_text())
        if args.plot:
            write_plot(data["solves"], args.plot)
        print(markdown(data))
        return
    args.target = args.target or (0.1 if args.quick else 0.3)
    args.budget = args.budget or (5.0 if args.quick else 20.0)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} (shared: timings are noisy, ratios count)")
    ours_opt = bool(dsp._kernel.sundials_build()[1])
    print(f"SUNDIALS: ours {'-O2 static' if ours_opt else 'the system shared libraries'}; "
          f"the C baselines {sundials_flags()[2]}")
    probs = P.all_problems(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        probs = [p for p in probs if p.name in keep]
    tols = [None] if args.quick else [None, "tight"]
    rows = []
    for prob in ([] if args.no_solves else probs):
        for tol in tols:
            if tol == "tight" and prob.nstates > 64:
                continue
            rtol, atol = (prob.rtol, prob.atol) if tol is None else (prob.rtol * 1e-2, prob.atol * 1e-2)
            print(f"... {prob.label} rtol={rtol:g}", file=sys.stderr, flush=True)
            rows.append(solve_row(prob, rtol, atol, args))
    print()
    print_solve_table(rows)
    print_steps(rows)
    grads = gradient_rows(args) if not args.only else []
    if grads:
        print_gradient_table(grads)
    comp = compile_rows() if not args.only else []
    for r in comp:
        print(f"compile {r['model']:<14} {r['lines']:>4} lines  C {r['c_bytes']:>7} bytes  cold "
              f"{r['cold_s']:.3f} s (median {r['cold_median_s']:.3f} s)  cached "
              f"{r['cached_s'] * 1e3:.2f} ms  " + ", ".join(
                  f"{k}: {'PASS' if v else 'FAIL'}" for k, v in r["targets"].items()))
    ovh = overhead_row() if not args.only else {}
    if ovh:
        print(f"solve_dense per-call overhead (trivial model, one output time): torch "
              f"{ovh['torch_us']:.1f} us, numpy {ovh['numpy_us']:.1f} us, kernel call alone "
              f"{ovh['kernel_us']:.1f} us: "
              f"{'PASS' if ovh['targets']['solve_dense overhead <= 20 us'] else 'FAIL'} (<= 20 us)")
    stiff_unfinished = [f"{r['problem']}[{r['size']}] {k}" for r in rows
                        for k, why in r["skipped"].items() if "budget" in why]
    if stiff_unfinished:
        print("did not finish within the budget: " + ", ".join(stiff_unfinished))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            dict(solves=rows, gradients=grads, compile=comp, overhead=ovh,
                 load_average=os.getloadavg()), indent=1, default=float))
    if args.plot:
        write_plot(rows, args.plot)


if __name__ == "__main__":
    main()
