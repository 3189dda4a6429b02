"""gradient_method="discrete": the discrete adjoint of CVODES' BDF steps
(_ckernel/sens_discrete.c). References: central differences of the solve, forward
sensitivities at a tight tolerance, a closed form, and the continuous adjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import central_fd, model_source

pytestmark = pytest.mark.gradient

CASES = {
    "robertson_ode": np.logspace(-4, 4, 9),
    "vanderpol": np.linspace(0.0, 10.0, 11),
    "lotka_volterra": np.linspace(0.0, 20.0, 21),
    "logistic": np.linspace(0.0, 10.0, 11),
    "heat1d": np.linspace(0.0, 0.1, 11),
    "decay": np.linspace(0.0, 5.0, 6),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_finite_differences_and_forward_mode(name):
    """A loss on every output time at rtol 1e-8: the discrete gradient agrees with
    central differences to 1e-4 and with forward sensitivities at rtol 1e-12 to 1e-5 of
    the largest component, from one backward step per forward step and no restart."""
    ts = CASES[name]
    m = dsp.DiffsolModule(model_source(name), rtol=1e-8, atol=1e-10, gradient_method="discrete")
    p = m.default_params.numpy()
    g = np.random.default_rng(11).normal(size=(m.nout, ts.size))
    grad = m.reverse_mode(p, ts, g).numpy()
    assert m.last_gradient_method == "discrete"
    assert m.stats["backward_steps"] == m.stats["steps"] > 0
    assert m.stats["backward_restarts"] == 0
    ref = dsp.DiffsolModule(model_source(name), rtol=1e-12, atol=1e-14,
                            gradient_method="forward").reverse_mode(p, ts, g).numpy()
    scale = np.abs(ref).max()
    np.testing.assert_allclose(grad, ref, rtol=0, atol=1e-5 * scale)
    fd_model = dsp.DiffsolModule(model_source(name), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(grad, central_fd(fd_model, p, ts, g), rtol=0, atol=1e-4 * scale)


def test_closed_form_and_outputs_of_several_rows():
    """u = (a exp(-k t), a exp(-2 k t)) with out = (u0 + u1, 3 u1): the gradient of a
    loss on both rows against the closed form (the layout of grad_output: (nout, nt))."""
    code = ("in_i { k = 0.7, a = 2.0 }\nu_i { x = a, y = a }\nF_i { -k * x, -2 * k * y }\n"
            "out_i { x + y, 3 * y }\n")
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12, gradient_method="discrete")
    ts = np.array([0.0, 0.5, 1.0, 3.0])
    g = np.array([[1.0, -0.5, 0.25, 2.0], [0.0, 1.0, -1.0, 0.5]])
    grad = m.reverse_mode([0.7, 2.0], ts, g).numpy()
    e1, e2 = np.exp(-0.7 * ts), np.exp(-1.4 * ts)
    dk = g[0] * 2.0 * (-ts * e1 - 2 * ts * e2) + g[1] * 3 * 2.0 * (-2 * ts * e2)
    da = g[0] * (e1 + e2) + g[1] * 3 * e2
    np.testing.assert_allclose(grad, [dk.sum(), da.sum()], rtol=1e-7)
    assert m.last_gradient_method == "discrete"


def test_checkpoint_outputs_and_repeated_backward():
    """The recorded forward pass returns solve_dense's outputs bit for bit, and backward
    runs again with another grad_output without a new forward pass."""
    ts = CASES["robertson_ode"]
    m = dsp.DiffsolModule(model_source("robertson_ode"), rtol=1e-8, atol=1e-10,
                          gradient_method="discrete")
    p = m.default_params
    y = m.solve_dense(p, ts)
    yc, ckpt = m.solve_dense_with_checkpointing(p, ts)
    assert torch.equal(y, yc)
    g = np.random.default_rng(12).normal(size=(m.nout, ts.size))
    g1 = ckpt.backward(g).numpy()
    g2 = ckpt.backward(-2.0 * g).numpy()
    np.testing.assert_allclose(g2, -2.0 * g1, rtol=1e-12, atol=1e-12 * np.abs(g1).max())
    np.testing.assert_allclose(g1, m.reverse_mode(p, ts, g).numpy(), rtol=1e-12)


def test_autograd_and_batches():
    """backward() through solve_dense and a batch of parameter sets (the kernel's thread
    pool) give the row-by-row discrete gradients."""
    ts = CASES["lotka_volterra"]
    m = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-8, atol=1e-10,
                          gradient_method="discrete")
    p0 = m.default_params.numpy()
    P = np.stack([p0, 1.05 * p0, 0.95 * p0])
    G = np.random.default_rng(13).normal(size=(3, m.nout, ts.size))
    rows = np.stack([m.reverse_mode(P[b], ts, G[b]).numpy() for b in range(3)])
    np.testing.assert_allclose(m.reverse_mode(P, ts, G, threads=2).numpy(), rows, rtol=1e-12)
    assert m.last_gradient_method == "discrete"
    Pt = torch.from_numpy(P).requires_grad_(True)
    (m.solve_dense(Pt, ts, threads=2) * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(Pt.grad.numpy(), rows, rtol=1e-12)
    p = torch.from_numpy(p0.copy()).requires_grad_(True)
    (m.solve_dense(p, ts) * torch.from_numpy(G[0])).sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), rows[0], rtol=1e-12)


@pytest.mark.parametrize("name, options", [
    ("dosing", {}),
    ("robertson_dae", {}),
    ("lotka_volterra", {"method": "adams"}),
])
def test_falls_back_to_the_continuous_adjoint(name, options):
    """Events, a mass matrix, adams: where the discrete adjoint does not apply,
    "discrete" is the continuous adjoint (same gradient, bit for bit)."""
    ts = np.linspace(0.0, 10.0, 6)
    code = model_source(name)
    d = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, gradient_method="discrete", **options)
    a = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, **options)
    p = d.default_params.numpy()
    g = np.random.default_rng(14).normal(size=(d.nout, ts.size))
    np.testing.assert_array_equal(d.reverse_mode(p, ts, g).numpy(),
                                  a.reverse_mode(p, ts, g).numpy())
    assert d.last_gradient_method == "adjoint"


def test_cheaper_than_the_continuous_adjoint_in_steps():
    """heat1d with a loss on every output time: the continuous adjoint restarts at each
    and resolves a new transient of lambda (several times the forward steps); the
    discrete one takes exactly the forward steps. (Times: benchmarks/bench_gradients.py.)"""
    ts = CASES["heat1d"]
    code = model_source("heat1d")
    g = np.random.default_rng(15).normal(size=(50, ts.size))
    a = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10)
    d = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, gradient_method="discrete")
    p = a.default_params.numpy()
    ga = a.reverse_mode(p, ts, g).numpy()
    gd = d.reverse_mode(p, ts, g).numpy()
    assert a.stats["backward_steps"] > 4 * d.stats["backward_steps"]
    np.testing.assert_allclose(gd, ga, rtol=0, atol=1e-6 * np.abs(ga).max())


def _dense_net(nparams):
    """10 states, dense Jacobian (10 colours), 1 or 2 parameters."""
    ins = "k = 1.0" + (", c = 0.5" if nparams == 2 else "")
    c = "c" if nparams == 2 else "0.5"
    return (f"in_i {{ {ins} }}\nA_ij {{ (0..10, 0..10): 0.3 }}\n"
            "u_i { (0:5): 1.0, (5:10): -0.5 }\n"
            f"F_i {{ -k * u_i + {c} * tanh(A_ij * u_j) }}\n")


def test_auto_prefers_forward_sensitivities_for_one_parameter_and_a_dense_jacobian():
    """"auto": the discrete adjoint, except with one parameter and a Jacobian of more than
    8 colours (each backward step then pays for (I - gamma J)^T); the gradients agree."""
    ts = np.linspace(0.0, 5.0, 11)
    g = np.random.default_rng(16).normal(size=(10, ts.size))
    one = dsp.DiffsolModule(_dense_net(1), rtol=1e-9, atol=1e-11, gradient_method="auto")
    two = dsp.DiffsolModule(_dense_net(2), rtol=1e-9, atol=1e-11, gradient_method="auto")
    assert one._model.jac_ncolors > 8
    g1 = one.reverse_mode([1.0], ts, g).numpy()
    assert one.last_gradient_method == "forward"
    g2 = two.reverse_mode([1.0, 0.5], ts, g).numpy()
    assert two.last_gradient_method == "discrete"
    np.testing.assert_allclose(g2[0], g1[0], rtol=1e-6)
    disc = dsp.DiffsolModule(_dense_net(1), rtol=1e-9, atol=1e-11, gradient_method="discrete")
    np.testing.assert_allclose(disc.reverse_mode([1.0], ts, g).numpy(), g1, rtol=1e-6)
    assert disc.last_gradient_method == "discrete"
