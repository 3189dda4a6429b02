"""Logistic growth: the output pop/cap against the closed form."""

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = pytest.mark.integration


def exact_out(r, cap, t, pop0=0.5):
    t = np.asarray(t)
    pop = cap / (1.0 + (cap / pop0 - 1.0) * np.exp(-r * t))
    return pop / cap


@pytest.fixture(scope="module")
def logistic():
    return dsp.DiffsolModule(model_source("logistic"), rtol=1e-10, atol=1e-12)


def test_sizes(logistic):
    assert (logistic.nstates, logistic.nparams, logistic.nout) == (1, 2, 1)
    assert logistic.param_names == ("r", "cap")


@pytest.mark.parametrize("r, cap", [(1.5, 20.0), (0.5, 5.0), (3.0, 100.0)])
def test_output_matches_closed_form(logistic, r, cap):
    times = np.linspace(0.0, 10.0, 41)
    y = logistic.solve_dense(torch.tensor([r, cap], dtype=torch.float64), times)
    assert y.shape == (1, 41)
    np.testing.assert_allclose(y[0].numpy(), exact_out(r, cap, times), rtol=1e-7)
