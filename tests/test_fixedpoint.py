"""method="adams" with linear_solver="fixedpoint": CVODES' Adams corrector by
fixed-point iteration (no Jacobian, no linear solve), for non-stiff problems."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import diffsol_pytorch as dsp
from conftest import central_fd, dosing_closed_form_grad, model_source

LV = model_source("lotka_volterra")


def lv_reference(p, ts):
    alpha, beta, delta, gamma = p

    def f(t, y):
        prey, pred = y
        return [alpha * prey - beta * prey * pred, delta * prey * pred - gamma * pred]

    return solve_ivp(f, (ts[0], ts[-1]), [10.0, 10.0], t_eval=ts, method="DOP853", rtol=1e-12,
                     atol=1e-14).y


def test_solve_matches_scipy_without_jacobian():
    m = dsp.DiffsolModule(LV, method="adams", linear_solver="fixedpoint", rtol=1e-10, atol=1e-12)
    assert m.linear_solver_used == "fixedpoint"
    p = m.default_params.numpy()
    ts = np.linspace(0.0, 10.0, 21)
    y = m.solve_dense(p, ts).numpy()
    np.testing.assert_allclose(y, lv_reference(p, ts), rtol=1e-7, atol=1e-8)
    assert m.stats["jac_evals"] == 0 and m.stats["lin_setups"] == 0


def test_gradients_forward_reverse_fd():
    m = dsp.DiffsolModule(LV, method="adams", linear_solver="fixedpoint", rtol=1e-10, atol=1e-12)
    p = m.default_params.numpy()
    ts = np.linspace(0.0, 8.0, 9)
    g = np.random.default_rng(1).standard_normal((m.nout, ts.size))
    rev = m.reverse_mode(p, ts, g).numpy()
    _, sens = m.forward_mode(p, ts)
    fwd = np.einsum("pot,ot->p", sens.numpy(), g)
    np.testing.assert_allclose(rev, fwd, rtol=1e-6)
    np.testing.assert_allclose(rev, central_fd(m, p, ts, g), rtol=1e-5)


def test_events():
    m = dsp.DiffsolModule(model_source("dosing"), method="adams", linear_solver="fixedpoint",
                          rtol=1e-10, atol=1e-12)
    ts = np.array([0.0, 1.0, 4.0, 6.0, 9.5, 12.5, 16.0])
    g = np.random.default_rng(2).normal(size=(1, ts.size))
    grad = m.reverse_mode([2.0, 10.0], ts, g).numpy()
    np.testing.assert_allclose(grad, dosing_closed_form_grad(ts, g[0]), rtol=1e-6)


def test_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="fixedpoint.*method='adams'"):
        dsp.DiffsolModule(LV, method="bdf", linear_solver="fixedpoint")
    dae = "u_i { x = 1, y = 0 }\ndudt_i { dx = 0, dy = 0 }\nM_i { dx, 0 }\nF_i { -x, y - x }\n"
    with pytest.raises(ValueError, match="mass matrix"):  # adams takes no M at all
        dsp.DiffsolModule(dae, method="adams", linear_solver="fixedpoint")


def test_batch_rows_match_single_solves():
    m = dsp.DiffsolModule(LV, method="adams", linear_solver="fixedpoint", rtol=1e-8, atol=1e-10)
    p0 = m.default_params.numpy()
    P = np.stack([p0 * (1 + 0.05 * k) for k in range(4)])
    ts = np.linspace(0.0, 5.0, 6)
    yb = m.solve_dense(P, ts, threads=2).numpy()
    for k in range(4):
        np.testing.assert_array_equal(yb[k], m.solve_dense(P[k], ts).numpy())
