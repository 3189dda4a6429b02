"""Checkpoint placement of reverse mode: ``checkpoint_times`` and ``checkpoint_steps``.

Whatever the placement, the gradient is the same quantity: it is compared with central
finite differences of the solution and with the default placement; the outputs of the
checkpointed pass equal those of a plain solve.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = [pytest.mark.integration, pytest.mark.gradient]


def fd_grad(m, p, times, g, rel=1e-4):
    out = np.zeros(len(p))
    for k in range(len(p)):
        h = rel * max(abs(p[k]), 1e-3)
        pp, pm = p.copy(), p.copy()
        pp[k] += h
        pm[k] -= h
        yp = m.solve_dense(pp, times).numpy()
        ym = m.solve_dense(pm, times).numpy()
        out[k] = np.sum(g * (yp - ym)) / (2 * h)
    return out


CASES = [
    ("lotka_volterra", "bdf", np.linspace(0.0, 20.0, 21), [0.5, 3.0, 7.25, 12.0, 20.0]),
    ("lotka_volterra", "adams", np.linspace(0.0, 20.0, 21), [2.0, 11.0]),
    ("robertson_dae", "bdf", np.logspace(-3, 2, 8), [1e-2, 0.5, 10.0]),
    ("dosing", "bdf", np.linspace(0.0, 30.0, 16), [4.0, 13.0, 25.0]),
]


@pytest.mark.parametrize("name,method,times,ck", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_checkpoint_times_gradient(name, method, times, ck):
    m = dsp.DiffsolModule(model_source(name), method=method, rtol=1e-10, atol=1e-12)
    p = m.default_params.numpy()
    rng = np.random.default_rng(3)
    g = rng.standard_normal((m.nout, len(times)))
    plain = m.solve_dense(p, times).numpy()
    y, ckpt = m.solve_dense_with_checkpointing(p, times, checkpoint_times=ck)
    # the forward pass does not restart at the checkpoints: the same outputs
    np.testing.assert_allclose(y.numpy(), plain, rtol=1e-12, atol=0)
    grad = ckpt.backward(g).numpy()
    grad2 = ckpt.backward(2.0 * g).numpy()  # a second backward pass over the same forward one
    # (linear in g up to the backward pass's step control)
    np.testing.assert_allclose(grad2, 2.0 * grad, rtol=1e-7, atol=1e-10 * np.abs(grad).max())
    default = m.reverse_mode(p, times, g).numpy()
    fd = fd_grad(m, p, times, g)
    scale = np.abs(fd).max()
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(grad, default, rtol=1e-5, atol=1e-6 * scale)


def test_checkpoint_at_output_times_and_the_end():
    m = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-10, atol=1e-12)
    p = m.default_params.numpy()
    times = np.linspace(0.0, 10.0, 11)
    g = np.ones((m.nout, len(times)))
    ref = m.reverse_mode(p, times, g).numpy()
    # checkpoints exactly at output times, one at the last output time
    _, ckpt = m.solve_dense_with_checkpointing(p, times, checkpoint_times=[1.0, 5.0, 10.0])
    np.testing.assert_allclose(ckpt.backward(g).numpy(), ref, rtol=1e-5)
    # a gradient that is zero after t = 5: the stretches after it cost nothing
    g2 = g.copy()
    g2[:, 6:] = 0.0
    ref2 = m.reverse_mode(p, times, g2).numpy()
    _, ckpt = m.solve_dense_with_checkpointing(p, times, checkpoint_times=np.arange(1.0, 10.0))
    np.testing.assert_allclose(ckpt.backward(g2).numpy(), ref2, rtol=1e-5)


def test_checkpoint_steps_gradient_and_options():
    code = model_source("lotka_volterra")
    times = np.linspace(0.0, 20.0, 5)
    g = np.ones((2, len(times)))
    ref_m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    p = ref_m.default_params.numpy()
    ref = ref_m.reverse_mode(p, times, g).numpy()
    fd = fd_grad(ref_m, p, times, g)
    np.testing.assert_allclose(ref, fd, rtol=1e-4)
    for k in (3, 50):  # many checkpoints, every interval integrated again
        m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12, checkpoint_steps=k)
        np.testing.assert_allclose(m.reverse_mode(p, times, g).numpy(), ref, rtol=1e-6)
    m = dsp.DiffsolModule(code, checkpoint_steps=7)
    assert pickle.loads(pickle.dumps(m)).checkpoint_steps == 7
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="checkpoint_steps"):
            dsp.DiffsolModule(code, checkpoint_steps=bad)


@pytest.mark.parametrize(
    "ck,match",
    [
        ([2.0, 1.0], "strictly increasing"),
        ([1.0, 1.0], "strictly increasing"),
        ([0.0, 1.0], r"\(t0, times\[-1\]\]"),
        ([1.0, 11.0], r"\(t0, times\[-1\]\]"),
        ([1.0, float("nan")], "finite"),
        ([[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_checkpoint_times(ck, match):
    m = dsp.DiffsolModule(model_source("lotka_volterra"))
    p = m.default_params
    gen = m._solver_generation()
    with pytest.raises(ValueError, match=match):
        m.solve_dense_with_checkpointing(p, np.linspace(0.0, 10.0, 5), checkpoint_times=ck)
    assert m._solver_generation() == gen  # refused before any solve


def test_checkpoint_times_refused_for_arkode_methods():
    m = dsp.DiffsolModule(model_source("lotka_volterra"), method="tsit45")
    with pytest.raises(ValueError, match="'bdf' or 'adams'"):
        m.solve_dense_with_checkpointing(m.default_params, [0.0, 1.0, 2.0], checkpoint_times=[1.0])
