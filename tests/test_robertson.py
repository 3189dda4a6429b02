"""Robertson's stiff kinetics against a SciPy Radau reference computed here."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K = (0.04, 1e4, 3e7)
TIMES = np.logspace(-5, 5, 11)


def rhs(t, y, k1, k2, k3):
    a, b, c = y
    return [-k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, k3 * b * b]


def jac(t, y, k1, k2, k3):
    a, b, c = y
    return [
        [-k1, k2 * c, k2 * b],
        [k1, -k2 * c - 2 * k3 * b, -k2 * b],
        [0.0, 2 * k3 * b, 0.0],
    ]


@pytest.fixture(scope="module")
def reference():
    sol = solve_ivp(rhs, (0.0, TIMES[-1]), [1.0, 0.0, 0.0], method="Radau", t_eval=TIMES,
                    args=K, jac=jac, rtol=1e-12, atol=1e-14)
    assert sol.success, sol.message
    return sol.y


def test_matches_radau_reference(reference):
    m = dsp.DiffsolModule(model_source("robertson_ode"), rtol=1e-8, atol=1e-10)
    assert (m.nstates, m.nparams, m.nout) == (3, 3, 3)
    y = m.solve_dense(list(K), TIMES).numpy()
    assert y.shape == (3, TIMES.size)
    # SUNDIALS-style check (cvsRoberts_dns check_ans): error within 1e-6 relative
    # plus the solver's atol loosened 10x, everywhere ...
    err = np.abs(y - reference)
    bound = 1e-6 * np.abs(reference) + 10 * 1e-10
    assert np.all(err <= bound), f"worst error/bound {np.max(err / bound):.3g}"
    # ... and within 1e-6 relative wherever the value is not tiny
    large = np.abs(reference) > 1e-3
    rel = err[large] / np.abs(reference[large])
    assert rel.max() < 1e-6, f"max relative error {rel.max():.3e}"
    # mass is conserved
    np.testing.assert_allclose(y.sum(axis=0), 1.0, rtol=0, atol=1e-7)
