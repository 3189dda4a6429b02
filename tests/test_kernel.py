"""The Cython layer: translate, Model, Solver, GIL release with a per-solver lock."""

import os
import threading

import numpy as np
import pytest

import diffsol_pytorch as dsp
from diffsol_pytorch import _kernel
from conftest import model_source

pytestmark = pytest.mark.integration


def test_translate_returns_c_source():
    c = _kernel.translate(model_source("decay"))
    assert "dsk_model_table" in c
    assert c == _kernel.translate(model_source("decay"))  # deterministic


def test_translate_error():
    with pytest.raises(dsp.DiffSLError):
        _kernel.translate("u { 1 }\nF { -nope }\n")


def test_model_properties():
    m = _kernel.Model(model_source("robertson_ode"))
    assert (m.nstates, m.nparams, m.nout) == (3, 3, 3)
    assert m.param_names == ("k1", "k2", "k3")
    np.testing.assert_array_equal(m.default_params, [0.04, 1e4, 3e7])
    assert os.path.isfile(m.path)
    assert m.source == model_source("robertson_ode")


def test_solver_rejects_wrong_lengths():
    m = _kernel.Model(model_source("decay"))
    s = _kernel.Solver(m, 1e-8, 1e-10, 0.0, None, 1000)
    with pytest.raises(ValueError):
        s.solve_dense(np.array([1.0]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        _kernel.Solver(m, 1e-8, np.array([1e-8, 1e-8]), 0.0, None, 1000)


def test_solver_outlives_dropped_model_reference():
    s = _kernel.Solver(_kernel.Model(model_source("decay")), 1e-10, 1e-12, 0.0, None, 10000)
    y = s.solve_dense(np.array([0.7, 2.0]), np.array([0.0, 1.0]))
    np.testing.assert_allclose(y[0], 2.0 * np.exp(-0.7 * np.array([0.0, 1.0])), rtol=1e-8)


def test_per_state_atol():
    m = dsp.DiffsolModule(model_source("robertson_ode"), rtol=1e-8, atol=[1e-10, 1e-14, 1e-10])
    y = m.solve_dense([0.04, 1e4, 3e7], [0.0, 1.0])
    np.testing.assert_allclose(y.sum(0).numpy(), 1.0, atol=1e-7)


def test_threads_share_one_module():
    m = dsp.DiffsolModule(model_source("decay"), rtol=1e-10, atol=1e-12)
    times = np.linspace(0.0, 2.0, 9)
    errors, results = [], {}

    def work(i):
        try:
            for j in range(20):
                k = 0.1 + 0.05 * i + 0.001 * j
                y = m.solve_dense([k, 1.0], times)[0].numpy()
                results[(i, j)] = np.max(np.abs(y - np.exp(-k * times)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 80
    assert max(results.values()) < 1e-8


@pytest.mark.unit
def test_argument_check_helpers():
    from diffsol_pytorch import _kernel as k

    assert k.first_nonfinite(np.array([])) == -1
    assert k.first_nonfinite(np.array([1.0, 2.0])) == -1
    assert k.first_nonfinite(np.array([1.0, np.inf, np.nan])) == 1
    assert k.first_nonfinite(np.array([np.nan])) == 0
    assert k.first_decrease(np.array([0.0])) == -1
    assert k.first_decrease(np.array([0.0, 0.0, 1.0])) == -1  # equal times are allowed
    assert k.first_decrease(np.array([0.0, 2.0, 1.0, 0.5])) == 1
