"""torch.autograd through DiffsolModule.solve_dense (adjoint backward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = pytest.mark.gradient


def test_backward_matches_closed_form():
    m = dsp.DiffsolModule(model_source("decay"), rtol=1e-10, atol=1e-12)
    params = torch.tensor([0.7, 2.0], dtype=torch.float64, requires_grad=True)
    times = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    y = m.solve_dense(params, times)
    assert y.requires_grad and y.shape == (1, 4)
    loss = (y**2).sum()
    loss.backward()
    t = times.numpy()
    u = 2.0 * np.exp(-0.7 * t)
    want = [float((2 * u * -t * u).sum()), float((2 * u * u / 2.0).sum())]
    np.testing.assert_allclose(params.grad.numpy(), want, rtol=1e-7)


def test_gradcheck_lotka_volterra():
    m = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-11, atol=1e-13)
    times = torch.linspace(0, 3, 4, dtype=torch.float64)
    params = torch.tensor([1.1, 0.4, 0.1, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: m.solve_dense(p, times), (params,), eps=1e-6,
                                    atol=1e-5, rtol=1e-4)


def test_two_forwards_then_backwards_use_their_own_passes():
    """The second forward overwrites the module's checkpoints: the first backward
    must still give the gradient of the first forward (recomputed)."""
    m = dsp.DiffsolModule(model_source("decay"), rtol=1e-10, atol=1e-12)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    p1 = torch.tensor([0.7, 2.0], dtype=torch.float64, requires_grad=True)
    p2 = torch.tensor([0.3, 1.0], dtype=torch.float64, requires_grad=True)
    y1 = m.solve_dense(p1, times)
    y2 = m.solve_dense(p2, times)
    y1[0, 1].backward()
    y2[0, 1].backward()
    np.testing.assert_allclose(p1.grad.numpy(), [-2.0 * np.exp(-0.7), np.exp(-0.7)], rtol=1e-7)
    np.testing.assert_allclose(p2.grad.numpy(), [-1.0 * np.exp(-0.3), np.exp(-0.3)], rtol=1e-7)


def test_batch_and_float32():
    m = dsp.DiffsolModule(model_source("decay"), rtol=1e-10, atol=1e-12)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    params = torch.tensor([[0.7, 2.0], [0.3, 1.0]], dtype=torch.float32, requires_grad=True)
    y = m.solve_dense(params, times)
    assert y.dtype == torch.float32 and y.shape == (2, 1, 2)
    y[:, 0, 1].sum().backward()
    assert params.grad.dtype == torch.float32
    want = [[-2.0 * np.exp(-0.7), np.exp(-0.7)], [-1.0 * np.exp(-0.3), np.exp(-0.3)]]
    np.testing.assert_allclose(params.grad.numpy(), want, rtol=1e-5)


def test_second_derivative_and_time_gradients_are_refused():
    m = dsp.DiffsolModule(model_source("decay"))
    params = torch.tensor([0.7, 2.0], dtype=torch.float64, requires_grad=True)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="second derivatives of solve_dense are not supported"):
        torch.autograd.grad(m.solve_dense(params, times).sum(), params, create_graph=True)
    with pytest.raises(ValueError, match="times"):
        m.solve_dense(params, times.clone().requires_grad_())


def test_no_grad_path_is_plain():
    m = dsp.DiffsolModule(model_source("decay"))
    params = torch.tensor([0.7, 2.0], dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        y = m.solve_dense(params, [0.0, 1.0])
    assert not y.requires_grad
