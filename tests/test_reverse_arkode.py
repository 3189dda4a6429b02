"""Reverse mode of the ARKODE methods (tsit45, dopri5, tr_bdf2, esdirk34): the adjoint
integrated backward with the same method over the forward trajectory recomputed from
checkpoints (_ckernel/sens_adjoint_arkode.c). References are independent of the
reverse mode: closed forms, forward sensitivities (forward_mode, the augmented system),
central differences of solve_dense, and SciPy-integrated sensitivities."""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import diffsol_pytorch as dsp
from conftest import central_fd, model_source

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_gradients import heat  # noqa: E402  (the 1-D heat equation on n points)

pytestmark = pytest.mark.gradient

ARKODE = ["tsit45", "dopri5", "tr_bdf2", "esdirk34"]
# TR-BDF2 is of order 2: its global error at rtol 1e-10 is ~1e-7 relative, so its
# gradients (forward or reverse) agree with the exact ones to ~1e-5 only.
RTOL = {"tsit45": 1e-6, "dopri5": 1e-6, "tr_bdf2": 3e-5, "esdirk34": 1e-6}




@pytest.mark.parametrize("method", ARKODE)
def test_decay_closed_form(method):
    """u = a0 exp(-k t) up to t = 8 (many checkpoint intervals), an output at t0."""
    m = dsp.DiffsolModule(model_source("decay"), method=method, rtol=1e-10, atol=1e-12)
    k, a0 = 0.7, 2.0
    times = np.array([0.0, 0.5, 1.0, 4.0, 8.0])
    g = np.array([[0.3, -1.0, 0.0, 2.0, 0.5]])
    e = np.exp(-k * times)
    want = [(g[0] * -times * a0 * e).sum(), (g[0] * e).sum()]
    grad = m.reverse_mode([k, a0], times, g).numpy()
    np.testing.assert_allclose(grad, want, rtol=RTOL[method])


@pytest.mark.parametrize("method", ARKODE)
def test_lotka_volterra_several_outputs(method):
    """Two outputs, eleven times: against forward_mode (the augmented system integrated
    by the same method) and central differences of solve_dense (relative step 1e-4,
    rtol 1e-10; for tr_bdf2 the differences are of bdf's solution, TR-BDF2's own being
    too rough for that step)."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), method=method, rtol=1e-10,
                          atol=1e-12)
    params = np.array([1.1, 0.4, 0.1, 0.4])
    times = np.linspace(0, 10, 11)
    g = np.random.default_rng(1).normal(size=(2, 11))
    grad = m.reverse_mode(params, times, g).numpy()
    _, sens = m.forward_mode(params, times)
    fwd = np.einsum("it,pit->p", g, sens.numpy())
    np.testing.assert_allclose(grad, fwd, rtol=1e-4)
    ref = m if method != "tr_bdf2" else dsp.DiffsolModule(
        model_source("lotka_volterra"), method="bdf", rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, central_fd(ref, params, times, g), rtol=1e-4)


def robertson_sensitivities_scipy(k, times):
    """Robertson's sensitivities du/dk (3 states x 3 rates x times), integrated with the
    state by SciPy Radau at rtol 1e-12."""

    def aug(t, z):
        a, b, c = z[:3]
        S = z[3:].reshape(3, 3)
        f = [-k[0] * a + k[1] * b * c, k[0] * a - k[1] * b * c - k[2] * b * b, k[2] * b * b]
        J = np.array([[-k[0], k[1] * c, k[1] * b],
                      [k[0], -k[1] * c - 2 * k[2] * b, -k[1] * b],
                      [0.0, 2 * k[2] * b, 0.0]])
        Fp = np.array([[-a, b * c, 0.0], [a, -b * c, -b * b], [0.0, 0.0, b * b]])
        return np.concatenate([f, (J @ S + Fp).ravel()])

    z0 = np.zeros(12)
    z0[0] = 1.0
    ref = solve_ivp(aug, (0, times[-1]), z0, method="Radau", t_eval=times, rtol=1e-12,
                    atol=1e-16)
    return ref.y[3:].reshape(3, 3, -1)


@pytest.mark.parametrize("method", ["tr_bdf2", "esdirk34"])
def test_robertson_matches_scipy_sensitivities(method):
    """Stiff, implicit tables: against forward sensitivities integrated by SciPy Radau."""
    m = dsp.DiffsolModule(model_source("robertson_ode"), method=method, rtol=1e-10,
                          atol=1e-14)
    k = np.array([0.04, 1e4, 3e7])
    times = np.array([1e-2, 1.0, 10.0, 40.0])
    g = np.array([[1.0, 0.0, 0.5, 1.0], [0.0, 1e4, 0.0, 2e4], [0.2, 0.0, 0.0, 1.0]])
    want = np.einsum("it,ipt->p", g, robertson_sensitivities_scipy(k, times))
    grad = m.reverse_mode(k, times, g).numpy()
    np.testing.assert_allclose(grad * k, want * k, rtol=1e-4,
                               atol=1e-4 * np.abs(want * k).max())


@pytest.mark.parametrize("method", ["tsit45", "esdirk34"])
def test_checkpoint_backward_twice_and_autograd(method):
    m = dsp.DiffsolModule(model_source("decay"), method=method, rtol=1e-10, atol=1e-12)
    times = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    y, ckpt = m.solve_dense_with_checkpointing(torch.tensor([0.7, 2.0], dtype=torch.float64),
                                               times)
    np.testing.assert_allclose(y.numpy()[0], 2.0 * np.exp(-0.7 * times.numpy()), rtol=1e-8)
    g1 = ckpt.backward([[0.0, 1.0, 0.0]])
    g2 = ckpt.backward([[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(g1.numpy(), [-2.0 * np.exp(-0.7), np.exp(-0.7)], rtol=1e-7)
    np.testing.assert_allclose(g2.numpy(), [-4.0 * np.exp(-1.4), np.exp(-1.4)], rtol=1e-7)
    m.solve_dense([0.7, 2.0], times)
    with pytest.raises(ValueError, match="forward pass again"):
        ckpt.backward([[0.0, 1.0, 0.0]])
    # torch.autograd through solve_dense
    p = torch.tensor([0.7, 2.0], dtype=torch.float64, requires_grad=True)
    (m.solve_dense(p, times)[0, 1:] ** 2).sum().backward()
    t = times.numpy()[1:]
    u = 2.0 * np.exp(-0.7 * t)
    want = [(2 * u * -t * u).sum(), (2 * u * u / 2.0).sum()]
    np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-7)


# M non-symmetric, depending on t and on the parameter b; u0 and out depend on the
# parameters too
MASS_T = """in_i { a = 0.8, b = 0.3, c = 1.2 }
u_i { x = a, y = 1.0 }
dudt_i { dx = 0, dy = 0 }
M_i { (2 + b * sin(t)) * dx + 0.2 * t * dy, dy - 0.5 * dx }
F_i { -a * x + 0.1 * y * y, -c * y + sin(x) }
out_i { x * y, x + c }
"""


@pytest.fixture(scope="module")
def mass_t_reference():
    times = np.linspace(0.0, 4.0, 9)
    g = np.random.default_rng(1).standard_normal((2, times.size))
    p = np.array([0.8, 0.3, 1.2])
    ref = central_fd(dsp.DiffsolModule(MASS_T, method="esdirk34", rtol=1e-12, atol=1e-14), p,
                     times, g)
    return p, times, g, ref


@pytest.mark.parametrize("method", ARKODE)
def test_mass_matrix_depending_on_t_and_p(method, mass_t_reference):
    """M(t, p) u' = F: the adjoint integrates M^T lambda (no dM/dt needed), with the
    kept trajectory and with checkpoints and recomputation; against central differences
    of an rtol-1e-12 solve; batches and torch autograd give the same gradient."""
    p, times, g, ref = mass_t_reference
    scale = np.abs(ref).max()
    tol = RTOL[method]
    for steps in (None, 3):
        m = dsp.DiffsolModule(MASS_T, method=method, rtol=1e-9, atol=1e-11,
                              checkpoint_steps=steps)
        grad = m.reverse_mode(p, times, g).numpy()
        assert m.last_gradient_method == "adjoint"
        assert np.abs(grad - ref).max() <= tol * scale
    grads = m.reverse_mode(np.stack([p, p]), times, np.stack([g, g]), threads=2).numpy()
    np.testing.assert_array_equal(grads[0], grad)
    np.testing.assert_array_equal(grads[1], grad)
    pt = torch.tensor(p, requires_grad=True)
    (m.solve_dense(pt, torch.tensor(times)) * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(pt.grad.numpy(), grad, rtol=1e-12, atol=1e-14 * scale)


@pytest.mark.parametrize("method", ARKODE)
def test_mass_matrix_closed_form(method):
    """m x' = -k x, 4 y' = -k y: x = exp(-k t / m), y = 2 exp(-k t / 4), a gradient at
    every output time."""
    code = ("in_i { k = 1.5, m = 2.5 }\nu_i { x = 1.0, y = 2.0 }\ndudt_i { dx = 0, dy = 0 }\n"
            "M_i { m * dx, 4 * dy }\nF_i { -k * x, -k * y }\n")
    k, mm = 1.5, 2.5
    ts = np.linspace(0.0, 3.0, 7)
    g = np.random.default_rng(0).standard_normal((2, ts.size))
    x, y = np.exp(-k * ts / mm), 2 * np.exp(-k * ts / 4)
    want = [(g[0] * -ts / mm * x + g[1] * -ts / 4 * y).sum(), (g[0] * k * ts / mm**2 * x).sum()]
    m = dsp.DiffsolModule(code, method=method, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.reverse_mode([k, mm], ts, g).numpy(), want,
                               rtol=RTOL[method])
    # m = 0 makes M singular: a clear error, and the module stays usable
    with pytest.raises(ValueError, match="non-singular mass matrix"):
        m.reverse_mode([k, 0.0], ts, g)
    np.testing.assert_allclose(m.reverse_mode([k, mm], ts, g).numpy(), want,
                               rtol=RTOL[method])


def _with_capacity(code: str, n: int) -> str:
    """The heat equation with a heat capacity c (a diagonal M) depending on kappa."""
    return code.replace("u_i {", f"c_i {{ (0:{n}): 1.0 + 0.5 * kappa }}\nu_i {{").replace(
        "F_i {", f"dudt_i {{ (0:{n}): 0.0 }}\nM_i {{ c_i * dudt_i }}\nF_i {{")


@pytest.mark.parametrize("method,mass", [("tr_bdf2", False), ("esdirk34", False),
                                         ("esdirk34", True)])
def test_implicit_tables_with_klu(method, mass):
    """linear_solver="klu": the backward Newton matrix of the implicit tables is sparse
    (KLU on the transposed pattern; with a diagonal M, -(M^-1 dF/du)^T keeps that
    pattern), the gradient that of the dense matrix and of central differences; on 300
    states the backward pass is far cheaper than with the dense (n + nparams)^2 matrix
    (measured 4.8 s against 0.12 s for esdirk34 at 800 states)."""
    code = _with_capacity(heat(40), 40) if mass else heat(40)
    times = np.array([0.001, 0.01, 0.05])
    g = np.random.default_rng(2).standard_normal((40, times.size))
    p = np.array([0.5, 1.0])
    rtol = 1e-8 if method == "tr_bdf2" else 1e-10
    grads = [dsp.DiffsolModule(code, method=method, rtol=rtol, atol=1e-12, linear_solver=ls)
             .reverse_mode(p, times, g).numpy() for ls in ("klu", "dense")]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-8)
    # (with M the reference is esdirk34, an integrator independent of IDAS' start)
    ref = central_fd(dsp.DiffsolModule(code, method="esdirk34" if mass else "bdf", rtol=1e-11,
                                       atol=1e-13), p, times, g)
    np.testing.assert_allclose(grads[0], ref, rtol=1e-4 if method == "tr_bdf2" else 1e-6)
    big = _with_capacity(heat(300), 300) if mass else heat(300)
    g = np.zeros((300, 2))
    g[:, -1] = 1.0 / 300
    cost = {}
    for ls in ("klu", "dense"):
        m = dsp.DiffsolModule(big, method=method, rtol=1e-6, atol=1e-8, linear_solver=ls)
        m.reverse_mode(p, [0.0, 0.05], g)
        t0 = time.perf_counter()
        m.reverse_mode(p, [0.0, 0.05], g)
        cost[ls] = time.perf_counter() - t0
    assert cost["klu"] < 0.3 * cost["dense"], cost


DOSING_M = """in_i { cl = 2.0, vol = 10.0 }
tdose_i { 4.0, 8.0, 12.0 }
u_i { c = 5.0 }
dudt_i { dc = 0 }
M_i { vol * dc }
F_i { -cl * c }
stop_i { tdose_i - t }
reset_i { c + 50.0 / vol }
"""

SAWTOOTH_M = """in_i { m = 2.0, k = 0.5 }
u { x = 1.0 }
dudt { dx = 0 }
M { m * dx }
F { -k * x }
stop { x - 0.5 }
reset { 1.0 }
"""


@pytest.mark.parametrize("method", ["tsit45", "dopri5", "esdirk34"])
def test_mass_matrix_with_events(method):
    """M with events: w = M^T lambda is the adjoint of u' = M^-1 F, whose event jumps are
    those of the ODE. Dosing written with a volume in M (fixed event times:
    c = 5 e^(-k t) + sum_d 50 / vol e^(-k (t - d)), k = cl / vol) and a sawtooth whose
    event times depend on the parameters (m x' = -k x, reset to 1 at x = 0.5: x = 2^n
    e^(-k t / m) on the n-th tooth, tau = m ln 2 / k); closed forms."""
    ts = np.array([1.0, 3.0, 5.0, 7.5, 9.0, 13.0, 15.0])
    g = np.random.default_rng(0).standard_normal((1, ts.size))

    def conc(cl, vol):
        k = cl / vol
        return 5.0 * np.exp(-k * ts) + sum((ts >= d) * 50 / vol * np.exp(-k * (ts - d))
                                           for d in (4.0, 8.0, 12.0))

    # d/dcl and d/dvol of the closed form, by hand
    cl, vol = 2.0, 10.0
    k = cl / vol
    dk = np.array([1 / vol, -cl / vol**2])
    terms = [(5.0 * np.exp(-k * ts), ts, 0.0)] + [
        ((ts >= d) * 50 / vol * np.exp(-k * (ts - d)), ts - d, -1 / vol) for d in (4, 8, 12)]
    want = [sum(float((g[0] * c * (-tt * dk[q] + (dv if q == 1 else 0.0))).sum())
                for c, tt, dv in terms) for q in range(2)]
    m = dsp.DiffsolModule(DOSING_M, method=method, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.solve_dense([cl, vol], ts).numpy()[0], conc(cl, vol),
                               rtol=1e-8)
    np.testing.assert_allclose(m.reverse_mode([cl, vol], ts, g).numpy(), want, rtol=1e-6)
    assert m.last_gradient_method == "adjoint"

    ts = np.array([1.0, 3.0, 4.5, 6.0, 9.5, 12.0])
    g = np.random.default_rng(1).standard_normal((1, ts.size))
    mm, kk = 2.0, 0.5
    x = 2 ** np.floor(ts / (mm * np.log(2) / kk)) * np.exp(-kk / mm * ts)
    want = [float((g[0] * x * kk * ts / mm**2).sum()), float((g[0] * x * -ts / mm).sum())]
    m = dsp.DiffsolModule(SAWTOOTH_M, method=method, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.reverse_mode([mm, kk], ts, g).numpy(), want, rtol=1e-6)
    assert m.stats["events"] == 4


def test_idas_refuses_time_dependent_mass_and_names_the_alternatives():
    m = dsp.DiffsolModule(MASS_T, method="bdf")
    with pytest.raises(ValueError, match="gradient_method='forward'.*ARKODE"):
        m.reverse_mode([0.8, 0.3, 1.2], [0.0, 1.0], np.ones((2, 2)))


@pytest.mark.parametrize("method", ["tsit45", "dopri5", "esdirk34"])
def test_stop_without_reset(method):
    """u = exp(-r t) stops at u = 0.5 (t = ln 2 / r): outputs after it are NaN and may
    not carry a gradient; before it the gradient is the closed form's."""
    s = dsp.DiffsolModule("in_i { r = 1 }\nu { 1 }\nF { -r * u }\nstop { u - 0.5 }\n",
                          method=method, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="after the solve stopped"):
        s.reverse_mode([1.0], [0.0, 1.0], np.ones((1, 2)))
    grad = s.reverse_mode([1.0], [0.0, 0.5, 1.0], np.array([[0.0, 1.0, 0.0]])).numpy()
    np.testing.assert_allclose(grad, [-0.5 * np.exp(-0.5)], rtol=1e-7)


def test_max_steps_holds_in_reverse_mode():
    """The checkpointed forward pass steps one at a time: max_steps is the total, as in
    solve_dense (it used to be ignored there)."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), method="tsit45", max_steps=10)
    with pytest.raises(dsp.SolverError, match="max_steps = 10"):
        m.reverse_mode(m.default_params, np.linspace(0.0, 20.0, 3), np.ones((m.nout, 3)))


BALL_ARK = """
in_i { g = 9.81, e = 0.8, h0 = 10.0 }
u_i { h = h0, v = 0.0 }
F_i { v, -g }
stop_i { h }
reset_i { 0, -e * v }
out_i { h, v }
"""


@pytest.mark.parametrize("method", ["tsit45", "esdirk34"])
@pytest.mark.parametrize("model", ["lotka_volterra", "ball"])
def test_kept_trajectory_matches_recomputation(method, model):
    """By default the forward pass keeps every step (it fits in memory) and the backward
    pass runs from jump to jump over them; with checkpoint_steps set it keeps checkpoints
    only and recomputes each interval. Both give the gradient of forward mode."""
    code = model_source("lotka_volterra") if model == "lotka_volterra" else BALL_ARK
    ts = np.linspace(0.0, 4.0, 9)
    grads = []
    for steps in (None, 7):
        m = dsp.DiffsolModule(code, method=method, rtol=1e-10, atol=1e-12, checkpoint_steps=steps)
        p = m.default_params.numpy()
        g = np.random.default_rng(8).normal(size=(m.nout, ts.size))
        g[:, 3] = 0.0  # an output without a jump: the kept path does not stop there
        grads.append(m.reverse_mode(p, ts, g).numpy())
        _, sens = m.forward_mode(p, ts)
        fwd = (sens.numpy() * g[None]).sum(axis=(1, 2))
        np.testing.assert_allclose(grads[-1], fwd, rtol=1e-6, atol=1e-8 * np.abs(fwd).max())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-8 * np.abs(grads[1]).max())


@pytest.mark.parametrize("method", ["tsit45", "dopri5"])
def test_explicit_restarts_keep_the_step_size(method):
    """With an explicit table, a restart of the backward integration at an output time
    starts from the step before the jump: a loss over all 41 output times of
    Lotka-Volterra costs at most 1.3x the backward steps of a loss at the last time only
    (1.66x when each restart estimated a new first step), and the gradient stays that of
    central differences of an rtol-1e-12 bdf solve."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), method=method, rtol=1e-8,
                          atol=1e-10)
    p = m.default_params.numpy()
    times = np.linspace(0.0, 20.0, 41)
    g = np.random.default_rng(0).standard_normal((m.nout, times.size))
    g_last = np.zeros_like(g)
    g_last[:, -1] = g[:, -1]
    m.reverse_mode(p, times, g_last)
    last = m.stats["backward_steps"]
    grad = m.reverse_mode(p, times, g).numpy()
    assert m.stats["backward_restarts"] == 39  # none at t0
    assert m.stats["backward_steps"] <= 1.3 * last
    ref = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, central_fd(ref, p, times, g, rel=1e-5), rtol=1e-6)


@pytest.mark.parametrize("method", ["tsit45", "dopri5"])
def test_explicit_forward_pass_does_not_stop_at_outputs(method):
    """The checkpointed forward pass of an explicit table takes the steps of a plain solve
    (outputs inside a step come from the interpolant; stopping at each of 401 output
    times took 2.5x the steps), returns the same outputs, and the gradient of a loss on
    every output, most of them inside a step, is that of central differences of an
    rtol-1e-12 bdf solve."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), method=method, rtol=1e-8,
                          atol=1e-10)
    p = m.default_params.numpy()
    times = np.linspace(0.0, 20.0, 401)
    y_plain = m.solve_dense(p, times).numpy()
    plain_steps = m.stats["steps"]
    y, ckpt = m.solve_dense_with_checkpointing(p, times)
    assert m.stats["steps"] == plain_steps < 300  # 274 (tsit45), 294 (dopri5)
    a, b, d, c = p  # alpha, beta, delta, gamma
    ref_y = solve_ivp(lambda t, u: [a * u[0] - b * u[0] * u[1], d * u[0] * u[1] - c * u[1]],
                      (0.0, 20.0), [10.0, 10.0], method="DOP853", t_eval=times, rtol=1e-13,
                      atol=1e-13).y
    for out in (y.numpy(), y_plain):  # interpolated outputs as accurate as the plain solve's
        np.testing.assert_allclose(out, ref_y, rtol=2e-6, atol=1e-8)
    g = np.random.default_rng(3).standard_normal((m.nout, times.size))
    grad = ckpt.backward(g).numpy()
    ref = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, central_fd(ref, p, times, g, rel=1e-5), rtol=1e-5)


@pytest.mark.parametrize("method", ["tr_bdf2", "esdirk34"])
@pytest.mark.parametrize("rtol, tol", [(1e-6, 1e-3), (1e-8, 1e-4)])
def test_stiff_adjoint_accurate_at_ordinary_tolerances(method, rtol, tol):
    """Robertson to t = 1e4 with a loss on 9 output times, at the default rtol and at
    1e-8: each gradient component within tol of SciPy's sensitivities. The interpolant
    of the forward steps used F at the step ends; on a stiff problem that data carries
    the fast modes times the allowed error, and the gradients were 16-33% off at rtol
    1e-6 (esdirk34) and 1e-3 off at 1e-8."""
    k = np.array([0.04, 1e4, 3e7])
    times = np.logspace(-4, 4, 9)
    g = np.random.default_rng(0).standard_normal((3, times.size))
    want = np.einsum("it,ipt->p", g, robertson_sensitivities_scipy(k, times))
    m = dsp.DiffsolModule(model_source("robertson_ode"), method=method, rtol=rtol,
                          atol=rtol * 1e-2, gradient_method="adjoint")
    grad = m.reverse_mode(k, times, g).numpy()
    np.testing.assert_allclose(grad, want, rtol=tol)
