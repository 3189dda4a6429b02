"""pytest-benchmark suite for regression tracking (the problems of benchmarks/compare.py).

Skipped unless pytest runs with --run-perf:

    .venv/bin/python -m pytest -m perf --run-perf tests/test_perf_bench.py \
        --benchmark-json=bench.json

One JSON file per commit; viz.plot_benchmark_history(dir) plots them over commits.
Every benchmark also checks its result (against the reference values of the
problem), so a fast wrong answer fails. Comparisons with the peers (C, SciPy,
torchdiffeq, torchode, pydiffsol) are in benchmarks/compare.py.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import problems as P  # noqa: E402

import diffsol_pytorch as dsp  # noqa: E402
from diffsol_pytorch import _kernel  # noqa: E402

pytestmark = pytest.mark.perf

# Robertson at t = 4e5 (SUNDIALS cvRoberts_dns output, rtol 1e-4 there; we check to 1e-4 abs)
ROB_4E5 = np.array([4.936383e-03, 1.984224e-08, 9.950636e-01])

SOLVE_CASES = [
    ("robertson_ode", None),
    ("robertson_dae", None),
    ("lotka_volterra", None),
    ("vanderpol", None),
    ("heat2d", 30),
    ("robertson_grid", 10),
    ("nn_tanh", 16),
]


def _reference_final(prob: P.Problem) -> np.ndarray:
    """A SciPy Radau solution at tight tolerance (the grid: the 3-state one, repeated)."""
    from scipy.integrate import solve_ivp

    if prob.name in ("robertson_ode", "robertson_dae", "robertson_grid"):
        return np.repeat(ROB_4E5, prob.nstates // 3)
    sol = solve_ivp(prob.rhs, (0.0, float(prob.times[-1])), prob.y0, method="Radau",
                    rtol=1e-10, atol=1e-12, jac=prob.jac)
    return sol.y[:, -1]


@pytest.mark.parametrize("name,size", SOLVE_CASES, ids=[f"{n}{'' if s is None else s}"
                                                        for n, s in SOLVE_CASES])
def test_solve(benchmark, name, size):
    prob = P.by_name(name, size)
    m = dsp.DiffsolModule(prob.code, rtol=prob.rtol, atol=prob.atol)
    p = m.default_params.numpy()
    y = benchmark(m.solve_dense, p, prob.times)
    ref = _reference_final(prob)
    # loose: the solve's own tolerance, scaled; catches a wrong answer, not noise
    np.testing.assert_allclose(y.numpy()[:, -1], ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name,size", [("lotka_volterra", None), ("robertson_ode", None),
                                       ("heat2d", 10)])
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_gradient(benchmark, name, size, mode):
    prob = P.by_name(name, size)
    m = dsp.DiffsolModule(prob.code, rtol=prob.rtol, atol=prob.atol)
    p = m.default_params.numpy()
    g = np.ones((m.nout, len(prob.times)))
    if mode == "reverse":
        grad = np.asarray(benchmark(m.reverse_mode, p, prob.times, g))
    else:
        _, sens = benchmark(m.forward_mode, p, prob.times)
        grad = np.einsum("pot,ot->p", sens.numpy(), g)
    # central differences of sum(y) in the first parameter
    h = 1e-6 * max(abs(p[0]), 1.0)
    m2 = dsp.DiffsolModule(prob.code, rtol=1e-10, atol=1e-12)
    pp, pm = p.copy(), p.copy()
    pp[0] += h
    pm[0] -= h
    fd = (m2.solve_dense(pp, prob.times).sum() - m2.solve_dense(pm, prob.times).sum()).item() / (2 * h)
    assert abs(grad[0] - fd) <= 1e-3 * abs(fd) + 1e-6


@pytest.mark.parametrize("which", ["robertson_ode", "heat2d30"])
def test_compile_cold(benchmark, which):
    code = P.robertson_ode().code if which == "robertson_ode" else P.heat2d_code(30)
    dirs = []

    def setup():
        d = tempfile.TemporaryDirectory()
        dirs.append(d)
        return (code,), {"cache_dir": d.name}

    model = benchmark.pedantic(_kernel.Model, setup=setup, rounds=3, iterations=1)
    assert model.nstates == (3 if which == "robertson_ode" else 900)
    for d in dirs:
        d.cleanup()


def test_compile_cached(benchmark, tmp_path):
    code = P.robertson_ode().code
    _kernel.Model(code, cache_dir=str(tmp_path))
    model = benchmark(_kernel.Model, code, cache_dir=str(tmp_path))
    assert model.nstates == 3


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_solve_dense_overhead(benchmark, kind):
    import torch

    m = dsp.DiffsolModule(P.trivial_code())
    if kind == "torch":
        p, t = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0, 0.5], dtype=torch.float64)
    else:
        p, t = np.array([1.0]), np.array([0.0, 0.5])
    y = benchmark(m.solve_dense, p, t)
    np.testing.assert_allclose(y.numpy()[0], [1.0, np.exp(-0.5)], rtol=1e-4)
