"""gradient_method: the adjoint, forward sensitivities, or the cheaper of the two ("auto")
behind reverse_mode and backward through solve_dense. References: central differences,
closed forms and the Robertson gradient from SciPy-integrated sensitivities."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import central_fd, dosing_closed_form_grad, model_source
from diffsol_pytorch.autograd import adjoint_budget

pytestmark = pytest.mark.gradient

LV_TIMES = np.linspace(0.0, 10.0, 11)


def lv(gradient_method, **kw):
    return dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-10, atol=1e-12,
                             gradient_method=gradient_method, **kw)


@pytest.mark.parametrize("gm", ["adjoint", "discrete", "forward", "auto"])
def test_reverse_mode_matches_finite_differences(gm):
    m = lv(gm)
    p = m.default_params.numpy()
    g = np.random.default_rng(5).normal(size=(m.nout, LV_TIMES.size))
    grad = m.reverse_mode(p, LV_TIMES, g).numpy()
    np.testing.assert_allclose(grad, central_fd(m, p, LV_TIMES, g), rtol=1e-5, atol=1e-8)
    # bdf on an ODE without events: auto takes the discrete adjoint
    assert m.last_gradient_method == {"adjoint": "adjoint", "forward": "forward"}.get(
        gm, "discrete")


def test_auto_takes_the_adjoint_for_few_output_times_or_many_parameters():
    """Where the discrete adjoint does not apply (here: adams), "auto" chooses between
    the adjoint and forward sensitivities."""
    m = lv("auto", method="adams")
    p = m.default_params.numpy()
    g = np.zeros((m.nout, LV_TIMES.size))
    g[:, [4, 10]] = 1.0  # 2 output times < max(4, 2 * 4)
    m.reverse_mode(p, LV_TIMES, g)
    assert m.last_gradient_method == "adjoint" and m.stats["backward_steps"] > 0
    g[:, :] = 1.0
    m.reverse_mode(p, LV_TIMES, g)
    assert m.last_gradient_method == "forward" and m.stats["backward_steps"] == 0
    names = ", ".join(f"a{k} = 0.1" for k in range(9))
    total = " + ".join(f"a{k}" for k in range(9))
    many = dsp.DiffsolModule(f"in_i {{ {names} }}\nu {{ 1 }}\nF {{ -({total}) * u }}\n",
                             rtol=1e-10, atol=1e-12, gradient_method="auto", method="adams")
    ts = np.linspace(0.0, 2.0, 41)
    g = np.zeros((1, ts.size))
    g[0, [20, 40]] = 1.0
    grad = many.reverse_mode(np.full(9, 0.1), ts, g).numpy()
    assert many.last_gradient_method == "adjoint"  # 9 parameters
    want = float(np.sum(-ts * np.exp(-0.9 * ts) * g[0]))  # d/da_k sum g exp(-sum(a) t)
    np.testing.assert_allclose(grad, np.full(9, want), rtol=1e-7)
    # with all 41 output times the adjoint's 40 restarts take 12 backward steps per
    # forward step, and forward sensitivities cost 2.2x less: "auto" stops the adjoint
    # at its budget (8.2 for 9 parameters) and takes them
    grad = many.reverse_mode(np.full(9, 0.1), ts, np.ones((1, ts.size))).numpy()
    assert many.last_gradient_method == "forward"
    want = float(np.sum(-ts * np.exp(-0.9 * ts)))
    np.testing.assert_allclose(grad, np.full(9, want), rtol=1e-7)


def test_backward_contracts_the_forward_pass_sensitivities():
    """With forward sensitivities, the solve computes them and backward only contracts
    them: no second solve (the solver's generation does not move)."""
    m = lv("forward")
    p = m.default_params.clone().requires_grad_(True)
    g = torch.from_numpy(np.random.default_rng(6).normal(size=(m.nout, LV_TIMES.size)))
    y = m.solve_dense(p, LV_TIMES)
    generation = m._solver_generation()
    (y * g).sum().backward()
    assert m._solver_generation() == generation
    assert m.last_gradient_method == "forward"
    want = central_fd(m, p.detach().numpy(), LV_TIMES, g.numpy())
    np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-5, atol=1e-8)
    # torch.func.grad takes the same route
    fg = torch.func.grad(lambda q: (m.solve_dense(q, LV_TIMES) * g).sum())(p.detach())
    np.testing.assert_allclose(fg.numpy(), p.grad.numpy(), rtol=1e-12)


def test_batches_agree_with_the_adjoint_row_by_row():
    adj, fwd = lv("adjoint"), lv("forward")
    p0 = adj.default_params.numpy()
    P = np.stack([p0, p0 * 1.05, p0 * 0.95])
    G = np.random.default_rng(7).normal(size=(3, adj.nout, LV_TIMES.size))
    got = fwd.reverse_mode(P, LV_TIMES, G, threads=2).numpy()
    assert fwd.last_gradient_method == "forward"
    want = np.stack([adj.reverse_mode(P[b], LV_TIMES, G[b]).numpy() for b in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    Pt = torch.from_numpy(P).requires_grad_(True)
    (fwd.solve_dense(Pt, LV_TIMES, threads=2) * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(Pt.grad.numpy(), want, rtol=1e-6)


def test_events_and_stop_without_reset():
    """Dosing (resets) against its closed form; after a stop without reset the NaN
    columns count as zero where grad_output is zero and are refused where it is not."""
    m = dsp.DiffsolModule(model_source("dosing"), rtol=1e-10, atol=1e-12,
                          gradient_method="forward")
    ts = np.array([0.0, 1.0, 4.0, 6.0, 9.5, 12.5, 16.0])
    g = np.random.default_rng(8).normal(size=(1, ts.size))
    np.testing.assert_allclose(m.reverse_mode([2.0, 10.0], ts, g).numpy(),
                               dosing_closed_form_grad(ts, g[0]), rtol=1e-6)
    s = dsp.DiffsolModule("in_i { r = 1 }\nu { 1 }\nF { -r * u }\nstop { u - 0.5 }\n",
                          gradient_method="forward")
    with pytest.raises(ValueError, match="after the solve stopped"):
        s.reverse_mode([1.0], [0.0, 1.0], np.ones((1, 2)))
    grad = s.reverse_mode([1.0], [0.0, 0.5, 1.0], np.array([[0.0, 1.0, 0.0]])).numpy()
    np.testing.assert_allclose(grad, [-0.5 * np.exp(-0.5)], rtol=1e-5)


def test_dae_forward_agrees_with_adjoint():
    code = model_source("robertson_dae")
    ts = np.logspace(-2, 2, 9)
    a = dsp.DiffsolModule(code, rtol=1e-9, atol=1e-11)
    f = dsp.DiffsolModule(code, rtol=1e-9, atol=1e-11, gradient_method="auto")
    p = a.default_params.numpy()
    g = np.random.default_rng(9).normal(size=(a.nout, ts.size))
    gf = f.reverse_mode(p, ts, g).numpy()
    assert f.last_gradient_method == "forward"  # 3 parameters, 9 output times
    np.testing.assert_allclose(gf, a.reverse_mode(p, ts, g).numpy(), rtol=1e-5)


def test_option_is_checked_and_kept():
    with pytest.raises(ValueError, match="gradient_method"):
        dsp.DiffsolModule(model_source("decay"), gradient_method="backprop")
    m = dsp.DiffsolModule(model_source("decay"), gradient_method="auto")
    assert m.last_gradient_method is None
    assert pickle.loads(pickle.dumps(m)).gradient_method == "auto"
    g = dsp.reverse_mode(model_source("decay"), [0.7, 2.0], [0.0, 1.0], [[1.0, 1.0]],
                         gradient_method="forward")
    np.testing.assert_allclose(g.numpy(), [-2.0 * np.exp(-0.7), 1.0 + np.exp(-0.7)], rtol=1e-5)


def test_auto_falls_back_to_forward_where_the_adjoint_does_not_reach():
    """An implicit ARKODE method with the matrix-free linear solver has no adjoint:
    "adjoint" refuses it, "auto" takes forward sensitivities (u = a exp(-k t))."""
    code = "in_i { k = 0.8, a = 2.0 }\nu { a }\nF { -k * u }\n"
    ts = np.array([0.0, 1.0, 2.0])
    g = np.array([[0.0, 1.0, 0.5]])
    with pytest.raises(ValueError, match="reverse mode"):
        dsp.DiffsolModule(code, method="esdirk34", linear_solver="spgmr").reverse_mode(
            [0.8, 2.0], ts, g)
    m = dsp.DiffsolModule(code, method="esdirk34", linear_solver="spgmr", rtol=1e-10,
                          atol=1e-12, gradient_method="auto")
    grad = m.reverse_mode([0.8, 2.0], ts, g).numpy()
    assert m.last_gradient_method == "forward"
    e = np.exp(-0.8 * ts)
    want = [float((g[0] * -ts * 2.0 * e).sum()), float((g[0] * e).sum())]
    np.testing.assert_allclose(grad, want, rtol=1e-7)


def _chain(rates, stop=False):
    """x0' = -k0 x0, x_i' = k_{i-1} x_{i-1} - k_i x_i: a linear decay chain, stiff for
    rates over several decades. stop: with a stop condition that never fires (x0 > 0),
    which keeps the discrete adjoint out ("auto" then chooses between the adjoint and
    forward sensitivities)."""
    n = len(rates)
    names = ", ".join(f"k{i} = {float(k)!r}" for i, k in enumerate(rates))
    rhs = ", ".join(["-k0 * x0"] + [f"k{i - 1} * x{i - 1} - k{i} * x{i}" for i in range(1, n)])
    states = ", ".join(f"x{i} = {1.0 if i == 0 else 0.0}" for i in range(n))
    code = f"in_i {{ {names} }}\nu_i {{ {states} }}\nF_i {{ {rhs} }}\n"
    return code + "stop { x0 + 1 }\n" if stop else code


def _chain_gradient(rates, ts, g):
    """sum(g * x) and its gradient in closed form: x(t) = expm(A t) e0, and
    d x(t) / d k = the top-right block of expm([[A, E], [0, A]] t) e0 with E = dA/dk."""
    from scipy.linalg import expm

    n = len(rates)
    a = np.diag(-np.asarray(rates, float)) + np.diag(np.asarray(rates[:-1], float), -1)
    e0 = np.eye(n)[:, 0]
    grad = np.zeros(n)
    for k in range(n):
        e = np.zeros((n, n))
        e[k, k] = -1.0
        if k + 1 < n:
            e[k + 1, k] = 1.0
        big = np.block([[a, e], [np.zeros((n, n)), a]])
        for j, t in enumerate(ts):
            grad[k] += g[:, j] @ (expm(big * t)[:n, n:] @ e0)
    return grad


def test_auto_learns_that_forward_sensitivities_are_cheaper():
    """A stiff chain with 9 parameters and a loss over 21 output times: every output time
    restarts the adjoint's backward integration into a new fast transient (hundreds of
    backward steps each). "auto" runs the adjoint with a step budget; it stops there, and
    the gradient comes from forward sensitivities, and so do the later ones for these
    output times. Other output times try the adjoint again. Every gradient matches the
    closed form."""
    rates = np.logspace(-2, 4, 9)
    ts = np.logspace(-3, 2, 21)
    code = _chain(rates, stop=True)
    g = np.random.default_rng(3).normal(size=(9, ts.size))
    want = _chain_gradient(rates, ts, g)
    # the adjoint alone: many more backward steps than forward ones
    adj = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(adj.reverse_mode(rates, ts, g).numpy(), want, rtol=1e-6,
                               atol=1e-9 * np.abs(want).max())
    full = adj.stats["backward_steps"]
    assert full > 20 * adj.stats["steps"]
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12, gradient_method="auto")
    for _ in range(2):
        grad = m.reverse_mode(rates, ts, g).numpy()
        assert m.last_gradient_method == "forward"
        np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    # the stopped pass: over its budget, well short of the full one
    st = m._solver
    assert st.reverse(rates, ts, g, 1.0) is None
    assert m.stats["steps"] < m.stats["backward_steps"] < full / 2
    # other output times: the adjoint again (the last one only: no restart, 6 backward
    # steps per forward step, within the budget)
    np.testing.assert_allclose(m.reverse_mode(rates, ts[-1:], g[:, -1:]).numpy(),
                               _chain_gradient(rates, ts[-1:], g[:, -1:]), rtol=1e-6)
    assert m.last_gradient_method == "adjoint"
    # through autograd: backward stops the adjoint of the first solve's checkpoints;
    # the second solve computes the sensitivities and backward contracts them
    m2 = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12, gradient_method="auto")
    for _ in range(2):
        p = torch.tensor(rates, requires_grad=True)
        (m2.solve_dense(p, ts) * torch.from_numpy(g)).sum().backward()
        assert m2.last_gradient_method == "forward"
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-6,
                                   atol=1e-9 * np.abs(want).max())


def test_auto_budget_in_batches():
    """The same chain as a batch of 2 parameter sets (the kernel's thread pool): the
    batched adjoint stops at its budget, both rows come from forward sensitivities and
    match their closed forms, and a single gradient over the same output times then takes
    forward sensitivities at once."""
    rates = np.logspace(-2, 4, 9)
    ts = np.logspace(-3, 2, 21)
    m = dsp.DiffsolModule(_chain(rates, stop=True), rtol=1e-10, atol=1e-12,
                          gradient_method="auto")
    p = np.stack([rates, rates * 1.1])
    g = np.random.default_rng(5).normal(size=(2, 9, ts.size))
    grad = m.reverse_mode(p, ts, g, threads=2).numpy()
    assert m.last_gradient_method == "forward"
    f, b = m._get_batch().last_steps
    assert b > adjoint_budget(m) * f  # the stopped pass
    for r in range(2):
        want = _chain_gradient(p[r], ts, g[r])
        np.testing.assert_allclose(grad[r], want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    m.reverse_mode(rates, ts, g[0])
    assert m.last_gradient_method == "forward" and m.stats["backward_steps"] == 0


def test_auto_keeps_the_adjoint_where_it_is_cheaper():
    """The same measurement on a non-stiff problem with 12 parameters (adams: no
    discrete adjoint): the adjoint's restarts cost little there, so "auto" keeps it."""
    names = ", ".join(f"a{k} = {0.5 / 12:.17g}" for k in range(12))
    total = " + ".join(f"a{k}" for k in range(12))
    code = (f"in_i {{ {names} }}\nu_i {{ x = 1, y = 0 }}\ns {{ {total} }}\n"
            "F_i { -s * x + y, -x - 0.1 * y }\n")
    m = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, gradient_method="auto",
                          method="adams")
    ts = np.linspace(0.0, 10.0, 21)
    g = np.random.default_rng(4).normal(size=(m.nout, ts.size))
    p = m.default_params.numpy()
    grads = []
    for _ in range(3):
        grads.append(m.reverse_mode(p, ts, g).numpy())
        assert m.last_gradient_method == "adjoint"
    np.testing.assert_allclose(grads[0], central_fd(m, p, ts, g), rtol=1e-5)
    np.testing.assert_array_equal(grads[0], grads[2])
