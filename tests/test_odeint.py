"""dsp.odeint / dsp.odeint_adjoint: PyTorch right-hand sides solved by the C kernel.

References: closed forms, SciPy (expm), torchdiffeq at tight tolerances, central
finite differences of the forward solve.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import diffsol_pytorch as dsp
from diffsol_pytorch.odeint import last_stats

torchdiffeq = pytest.importorskip("torchdiffeq")

pytestmark = pytest.mark.integration

ALL_METHODS = ["bdf", "adams", "tsit45", "dopri5", "tr_bdf2", "esdirk34"]


class MLPField(torch.nn.Module):
    """dy/dt = net(y) - 0.5 y, small and smooth (float64)."""

    def __init__(self, n=2, hidden=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = torch.nn.Linear(n, hidden).double()
        self.l2 = torch.nn.Linear(hidden, n).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y))) - 0.5 * y + 0.1 * torch.sin(t)


def _y0():
    return torch.tensor([1.0, -0.5], dtype=torch.float64)


T = torch.linspace(0.0, 2.0, 6, dtype=torch.float64)


# ---- forward values ---------------------------------------------------------------


@pytest.mark.parametrize("method", ALL_METHODS)
def test_matches_torchdiffeq(method):
    f = MLPField()
    with torch.no_grad():
        ref = torchdiffeq.odeint(f, _y0(), T, rtol=1e-11, atol=1e-12, method="dopri5")
        y = dsp.odeint(f, _y0(), T, rtol=1e-9, atol=1e-11, method=method)
    assert y.shape == (len(T), 2) and y.dtype == torch.float64
    tol = 1e-5 if method == "tr_bdf2" else 1e-6
    torch.testing.assert_close(y, ref, rtol=tol, atol=tol)
    st = last_stats()
    assert st["func_evals"] > 0 and st["steps"] > 0
    if method in ("bdf", "adams", "tr_bdf2", "esdirk34"):
        assert st["jac_evals_python"] > 0
    else:
        assert st["jac_evals_python"] == 0


@pytest.mark.parametrize("method", ["bdf", "tsit45"])
def test_linear_system_matches_expm(method):
    A = torch.tensor([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.5], [0.0, 0.0, -3.0]], dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 1.0, 2.5], dtype=torch.float64)
    y = dsp.odeint(lambda t, y: A @ y, y0, t, rtol=1e-10, atol=1e-12, method=method)
    want = np.stack([scipy.linalg.expm(A.numpy() * ti) @ y0.numpy() for ti in t.numpy()])
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-7, atol=1e-9)


def test_any_shape_tuple_state_and_decreasing_t():
    # a (2, 3) state: six independent decays at different rates
    k = torch.arange(1, 7, dtype=torch.float64).reshape(2, 3) / 4
    y0 = torch.ones(2, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    y = dsp.odeint(lambda t, y: -k * y, y0, t, rtol=1e-10, atol=1e-12)
    assert y.shape == (3, 2, 3)
    torch.testing.assert_close(y, torch.exp(-k[None] * t[:, None, None]), rtol=1e-7, atol=1e-10)
    # harmonic oscillator as a tuple (x, v), integrated backwards in time from t = 2
    tb = torch.tensor([2.0, 1.5, 0.0], dtype=torch.float64)
    x0, v0 = torch.tensor([math.cos(2.0)]), torch.tensor([-math.sin(2.0)])
    x, v = dsp.odeint(lambda t, s: (s[1], -s[0]), (x0.double(), v0.double()), tb,
                      rtol=1e-10, atol=1e-12, method="tsit45")
    torch.testing.assert_close(x[:, 0], torch.cos(tb), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(v[:, 0], -torch.sin(tb), rtol=1e-6, atol=1e-7)
    # the time func sees is the real (decreasing) time
    seen = []
    dsp.odeint(lambda t, y: (seen.append(float(t)), -y)[1], torch.ones(1).double(), tb,
               method="tsit45")
    assert min(seen) >= -1e-12 and max(seen) <= 2.0 + 1e-12


def test_float32_in_float32_out():
    f = MLPField().float()
    y0 = _y0().float()
    y = dsp.odeint(f, y0, T.float(), rtol=1e-6, atol=1e-8)
    assert y.dtype == torch.float32
    y64 = dsp.odeint(MLPField(), _y0(), T, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-5)


def test_event_fn_stops_at_the_root():
    # a ball dropped from 2 m: h(t) = 2 - g t^2 / 2 reaches 0 at sqrt(4 / g)
    g = 9.81

    def fall(t, s):
        h, v = s
        return v, torch.full_like(v, -g)

    def ground(t, s):
        return s[0].sum()

    y0 = (torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    event_t, (h, v) = dsp.odeint(fall, y0, t, event_fn=ground, rtol=1e-10, atol=1e-12,
                                 method="tsit45")
    assert abs(float(event_t) - math.sqrt(4 / g)) < 1e-7
    assert h.shape == (2, 1) and abs(float(h[-1, 0])) < 1e-7
    assert abs(float(v[-1, 0]) + math.sqrt(4 * g)) < 1e-6


@pytest.mark.gradient
@pytest.mark.parametrize("method", ["bdf", "tsit45"])
def test_event_time_and_state_gradients_match_the_closed_form(method):
    # h' = v, v' = -g from h0 at rest: t* = sqrt(2 h0 / g), v* = -sqrt(2 g h0)
    grav = torch.tensor(9.81, dtype=torch.float64, requires_grad=True)
    h0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)

    def fall(t, s):
        return s[1], -grav * torch.ones_like(s[1])

    event_t, (h, v) = dsp.odeint_adjoint(
        fall, (h0, v0), torch.tensor([0.0, 10.0], dtype=torch.float64),
        event_fn=lambda t, s: s[0].sum(), adjoint_params=(grav,), rtol=1e-10, atol=1e-12,
        method=method)
    loss = event_t + 3.0 * v[-1, 0] + 0.5 * h[0, 0]
    d_h0, d_v0, d_g = torch.autograd.grad(loss, (h0, v0, grav))
    gv, hv = 9.81, 2.0
    ts = math.sqrt(2 * hv / gv)
    assert abs(float(event_t.detach()) - ts) < 1e-8
    want_h0 = 1 / math.sqrt(2 * gv * hv) + 3.0 * (-gv / math.sqrt(2 * gv * hv)) + 0.5
    want_v0 = 1 / gv + 3.0 * 0.0
    want_g = -ts / (2 * gv) + 3.0 * (-ts / 2)
    assert abs(float(d_h0) - want_h0) < 1e-6
    assert abs(float(d_v0) - want_v0) < 1e-6
    assert abs(float(d_g) - want_g) < 1e-6


@pytest.mark.gradient
def test_event_in_decreasing_time():
    # y' = -k y backwards from t = 0: y = y0 exp(-k t) reaches 3 at t* = -ln(3 / y0) / k
    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    event_t, y = dsp.odeint_adjoint(lambda t, y: -k * y, y0,
                                    torch.tensor([0.0, -10.0], dtype=torch.float64),
                                    event_fn=lambda t, y: y.sum() - 3.0, adjoint_params=(k,),
                                    rtol=1e-10, atol=1e-12)
    assert abs(float(event_t.detach()) + math.log(3.0) / 0.5) < 1e-8
    assert abs(float(y[-1, 0].detach()) - 3.0) < 1e-7
    d_y0, d_k = torch.autograd.grad(event_t, (y0, k))
    assert abs(float(d_y0) - 1.0 / 0.5) < 1e-6          # dt*/dy0 = 1 / (k y0)
    assert abs(float(d_k) - math.log(3.0) / 0.25) < 1e-6  # dt*/dk = ln(3) / k^2


# ---- gradients -----------------------------------------------------------------------


def _loss(y):
    return (y ** 2).sum() + (y[:, 0] * torch.linspace(0, 1, y.shape[0], dtype=y.dtype)).sum()


@pytest.mark.gradient
@pytest.mark.parametrize("method", ["bdf", "tsit45"])
@pytest.mark.parametrize("fn", ["odeint", "odeint_adjoint"])
def test_gradients_match_torchdiffeq(method, fn):
    f = MLPField()
    y0 = _y0().requires_grad_()
    ref = torchdiffeq.odeint_adjoint(f, y0, T, rtol=1e-11, atol=1e-12, method="dopri5")
    gref = torch.autograd.grad(_loss(ref), (y0,) + tuple(f.parameters()))
    y = getattr(dsp, fn)(f, y0, T, rtol=1e-10, atol=1e-12, method=method)
    g = torch.autograd.grad(_loss(y), (y0,) + tuple(f.parameters()))
    for a, b in zip(g, gref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.gradient
def test_gradients_match_central_differences():
    f = MLPField()
    y0 = _y0().requires_grad_()
    y = dsp.odeint_adjoint(f, y0, T, rtol=1e-11, atol=1e-13)
    g = torch.autograd.grad(_loss(y), (y0, f.l1.weight))

    def loss_at(y0v, w):
        with torch.no_grad():
            old = f.l1.weight.clone()
            f.l1.weight.copy_(w)
            out = float(_loss(dsp.odeint(f, y0v, T, rtol=1e-11, atol=1e-13)))
            f.l1.weight.copy_(old)
        return out

    w0 = f.l1.weight.detach().clone()
    h = 1e-5
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = h
        fd = (loss_at(y0.detach() + e, w0) - loss_at(y0.detach() - e, w0)) / (2 * h)
        assert abs(fd - float(g[0][i])) < 1e-6 * max(1.0, abs(fd))
    for idx in [(0, 0), (3, 1), (7, 0)]:
        e = torch.zeros_like(w0)
        e[idx] = h
        fd = (loss_at(y0.detach(), w0 + e) - loss_at(y0.detach(), w0 - e)) / (2 * h)
        assert abs(fd - float(g[1][idx])) < 1e-6 * max(1.0, abs(fd))


@pytest.mark.gradient
def test_adjoint_params_of_a_plain_function_and_decreasing_t():
    k = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)  # backwards: y = y0 exp(-k (t - 1))
    y = dsp.odeint_adjoint(lambda t, y: -k * y, y0, t, adjoint_params=(k,), rtol=1e-11,
                           atol=1e-13)
    torch.testing.assert_close(y[:, 0], 2.0 * torch.exp(-k.detach() * (t - 1)), rtol=1e-8,
                               atol=1e-10)
    gk, gy0 = torch.autograd.grad(y.sum(), (k, y0))
    dt = (t - 1).numpy()
    assert abs(float(gk) - float((-dt * 2.0 * np.exp(-0.8 * dt)).sum())) < 1e-7
    assert abs(float(gy0) - float(np.exp(-0.8 * dt).sum())) < 1e-8


@pytest.mark.gradient
def test_options_checkpoints_and_matrix_free_give_the_same_gradient():
    f = MLPField()
    y0 = _y0().requires_grad_()
    grads = []
    for options in ({}, {"checkpoints": 3}, {"jacobian": "matrix_free"},
                    {"first_step": 1e-4, "max_num_steps": 10_000}):
        y = dsp.odeint(f, y0, T, rtol=1e-10, atol=1e-12, options=options)
        grads.append(torch.autograd.grad(_loss(y), (y0, f.l2.bias)))
    for g in grads[1:]:
        for a, b in zip(g, grads[0]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    with pytest.raises(dsp.SolverError, match="TOO_MUCH_WORK"):
        dsp.odeint(f, _y0(), T, options={"max_num_steps": 2})


@pytest.mark.gradient
def test_no_second_derivatives_no_forward_mode():
    f = MLPField()
    y0 = _y0().requires_grad_()
    y = dsp.odeint(f, y0, T)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y.sum(), y0, create_graph=True)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        dual = fwAD.make_dual(_y0(), torch.ones(2, dtype=torch.float64))
        with pytest.raises(NotImplementedError, match="forward-mode"):
            dsp.odeint(f, dual, T)


# ---- exceptions -------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    "method,where",
    [("bdf", "rhs"), ("tsit45", "rhs"), ("bdf", "jacobian"), ("bdf", "backward"),
     ("tsit45", "backward")],
)
def test_exceptions_from_func_propagate_unchanged(method, where):
    err = Boom("from func")
    state = {"backward": False}

    def func(t, y):
        if where == "rhs" and float(t) > 0.5:
            raise err
        if where == "jacobian" and torch._C._functorch.is_functorch_wrapped_tensor(y):
            raise err
        if where == "backward" and torch.is_grad_enabled() and y.requires_grad:
            state["backward"] = True
            raise err
        return -y

    y0 = _y0().requires_grad_(where == "backward")
    with pytest.raises(Boom) as info:
        y = dsp.odeint(func, y0, T, method=method)
        y.sum().backward()
    assert info.value is err
    assert info.value.__context__ is None and info.value.__cause__ is None
    if where == "backward":
        assert state["backward"]
    # a KeyboardInterrupt (Ctrl-C in func) also stops the solve and comes out as itself
    def interrupted(t, y):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dsp.odeint(interrupted, _y0(), T, method=method)


def test_func_returning_the_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        dsp.odeint(lambda t, y: torch.zeros(3, dtype=torch.float64), _y0(), T)


# ---- validation before any work ------------------------------------------------------------


def test_bad_inputs_raise_value_error_before_calling_func():
    calls = []

    def func(t, y):
        calls.append(1)
        return -y

    y0 = _y0()
    bad = [
        dict(t=torch.zeros(2, 2, dtype=torch.float64)),
        dict(t=torch.tensor([0.0, 1.0, 0.5])),
        dict(t=torch.tensor([0.0, 0.0, 1.0])),
        dict(t=torch.tensor([0.0, float("nan")])),
        dict(t=torch.tensor([0.0])),
        dict(y0=torch.tensor([1.0, float("nan")], dtype=torch.float64)),
        dict(y0=torch.ones(2, dtype=torch.float16)),
        dict(y0=torch.ones(2, dtype=torch.int64)),
        dict(y0=(torch.ones(2, dtype=torch.float64), torch.ones(1, dtype=torch.float32))),
        dict(method="rk4"),
        dict(options={"max_num_step": 10}),
        dict(options={"jacobian": "sparse"}),
        dict(options={"first_step": -1.0}),
        dict(rtol=float("nan")),
        dict(t=torch.tensor([0.0, 1.0], requires_grad=True)),
    ]
    for kw in bad:
        args = dict(y0=y0, t=T)
        args.update({k: v for k, v in kw.items() if k in ("y0", "t")})
        extra = {k: v for k, v in kw.items() if k not in ("y0", "t")}
        with pytest.raises(ValueError):
            dsp.odeint(func, args["y0"], args["t"], **extra)
    with pytest.raises(ValueError):
        dsp.odeint_adjoint(func, y0, T, adjoint_method="dopri5", method="bdf")
    assert not calls
    # lists and arrays are accepted
    y = dsp.odeint(func, [1.0, 2.0], np.array([0.0, 1.0]), method="tsit45")
    np.testing.assert_allclose(y[-1].numpy(), np.array([1.0, 2.0]) * math.exp(-1), rtol=1e-6)


def test_matrix_free_linear_solver_for_diffsl_models_too():
    # the same SPGMR Newton-Krylov solver serves DiffSL models: values and gradients
    # agree with the dense LU
    from conftest import model_source

    code = model_source("heat1d")
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    out = {}
    for ls in ("spgmr", "dense"):
        m = dsp.DiffsolModule(code, linear_solver=ls, rtol=1e-9, atol=1e-11)
        p = m.default_params.clone().requires_grad_()
        y = m.solve_dense(p, t)
        (g,) = torch.autograd.grad(y.sum(), p)
        out[ls] = (y.detach(), g)
    torch.testing.assert_close(out["spgmr"][0], out["dense"][0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out["spgmr"][1], out["dense"][1], rtol=1e-5, atol=1e-7)
    m = dsp.DiffsolModule(code, linear_solver="spgmr")
    assert m._solver.linear_solver == "spgmr"


@pytest.mark.gradient
def test_matrix_free_odeint_uses_jvp_products_only():
    f = MLPField()
    y0 = _y0().requires_grad_()
    y = dsp.odeint(f, y0, T, rtol=1e-10, atol=1e-12, options={"jacobian": "matrix_free"})
    st = last_stats()
    assert st["jac_evals_python"] == 0 and st["jvp_evals"] > 0
    ref = dsp.odeint(f, y0, T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y, ref, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="spgmr"):
        dsp.odeint(f, y0, T, method="esdirk34", options={"jacobian": "matrix_free"}).sum().backward()


class _StiffNODE(torch.nn.Module):
    """A y + net(y), A = diag(-1, -1e4): stiffness ratio 1e4; counts its calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(),
                                       torch.nn.Linear(8, 2)).double()
        self.lam = torch.tensor([-1.0, -1e4], dtype=torch.float64)
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.lam * y + self.net(y)


def test_stiff_neural_ode_bdf_needs_far_fewer_evaluations_than_dopri5():
    f = _StiffNODE()
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    t = torch.linspace(0.0, 0.25, 5, dtype=torch.float64)
    with torch.no_grad():
        ref = torchdiffeq.odeint(f, y0, t, method="dopri5", rtol=1e-7, atol=1e-9)
        nfe_dopri5 = f.nfe
        f.nfe = 0
        y = dsp.odeint(f, y0, t, method="bdf", rtol=1e-7, atol=1e-9)
        nfe_bdf = f.nfe  # right-hand sides and the Jacobians' calls
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert nfe_dopri5 > 20 * nfe_bdf, (nfe_dopri5, nfe_bdf)


@pytest.mark.gradient
def test_tuple_state_gradients_match_torchdiffeq():
    w = torch.tensor([[0.3, -1.2], [0.8, 0.1]], dtype=torch.float64, requires_grad=True)

    def func(t, s):
        x, v = s
        return v, torch.tanh(w @ x) - 0.2 * v

    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([0.0, 0.3], dtype=torch.float64, requires_grad=True)
    out = {}
    for name, solve in (("dsp", dsp.odeint_adjoint), ("tdq", torchdiffeq.odeint_adjoint)):
        kw = {"method": "bdf"} if name == "dsp" else {"method": "dopri5"}
        x, v = solve(func, (x0, v0), T, rtol=1e-10, atol=1e-12, adjoint_params=(w,), **kw)
        assert x.shape == (len(T), 2) and v.shape == (len(T), 2)
        out[name] = torch.autograd.grad((x ** 2).sum() + v.sum(), (x0, v0, w))
    for a, b in zip(out["dsp"], out["tdq"]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.memory
def test_solve_gradient_and_exception_cycles_do_not_grow():
    from diffsol_pytorch import testing

    f = MLPField()
    y0 = _y0().requires_grad_()

    def bad(t, y):
        raise Boom("x")

    def cycle():
        dsp.odeint(f, y0, T, method="bdf").sum().backward()
        with pytest.raises(Boom):
            dsp.odeint(bad, _y0(), T, method="tsit45")

    with testing.memory_drift(limit_mb=10.0, warmup=lambda: [cycle() for _ in range(10)]):
        for _ in range(40):
            cycle()


@pytest.mark.gradient
def test_adjoint_tolerances_are_those_of_the_backward_pass():
    # a loose forward solve with a tight or a loose backward one: the forward values are
    # the same, the gradient is closer to the reference with the tighter adjoint
    f = MLPField()
    y0 = _y0().requires_grad_()
    ref = torch.autograd.grad(_loss(dsp.odeint(f, y0, T, rtol=1e-11, atol=1e-13)), y0)[0]
    errs, ys = [], []
    for art in (1e-3, 1e-11):
        y = dsp.odeint_adjoint(f, y0, T, rtol=1e-6, atol=1e-8, adjoint_rtol=art,
                               adjoint_atol=art * 1e-2)
        ys.append(y.detach())
        errs.append(float((torch.autograd.grad(_loss(y), y0)[0] - ref).abs().max()))
    torch.testing.assert_close(ys[0], ys[1], rtol=0, atol=0)
    assert errs[1] < errs[0]
    with pytest.raises(ValueError):
        dsp.odeint_adjoint(f, y0, T, adjoint_rtol=float("nan"))


@pytest.mark.gradient
@pytest.mark.parametrize("method", ["adams", "dopri5", "tr_bdf2", "esdirk34"])
def test_gradients_of_the_other_methods(method):
    # a small field (6 parameters); the low-order SDIRK methods at looser tolerances
    # (at rtol 1e-10 they take thousands of steps)
    torch.manual_seed(1)
    lin = torch.nn.Linear(2, 2).double()
    f = lambda t, y: torch.tanh(lin(y)) - 0.3 * y  # noqa: E731
    y0 = _y0().requires_grad_()
    params = (y0,) + tuple(lin.parameters())
    ref = torchdiffeq.odeint_adjoint(f, y0, T, rtol=1e-11, atol=1e-12, method="dopri5",
                                     adjoint_params=tuple(lin.parameters()))
    gref = torch.autograd.grad(_loss(ref), params)
    sdirk = method in ("tr_bdf2", "esdirk34")
    rtol = 1e-8 if sdirk else 1e-10
    y = dsp.odeint_adjoint(f, y0, T, rtol=rtol, atol=rtol * 1e-2, method=method,
                           adjoint_params=tuple(lin.parameters()))
    g = torch.autograd.grad(_loss(y), params)
    tol = 1e-4 if sdirk else 1e-5
    for a, b in zip(g, gref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.perf
@pytest.mark.parametrize("impl", ["dsp bdf", "dsp tsit45", "torchdiffeq dopri5"])
def test_perf_neural_ode_training_step(benchmark, impl):
    """One forward + backward pass of a 2->50->2 MLP field (pytest-benchmark, --run-perf)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(),
                              torch.nn.Linear(50, 2)).double()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y ** 3)

    f = Field()
    y0 = torch.tensor([[2.0, 0.0], [0.5, -1.0]], dtype=torch.float64)
    t = torch.linspace(0.0, 0.5, 10, dtype=torch.float64)

    def step():
        f.zero_grad()
        if impl.startswith("dsp"):
            y = dsp.odeint_adjoint(f, y0, t, method=impl.split()[1], rtol=1e-7, atol=1e-9)
        else:
            y = torchdiffeq.odeint_adjoint(f, y0, t, method="dopri5", rtol=1e-7, atol=1e-9)
        y.abs().mean().backward()
        return float(net[0].weight.grad.norm())

    gnorm = benchmark(step)
    assert math.isfinite(gnorm) and gnorm > 0


@pytest.mark.parametrize("method", ["bdf", "esdirk34"])
def test_stiff_van_der_pol_matches_scipy_radau(method):
    from scipy.integrate import solve_ivp

    mu = 100.0

    def vdp(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    t = np.linspace(0.0, 2.0, 5)
    ref = solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, 2.0),
                    [2.0, 0.0], method="Radau", t_eval=t, rtol=1e-11, atol=1e-12).y.T
    y = dsp.odeint(vdp, torch.tensor([2.0, 0.0], dtype=torch.float64), t, method=method,
                   rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.gradient
def test_discrete_and_continuous_adjoint_agree():
    """options={"adjoint": ...}: bdf's default, the discrete adjoint of its steps, and the
    continuous adjoint give the same gradients (y0 and the parameters) within the
    tolerances; on a stiff field with a loss on every output time the discrete one calls
    func fewer times (no restart at each output time). A bad value is refused."""
    calls = [0]

    class Stiff(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor([0.04, 1e4, 3e7], dtype=torch.float64))

        def forward(self, t, y):
            calls[0] += 1
            k1, k2, k3 = self.k
            return torch.stack([-k1 * y[0] + k2 * y[1] * y[2],
                                k1 * y[0] - k2 * y[1] * y[2] - k3 * y[1] ** 2,
                                k3 * y[1] ** 2])

    f = Stiff()
    t = torch.logspace(-4, 4, 9, dtype=torch.float64)
    g = torch.from_numpy(np.random.default_rng(3).standard_normal((9, 3)))
    grads, counts = {}, {}
    for adj in ("continuous", "discrete"):
        y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
        calls[0] = 0
        y = dsp.odeint(f, y0, t, rtol=1e-8, atol=1e-10, options={"adjoint": adj})
        grads[adj] = torch.autograd.grad((y * g).sum(), (y0, f.k))
        counts[adj] = calls[0]
    # to 1e-4 (the issue's bar at rtol 1e-8; the worst is d/d y0[1], the fast species'
    # initial value: 3e-5, both converging to the same value at tighter tolerances)
    for a, b in zip(grads["discrete"], grads["continuous"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7 * float(b.abs().max()))
    assert counts["discrete"] < counts["continuous"]
    with pytest.raises(ValueError, match="adjoint"):
        dsp.odeint(f, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), t,
                   options={"adjoint": "backprop"})
