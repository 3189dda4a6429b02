"""torch.func transforms through DiffsolModule.solve_dense (grad, jvp, jacrev, jacfwd,
vmap), against central finite differences, forward sensitivities and the native batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import func

import diffsol_pytorch as dsp
from conftest import central_fd, model_source

pytestmark = pytest.mark.gradient


@pytest.fixture(scope="module")
def lv():
    m = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-11, atol=1e-13)
    times = torch.linspace(0, 3, 4, dtype=torch.float64)
    p = torch.tensor([1.1, 0.4, 0.1, 0.4], dtype=torch.float64)
    w = torch.linspace(0.5, 1.5, 2 * 4, dtype=torch.float64).reshape(2, 4)
    return m, times, p, w


def test_grad_matches_finite_differences(lv):
    m, times, p, w = lv
    g = func.grad(lambda q: (m.solve_dense(q, times) * w).sum())(p)
    np.testing.assert_allclose(g.numpy(), central_fd(m, p.numpy(), times, w.numpy()), rtol=1e-6)
    # the same as the adjoint of reverse_mode
    torch.testing.assert_close(g, m.reverse_mode(p, times, w), rtol=1e-12, atol=0)


def test_jvp_and_jacfwd_match_sensitivities(lv):
    m, times, p, _ = lv
    v = torch.tensor([1.0, -0.5, 2.0, 0.25], dtype=torch.float64)
    y, dy = func.jvp(lambda q: m.solve_dense(q, times), (p,), (v,))
    _, sens = m.forward_mode(p, times)
    # (the differentiable forward pass keeps checkpoints: not bitwise the plain solve)
    torch.testing.assert_close(y, m.solve_dense(p, times), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(dy, torch.einsum("k,kij->ij", v, sens), rtol=1e-12, atol=1e-14)
    # and a directional finite difference
    h = 1e-5
    fd = (m.solve_dense(p + h * v, times) - m.solve_dense(p - h * v, times)) / (2 * h)
    torch.testing.assert_close(dy, fd, rtol=1e-5, atol=1e-7)
    jac = func.jacfwd(lambda q: m.solve_dense(q, times))(p)  # (nout, nt, nparams)
    assert jac.shape == (2, 4, 4)
    torch.testing.assert_close(jac, sens.permute(1, 2, 0), rtol=1e-12, atol=1e-14)


def test_jacrev_matches_jacfwd_and_finite_differences(lv):
    m, times, p, _ = lv
    jr = func.jacrev(lambda q: m.solve_dense(q, times))(p)
    jf = func.jacfwd(lambda q: m.solve_dense(q, times))(p)
    assert jr.shape == jf.shape == (2, 4, 4)
    torch.testing.assert_close(jr, jf, rtol=1e-6, atol=1e-8)
    k = 1
    h = 1e-4 * p[k].item()
    e = torch.zeros(4, dtype=torch.float64)
    e[k] = h
    fd = (m.solve_dense(p + e, times) - m.solve_dense(p - e, times)) / (2 * h)
    torch.testing.assert_close(jr[..., k], fd, rtol=1e-5, atol=1e-7)


def test_vmap_is_the_native_batch(lv):
    m, times, p, w = lv
    P = p[None, :] * torch.tensor([[1.0], [1.05], [0.95]], dtype=torch.float64)
    y = func.vmap(lambda q: m.solve_dense(q, times))(P)
    assert torch.equal(y, m.solve_dense(P, times))
    # in_dims other than 0, and nested batches
    y1 = func.vmap(lambda q: m.solve_dense(q, times), in_dims=1)(P.T.contiguous())
    assert torch.equal(y1, y)
    PP = torch.stack([P, P * 1.01])
    y2 = func.vmap(lambda q: m.solve_dense(q, times))(PP)
    assert y2.shape == (2, 3, 2, 4) and torch.equal(y2[0], y)
    # per-sample gradients: vmap(grad) is one batched reverse pass
    gs = func.vmap(func.grad(lambda q: (m.solve_dense(q, times) * w).sum()))(P)
    assert torch.equal(gs, m.reverse_mode(P, times, w.expand(3, 2, 4).contiguous()))


def test_second_derivatives_are_refused(lv):
    m, times, p, _ = lv
    f = lambda q: m.solve_dense(q, times).sum()  # noqa: E731
    with pytest.raises(RuntimeError, match="second derivatives of solve_dense are not supported"):
        func.grad(lambda q: func.grad(f)(q).sum())(p)
    with pytest.raises(RuntimeError, match="second derivatives"):
        func.hessian(f)(p)
    with pytest.raises(RuntimeError, match="second derivatives"):
        q = p.clone().requires_grad_()
        torch.autograd.grad(f(q), q, create_graph=True)


def test_checkpoints_are_not_reused_for_other_parameters(lv):
    """torch.func.grad runs forward then backward: an unrelated solve in between
    (another parameter set) must make the backward pass recompute."""
    m, times, p, w = lv

    def f(q):
        y = m.solve_dense(q, times)
        m.solve_dense(p * 1.3, times)  # overwrites the solver's checkpoints
        return (y * w).sum()

    torch.testing.assert_close(func.grad(f)(p), m.reverse_mode(p, times, w), rtol=1e-12,
                               atol=0)
