"""The benchmark problems (benchmarks/problems.py) are one model in every formulation.

compare.py times the DiffSL model, the NumPy right-hand side (SciPy), the torch one
(torchdiffeq, torchode) and the C baselines as if they were the same problem; these tests
check that they are: same right-hand side, Jacobian = derivative of the right-hand side,
and the same final state from ours, SciPy Radau and each C program.
"""

from __future__ import annotations

import pathlib
import shutil
import sys

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import problems as P  # noqa: E402

import diffsol_pytorch as dsp  # noqa: E402

pytestmark = pytest.mark.integration

SMALL = [P.robertson_ode, P.robertson_dae, P.lotka_volterra, P.vanderpol,
         lambda: P.heat2d(4), lambda: P.robertson_grid(3), lambda: P.nn(5)]
IDS = ["robertson_ode", "robertson_dae", "lotka_volterra", "vanderpol", "heat2d4",
       "robertson_grid3", "nn_tanh5"]


def _dense(j):
    return j.toarray() if hasattr(j, "toarray") else np.asarray(j)


@pytest.mark.parametrize("make", SMALL, ids=IDS)
def test_numpy_torch_and_jacobian_agree(make):
    prob = make()
    rng = np.random.default_rng(1)
    y = np.abs(rng.normal(size=prob.nstates)) + 0.1
    f = prob.rhs(0.0, y)
    ft = prob.torch_rhs(torch.tensor(0.0), torch.tensor(y)).numpy()
    np.testing.assert_allclose(ft, f, rtol=1e-12, atol=1e-12 * np.abs(f).max())
    # the torch rhs also takes a batch (torchode)
    fb = prob.torch_rhs(torch.tensor(0.0), torch.tensor(np.stack([y, y]))).numpy()
    np.testing.assert_allclose(fb[1], f, rtol=1e-12, atol=1e-12 * np.abs(f).max())
    jac = _dense(prob.jac(0.0, y))
    h = 1e-7
    fd = np.stack([(prob.rhs(0.0, y + h * e) - prob.rhs(0.0, y - h * e)) / (2 * h)
                   for e in np.eye(prob.nstates)], axis=1)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())


@pytest.mark.parametrize("make", SMALL, ids=IDS)
def test_diffsl_model_matches_scipy(make):
    from scipy.integrate import solve_ivp

    prob = make()
    m = dsp.DiffsolModule(prob.code, rtol=1e-10, atol=1e-12)
    assert m.nstates == prob.nstates
    y = m.solve_dense(m.default_params, prob.times).numpy()[:, -1]
    if prob.dae:  # the DAE's differential part is the ODE's; a + b + c = 1 holds
        prob = P.robertson_ode()
    ref = solve_ivp(prob.rhs, (0.0, float(prob.times[-1])), prob.y0, method="Radau",
                    rtol=1e-11, atol=1e-13, jac=prob.jac).y[:, -1]
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="needs the system C compiler")
@pytest.mark.parametrize("make", SMALL, ids=IDS)
def test_c_baseline_matches_ours(make):
    import compare

    prob = make()
    out = compare.run_c(prob, 1e-10, 1e-12, 2)
    assert out["nstates"] == prob.nstates and out["steps"] > 0
    assert 0 < out["seconds_min"] <= out["seconds_median"]
    m = dsp.DiffsolModule(prob.code, rtol=1e-10, atol=1e-12)
    y = m.solve_dense(m.default_params, prob.times).numpy()[:, -1]
    np.testing.assert_allclose(out["y_final"], y, rtol=1e-6, atol=1e-9)
    if not prob.dae:  # the CVODES baselines reuse the Jacobian by stiffness as we do
        if m.linear_solver_used == "klu":  # our KLU orders with AMD, the C one with COLAMD:
            # the round-off differs, and at rtol 1e-10 so do a few steps (1,360 and 1,399)
            assert abs(out["steps"] - m.stats["steps"]) <= 0.05 * m.stats["steps"], m.stats
        else:
            assert out["steps"] == m.stats["steps"], (out["steps"], m.stats)


def test_sensitivity_error_is_relative_to_each_parameter():
    """compare.sens_error scales each parameter's errors by that parameter's largest
    reference entry: Robertson's sensitivities span many decades, and one scale for all
    would hide a wrong small one."""
    import compare

    ref = np.zeros((2, 1, 3))
    ref[0, 0] = [1.0, 2.0, 4.0]        # large sensitivities
    ref[1, 0] = [1e-6, 2e-6, 4e-6]     # small ones
    sens = ref.copy()
    sens[1, 0, 2] = 5e-6               # 25% off on the small parameter only
    assert compare.sens_error(sens, ref) == pytest.approx(0.25)
    assert compare.sens_error(ref, ref) == 0.0
    # the peer's layout may be flat: the error does not depend on it
    assert compare.sens_error(sens.ravel(), ref) == pytest.approx(0.25)


def test_pydiffsol_gradients_name_a_missing_peer(monkeypatch):
    """Without pydiffsol the gradient row records why and has no pydiffsol columns."""
    import compare

    monkeypatch.setattr(compare, "peer_module", lambda name: (None, f"{name} is not installed"))
    prob = P.lotka_volterra()
    skipped: dict = {}
    out = compare.pydiffsol_gradients(prob, np.array(P.LV), np.ones((2, len(prob.times))),
                                      np.ones(4), 1.0, 1.0, None, skipped, np.ones((4, 2, 3)))
    assert out == {}
    assert skipped == {"pydiffsol": "pydiffsol is not installed"}
