"""Forward sensitivities (DiffsolModule.forward_mode) for every method.

References are closed forms, SciPy integrations of the sensitivity equations
written out by hand here, and central finite differences of solve_dense at a
tight tolerance; never forward_mode itself. Accuracy: relative to each
sensitivity row's scale (output i, parameter k: max over the times), at
rtol 1e-8.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import diffsol_pytorch as dsp
from conftest import THRESHOLD_MODEL, threshold_sensitivities, model_source

pytestmark = [pytest.mark.integration, pytest.mark.gradient]

ALL = ["bdf", "adams", "tsit45", "dopri5", "tr_bdf2", "esdirk34"]
EVENTS = [m for m in ALL if m != "tr_bdf2"]
IMPLICIT = ["bdf", "tr_bdf2", "esdirk34"]


def row_err(sens, ref, floor=1e-300):
    """max |sens - ref| relative to the scale of each (parameter, output) row."""
    sens, ref = np.asarray(sens, dtype=float), np.asarray(ref, dtype=float)
    scale = np.max(np.abs(ref), axis=-1, keepdims=True) + floor
    return float(np.max(np.abs(sens - ref) / scale))


def fwd(code, method, params, times, **kw):
    kw.setdefault("rtol", 1e-8)
    kw.setdefault("atol", 1e-10)
    m = dsp.DiffsolModule(code, method=method, **kw)
    p = m.default_params if params is None else torch.tensor(params, dtype=torch.float64)
    y, s = m.forward_mode(p, torch.tensor(times, dtype=torch.float64))
    assert y.shape == (m.nout, len(times)) and s.shape == (m.nparams, m.nout, len(times))
    return m, p.numpy(), y.numpy(), s.numpy()


def fd(code, method, params, times, rel_h=1e-6, **kw):
    """Central finite differences of solve_dense: (nparams, nout, nt)."""
    kw.setdefault("rtol", 1e-11)
    kw.setdefault("atol", 1e-13)
    m = dsp.DiffsolModule(code, method=method, **kw)
    t = torch.tensor(times, dtype=torch.float64)
    out = []
    for k in range(len(params)):
        h = rel_h * max(abs(params[k]), 1e-3)
        pp, pm = np.array(params, dtype=float), np.array(params, dtype=float)
        pp[k] += h
        pm[k] -= h
        out.append((m.solve_dense(torch.tensor(pp), t) - m.solve_dense(torch.tensor(pm), t)).numpy()
                   / (2 * h))
    return np.stack(out)


# ---- closed forms ------------------------------------------------------------------------


DECAY3 = """
in_i { k = 0.7, a0 = 2.0 }
u { a0 }
F { -k * u }
out_i { u, k * u, u * u }
"""


@pytest.mark.parametrize("method", ALL)
def test_decay_closed_form(method):
    """u = a0 exp(-k t): a0 enters u0, k enters F and out; three distinct outputs."""
    k, a0 = 0.7, 2.0
    ts = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
    m, p, y, s = fwd(DECAY3, method, [k, a0], ts)
    u = a0 * np.exp(-k * ts)
    du = np.array([-ts * u, np.exp(-k * ts)])  # d/dk, d/da0
    ref = np.stack([np.stack([du[q], (u if q == 0 else 0) + k * du[q], 2 * u * du[q]])
                    for q in range(2)])
    assert np.max(np.abs(y - np.array([u, k * u, u * u])) / np.abs(y)) <= 1e-5
    assert row_err(s, ref) <= 1e-5
    # the example model too (outputs = states)
    m, p, y, s = fwd(model_source("decay"), method, [k, a0], ts)
    assert row_err(s[:, 0], du) <= 1e-5


@pytest.mark.parametrize("method", ALL)
def test_logistic_closed_form(method):
    r, cap, p0 = 1.5, 20.0, 0.5
    ts = np.linspace(0.0, 10.0, 11)
    m, p, y, s = fwd(model_source("logistic"), method, [r, cap], ts)
    A, E = cap / p0 - 1, np.exp(-r * ts)
    ref = np.array([[A * E * ts / (1 + A * E) ** 2], [-(E / p0) / (1 + A * E) ** 2]])
    assert row_err(s, ref) <= 1e-5


@pytest.mark.parametrize("method", ["bdf", "tsit45", "dopri5", "tr_bdf2", "esdirk34"])
def test_mass_matrix_with_a_parameter(method):
    """M = diag(m, 4): x = exp(-k t / m), y = 2 exp(-k t / 4); m enters M only."""
    code = """
in_i { k = 1.0, m = 2.0 }
u_i { x = 1.0, y = 2.0 }
dudt_i { dx = 0, dy = 0 }
M_i { m * dx, 4 * dy }
F_i { -k * x, -k * y }
"""
    k, mm = 1.5, 2.5
    ts = np.linspace(0.0, 3.0, 7)
    m, p, y, s = fwd(code, method, [k, mm], ts)
    x, yy = np.exp(-k * ts / mm), 2 * np.exp(-k * ts / 4)
    ref = np.array([[-ts / mm * x, -ts / 4 * yy], [k * ts / mm**2 * x, 0 * ts]])
    assert row_err(s, ref, floor=1e-12) <= 1e-5


# ---- Lotka-Volterra: SciPy sensitivities and finite differences ----------------------------


@pytest.fixture(scope="module")
def lv_sens_ref():
    a, b, d, g = 1.1, 0.4, 0.1, 0.4
    ts = np.linspace(0.0, 10.0, 11)

    def f(t, z):
        x, y = z[:2]
        S = z[2:].reshape(4, 2)
        J = np.array([[a - b * y, -b * x], [d * y, d * x - g]])
        Fp = np.array([[x, 0], [-x * y, 0], [0, x * y], [0, -y]])
        dS = S @ J.T + Fp
        return np.concatenate([[a * x - b * x * y, d * x * y - g * y], dS.ravel()])

    r = solve_ivp(f, (0, 10), np.concatenate([[10.0, 10.0], np.zeros(8)]), method="DOP853",
                  rtol=1e-12, atol=1e-12, t_eval=ts)
    assert r.success
    return ts, r.y[2:].reshape(4, 2, -1)


@pytest.mark.parametrize("method", ALL)
def test_lotka_volterra_against_scipy(method, lv_sens_ref):
    ts, ref = lv_sens_ref
    m, p, y, s = fwd(model_source("lotka_volterra"), method, None, ts)
    # TR-BDF2 is second order: its global error at rtol 1e-8 is ~1e-5 (test_solvers.py)
    assert row_err(s, ref) <= (1e-4 if method == "tr_bdf2" else 1e-5)


@pytest.mark.parametrize("method", ["bdf", "dopri5", "esdirk34"])
def test_lotka_volterra_against_finite_differences(method, lv_sens_ref):
    ts, _ = lv_sens_ref
    code = model_source("lotka_volterra")
    m, p, y, s = fwd(code, method, None, ts)
    assert row_err(s, fd(code, method, list(p), ts)) <= 1e-4


# ---- Robertson, ODE and DAE ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rob_sens_ref():
    k1, k2, k3 = 0.04, 1e4, 3e7
    ts = np.array([0.0, 0.04, 0.4, 4.0, 40.0, 400.0])

    def f(t, z):
        a, b, c = z[:3]
        S = z[3:].reshape(3, 3)
        J = np.array([[-k1, k2 * c, k2 * b], [k1, -k2 * c - 2 * k3 * b, -k2 * b],
                      [0, 2 * k3 * b, 0]])
        Fp = np.array([[-a, a, 0], [b * c, -b * c, 0], [0, -b * b, b * b]])
        return np.concatenate([[-k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b,
                                k3 * b * b], (S @ J.T + Fp).ravel()])

    def jac(t, z):
        # block lower triangular; the sensitivity blocks' dependence on the
        # state is left to Radau's own differences (J blocks exact)
        a, b, c = z[:3]
        J = np.array([[-k1, k2 * c, k2 * b], [k1, -k2 * c - 2 * k3 * b, -k2 * b],
                      [0, 2 * k3 * b, 0]])
        out = np.zeros((12, 12))
        for q in range(4):
            out[3 * q:3 * q + 3, 3 * q:3 * q + 3] = J
        return out

    scale = np.array([1, 1, 1, 1 / k1, 1 / k1, 1 / k1, 1 / k2, 1 / k2, 1 / k2, 1 / k3, 1 / k3,
                      1 / k3])
    r = solve_ivp(f, (0, ts[-1]), np.concatenate([[1.0, 0.0, 0.0], np.zeros(9)]), method="Radau",
                  rtol=1e-11, atol=1e-16 * scale, t_eval=ts, jac=jac)
    assert r.success
    return ts, r.y[3:].reshape(3, 3, -1)


@pytest.mark.parametrize("method", IMPLICIT)
def test_robertson_ode_against_scipy(method, rob_sens_ref):
    ts, ref = rob_sens_ref
    m, p, y, s = fwd(model_source("robertson_ode"), method, None, ts,
                     atol=[1e-12, 1e-16, 1e-12])
    assert row_err(s, ref) <= 1e-4


def test_robertson_dae_against_scipy_and_fd(rob_sens_ref):
    """IDAS forward sensitivities of the DAE: the same sensitivities as the ODE's."""
    ts, ref = rob_sens_ref
    code = model_source("robertson_dae")
    m, p, y, s = fwd(code, "bdf", None, ts, atol=[1e-12, 1e-16, 1e-12])
    assert m.integrator == "IDAS BDF"
    assert row_err(s, ref) <= 1e-4
    # the algebraic constraint's sensitivity: d(a + b + c)/dp = 0
    assert np.max(np.abs(s.sum(axis=1))) <= 1e-8 * np.max(np.abs(s))
    assert row_err(s, fd(code, "bdf", list(p), ts, atol=[1e-14, 1e-18, 1e-14])) <= 1e-4


# ---- events ---------------------------------------------------------------------------------


def dosing_and_sens(ts, cl=2.0, vol=10.0):
    k = cl / vol
    q = np.zeros_like(ts)
    dq = np.zeros_like(ts)
    for d in (0.0, 4.0, 8.0, 12.0):
        on = ts >= d
        q += on * 50 * np.exp(-k * (ts - d))
        dq += on * -50 * (ts - d) * np.exp(-k * (ts - d))  # dq/dk
    y = q / vol
    return y, np.array([[dq / vol / vol], [dq * (-cl / vol**2) / vol - q / vol**2]])


@pytest.mark.parametrize("method", EVENTS)
def test_dosing_closed_form(method):
    """Fixed event times; vol enters F and out: d/dcl and d/dvol of the closed form."""
    ts = np.array([0.0, 1.0, 3.999, 4.0, 4.0, 4.001, 6.0, 8.0, 9.5, 12.0, 12.5, 16.0])
    m, p, y, s = fwd(model_source("dosing"), method, None, ts)
    yref, sref = dosing_and_sens(ts)
    assert np.max(np.abs(y[0] - yref) / yref) <= 1e-5
    assert row_err(s, sref) <= 1e-5
    assert m.stats["events"] == 3


BALL = """
in_i { g = 9.81, e = 0.8, h0 = 10.0 }
u_i { h = h0, v = 0.0 }
F_i { v, -g }
stop_i { h }
reset_i { 0, -e * v }
out_i { h, v, h + v * v / (2 * g) }
"""


@pytest.mark.parametrize("method", EVENTS)
def test_bouncing_ball_against_finite_differences(method):
    """Bounce times depend on h0, g and (after the first) e."""
    ts = np.array([0.0, 1.0, 1.5, 2.5, 3.5, 4.0, 5.0])
    m, p, y, s = fwd(BALL, method, None, ts)
    assert m.stats["events"] == 2
    ref = fd(BALL, method, list(p), ts, rtol=1e-12, atol=1e-12)
    # the energy h + v^2/2g does not depend on g: exactly 0 here, FD noise 4e-8 there
    assert np.max(np.abs(s[0, 2])) <= 1e-8
    assert row_err(s, ref, floor=1e-3) <= 1e-4
    # energy h + v^2/2g after the bounces: (e^2)^n h0, exactly
    assert s[2, 2, -1] == pytest.approx(0.8**4, rel=1e-6)  # d/dh0 after two bounces


def test_threshold_model_closed_form():
    """Integrate-and-fire: the firing times T(I, tau, vth) = tau ln(I / (I - vth))."""
    code = THRESHOLD_MODEL
    ts = np.array([0.0, 0.5, 1.2, 2.5, 3.3, 5.0])
    ref = threshold_sensitivities(ts)[:, None, :]
    for method in EVENTS:
        m, p, y, s = fwd(code, method, None, ts, rtol=1e-9)
        assert row_err(s, ref) <= 1e-5, method


def test_stop_without_reset_gives_nan_after_the_root():
    code = """
in_i { g = 9.81, h0 = 10.0 }
u_i { h = h0, v = 0.0 }
F_i { v, -g }
stop_i { h - 5 }
"""
    tstop = math.sqrt(2 * 5.0 / 9.81)
    m, p, y, s = fwd(code, "bdf", None, [0.0, 0.5, 2.0])
    assert m.last_stop[1] == 0 and m.last_stop[0] == pytest.approx(tstop, rel=1e-7)
    assert np.isnan(y[:, 2]).all() and np.isnan(s[:, :, 2]).all()
    assert not np.isnan(s[:, :, :2]).any()
    assert s[1, 0, 1] == pytest.approx(1.0) and s[0, 0, 1] == pytest.approx(-0.125)


# ---- the KLU path of the augmented ARKODE system -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["esdirk34", "bdf"])
def test_heat1d_klu_against_finite_differences(method):
    code = model_source("heat1d")
    ts = np.array([0.0, 0.01, 0.05, 0.1])
    m, p, y, s = fwd(code, method, None, ts, linear_solver="klu")
    assert m.linear_solver_used == "klu"
    ref = fd(code, method, list(p), ts, linear_solver="klu")
    assert row_err(s, ref, floor=1e-6) <= 1e-4


# ---- the Python API -------------------------------------------------------------------------


def test_shapes_batch_dtype_and_validation():
    m = dsp.DiffsolModule(DECAY3, rtol=1e-8, atol=1e-10)
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)
    y, s = m.forward_mode(torch.tensor([0.7, 2.0], dtype=torch.float64), ts)
    assert y.dtype == s.dtype == torch.float64 and y.shape == (3, 4) and s.shape == (2, 3, 4)
    assert torch.allclose(y, m.solve_dense(torch.tensor([0.7, 2.0], dtype=torch.float64), ts),
                          rtol=1e-6)
    pb = torch.tensor([[0.7, 2.0], [0.3, 1.0], [1.1, 0.5]], dtype=torch.float32)
    yb, sb = m.forward_mode(pb, ts)
    assert yb.dtype == sb.dtype == torch.float32
    assert yb.shape == (3, 3, 4) and sb.shape == (3, 2, 3, 4)
    for b in range(3):
        y1, s1 = m.forward_mode(pb[b].double(), ts)
        assert torch.allclose(sb[b].double(), s1, rtol=1e-5, atol=1e-6)
    # lists and arrays are accepted
    y2, s2 = m.forward_mode([0.7, 2.0], ts.numpy())
    assert torch.equal(s2, s)
    with pytest.raises(ValueError, match="shape"):
        m.forward_mode(torch.zeros(3), ts)
    with pytest.raises(ValueError, match="non-decreasing"):
        m.forward_mode(torch.tensor([0.7, 2.0]), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        m.forward_mode(torch.tensor([float("nan"), 2.0]), ts)
    with pytest.raises(ValueError):
        m.forward_mode(torch.tensor([0.7, 2.0], dtype=torch.float16), ts)


def test_forward_then_plain_solves_are_unchanged():
    """Sensitivities are switched off again after forward_mode."""
    m = dsp.DiffsolModule(model_source("robertson_dae"), rtol=1e-8, atol=1e-10)
    ts = torch.tensor([0.0, 1.0, 10.0], dtype=torch.float64)
    y0 = m.solve_dense(m.default_params, ts)
    steps0 = m.stats["steps"]
    m.forward_mode(m.default_params, ts)
    y1 = m.solve_dense(m.default_params, ts)
    assert torch.equal(y0, y1) and m.stats["steps"] == steps0


@pytest.mark.parametrize("name,method", [("robertson_ode", "bdf"), ("robertson_dae", "bdf"),
                                         ("lotka_volterra", "tsit45")])
def test_sensitivity_tolerances_option(name, method, rob_sens_ref, lv_sens_ref):
    """DiffsolModule(sens_rtol=..., sens_atol=...) on CVODES, IDAS and ARKODE: a looser
    error control on the sensitivities takes fewer steps and stays within its tolerance of
    the SciPy reference; sens_atol reaches the integrator; plain solves are unchanged;
    batches use the options row by row; they are checked and survive pickling."""
    import pickle

    ts, ref = lv_sens_ref if name == "lotka_volterra" else rob_sens_ref
    kw = {} if name == "lotka_volterra" else {"atol": [1e-12, 1e-16, 1e-12]}
    code = model_source(name)
    m0, p, y0, s0 = fwd(code, method, None, ts, **kw)
    steps0 = m0.stats["steps"]
    m1, _, y1, s1 = fwd(code, method, None, ts, sens_rtol=1e-6, **kw)
    steps1 = m1.stats["steps"]
    assert row_err(s0, ref) <= 1e-5 and row_err(s1, ref) <= 1e-3
    assert steps1 < 0.9 * steps0
    m2, _, _, s2 = fwd(code, method, None, ts, sens_rtol=1e-6, sens_atol=1e-4, **kw)
    assert m2.stats["steps"] != steps1 and row_err(s2, ref) <= 1e-2
    # solve_dense does not see the option
    t = torch.tensor(ts)
    assert torch.equal(m0.solve_dense(p, t), m1.solve_dense(p, t))
    # a batch: each row as alone
    pb = np.stack([p, p * 1.05])
    yb, sb = m1.forward_mode(pb, ts, threads=2)
    for r in range(2):
        yr, sr = m1.forward_mode(pb[r], ts)
        np.testing.assert_array_equal(sb[r].numpy(), sr.numpy())
    m3 = pickle.loads(pickle.dumps(m2))
    assert (m3.sens_rtol, m3.sens_atol) == (1e-6, 1e-4)
    np.testing.assert_array_equal(m3.forward_mode(p, ts)[1].numpy(), s2)
    for bad in (0.0, -1e-6, float("nan"), "1e-6", True):
        with pytest.raises(ValueError, match="sens_rtol"):
            dsp.DiffsolModule(code, sens_rtol=bad)
    with pytest.raises(ValueError, match="sens_atol"):
        dsp.DiffsolModule(code, sens_atol=float("inf"))


def test_solver_failure_is_a_solver_error():
    m = dsp.DiffsolModule(model_source("vanderpol"), max_steps=50)
    with pytest.raises(dsp.SolverError) as info:
        m.forward_mode(m.default_params, torch.tensor([0.0, 3000.0]))
    assert "TOO_MUCH_WORK" in info.value.flag
    y, s = m.forward_mode(m.default_params, torch.tensor([0.0, 1e-3]))
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("name", ["lotka_volterra", "robertson_ode", "robertson_dae"])
def test_forward_agrees_with_reverse_mode(name):
    """sum_ij g_ij sens[k, i, j] is the reverse-mode gradient of sum(g * y)."""
    m = dsp.DiffsolModule(model_source(name), rtol=1e-8, atol=1e-10)
    ts = torch.linspace(0.0, 10.0, 6, dtype=torch.float64)
    _, s = m.forward_mode(m.default_params, ts)
    g = torch.from_numpy(np.random.default_rng(3).standard_normal((m.nout, 6)))
    rev = m.reverse_mode(m.default_params, ts, g)
    fwd_g = (s * g).sum(dim=(1, 2))
    assert torch.allclose(fwd_g, rev.to(fwd_g.dtype), rtol=1e-5, atol=1e-8 * fwd_g.abs().max())
