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


def test_forward_mode_ad_matches_forward_sensitivities():
    m = dsp.DiffsolModule(model_source("logistic"), rtol=1e-10, atol=1e-12)
    times = torch.linspace(0, 4, 5, dtype=torch.float64)
    p = torch.tensor([1.5, 20.0], dtype=torch.float64)
    v = torch.tensor([1.0, -0.5], dtype=torch.float64)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        out_dual = m.solve_dense(fwAD.make_dual(p, v), times)
        y, dy = fwAD.unpack_dual(out_dual)
    _, sens = m.forward_mode(p, times)
    torch.testing.assert_close(dy, torch.einsum("k,kij->ij", v, sens))
    torch.testing.assert_close(y, m.solve_dense(p, times))
    # against the closed form 1 / (1 + (cap / p0 - 1) exp(-r t)) by complex steps
    t = times.numpy()
    h = 1e-30

    def out(r, cap):
        return 1.0 / (1.0 + (cap / 0.5 - 1.0) * np.exp(-r * t))

    want = out(1.5 + 1j * h, 20.0).imag / h - 0.5 * out(1.5, 20.0 + 1j * h).imag / h
    np.testing.assert_allclose(dy.numpy()[0], want, rtol=1e-6, atol=1e-12)


def test_layer_trains_and_pickles(tmp_path):
    import pickle

    layer = dsp.DiffsolLayer(model_source("decay"), rtol=1e-8, atol=1e-10)
    assert set(layer.state_dict()) == {"params"} and layer.param_names == ("k", "a0")
    times = torch.linspace(0, 2, 9, dtype=torch.float64)
    target = 3.0 * torch.exp(-1.2 * times)
    opt = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (layer(times)[0] - target).square().sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(layer.params.detach().numpy(), [1.2, 3.0], rtol=1e-4)
    m2 = pickle.loads(pickle.dumps(layer.module))
    assert m2.code == layer.module.code and m2.rtol == 1e-8
    torch.testing.assert_close(m2.solve_dense(layer.params.detach(), times),
                               layer.module.solve_dense(layer.params.detach(), times))


def test_module_cache_size_is_configurable():
    dsp.set_module_cache_size(1)
    try:
        a = dsp.solve_dense(model_source("decay"), [0.7, 2.0], [0.0, 1.0])
        b = dsp.solve_dense(model_source("logistic"), [1.5, 20.0], [0.0, 1.0])
        assert a.shape == (1, 2) and b.shape == (1, 2)
        with pytest.raises(ValueError):
            dsp.set_module_cache_size(0)
    finally:
        dsp.set_module_cache_size(32)


def test_reverse_mode_tensor_device_cpu():
    from diffsol_pytorch import device

    g = device.reverse_mode_tensor(model_source("decay"), torch.tensor([0.7, 2.0]),
                                   [0.0, 1.0], [[0.0, 1.0]], device="cpu")
    assert g.device.type == "cpu" and g.dtype == torch.float32
    np.testing.assert_allclose(g.numpy(), [-2.0 * np.exp(-0.7), np.exp(-0.7)], rtol=1e-4)
