"""The solver suite: every method against independent references.

References are closed forms, matrix exponentials or SciPy's solve_ivp at
rtol 1e-12 computed here, never our own output. Tolerance: relative error
<= 1e-5 at rtol 1e-8 (1e-4 for the explicit methods).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = pytest.mark.integration

ALL = ["bdf", "adams", "tsit45", "dopri5", "tr_bdf2", "esdirk34"]
EXPLICIT = {"tsit45", "dopri5"}
IMPLICIT = ["bdf", "tr_bdf2", "esdirk34"]  # the stiff methods


def tol_for(method):
    return 1e-4 if method in EXPLICIT else 1e-5


def rel_err(y, ref, floor=0.0):
    y, ref = np.asarray(y, dtype=float), np.asarray(ref, dtype=float)
    return float(np.max(np.abs(y - ref) / (np.abs(ref) + floor)))


def solve(name_or_code, method, params=None, times=None, **kw):
    code = model_source(name_or_code) if "\n" not in name_or_code else name_or_code
    kw.setdefault("rtol", 1e-8)
    kw.setdefault("atol", 1e-10)
    m = dsp.DiffsolModule(code, method=method, **kw)
    p = m.default_params if params is None else torch.tensor(params, dtype=torch.float64)
    y = m.solve_dense(p, torch.tensor(times, dtype=torch.float64))
    return m, y.numpy()


# ---- references ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lv_ref():
    a, b, d, g = 1.1, 0.4, 0.1, 0.4
    ts = np.linspace(0.0, 20.0, 21)
    r = solve_ivp(
        lambda t, y: [a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - g * y[1]],
        (0, 20), [10.0, 10.0], method="DOP853", rtol=1e-12, atol=1e-12, t_eval=ts,
    )
    assert r.success
    return ts, r.y


@pytest.fixture(scope="module")
def rob_ref():
    k1, k2, k3 = 0.04, 1e4, 3e7

    def f(t, y):
        a, b, c = y
        return [-k1 * a + k2 * b * c, k1 * a - k2 * b * c - k3 * b * b, k3 * b * b]

    def jac(t, y):
        a, b, c = y
        return [[-k1, k2 * c, k2 * b], [k1, -k2 * c - 2 * k3 * b, -k2 * b], [0, 2 * k3 * b, 0]]

    ts = np.array([0.0, 0.04, 0.4, 4.0, 40.0, 400.0, 4000.0, 4e4])
    r = solve_ivp(f, (0, 4e4), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-20,
                  t_eval=ts, jac=jac)
    assert r.success
    return ts, r.y


@pytest.fixture(scope="module")
def vdp_ref():
    mu = 1000.0

    def f(t, y):
        return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]

    def jac(t, y):
        return [[0, 1], [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0] ** 2)]]

    ts = np.linspace(0.0, 2000.0, 11)
    r = solve_ivp(f, (0, 2000), [2.0, 0.0], method="Radau", rtol=1e-12, atol=1e-12,
                  t_eval=ts, jac=jac)
    assert r.success
    return ts, r.y


# ---- methods ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL)
def test_decay_closed_form(method):
    ts = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
    m, y = solve("decay", method, [0.7, 2.0], ts)
    assert rel_err(y[0], 2.0 * np.exp(-0.7 * ts)) <= tol_for(method)
    s = m.stats
    assert s["steps"] > 0 and s["rhs_evals"] > 0
    if method not in EXPLICIT:
        assert s["jac_evals"] > 0 and s["lin_setups"] > 0 and s["nonlin_iters"] > 0


@pytest.mark.parametrize("method", ALL)
def test_logistic_closed_form(method):
    r, cap, p0 = 1.5, 20.0, 0.5
    ts = np.linspace(0.0, 10.0, 11)
    m, y = solve("logistic", method, [r, cap], ts)
    exact = cap / (1 + (cap / p0 - 1) * np.exp(-r * ts)) / cap
    assert rel_err(y[0], exact) <= tol_for(method)


@pytest.mark.parametrize("method", ALL)
def test_lotka_volterra_against_scipy(method, lv_ref):
    ts, ref = lv_ref
    m, y = solve("lotka_volterra", method, None, ts)
    # TR-BDF2 is second order: over five periods its global error at rtol
    # 1e-8 is 1.02e-5 (measured, also at its own steps, not interpolation)
    tol = 2e-5 if method == "tr_bdf2" else tol_for(method)
    assert rel_err(y, ref) <= tol


@pytest.mark.slow
@pytest.mark.parametrize("method", IMPLICIT)
def test_van_der_pol_stiff_against_scipy(method, vdp_ref):
    ts, ref = vdp_ref
    m, y = solve("vanderpol", method, [1000.0], ts)
    # x is O(1) everywhere; v = x' is small on the slow branches (|v| < 0.007)
    # and its global error grows through each fast transition: 3.5e-5 of
    # max |v| for bdf (measured), so v is held to 1e-4 of its scale
    assert rel_err(y[0], ref[0]) <= 1e-5
    assert np.max(np.abs(y[1] - ref[1])) <= 1e-4 * np.max(np.abs(ref[1]))


@pytest.mark.parametrize("method", IMPLICIT)
def test_robertson_ode_against_scipy(method, rob_ref):
    ts, ref = rob_ref
    m, y = solve("robertson_ode", method, None, ts, atol=[1e-12, 1e-16, 1e-12])
    assert rel_err(y[[0, 2]], ref[[0, 2]], floor=1e-12) <= 1e-5
    assert rel_err(y[1, 1:], ref[1, 1:]) <= 1e-5  # b is 1e-5 .. 1e-8
    assert m.stats["jac_evals"] > 0


def test_robertson_dae_with_idas(rob_ref):
    ts, ref = rob_ref
    m, y = solve("robertson_dae", "bdf", None, ts, atol=[1e-12, 1e-16, 1e-12])
    assert m.integrator == "IDAS BDF"
    assert rel_err(y[[0, 2]], ref[[0, 2]], floor=1e-12) <= 1e-5
    assert rel_err(y[1, 1:], ref[1, 1:]) <= 1e-5
    # the algebraic constraint holds at every output
    assert np.max(np.abs(y.sum(axis=0) - 1.0)) <= 1e-10


def test_dae_inconsistent_initial_values_are_made_consistent():
    """u gives c = 0.5 although a + b + c = 1 forces c = 0: IDACalcIC fixes c."""
    code = model_source("robertson_dae").replace("u_i { a = 1, b = 0, c = 0 }",
                                                 "u_i { a = 1, b = 0, c = 0.5 }")
    m, y = solve(code, "bdf", None, [0.0, 1.0])
    assert abs(y[2, 0]) <= 1e-12 and abs(y[0, 0] - 1.0) <= 1e-12


@pytest.mark.parametrize("method", ["bdf", "tsit45", "tr_bdf2", "esdirk34"])
def test_non_singular_mass_matrix(method):
    """M = diag(2, 4): u' = M^-1 F; exact u_i = u0_i exp(-k t / m_i)."""
    code = """
in_i { k = 1.0 }
u_i { x = 1.0, y = 2.0 }
dudt_i { dx = 0, dy = 0 }
M_i { 2 * dx, 4 * dy }
F_i { -k * x, -k * y }
"""
    ts = np.linspace(0.0, 3.0, 7)
    m, y = solve(code, method, [1.5], ts)
    exact = np.array([np.exp(-1.5 * ts / 2), 2 * np.exp(-1.5 * ts / 4)])
    assert rel_err(y, exact) <= tol_for(method)
    assert m.integrator.startswith("IDAS" if method == "bdf" else "ARKODE")


@pytest.mark.parametrize("method", ["tsit45", "dopri5", "tr_bdf2", "esdirk34"])
def test_singular_mass_refused_for_arkode(method):
    with pytest.raises(ValueError, match="bdf"):
        dsp.DiffsolModule(model_source("robertson_dae"), method=method)


def test_adams_with_mass_refused():
    with pytest.raises(ValueError, match="bdf"):
        dsp.DiffsolModule(model_source("robertson_dae"), method="adams")


# ---- linear solvers ------------------------------------------------------------------------


def heat_exact(ts, kappa=0.5, tb=1.0):
    n, dx = 50, 1.0 / 51.0
    L = -2 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
    b = np.zeros(n)
    b[0] = b[-1] = tb
    A = kappa * L / dx**2
    c = kappa * b / dx**2
    u0 = np.zeros(n)
    u0[20:30] = 2.0
    ust = -np.linalg.solve(A, c)  # steady state
    return np.array([ust + expm(A * t) @ (u0 - ust) for t in ts]).T


@pytest.mark.parametrize("linear_solver, used", [
    ("klu", "klu"), ("dense", "lapack"), ("auto", "klu"), ("lapack", "lapack"),
    ("sundials_dense", "dense"),
])
def test_heat1d_linear_solvers_agree_with_expm(linear_solver, used):
    ts = np.array([0.0, 0.001, 0.01, 0.05, 0.1])
    m, y = solve("heat1d", "bdf", None, ts, linear_solver=linear_solver)
    assert m.linear_solver_used == used
    ref = heat_exact(ts)
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_mass_ode_starts_at_a_tiny_atol():
    """A 40-point heat equation with a heat capacity c = 1 + kappa / 2 in M, IDAS at atol
    1e-13, boundary values tb in [0.5, 1.5]: u' from M u' = F is exact after one Newton
    step, and IDACalcIC's convergence test must not demand more than roundoff (it failed
    with IDA_LINESEARCH_FAIL for 3 of these 21 tb before). Against expm."""
    n = 40
    code = (
        "in_i { kappa = 0.5, tb = 1.0 }\n"
        f"L_ij {{ (0..{n}, 0..{n}): -2.0, (0..{n - 1}, 1..{n}): 1.0, (1..{n}, 0..{n - 1}): 1.0 }}\n"
        f"b_i {{ (0): tb, (1:{n - 1}): 0.0, ({n - 1}): tb }}\n"
        f"c_i {{ (0:{n}): 1.0 + 0.5 * kappa }}\n"
        f"u_i {{ (0:{n // 2}): 0.0, ({n // 2}:{n}): 1.0 }}\n"
        f"dudt_i {{ (0:{n}): 0.0 }}\n"
        "M_i { c_i * dudt_i }\n"
        "lap_i { L_ij * u_j }\n"
        f"F_i {{ kappa * (lap_i + b_i) * {float((n + 1) ** 2)} }}\n"
    )
    ts = np.array([0.001, 0.01, 0.05])
    kappa = 0.5
    A = kappa * (n + 1) ** 2 / (1 + kappa / 2) * (
        -2 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1))
    u0 = np.r_[np.zeros(n // 2), np.ones(n - n // 2)]
    for tb in np.linspace(0.5, 1.5, 21):
        m, y = solve(code, "bdf", [kappa, tb], ts, rtol=1e-8, atol=1e-13)
        c = np.zeros(n)
        c[0] = c[-1] = kappa * (n + 1) ** 2 / (1 + kappa / 2) * tb
        ust = -np.linalg.solve(A, c)
        ref = np.array([ust + expm(A * t) @ (u0 - ust) for t in ts]).T
        assert m.integrator == "IDAS BDF"
        assert np.max(np.abs(y - ref)) <= 1e-6 * np.max(np.abs(ref))


@pytest.mark.parametrize("method", ["tr_bdf2", "esdirk34", "adams"])
def test_heat1d_klu_with_other_implicit_methods(method):
    ts = np.array([0.0, 0.01, 0.1])
    m, y = solve("heat1d", method, None, ts, linear_solver="klu")
    assert m.linear_solver_used == "klu"
    ref = heat_exact(ts)
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_klu_and_dense_give_the_same_answer():
    ts = np.linspace(0, 0.1, 6)
    _, y1 = solve("heat1d", "bdf", None, ts, linear_solver="klu")
    _, y2 = solve("heat1d", "bdf", None, ts, linear_solver="dense")
    assert np.max(np.abs(y1 - y2)) <= 1e-9


def test_explicit_methods_use_no_linear_solver():
    m = dsp.DiffsolModule(model_source("decay"), method="dopri5")
    assert m.linear_solver_used == "none"


@pytest.mark.parametrize("linear_solver", ["klu", "dense", "fixedpoint", "spgmr"])
def test_a_linear_solver_for_an_explicit_method_warns(linear_solver):
    """As SciPy does for jac with RK45: a choice without effect is said, not refused."""
    with pytest.warns(UserWarning, match=f"linear_solver='{linear_solver}' has no effect"):
        m = dsp.DiffsolModule(model_source("decay"), method="tsit45", linear_solver=linear_solver)
    assert m.linear_solver_used == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dsp.DiffsolModule(model_source("decay"), method="tsit45")
        # with a mass matrix the explicit method does solve with M: no warning
        m = dsp.DiffsolModule("u { 1 }\ndudt { 0 }\nM { 2 * dudt }\nF { -u }\n",
                              method="dopri5", linear_solver="dense")
        assert m.linear_solver_used == "dense"


# ---- events -----------------------------------------------------------------------------------


def dosing_exact(ts, cl=2.0, vol=10.0):
    k = cl / vol
    q = [50 * math.exp(-k * t) + sum(50 * math.exp(-k * (t - d)) for d in (4, 8, 12) if t >= d)
         for t in ts]
    return np.array(q) / vol


EVENTS = [m for m in ALL if m != "tr_bdf2"]


def test_tr_bdf2_refuses_events():
    """ARKODE's dense output for TR-BDF2 is linear (degree q - 1): event times located on it
    can be far off after long steps, so models with stop are refused, naming alternatives."""
    for name in ("dosing", "ball"):
        code = model_source("dosing") if name == "dosing" else BALL
        with pytest.raises(ValueError, match="tr_bdf2.*esdirk34"):
            dsp.DiffsolModule(code, method="tr_bdf2")


@pytest.mark.parametrize("method", EVENTS)
def test_dosing_events_closed_form(method):
    # output times on the doses (twice at t = 4), just before and after them
    ts = np.array([0.0, 1.0, 3.999, 4.0, 4.0, 4.001, 6.0, 8.0, 9.5, 12.0, 12.5, 16.0])
    m, y = solve("dosing", method, None, ts)
    assert rel_err(y[0], dosing_exact(ts)) <= tol_for(method)
    assert m.stats["events"] == 3
    assert m.last_stop is None


def test_dosing_parameters_change_between_solves():
    m = dsp.DiffsolModule(model_source("dosing"), rtol=1e-8, atol=1e-10)
    ts = torch.linspace(0, 14, 15, dtype=torch.float64)
    for cl in (1.0, 3.0, 2.0):
        y = m.solve_dense(torch.tensor([cl, 10.0]), ts)
        assert rel_err(y[0].numpy(), dosing_exact(ts.numpy(), cl=cl)) <= 1e-5


@pytest.mark.parametrize("method", ["bdf", "dopri5", "esdirk34"])
def test_solve_returns_steps_and_events(method):
    m = dsp.DiffsolModule(model_source("dosing"), method=method, rtol=1e-8, atol=1e-10)
    sol = m.solve(m.default_params, 16.0)
    ts, ys = sol.ts.numpy(), sol.ys.numpy()
    assert ts[0] == 0.0 and ts[-1] == pytest.approx(16.0, abs=1e-12)
    assert np.all(np.diff(ts) >= 0)
    assert ys.shape == (1, ts.shape[0])
    assert sol.stop is None
    assert sol.stats["events"] == 3 and sol.stats["steps"] > 0
    for d in (4.0, 8.0, 12.0):  # each dose time appears twice: before and after
        at = np.where(np.abs(ts - d) <= 1e-9)[0]
        assert len(at) == 2, (d, ts[np.abs(ts - d) < 1e-3])
        assert ys[0, at[1]] - ys[0, at[0]] == pytest.approx(5.0, rel=1e-9)
    # every internal step lies on the closed form (right-continuous at the doses)
    exact = dosing_exact(ts)
    keep = np.ones_like(ts, dtype=bool)
    for d in (4.0, 8.0, 12.0):
        keep[np.where(np.abs(ts - d) <= 1e-9)[0][:1]] = False  # pre-dose copies
    assert rel_err(ys[0, keep], exact[keep]) <= tol_for(method)


BALL = """
in_i { g = 9.81, h0 = 10.0 }
u_i { h = h0, v = 0.0 }
F_i { v, -g }
stop_i { h + 100, h - 5 }
"""


@pytest.mark.parametrize("method", EVENTS)
def test_stop_without_reset_ends_the_solve(method):
    tstop = math.sqrt(2 * 5.0 / 9.81)  # h = 10 - g t^2 / 2 reaches 5
    # the numerical root differs from tstop by the global error: 2nd output just before
    ts = np.array([0.0, 0.5, tstop - 1e-6, 1.2, 2.0])
    m, y = solve(BALL, method, None, ts)
    t_hit, index = m.last_stop
    assert index == 1 and t_hit == pytest.approx(tstop, rel=1e-7)
    assert not np.isnan(y[:, :3]).any()
    assert rel_err(y[0, :3], 10 - 9.81 * ts[:3] ** 2 / 2) <= tol_for(method)
    assert np.all(np.isnan(y[:, 3:]))
    sol = m.solve(m.default_params, 5.0)
    assert sol.stop[1] == 1 and sol.stop[0] == pytest.approx(tstop, rel=1e-7)
    assert sol.ts[-1].item() == pytest.approx(tstop, rel=1e-7)
    assert sol.ys[0, -1].item() == pytest.approx(5.0, rel=1e-6)
    # the next solve that ends before the root has no stop
    y2 = m.solve_dense(m.default_params, torch.tensor([0.0, 0.5]))
    assert m.last_stop is None and not torch.isnan(y2).any()


def test_batch_last_stop_is_a_list():
    m = dsp.DiffsolModule(BALL)
    y = m.solve_dense(torch.tensor([[9.81, 10.0], [9.81, 4.0]]), torch.tensor([0.0, 0.2, 3.0]))
    assert m.last_stop[0][1] == 1 and m.last_stop[1] is None  # h0 = 4: no root before 3
    assert torch.isnan(y[0, :, 2]).all() and not torch.isnan(y[1]).any()


# ---- options ----------------------------------------------------------------------------------


def test_t0_h0_max_steps_and_atol_vector():
    ts = np.array([1.0, 2.0, 4.0])
    m, y = solve("decay", "bdf", [0.5, 3.0], ts, t0=1.0, h0=1e-5, atol=[1e-12])
    assert rel_err(y[0], 3.0 * np.exp(-0.5 * (ts - 1.0))) <= 1e-5
    with pytest.raises(ValueError):
        dsp.DiffsolModule(model_source("decay"), method="rk4")
    with pytest.raises(ValueError):
        dsp.DiffsolModule(model_source("decay"), linear_solver="cholesky")
    with pytest.raises(ValueError):
        dsp.DiffsolModule(model_source("decay"), atol=[1e-6, 1e-6])


def test_solve_arguments():
    m = dsp.DiffsolModule(model_source("decay"), rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError):
        m.solve(m.default_params, -1.0)
    with pytest.raises(ValueError):
        m.solve(m.default_params, float("nan"))
    with pytest.raises(ValueError):
        m.solve(torch.zeros(2, 2), 1.0)
    sol = m.solve(torch.tensor([0.7, 2.0], dtype=torch.float32), 3.0)
    assert sol.ts.dtype == torch.float32 and sol.ys.shape == (1, sol.ts.shape[0])
    assert len(sol.ts) == sol.stats["steps"] + 1
    exact = 2.0 * np.exp(-0.7 * sol.ts.double().numpy())
    assert rel_err(sol.ys[0].double().numpy(), exact) <= 1e-5
    assert "Solution(" in repr(sol)


# ---- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method, flag", [
    ("bdf", "CV_TOO_MUCH_WORK"), ("adams", "CV_TOO_MUCH_WORK"),
    ("tsit45", "ARK_TOO_MUCH_WORK"), ("tr_bdf2", "ARK_TOO_MUCH_WORK"),
])
def test_too_many_steps(method, flag):
    m = dsp.DiffsolModule(model_source("vanderpol"), method=method, max_steps=50)
    with pytest.raises(dsp.SolverError) as info:
        m.solve_dense(m.default_params, torch.tensor([0.0, 3000.0]))
    e = info.value
    assert e.flag == flag and 0 < e.t < 3000.0
    assert e.stats["steps"] <= 50
    assert "max_steps" in e.suggestion
    if method == "tsit45":
        assert "bdf" in e.suggestion
    # usable afterwards: a short solve succeeds
    y = m.solve_dense(m.default_params, torch.tensor([0.0, 1e-3]))
    assert torch.isfinite(y).all()
    with pytest.raises(dsp.SolverError):
        m.solve(m.default_params, 3000.0)


def test_too_many_steps_idas():
    m = dsp.DiffsolModule(model_source("robertson_dae"), max_steps=20)
    with pytest.raises(dsp.SolverError) as info:
        m.solve_dense(m.default_params, torch.tensor([0.0, 4e4]))
    assert info.value.flag == "IDA_TOO_MUCH_WORK"


NAN_MODEL = """
in_i { a = 1.0 }
u { 1.0 }
F { -sqrt(a) * u }
"""


@pytest.mark.parametrize("method", ["bdf", "tsit45", "esdirk34"])
def test_nan_from_the_model(method):
    m = dsp.DiffsolModule(NAN_MODEL, method=method)
    with pytest.raises(dsp.SolverError) as info:
        m.solve_dense(torch.tensor([-1.0]), torch.tensor([0.0, 1.0]))
    e = info.value
    assert "NaN or Inf" in str(e) and e.flag and e.stats is not None
    assert "check the model" in e.suggestion
    y = m.solve_dense(torch.tensor([1.0]), torch.tensor([0.0, 1.0]))
    assert y[0, 1].item() == pytest.approx(math.exp(-1.0), rel=1e-4)


def test_singular_newton_matrix_in_a_dae():
    """The algebraic equation does not involve the algebraic state: singular."""
    code = """
u_i { x = 1.0, z = 0.0 }
dudt_i { dx = 0, dz = 0 }
M_i { dx, 0 }
F_i { -x, x - 1 }
"""
    m = dsp.DiffsolModule(code)
    for _ in range(2):  # fails cleanly every time
        with pytest.raises(dsp.SolverError) as info:
            m.solve_dense(torch.zeros(0), torch.tensor([0.0, 1.0]))
        assert info.value.flag.startswith("IDA_")


@pytest.mark.memory
@pytest.mark.slow
def test_repeated_solves_do_not_grow_memory():
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    rng = np.random.default_rng(1)
    mods = [
        (dsp.DiffsolModule(model_source("dosing"), rtol=1e-8), [(1.0, 3.0), (5.0, 15.0)]),
        (dsp.DiffsolModule(model_source("robertson_dae")), [(0.02, 0.06), (5e3, 2e4), (1e7, 5e7)]),
        (dsp.DiffsolModule(model_source("heat1d"), linear_solver="klu"), [(0.1, 1.0), (0.5, 2.0)]),
        (dsp.DiffsolModule(model_source("lotka_volterra"), method="tsit45"),
         [(1.0, 1.2), (0.3, 0.5), (0.05, 0.15), (0.3, 0.5)]),
    ]
    ts = torch.linspace(0, 10, 11, dtype=torch.float64)

    def run(n):
        for m, box in mods:
            for _ in range(n):
                p = torch.tensor([rng.uniform(lo, hi) for lo, hi in box])
                m.solve_dense(p, ts)
                m.solve(p, 5.0)

    run(50)  # warm up allocator pools
    before = proc.memory_info().rss
    run(1000)
    grown = (proc.memory_info().rss - before) / 2**20
    assert grown < 5.0, f"RSS grew by {grown:.1f} MB over 1000 parameter sets per model"
