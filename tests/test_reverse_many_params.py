"""Reverse mode with many parameters.

Above 256 parameters (DSK_SKETCH_MIN) the CVODES/IDAS backward pass no longer
integrates the P-component gradient quadrature inside CVODES; it accumulates it per
backward step with a Gauss rule and lets CVODES control the step on a 4-component sketch
of it (see ``_ckernel/sens_adjoint.c``; the C tests run that path at 24 parameters through
``opt.sketch_min``). The closed-form tests below run it at 260 and 261 parameters; the
others (18-40 parameters) check CVODES' own quadrature at many parameters. All against
closed forms, central finite differences and forward sensitivities (an independent
CVODES method), with several output rows, events, checkpoint times and small checkpoint
spacing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp

from conftest import central_fd


def chain_model(n: int) -> tuple[str, np.ndarray]:
    """u_i' = -a_i u_i + c_i u_{i-1} + w_i sin(t), u_i(0) = 1: 3n parameters, all distinct."""
    a = 0.3 + 0.07 * np.arange(n)
    c = 0.5 - 0.03 * np.arange(n)
    w = 0.2 + 0.05 * np.arange(n)
    names = [f"a{i} = {a[i]}" for i in range(n)] + [f"c{i} = {c[i]}" for i in range(n)] + \
            [f"w{i} = {w[i]}" for i in range(n)]
    states = ", ".join(f"x{i} = 1" for i in range(n))
    rhs = ", ".join(
        f"-a{i} * x{i}" + (f" + c{i} * x{i - 1}" if i > 0 else "") + f" + w{i} * sin(t)"
        for i in range(n))
    code = (f"in_i {{ {', '.join(names)} }}\nu_i {{ {states} }}\nF_i {{ {rhs} }}\n"
            f"out_i {{ x0, x{n - 1}, x{n // 2} * x{n // 2} }}\n")
    return code, np.concatenate([a, c, w])


def decay_model(n: int) -> str:
    """u_i' = -a_i u_i, u_i(0) = b_i: closed form b_i exp(-a_i t)."""
    names = ", ".join([f"a{i} = {0.2 + 0.1 * i}" for i in range(n)] +
                      [f"b{i} = {1.0 + 0.05 * i}" for i in range(n)])
    return (f"in_i {{ {names} }}\nu_i {{ {', '.join(f'x{i} = b{i}' for i in range(n))} }}\n"
            f"F_i {{ {', '.join(f'-a{i} * x{i}' for i in range(n))} }}\n")


def rel_err(got, want) -> float:
    """Error relative to the largest component (the sketch is accurate in norm)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("method", ["bdf", "adams"])
def test_closed_form_many_outputs(method):
    n = 130  # 260 parameters: the sketched quadrature
    m = dsp.DiffsolModule(decay_model(n), method=method, rtol=1e-10, atol=1e-12)
    assert m.nparams == 2 * n
    p = m.default_params.numpy()
    a, b = p[:n], p[n:]
    times = np.linspace(0.0, 5.0, 26)
    rng = np.random.default_rng(3)
    g = rng.standard_normal((n, times.size))
    e = np.exp(-a[:, None] * times[None, :])
    want = np.concatenate([(g * (-times[None, :]) * b[:, None] * e).sum(1), (g * e).sum(1)])
    grad = m.reverse_mode(p, times, g).numpy()
    assert rel_err(grad, want) < 1e-6


@pytest.mark.parametrize("checkpoint_steps", [None, 15])
def test_against_forward_mode_and_fd(checkpoint_steps):
    code, p = chain_model(6)  # 18 parameters
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12, checkpoint_steps=checkpoint_steps)
    times = np.linspace(0.0, 6.0, 13)
    rng = np.random.default_rng(7)
    g = rng.standard_normal((m.nout, times.size))
    g[:, 4] = 0.0  # an output time without a jump
    grad = m.reverse_mode(p, times, g).numpy()
    _, sens = m.forward_mode(p, times)
    fwd = np.einsum("pot,ot->p", sens.numpy(), g)
    assert rel_err(grad, fwd) < 1e-6
    assert rel_err(grad, central_fd(m, p, times, g)) < 1e-5


def test_checkpoint_times_and_repeated_backward():
    code, p = chain_model(5)
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    times = np.linspace(0.0, 4.0, 9)
    rng = np.random.default_rng(11)
    plain = m.solve_dense(p, times).numpy()
    _, sens = m.forward_mode(p, times)
    ys, ckpt = m.solve_dense_with_checkpointing(p, times, checkpoint_times=[1.3, 2.9])
    np.testing.assert_allclose(ys.numpy(), plain, rtol=1e-9, atol=1e-12)
    for _ in range(2):
        g = rng.standard_normal((m.nout, times.size))
        want = np.einsum("pot,ot->p", sens.numpy(), g)
        assert rel_err(ckpt.backward(g).numpy(), want) < 1e-6


def test_events_many_params():
    """A threshold reset (state-dependent event times) with 12 extra parameters."""
    k = 12
    extra = ", ".join(f"s{i} = {0.01 * (i + 1)}" for i in range(k))
    total = " + ".join(f"s{i}" for i in range(k))
    code = (f"in_i {{ cur = 2.0, tau = 1.5, vth = 1.0, {extra} }}\nu {{ 0.0 }}\n"
            f"F {{ (cur - u) / tau + ({total}) * sin(3 * t) }}\nstop {{ u - vth }}\nreset {{ 0.0 }}\n")
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    p = m.default_params.numpy()
    times = np.linspace(0.0, 5.0, 11)
    g = np.cos(np.arange(times.size))[None, :]
    grad = m.reverse_mode(p, times, g).numpy()
    _, sens = m.forward_mode(p, times)
    assert rel_err(grad, np.einsum("pot,ot->p", sens.numpy(), g)) < 1e-6
    assert rel_err(grad, central_fd(m, p, times, g)) < 1e-4


def test_autograd_many_params():
    code, p0 = chain_model(4)
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    times = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    y = m(p, times)
    loss = (y ** 2).sum()
    loss.backward()
    w = 2 * y.detach().numpy()
    assert rel_err(p.grad.numpy(), central_fd(m, p0, times.numpy(), w)) < 1e-5


def dae_model(n: int) -> str:
    """mm x_0' = -a_0 x_0, x_i' = -a_i x_i, x_i(0) = 1, and the algebraic
    0 = y - sum_i b_i x_i: closed form y = sum_i b_i exp(-a_i t) at mm = 1 (IDAS, 2n + 1
    parameters, one in M)."""
    names = ", ".join([f"a{i} = {0.2 + 0.1 * i}" for i in range(n)] +
                      [f"b{i} = {1.0 - 0.05 * i}" for i in range(n)] + ["mm = 1.0"])
    states = ", ".join([f"x{i} = 1" for i in range(n)] + ["y = 0"])
    dudt = ", ".join([f"dx{i}dt = 0" for i in range(n)] + ["dydt = 0"])
    mass = ", ".join(["mm * dx0dt"] + [f"dx{i}dt" for i in range(1, n)] + ["0"])
    rhs = ", ".join([f"-a{i} * x{i}" for i in range(n)] +
                    ["y - (" + " + ".join(f"b{i} * x{i}" for i in range(n)) + ")"])
    return (f"in_i {{ {names} }}\nu_i {{ {states} }}\ndudt_i {{ {dudt} }}\nM_i {{ {mass} }}\n"
            f"F_i {{ {rhs} }}\nout_i {{ y, x0 }}\n")


def test_dae_closed_form():
    n = 130  # 261 parameters: the sketched quadrature through IDAS
    m = dsp.DiffsolModule(dae_model(n), rtol=1e-10, atol=1e-12)
    assert m.nparams == 2 * n + 1
    p = m.default_params.numpy()
    a, b = p[:n], p[n:2 * n]
    times = np.linspace(0.0, 4.0, 17)
    rng = np.random.default_rng(5)
    g = rng.standard_normal((2, times.size))
    e = np.exp(-a[:, None] * times[None, :])  # (n, nt)
    want_a = (g[0][None, :] * (-times[None, :]) * b[:, None] * e).sum(1)
    want_a[0] += (g[1] * (-times) * e[0]).sum()
    want_b = (g[0][None, :] * e).sum(1)
    want_mm = ((g[0] * b[0] + g[1]) * a[0] * times * e[0]).sum()  # d exp(-a0 t / mm) / d mm
    grad = m.reverse_mode(p, times, g).numpy()
    assert rel_err(grad, np.concatenate([want_a, want_b, [want_mm]])) < 1e-6
    _, sens = m.forward_mode(p, times)
    assert rel_err(grad, np.einsum("pot,ot->p", sens.numpy(), g)) < 1e-6


def test_dae_events_many_params():
    """IDAS through events (a reset of the differential state at a threshold) with 10
    extra parameters: against forward mode and central differences."""
    k = 10
    extra = ", ".join(f"s{i} = {0.02 * (i + 1)}" for i in range(k))
    total = " + ".join(f"s{i}" for i in range(k))
    code = (f"in_i {{ cur = 2.0, tau = 1.5, vth = 1.0, c = 2.0, {extra} }}\n"
            "u_i { x = 0.0, y = 0.0 }\ndudt_i { dxdt = 0, dydt = 0 }\nM_i { dxdt, 0 }\n"
            f"F_i {{ (cur - x) / tau + ({total}) * sin(2 * t), c * x - y }}\n"
            "stop { x - vth }\nreset_i { 0.0, 0.0 }\nout_i { x, y }\n")
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    p = m.default_params.numpy()
    times = np.linspace(0.0, 4.0, 9)
    g = np.random.default_rng(6).standard_normal((2, times.size))
    grad = m.reverse_mode(p, times, g).numpy()
    assert m.stats["events"] >= 2
    _, sens = m.forward_mode(p, times)
    assert rel_err(grad, np.einsum("pot,ot->p", sens.numpy(), g)) < 1e-6
    # the s_i are small (0.02..0.2): a relative step of 1e-2 keeps the solver's noise out
    # of their differences (F is linear in them); 1e-4 for the others
    fd = np.where(np.arange(p.size) < 4, central_fd(m, p, times, g),
                  central_fd(m, p, times, g, rel=1e-2))
    assert rel_err(grad, fd) < 1e-4
