"""Resident memory stays flat over many solve + gradient cycles (issue 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import model_source
from diffsol_pytorch import testing

pytestmark = pytest.mark.memory

LIMIT_MB = 10.0


@pytest.mark.parametrize("name, method", [("lotka_volterra", "bdf"), ("robertson_dae", "bdf"),
                                          ("dosing", "bdf"), ("lotka_volterra", "dopri5")])
def test_solve_and_gradient_cycles_do_not_grow(name, method):
    m = dsp.DiffsolModule(model_source(name), method=method, rtol=1e-6, atol=1e-8)
    p = m.default_params.clone()
    times = torch.linspace(0.0, 5.0, 6, dtype=torch.float64)
    g = np.ones((m.nout, 6))

    def cycle(k):
        q = p * (1.0 + 1e-3 * (k % 7))
        m.solve_dense(q, times)
        m.reverse_mode(q, times, g)
        qq = q.clone().requires_grad_(True)
        m.solve_dense(qq, times).sum().backward()

    with testing.memory_drift(limit_mb=LIMIT_MB, warmup=lambda: [cycle(k) for k in range(50)]):
        for k in range(2000):
            cycle(k)


def test_batch_cycles_do_not_grow():
    """Threaded batches (worker solvers reused, threads started per call) and the
    batched autograd and torch.func paths keep resident memory flat."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-6, atol=1e-8, threads=2)
    P = m.default_params[None, :] * torch.linspace(0.9, 1.1, 4, dtype=torch.float64)[:, None]
    times = torch.linspace(0.0, 5.0, 6, dtype=torch.float64)
    G = torch.ones(4, m.nout, 6, dtype=torch.float64)
    bad = P.clone()
    bad[2, 0] = 1e308  # overflows: a failing row every cycle

    def cycle(k):
        q = P * (1.0 + 1e-3 * (k % 7))
        m.solve_dense(q, times)
        m.reverse_mode(q, times, G)
        qq = q.clone().requires_grad_(True)
        m.solve_dense(qq, times).sum().backward()
        torch.func.vmap(torch.func.grad(lambda p: m.solve_dense(p, times).sum()))(q)
        with pytest.raises(dsp.SolverError, match="^row 2: "):
            m.solve_dense(bad, times)

    with testing.memory_drift(limit_mb=LIMIT_MB, warmup=lambda: [cycle(k) for k in range(30)]):
        for k in range(500):
            cycle(k)
