"""Reverse mode (checkpointed adjoint) against closed forms, central finite
differences of the forward solve, and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import diffsol_pytorch as dsp
from conftest import THRESHOLD_MODEL, threshold_sensitivities, central_fd, dosing_closed_form_grad, model_source

pytestmark = pytest.mark.gradient




@pytest.mark.parametrize("method", ["bdf", "adams"])
def test_decay_gradient_closed_form(method):
    """u = a0 exp(-k t): parameters in the rhs and in the initial state."""
    m = dsp.DiffsolModule(model_source("decay"), method=method, rtol=1e-10, atol=1e-12)
    k, a0 = 0.7, 2.0
    times = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    g = np.array([[0.3, -1.0, 0.0, 2.0, 0.5]])
    grad = m.reverse_mode([k, a0], times, g).numpy()
    e = np.exp(-k * times)
    want = [float((g[0] * -times * a0 * e).sum()), float((g[0] * e).sum())]
    np.testing.assert_allclose(grad, want, rtol=1e-7)


def test_logistic_output_gradient_closed_form():
    """out = pop / cap = 1 / (1 + (cap / p0 - 1) exp(-r t)): the output depends on a
    parameter too. Derivatives of the closed form by complex-step differentiation."""
    m = dsp.DiffsolModule(model_source("logistic"), rtol=1e-10, atol=1e-12)
    r, cap = 1.5, 20.0
    times = np.linspace(0, 5, 6)
    g = np.random.default_rng(0).normal(size=(1, 6))

    def out(r, cap):
        return 1.0 / (1.0 + (cap / 0.5 - 1.0) * np.exp(-r * times))

    h = 1e-30
    want = [float((g[0] * out(r + 1j * h, cap).imag / h).sum()),
            float((g[0] * out(r, cap + 1j * h).imag / h).sum())]
    grad = m.reverse_mode([r, cap], times, g).numpy()
    np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_lotka_volterra_several_outputs_matches_fd():
    m = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-10, atol=1e-12)
    params = [1.1, 0.4, 0.1, 0.4]
    times = np.linspace(0, 10, 11)
    g = np.random.default_rng(1).normal(size=(2, 11))
    grad = m.reverse_mode(params, times, g).numpy()
    np.testing.assert_allclose(grad, central_fd(m, params, times, g), rtol=1e-5, atol=1e-8)


def test_robertson_gradient_matches_scipy_sensitivities():
    """Stiff: against forward sensitivities integrated by SciPy Radau (independent)."""
    m = dsp.DiffsolModule(model_source("robertson_ode"), rtol=1e-10, atol=1e-14)
    k = np.array([0.04, 1e4, 3e7])
    times = np.array([1e-2, 1.0, 10.0, 40.0])
    g = np.array([[1.0, 0.0, 0.5, 1.0], [0.0, 1e4, 0.0, 2e4], [0.2, 0.0, 0.0, 1.0]])

    def aug(t, z):
        a, b, c = z[:3]
        S = z[3:].reshape(3, 3)  # S[i, p] = du_i/dk_p
        f = [-k[0] * a + k[1] * b * c, k[0] * a - k[1] * b * c - k[2] * b * b, k[2] * b * b]
        J = np.array([[-k[0], k[1] * c, k[1] * b],
                      [k[0], -k[1] * c - 2 * k[2] * b, -k[1] * b],
                      [0.0, 2 * k[2] * b, 0.0]])
        Fp = np.array([[-a, b * c, 0.0], [a, -b * c, -b * b], [0.0, 0.0, b * b]])
        return np.concatenate([f, (J @ S + Fp).ravel()])

    z0 = np.zeros(12)
    z0[0] = 1.0
    ref = solve_ivp(aug, (0, 40), z0, method="Radau", t_eval=times, rtol=1e-12, atol=1e-16)
    S = ref.y[3:].reshape(3, 3, -1)  # (state, param, time)
    want = np.einsum("it,ipt->p", g, S)
    grad = m.reverse_mode(k, times, g).numpy()
    np.testing.assert_allclose(grad * k, want * k, rtol=1e-5, atol=1e-6 * np.abs(want * k).max())


def test_checkpoint_backward_twice_and_invalidation():
    m = dsp.DiffsolModule(model_source("decay"), rtol=1e-10, atol=1e-12)
    times = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    y, ckpt = m.solve_dense_with_checkpointing(torch.tensor([0.7, 2.0], dtype=torch.float64),
                                               times)
    np.testing.assert_allclose(y.numpy()[0], 2.0 * np.exp(-0.7 * times.numpy()), rtol=1e-8)
    g1 = ckpt.backward([[0.0, 1.0, 0.0]])
    g2 = ckpt.backward([[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(g1.numpy(), [-2.0 * np.exp(-0.7), np.exp(-0.7)], rtol=1e-7)
    np.testing.assert_allclose(g2.numpy(), [-4.0 * np.exp(-1.4), np.exp(-1.4)], rtol=1e-7)
    m.solve_dense([0.7, 2.0], times)  # another solve on the same module
    with pytest.raises(ValueError, match="forward pass again"):
        ckpt.backward([[0.0, 1.0, 0.0]])


def test_shapes_dtype_and_errors():
    m = dsp.DiffsolModule(model_source("decay"))
    times = [0.0, 1.0]
    with pytest.raises(ValueError, match=r"\(1, 2\).*\(2, 2\)"):
        m.reverse_mode([0.7, 2.0], times, np.ones((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        m.reverse_mode([0.7, 2.0], times, [[1.0, np.nan]])
    g32 = m.reverse_mode(torch.tensor([0.7, 2.0], dtype=torch.float32), times, [[0.0, 1.0]])
    assert g32.dtype == torch.float32 and g32.shape == (2,)
    zero = m.reverse_mode([0.7, 2.0], times, [[0.0, 0.0]])
    assert torch.equal(zero, torch.zeros(2, dtype=torch.float64))
    batch = m.reverse_mode([[0.7, 2.0], [0.5, 1.0]], times, np.ones((2, 1, 2)))
    assert batch.shape == (2, 2)
    np.testing.assert_allclose(batch[1].numpy(), m.reverse_mode([0.5, 1.0], times, [[1.0, 1.0]]))
    assert torch.equal(dsp.reverse_mode(model_source("decay"), [0.7, 2.0], times, [[0.0, 1.0]]),
                       m.reverse_mode([0.7, 2.0], times, [[0.0, 1.0]]))


def test_robertson_dae_gradient_matches_scipy_sensitivities():
    """The DAE (IDAS adjoint; c algebraic) against forward sensitivities of the equivalent
    ODE in a, b (c = 1 - a - b substituted) integrated by SciPy Radau; outputs a, b, c
    including the algebraic one, an output at t0 and zeros in g."""
    m = dsp.DiffsolModule(model_source("robertson_dae"), rtol=1e-10, atol=1e-14)
    k = np.array([0.04, 1e4, 3e7])
    times = np.array([0.0, 1e-2, 1.0, 10.0, 40.0])
    g = np.array([[1.0, 1.0, 0.0, 0.5, 1.0],
                  [0.0, 0.0, 1e4, 0.0, 2e4],
                  [3.0, 0.2, 0.0, 0.0, 1.0]])

    def aug(t, z):
        a, b = z[:2]
        c = 1.0 - a - b
        S = z[2:].reshape(2, 3)  # S[i, p] = d(a, b)_i / dk_p
        f = [-k[0] * a + k[1] * b * c, k[0] * a - k[1] * b * c - k[2] * b * b]
        # d f / d(a, b) with c = 1 - a - b
        J = np.array([[-k[0] - k[1] * b, k[1] * c - k[1] * b],
                      [k[0] + k[1] * b, -k[1] * c + k[1] * b - 2 * k[2] * b]])
        Fp = np.array([[-a, b * c, 0.0], [a, -b * c, -b * b]])
        return np.concatenate([f, (J @ S + Fp).ravel()])

    z0 = np.zeros(8)
    z0[0] = 1.0
    ref = solve_ivp(aug, (0, 40), z0, method="Radau", t_eval=times, rtol=1e-12, atol=1e-16)
    Sab = ref.y[2:].reshape(2, 3, -1)  # (state, param, time)
    S = np.concatenate([Sab, -(Sab[0] + Sab[1])[None]], axis=0)  # c = 1 - a - b
    want = np.einsum("it,ipt->p", g, S)
    grad = m.reverse_mode(k, times, g).numpy()
    np.testing.assert_allclose(grad * k, want * k, rtol=0, atol=1e-5 * np.abs(want * k).max())


DAE_MASS_PARAM = """
in_i { m = 2, k = 0.5, c = 3, x0 = 1.5 }
u_i { x = x0, y = 0 }
dudt_i { dxdt = 0, dydt = 0 }
M_i { m * dxdt, 0 }
F_i { -k * x, c * x - y }
out_i { x, x * y }
"""


def test_dae_with_parameter_in_mass_closed_form_and_fd():
    """m x' = -k x, 0 = c x - y: x = x0 exp(-k t / m), outputs x and x y = c x^2. The
    parameter m enters M, x0 the initial state (y(0) from the constraint), c only the
    algebraic equation."""
    m = dsp.DiffsolModule(DAE_MASS_PARAM, rtol=1e-10, atol=1e-12)
    p = np.array([2.0, 0.5, 3.0, 1.5])
    times = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    g = np.array([[0.3, -1.0, 0.0, 2.0, 0.0], [0.7, 0.0, 0.0, -0.4, 0.0]])

    def loss(q):
        mm, kk, cc, x0 = q
        x = x0 * np.exp(-kk * times / mm)
        return (g[0] * x).sum() + (g[1] * cc * x * x).sum()

    h = 1e-30  # complex step on the closed form
    want = np.array([loss(p + 1j * h * np.eye(4)[q]).imag / h for q in range(4)])
    grad = m.reverse_mode(p, times, g).numpy()
    np.testing.assert_allclose(grad, want, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(grad, central_fd(m, p, times, g), rtol=1e-6, atol=1e-8)


def test_methods_not_covered_yet_say_so():
    # (the ARKODE methods have their own adjoint: sens_adjoint_arkode.c)
    # without reset the solve ends at the root: no gradient through the NaN outputs
    s = dsp.DiffsolModule("in_i { r = 1 }\nu { 1 }\nF { -r * u }\nstop { u - 0.5 }\n")
    with pytest.raises(ValueError, match="after the solve stopped"):
        s.reverse_mode([1.0], [0.0, 1.0], np.ones((1, 2)))
    grad = s.reverse_mode([1.0], [0.0, 0.5, 1.0], np.array([[0.0, 1.0, 0.0]])).numpy()
    np.testing.assert_allclose(grad, [-0.5 * np.exp(-0.5)], rtol=1e-5)


# ---- events (stop/reset) ------------------------------------------------------------

# CVODES (sens_adjoint.c) and the ARKODE methods that locate events (sens_adjoint_arkode.c;
# tr_bdf2 refuses events at creation: its dense output is too coarse)
EVENT_METHODS = ["bdf", "adams", "tsit45", "dopri5", "esdirk34"]


@pytest.mark.parametrize("method", EVENT_METHODS)
def test_dosing_through_events(method):
    """Doses at fixed times (one segment per dose, re-run with checkpoints in the
    backward pass): the closed form's derivatives and forward mode; outputs at the
    dose times get the value after the dose."""
    m = dsp.DiffsolModule(model_source("dosing"), method=method, rtol=1e-10, atol=1e-12)
    ts = np.array([0.0, 1.0, 3.999, 4.0, 4.001, 6.0, 8.0, 9.5, 12.0, 12.5, 16.0])
    g = np.random.default_rng(1).normal(size=(1, ts.size))
    grad = m.reverse_mode([2.0, 10.0], ts, g).numpy()
    np.testing.assert_allclose(grad, dosing_closed_form_grad(ts, g[0]), rtol=1e-6)
    _, sens = m.forward_mode([2.0, 10.0], ts)
    fwd = (sens.numpy() * g[None]).sum(axis=(1, 2))
    np.testing.assert_allclose(grad, fwd, rtol=1e-6)


BALL = """
in_i { g = 9.81, e = 0.8, h0 = 10.0 }
u_i { h = h0, v = 0.0 }
F_i { v, -g }
stop_i { h }
reset_i { 0, -e * v }
out_i { h, v, h + v * v / (2 * g) }
"""


@pytest.mark.parametrize("method", EVENT_METHODS)
def test_bouncing_ball_through_events(method):
    """The bounce times depend on the state and on g, e, h0: the adjoint's jump
    (with dtau/dp) against central differences and forward mode."""
    m = dsp.DiffsolModule(BALL, method=method, rtol=1e-10, atol=1e-10)
    p = [9.81, 0.8, 10.0]
    ts = np.array([0.0, 1.0, 1.5, 2.5, 3.5, 4.0, 5.0])
    g = np.random.default_rng(2).normal(size=(3, ts.size))
    grad = m.reverse_mode(p, ts, g).numpy()
    assert m.stats["events"] >= 2
    ref = central_fd(m, p, ts, g)
    np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    _, sens = m.forward_mode(p, ts)
    fwd = (sens.numpy() * g[None]).sum(axis=(1, 2))
    np.testing.assert_allclose(grad, fwd, rtol=1e-6, atol=1e-8 * np.abs(fwd).max())
    # one checkpointed forward pass, two backward passes
    y, ckpt = m.solve_dense_with_checkpointing(p, ts)
    # CVODES: the same steps as solve_dense; ARKODE's checkpointed pass stops at every
    # output time, so its steps (and values, within the tolerance) differ
    same = 1e-12 if method in ("bdf", "adams") else 1e-8
    np.testing.assert_allclose(y.numpy(), m.solve_dense(p, ts).numpy(), rtol=same, atol=same)
    y, ckpt = m.solve_dense_with_checkpointing(p, ts)
    np.testing.assert_allclose(ckpt.backward(g).numpy(), grad, rtol=1e-12)
    np.testing.assert_allclose(ckpt.backward(g).numpy(), grad, rtol=1e-12)


@pytest.mark.parametrize("method", EVENT_METHODS)
def test_threshold_model_through_events(method):
    """Integrate-and-fire: the firing times tau ln(I / (I - vth)) depend on a parameter
    of stop (the g_p term of the jump) and of F; closed form, four firings."""
    code = THRESHOLD_MODEL
    ts = np.array([0.0, 0.5, 1.2, 2.5, 3.3, 5.0])
    I, tau, vth = 2.0, 1.5, 1.0
    ref = threshold_sensitivities(ts, I, tau, vth)
    g = np.random.default_rng(3).normal(size=(1, ts.size))
    m = dsp.DiffsolModule(code, method=method, rtol=1e-10, atol=1e-12)
    grad = m.reverse_mode([I, tau, vth], ts, g).numpy()
    np.testing.assert_allclose(grad, (ref * g).sum(axis=1), rtol=1e-6)


@pytest.mark.parametrize("method", EVENT_METHODS)
def test_simultaneous_events_and_reset_parameter(method):
    """Two stop elements fire at t = 4 (both resets, in the order of k, undone in reverse)
    and the reset depends on a parameter (the R_p term): against forward mode."""
    code = """
in_i { cl = 2.0, vol = 10.0, a = 1.0 }
tdose_i { 4.0, 4.0, 8.0 }
amt_i { 50.0, 30.0, 50.0 }
u_i { q = 50.0 }
F_i { -cl / vol * q }
stop_i { tdose_i - t }
reset_i { a * q + amt_i[N] }
out_i { q / vol }
"""
    ts = np.array([0.0, 1.0, 4.0, 5.0, 8.0, 9.0])
    g = np.random.default_rng(4).normal(size=(1, ts.size))
    p = [2.0, 10.0, 1.1]
    m = dsp.DiffsolModule(code, method=method, rtol=1e-10, atol=1e-12)
    grad = m.reverse_mode(p, ts, g).numpy()
    assert m.stats["events"] == 3
    _, sens = m.forward_mode(p, ts)
    np.testing.assert_allclose(grad, (sens.numpy() * g[None]).sum(axis=(1, 2)), rtol=1e-6)


DAE_THRESHOLD = """
in_i { cur = 2.0, tau = 1.5, vth = 2.0, c = 2.0 }
u_i { x = 0.0, y = 0.0 }
dudt_i { dxdt = 0, dydt = 0 }
M_i { dxdt, 0 }
F_i { (cur - x) / tau, c * x - y }
STOP
reset_i { 0.0, 0.0 }
out_i { x, y * y }
"""


@pytest.mark.parametrize("stop", ["stop_i { x - vth / 2 }", "stop_i { y - vth }"])
def test_dae_threshold_through_events(stop):
    """IDAS: an index-1 DAE whose firing times depend on the parameters, with the stop
    function on the differential or on the algebraic state (g_u s- then needs the
    consistent algebraic sensitivity: the jump goes through the index-1 system);
    eight firings. Against forward mode and central differences."""
    m = dsp.DiffsolModule(DAE_THRESHOLD.replace("STOP", stop), method="bdf", rtol=1e-10,
                          atol=1e-10)
    p = [2.0, 1.5, 2.0, 2.0]
    ts = np.array([0.0, 0.5, 1.2, 2.5, 3.3, 5.0, 9.0])
    g = np.random.default_rng(5).normal(size=(2, ts.size))
    grad = m.reverse_mode(p, ts, g).numpy()
    assert m.stats["events"] == 8
    _, sens = m.forward_mode(p, ts)
    fwd = (sens.numpy() * g[None]).sum(axis=(1, 2))
    np.testing.assert_allclose(grad, fwd, rtol=1e-6, atol=1e-8 * np.abs(fwd).max())
    ref = central_fd(m, p, ts, g)
    np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_dae_dosing_through_events():
    """IDAS, fixed event times, a reset with a parameter and an algebraic output."""
    code = """
in_i { cl = 2.0, vol = 10.0, a = 1.1 }
tdose_i { 4.0, 8.0 }
u_i { q = 50.0, z = 5.0 }
dudt_i { dqdt = 0, dzdt = 0 }
M_i { dqdt, 0 }
F_i { -cl / vol * q, q / vol - z }
stop_i { tdose_i - t }
reset_i { a * q + 50.0, z }
out_i { z, q }
"""
    m = dsp.DiffsolModule(code, method="bdf", rtol=1e-10, atol=1e-10)
    p = [2.0, 10.0, 1.1]
    ts = np.array([0.0, 1.0, 4.0, 5.0, 8.0, 9.0])
    g = np.random.default_rng(6).normal(size=(2, ts.size))
    grad = m.reverse_mode(p, ts, g).numpy()
    _, sens = m.forward_mode(p, ts)
    np.testing.assert_allclose(grad, (sens.numpy() * g[None]).sum(axis=(1, 2)), rtol=1e-6)
    # closed form: z = q / vol on the constraint; q(9) = (a (a 50 e^{-4k} + 50) e^{-4k} + 50) e^{-k}
    k = 2.0 / 10.0
    a = 1.1
    gq = np.zeros_like(g)
    gq[1, -1] = 1.0
    dq_da = m.reverse_mode(p, ts, gq).numpy()[2]
    want = (2 * a * 50 * np.exp(-8 * k) + 50 * np.exp(-4 * k)) * np.exp(-k)
    assert dq_da == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("method", ["bdf", "adams", "tsit45", "esdirk34"])
def test_backward_statistics(method):
    """m.stats after reverse_mode counts the backward pass: its steps and its restarts,
    one at each output time with a non-zero gradient column after the first; a solve
    resets them to 0."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), method=method, rtol=1e-8, atol=1e-10)
    p = m.default_params.numpy()
    ts = np.linspace(0.0, 10.0, 6)
    g = np.zeros((m.nout, ts.size))
    g[0, 5] = g[1, 4] = g[0, 2] = 1.0  # jumps at t = 10 (the start), 8 and 4
    m.reverse_mode(p, ts, g)
    assert m.stats["backward_restarts"] == 2
    assert m.stats["backward_steps"] > 10
    g[:, 2] = 0.0
    m.reverse_mode(p, ts, g)
    assert m.stats["backward_restarts"] == 1
    m.solve_dense(p, ts)
    assert m.stats["backward_steps"] == 0 and m.stats["backward_restarts"] == 0


@pytest.mark.parametrize("scale", [1e-9, 1e6])
@pytest.mark.parametrize("method", ["bdf", "adams", "tsit45", "esdirk34"])
def test_gradient_accuracy_does_not_depend_on_the_loss_scale(method, scale):
    """The backward pass's absolute tolerance follows the scale of the adjoint, so
    scaling the loss scales the gradient and nothing else: at 1e-9 a fixed atol made
    the gradient 5-10% wrong. Lotka-Volterra against central differences, dosing
    (events) against its closed form."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), method=method, rtol=1e-8, atol=1e-10)
    p = m.default_params.numpy()
    ts = np.linspace(0.0, 10.0, 11)
    g = np.random.default_rng(2).normal(size=(m.nout, ts.size))
    want = central_fd(dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-11, atol=1e-13),
                      p, ts, g)
    grad = m.reverse_mode(p, ts, scale * g).numpy() / scale
    np.testing.assert_allclose(grad, want, rtol=1e-4)
    m = dsp.DiffsolModule(model_source("dosing"), method=method, rtol=1e-8, atol=1e-10)
    ts = np.array([0.0, 1.0, 4.0, 6.0, 9.5, 12.5, 16.0])
    g = np.random.default_rng(3).normal(size=(1, ts.size))
    grad = m.reverse_mode([2.0, 10.0], ts, scale * g).numpy() / scale
    np.testing.assert_allclose(grad, dosing_closed_form_grad(ts, g[0]), rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-9, 1e6])
def test_dae_gradient_accuracy_does_not_depend_on_the_loss_scale(scale):
    """The same through IDAS (Robertson DAE), against central differences."""
    code = model_source("robertson_dae")
    m = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10)
    p = m.default_params.numpy()
    ts = np.logspace(-2, 2, 5)
    g = np.random.default_rng(4).normal(size=(m.nout, ts.size))
    want = central_fd(dsp.DiffsolModule(code, rtol=1e-11, atol=1e-13), p, ts, g)
    grad = m.reverse_mode(p, ts, scale * g).numpy() / scale
    np.testing.assert_allclose(grad, want, rtol=1e-4)


def test_adjoint_tolerances_option():
    """DiffsolModule(adjoint_rtol=..., adjoint_atol=...): a looser backward integration
    takes fewer steps and gives a gradient within its tolerance of central differences of
    an rtol-1e-12 solve (Robertson, a gradient at every output time); the default is
    tighter; batches use the same tolerances row by row; the options are checked and
    survive pickling."""
    import pickle

    code = model_source("robertson_ode")
    times = np.logspace(-4, 4, 9)
    g = np.random.default_rng(0).standard_normal((3, times.size))
    p = dsp.DiffsolModule(code).default_params.numpy()
    ref = central_fd(dsp.DiffsolModule(code, rtol=1e-12, atol=1e-14), p, times, g)
    scale = np.abs(ref * p).max()
    errors, steps = [], []
    for ar in (None, 1e-6):
        m = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, adjoint_rtol=ar)
        grad = m.reverse_mode(p, times, g).numpy()
        errors.append(np.abs((grad - ref) * p).max() / scale)
        steps.append(m.stats["backward_steps"])
    assert errors[0] < 1e-5 and errors[1] < 1e-3
    assert steps[1] < 0.6 * steps[0] and errors[1] > errors[0]
    # a batch: each row as alone
    pb = np.stack([p, p * 1.05])
    gb = np.stack([g, -g])
    grads = m.reverse_mode(pb, times, gb, threads=2).numpy()
    for r in range(2):
        np.testing.assert_array_equal(grads[r], m.reverse_mode(pb[r], times, gb[r]).numpy())
    m2 = pickle.loads(pickle.dumps(m))
    assert (m2.adjoint_rtol, m2.adjoint_atol) == (1e-6, None)
    np.testing.assert_array_equal(m2.reverse_mode(p, times, g).numpy(), grad)
    for bad in (0.0, -1e-6, float("nan"), "1e-6", True):
        with pytest.raises(ValueError, match="adjoint_rtol"):
            dsp.DiffsolModule(code, adjoint_rtol=bad)
    with pytest.raises(ValueError, match="adjoint_atol"):
        dsp.DiffsolModule(code, adjoint_atol=float("inf"))
