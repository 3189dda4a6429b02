"""Batches on the kernel's thread pool (_ckernel/batch.c through _kernel.Batch).

A batch ``params`` (B, nparams) with B >= 2 is solved natively on threads; every
row must be bit-identical (torch.equal) to solving that row alone, for
solve_dense, forward_mode, reverse_mode and autograd gradients, whatever the
thread count.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = pytest.mark.integration

# (model, options, times, a scale for the parameter perturbations)
CASES = {
    "lotka_volterra": (dict(rtol=1e-8, atol=1e-10), torch.linspace(0, 10, 11)),
    "robertson_dae": (dict(rtol=1e-6, atol=1e-10), torch.tensor([0.0, 0.4, 4.0, 40.0])),
    "dosing": (dict(rtol=1e-8, atol=1e-10), torch.linspace(0, 16, 9)),
    "heat1d": (dict(rtol=1e-6, atol=1e-8), torch.linspace(0, 0.05, 5)),
    "logistic": (dict(method="tsit45", rtol=1e-8, atol=1e-10), torch.linspace(0, 5, 6)),
}


def _batch_params(m: dsp.DiffsolModule, nrows: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    scale = 1.0 + 0.1 * (torch.rand(nrows, m.nparams, generator=gen, dtype=torch.float64) - 0.5)
    return m.default_params[None, :] * scale


def _module(name: str, **extra) -> tuple[dsp.DiffsolModule, torch.Tensor]:
    opts, times = CASES[name]
    return dsp.DiffsolModule(model_source(name), **opts, **extra), times.double()


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_is_bit_identical_to_rows(name):
    m, times = _module(name)
    P = _batch_params(m, 5)
    G = torch.rand(5, m.nout, times.shape[0], dtype=torch.float64,
                   generator=torch.Generator().manual_seed(3)) + 0.1
    rows_y = torch.stack([m.solve_dense(p, times) for p in P])
    rows_fy, rows_s = zip(*[m.forward_mode(p, times) for p in P])
    rows_g = torch.stack([m.reverse_mode(p, times, g) for p, g in zip(P, G)])
    for threads in (1, 2, 3):
        y = m.solve_dense(P, times, threads=threads)
        assert torch.equal(y, rows_y), threads
        fy, s = m.forward_mode(P, times, threads=threads)
        assert torch.equal(fy, torch.stack(rows_fy)) and torch.equal(s, torch.stack(rows_s))
        assert torch.equal(m.reverse_mode(P, times, G, threads=threads), rows_g)
        # autograd: the batched backward pass is the batched reverse pass
        Pg = P.clone().requires_grad_()
        yg = m.solve_dense(Pg, times, threads=threads)
        assert torch.equal(yg.detach(), rows_y)
        (yg * G).sum().backward()
        assert torch.equal(Pg.grad, rows_g), threads


def test_module_threads_option_and_torch_default():
    m, times = _module("lotka_volterra", threads=2)
    assert m.threads == 2
    P = _batch_params(m, 4)
    y2 = m.solve_dense(P, times)
    assert m._get_batch().workers() <= 2
    m1 = dsp.DiffsolModule(model_source("lotka_volterra"), **CASES["lotka_volterra"][0])
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert m1._threads(None) == 1
        assert torch.equal(m1.solve_dense(P, times), y2)
    finally:
        torch.set_num_threads(old)
    assert m1._threads(3) == 3
    # pickling keeps the option
    import pickle

    assert pickle.loads(pickle.dumps(m)).threads == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_threads_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="threads must be None or a positive integer"):
        dsp.DiffsolModule(model_source("decay"), threads=bad)
    m = dsp.DiffsolModule(model_source("decay"))
    with pytest.raises(ValueError, match="threads"):
        m.solve_dense([[0.7, 2.0], [0.5, 1.0]], [0.0, 1.0], threads=bad)


def test_empty_batch_and_stops():
    m = dsp.DiffsolModule(model_source("decay"))
    y = m.solve_dense(torch.zeros(0, 2, dtype=torch.float64), [0.0, 1.0])
    assert y.shape == (0, 1, 2)
    assert m.reverse_mode(torch.zeros(0, 2), [0.0, 1.0], torch.zeros(0, 1, 2)).shape == (0, 2)
    code = "in_i { k = 1.0, level = 0.5 }\nu { 1.0 }\nF { -k * u }\nstop { u - level }\n"
    ms = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10)
    P = torch.tensor([[1.0, 0.5], [0.1, 0.5], [2.0, 0.5]], dtype=torch.float64)
    y = ms.solve_dense(P, [0.0, 0.5, 1.0], threads=2)
    stops = ms.last_stop
    assert stops[1] is None and stops[0][1] == 0 and stops[2][1] == 0
    assert abs(stops[0][0] - np.log(2.0)) < 1e-6 and abs(stops[2][0] - np.log(2.0) / 2) < 1e-6
    assert torch.isnan(y[0, 0, 2]) and not torch.isnan(y[1, 0, 2])


def test_failing_row_is_reported_and_the_module_stays_usable():
    code = "in_i { k = 1.5, a0 = 1.0 }\nu { a0 }\nF { -k * u + 0 * sqrt(k - 1) }\n"
    m = dsp.DiffsolModule(code)
    P = torch.tensor([[1.5, 1.0]] * 6, dtype=torch.float64)
    P[3, 0] = 0.5  # sqrt of a negative number: NaN right-hand side
    P[5, 0] = 0.5
    for threads in (1, 2):
        with pytest.raises(dsp.SolverError, match=r"^row 3: ") as info:
            m.solve_dense(P, [0.0, 1.0], threads=threads)
        assert info.value.row == 3
        with pytest.raises(dsp.SolverError, match=r"^row 3: "):
            m.reverse_mode(P, [0.0, 1.0], torch.ones(6, 1, 2), threads=threads)
    y = m.solve_dense(P[:3], [0.0, 1.0], threads=2)
    torch.testing.assert_close(y[:, 0, 1], torch.full((3,), np.exp(-1.5), dtype=torch.float64),
                               rtol=1e-4, atol=0)


def test_two_python_threads_share_a_module():
    m, times = _module("lotka_volterra")
    P1 = _batch_params(m, 6)
    P2 = P1 * 1.02
    G = torch.ones(6, m.nout, times.shape[0], dtype=torch.float64)
    want = [m.solve_dense(P1, times), m.solve_dense(P2, times),
            m.reverse_mode(P1, times, G), m.reverse_mode(P2, times, G)]
    got: dict[int, list] = {}
    errors: list = []

    def work(i, P):
        try:
            out = []
            for _ in range(4):
                out.append(m.solve_dense(P, times, threads=2))
                out.append(m.reverse_mode(P, times, G, threads=2))
                out.append(m.solve_dense(P[0], times))  # the single-row solver as well
            got[i] = out
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(i, P)) for i, P in enumerate((P1, P2))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for i in (0, 1):
        for k in range(4):
            assert torch.equal(got[i][3 * k], want[i])
            assert torch.equal(got[i][3 * k + 1], want[2 + i])
            assert torch.equal(got[i][3 * k + 2], want[i][0])


def test_batched_fallback_to_forward_sensitivities():
    """A method the adjoint does not cover (ARKODE with M): the batched gradient
    comes from batched forward sensitivities, equal to the row-by-row route."""
    code = ("in_i { k = 0.7, c = 2.0 }\nu_i { x = 1.0 }\ndudt_i { dxdt = 0 }\n"
            "M_i { c * dxdt }\nF_i { -k * x }\n")
    m = dsp.DiffsolModule(code, method="esdirk34", rtol=1e-8, atol=1e-10)
    P = torch.tensor([[0.7, 2.0], [0.5, 1.0], [0.9, 3.0]], dtype=torch.float64,
                     requires_grad=True)
    times = torch.linspace(0, 2, 5, dtype=torch.float64)
    m.solve_dense(P, times).sum().backward()
    rows = []
    for p in P.detach():
        q = p.clone().requires_grad_()
        m.solve_dense(q, times).sum().backward()
        rows.append(q.grad)
    torch.testing.assert_close(P.grad, torch.stack(rows), rtol=1e-12, atol=0)
