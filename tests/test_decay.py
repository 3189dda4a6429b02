"""Exponential decay against its closed form u(t) = a0 exp(-k t)."""

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def decay():
    return dsp.DiffsolModule(model_source("decay"), rtol=1e-10, atol=1e-12)


def exact(k, a0, t):
    return a0 * np.exp(-k * np.asarray(t))


def test_sizes_and_metadata(decay):
    assert decay.nstates == 1
    assert decay.nparams == 2
    assert decay.nout == 1
    assert decay.param_names == ("k", "a0")
    assert decay.default_params.dtype == torch.float64
    torch.testing.assert_close(decay.default_params, torch.tensor([0.7, 2.0], dtype=torch.float64))
    assert decay.code == model_source("decay")


def test_default_params_match_closed_form(decay):
    times = torch.linspace(0.0, 5.0, 11, dtype=torch.float64)
    y = decay.solve_dense(decay.default_params, times)
    assert y.shape == (1, 11)
    assert y.dtype == torch.float64
    np.testing.assert_allclose(y[0].numpy(), exact(0.7, 2.0, times.numpy()), rtol=1e-8)


# BDF global error grows with the number of decay lengths k*t: keep k*t modest
@pytest.mark.parametrize("k, a0", [(0.1, 1.0), (0.35, 5.0), (1.3, 0.25)])
def test_other_params_match_closed_form(decay, k, a0):
    times = np.linspace(0.0, 2.0, 21)
    y = decay.solve_dense(torch.tensor([k, a0], dtype=torch.float64), times)
    np.testing.assert_allclose(y[0].numpy(), exact(k, a0, times), rtol=1e-8, atol=1e-14)


def test_solver_is_reused_across_solves(decay):
    times = [0.0, 1.0]
    a = decay.solve_dense([0.7, 2.0], times)
    b = decay.solve_dense([0.3, 1.0], times)
    c = decay.solve_dense([0.7, 2.0], times)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    np.testing.assert_allclose(b[0].numpy(), exact(0.3, 1.0, times), rtol=1e-8)


def test_repeated_and_initial_times(decay):
    times = [0.0, 0.0, 1.0, 1.0, 3.0]
    y = decay.solve_dense([0.7, 2.0], times)
    np.testing.assert_allclose(y[0].numpy(), exact(0.7, 2.0, times), rtol=1e-8)


def test_batch_of_params(decay):
    params = torch.tensor([[0.7, 2.0], [0.2, 1.0], [1.5, 4.0]], dtype=torch.float64)
    times = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    y = decay.solve_dense(params, times)
    assert y.shape == (3, 1, 4)
    for b, (k, a0) in enumerate(params.tolist()):
        np.testing.assert_allclose(y[b, 0].numpy(), exact(k, a0, times.numpy()), rtol=1e-8)


def test_module_level_solve_dense_caches_the_module():
    code = model_source("decay")
    dsp.clear_module_cache()
    y1 = dsp.solve_dense(code, [0.7, 2.0], [0.0, 1.0], rtol=1e-10, atol=1e-12)
    count = dsp._kernel.jit_compile_count()
    y2 = dsp.solve_dense(code, [0.7, 2.0], [0.0, 1.0], rtol=1e-10, atol=1e-12)
    assert dsp._kernel.jit_compile_count() == count
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    np.testing.assert_allclose(y1[0].numpy(), exact(0.7, 2.0, [0.0, 1.0]), rtol=1e-8)


def test_stats_after_solve(decay):
    decay.solve_dense([0.7, 2.0], [0.0, 1.0])
    stats = decay.stats
    assert stats["steps"] > 0
    assert stats["rhs_evals"] >= stats["steps"]
