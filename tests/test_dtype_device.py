"""dtype and device of results follow the params; the solve is float64 on the CPU."""

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def decay():
    return dsp.DiffsolModule(model_source("decay"), rtol=1e-10, atol=1e-12)


def test_float32_in_float32_out(decay):
    y = decay.solve_dense(torch.tensor([0.7, 2.0], dtype=torch.float32), torch.tensor([0.0, 1.0]))
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y[0].numpy(), 2.0 * np.exp(-np.float32(0.7) * np.array([0.0, 1.0])),
                               rtol=1e-6)


def test_float64_in_float64_out(decay):
    y = decay.solve_dense(torch.tensor([0.7, 2.0], dtype=torch.float64), torch.tensor([0.0, 1.0]))
    assert y.dtype == torch.float64


def test_numpy_float32_in_float32_out(decay):
    y = decay.solve_dense(np.array([0.7, 2.0], dtype=np.float32), np.array([0.0, 1.0]))
    assert y.dtype == torch.float32


def test_list_in_float64_out(decay):
    y = decay.solve_dense([0.7, 2.0], [0.0, 1.0])
    assert isinstance(y, torch.Tensor)
    assert y.dtype == torch.float64
    assert y.device.type == "cpu"


def test_float32_times_do_not_change_dtype(decay):
    y = decay.solve_dense([0.7, 2.0], torch.tensor([0.0, 1.0], dtype=torch.float32))
    assert y.dtype == torch.float64


def test_non_contiguous_inputs(decay):
    params = torch.tensor([[0.7, 0.0], [2.0, 0.0]], dtype=torch.float64)[:, 0]
    times = torch.linspace(0, 2, 6, dtype=torch.float64)[::2]
    assert not params.is_contiguous()
    y = decay.solve_dense(params, times)
    np.testing.assert_allclose(y[0].numpy(), 2.0 * np.exp(-0.7 * times.numpy()), rtol=1e-8)


def test_params_requiring_grad_are_accepted(decay):
    params = torch.tensor([0.7, 2.0], dtype=torch.float64, requires_grad=True)
    y = decay.solve_dense(params, [0.0, 1.0])
    assert y.shape == (1, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_result_on_params_device(decay):
    params = torch.tensor([0.7, 2.0], dtype=torch.float32, device="cuda")
    y = decay.solve_dense(params, torch.tensor([0.0, 1.0], device="cuda"))
    assert y.device == params.device
    assert y.dtype == torch.float32


@pytest.mark.unit
@pytest.mark.parametrize("make_time", [
    lambda: np.array(1.0), lambda: torch.tensor(1.0, dtype=torch.float64), lambda: [1.0],
    lambda: np.array([1.0]), lambda: torch.tensor([1.0], dtype=torch.float64)],
    ids=["numpy-0d", "tensor-0d", "list", "numpy-1d", "tensor-1d"])
def test_a_single_time_in_any_container(make_time):
    """Every container of one output time gives one column, exp(-k t) u0 (the float64
    fast paths of the argument checks treat a 0-d array like the others: as one time)."""
    m = dsp.DiffsolModule("in_i { k = 1 }\nu { 1 }\nF { -k * u }\n", rtol=1e-10, atol=1e-12)
    y = m.solve_dense(np.array([0.5]), make_time())
    assert y.shape == (1, 1)
    assert float(y[0, 0]) == pytest.approx(np.exp(-0.5), rel=1e-8)
