"""torchdiffeq-compatible ``odeint`` / ``odeint_adjoint`` for PyTorch right-hand sides.

``func(t, y)`` (an ``nn.Module`` or any callable of torch tensors) is solved by the
project's C kernel with SUNDIALS (CVODES BDF/Adams, ARKODE explicit and SDIRK methods):
the kernel's callback model calls back into Python for

* the right-hand side: ``func(t, y)`` under ``torch.no_grad``;
* the Newton Jacobian of the implicit methods: ``torch.func.jacrev`` of ``func``
  (dense), or, with ``options={"jacobian": "matrix_free"}``, Jacobian-vector
  products from ``torch.func.jvp`` (the kernel assembles the dense matrix from ``n``
  products: fewer Python-side constraints, no saving for large states yet);
* the adjoint: vector-Jacobian products ``(df/dy)^T w`` and ``(df/dtheta)^T w`` from
  ``torch.autograd.grad`` w.r.t. the state and every parameter in ``adjoint_params``:
  with ``bdf`` and no event, the discrete adjoint of the BDF steps
  (``options={"adjoint": "discrete"}``, the default: one backward step per forward
  step), else, or with ``"continuous"`` or ``adjoint_rtol``/``adjoint_atol``, the
  checkpointed continuous adjoint (CVODES/ARKODE, backward quadrature for the
  parameter gradient).

Both ``odeint`` and ``odeint_adjoint`` return a tensor whose gradient w.r.t. ``y0`` and
the parameters comes from that adjoint (torchdiffeq's ``odeint`` backpropagates through
the solver's operations instead; the values agree within the tolerances).

The solve itself is float64 on the host; ``func`` sees ``y`` (and a scalar ``t``) in
``y0``'s dtype and device, and the result comes back in them too.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from diffsol_pytorch import _kernel
from diffsol_pytorch.errors import DiffsolError

__all__ = ["odeint", "odeint_adjoint", "METHODS", "OPTIONS"]

#: the methods (see docs/solvers.md); the first four letters of torchdiffeq's
#: "dopri5" work as in torchdiffeq
METHODS = ("bdf", "adams", "tsit45", "dopri5", "tr_bdf2", "esdirk34")
_IMPLICIT = {"bdf", "adams", "tr_bdf2", "esdirk34"}
#: the keys of ``options``
OPTIONS = ("max_num_steps", "first_step", "jacobian", "checkpoints", "adjoint")

Tensors = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


# ---- validation ------------------------------------------------------------------


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a tensor, an array or a list of floats") from exc


def _check_y0(y0: Any) -> Tuple[Tuple[torch.Tensor, ...], bool]:
    # a tuple state is a tuple (or list) of tensors; a list of floats is one tensor
    is_tuple = isinstance(y0, (tuple, list)) and len(y0) > 0 and all(
        isinstance(y, torch.Tensor) for y in y0)
    ys = tuple(y0) if is_tuple else (y0,)
    if not ys:
        raise ValueError("y0 is an empty tuple")
    ys = tuple(_as_tensor(y, "y0") for y in ys)
    dtype, device = ys[0].dtype, ys[0].device
    for y in ys:
        if y.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"y0 must be float32 or float64 (the solve is float64), got {y.dtype}; "
                "convert it with y0.double()"
            )
        if y.dtype != dtype or y.device != device:
            raise ValueError("every tensor of a tuple y0 must have the same dtype and device")
        if not bool(torch.isfinite(y.detach()).all()):
            raise ValueError("y0 has NaN or infinite entries")
    if sum(y.numel() for y in ys) == 0:
        raise ValueError("y0 has no elements")
    return ys, is_tuple


def _check_t(t: Any, event: bool) -> np.ndarray:
    tt = _as_tensor(t, "t")
    if tt.requires_grad:
        raise ValueError(
            "gradients w.r.t. t are not supported: pass t without requires_grad (t.detach())"
        )
    if tt.dim() != 1:
        raise ValueError(f"t must be 1-D, got shape {tuple(tt.shape)}")
    if tt.is_complex():
        raise ValueError("t must be real")
    tn = tt.detach().to("cpu", torch.float64).numpy().copy()
    if len(tn) < (1 if event else 2):
        raise ValueError("t needs at least two times (one with event_fn)")
    if not np.all(np.isfinite(tn)):
        raise ValueError("t has NaN or infinite entries")
    d = np.diff(tn)
    if len(d) and not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError("t must be strictly increasing or strictly decreasing")
    return tn


def _check_options(options: Optional[Dict[str, Any]], method: str) -> Dict[str, Any]:
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown}; known: {list(OPTIONS)}")
    out: Dict[str, Any] = {"max_steps": 100_000, "h0": None, "jacobian": "dense", "checkpoints": 0,
                           "adjoint": "discrete"}
    if opts.get("max_num_steps") is not None:
        n = opts["max_num_steps"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"options['max_num_steps'] must be a positive int, got {n!r}")
        out["max_steps"] = int(n)
    if opts.get("first_step") is not None:
        h = float(opts["first_step"])
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"options['first_step'] must be a positive float, got {h!r}")
        out["h0"] = h
    if opts.get("jacobian") is not None:
        j = opts["jacobian"]
        if j not in ("dense", "matrix_free"):
            raise ValueError(f"options['jacobian'] must be 'dense' or 'matrix_free', got {j!r}")
        out["jacobian"] = j
    if opts.get("adjoint") is not None:
        a = opts["adjoint"]
        if a not in ("discrete", "continuous"):
            raise ValueError(f"options['adjoint'] must be 'discrete' or 'continuous', got {a!r}")
        out["adjoint"] = a
    if opts.get("checkpoints") is not None:
        c = opts["checkpoints"]
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise ValueError(
                "options['checkpoints'] (integration steps between checkpoints of the "
                f"adjoint's forward pass) must be a positive int, got {c!r}"
            )
        out["checkpoints"] = int(c)
    return out


def _check_tol(x: Any, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a float (got {x!r})") from exc
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0 (got {x!r})")
    return v


# ---- the problem seen by the kernel -----------------------------------------------


class _Problem:
    """f(s, u) = sign * func(sign * s, unflatten(u)) on flat float64 vectors.

    sign = -1 solves a decreasing t in the time variable s = -t.  The kernel's
    parameter vector is p = [y0; theta] with theta the flattened params.
    """

    def __init__(self, func, ys: Tuple[torch.Tensor, ...], is_tuple: bool, sign: float,
                 params: Tuple[torch.Tensor, ...]):
        self.func = func
        self.is_tuple = is_tuple
        self.shapes = [y.shape for y in ys]
        self.numels = [y.numel() for y in ys]
        self.n = sum(self.numels)
        self.dtype, self.device = ys[0].dtype, ys[0].device
        self.sign = sign
        self.params = params
        self.native = self.dtype == torch.float64 and self.device.type == "cpu"
        self.flat_shape = not is_tuple and len(self.shapes[0]) == 1

    # flat <-> user layout
    def unflatten(self, flat: torch.Tensor):
        if not self.is_tuple:
            if flat.dim() == 1:
                return flat if self.flat_shape else flat.view(self.shapes[0])
            return flat.reshape(flat.shape[:-1] + self.shapes[0])
        out, off = [], 0
        for shape, k in zip(self.shapes, self.numels):
            out.append(flat[..., off:off + k].reshape(flat.shape[:-1] + shape))
            off += k
        return tuple(out)

    def flatten_out(self, f) -> torch.Tensor:
        if self.is_tuple:
            if not isinstance(f, (tuple, list)) or len(f) != len(self.shapes):
                raise ValueError(
                    f"func returned {type(f).__name__}, expected a tuple of {len(self.shapes)} "
                    "tensors like y0"
                )
            return torch.cat([fi.reshape(-1) for fi in f])
        if not isinstance(f, torch.Tensor):
            raise ValueError(f"func returned {type(f).__name__}, expected a tensor like y0")
        if f.numel() != self.n:
            raise ValueError(
                f"func returned a tensor of shape {tuple(f.shape)}, expected {tuple(self.shapes[0])}"
            )
        return f.reshape(-1)

    def _y(self, y: np.ndarray) -> torch.Tensor:
        # a copy: the kernel's buffer is reused (and freed with the solver), and func
        # may keep what it is given
        if self.native:
            return torch.from_numpy(y.copy())
        return torch.from_numpy(y).to(device=self.device, dtype=self.dtype, copy=True)

    def _t(self, s: float) -> torch.Tensor:
        if self.native:  # the cheapest 0-d tensor
            return torch.from_numpy(np.array(self.sign * s))
        return torch.scalar_tensor(self.sign * s, dtype=self.dtype, device=self.device)

    def f_flat(self, s: float, yflat: torch.Tensor) -> torch.Tensor:
        f = self.flatten_out(self.func(self._t(s), self.unflatten(yflat)))
        return -f if self.sign < 0 else f

    # ---- the callables of _kernel.CallbackModel (called under torch.no_grad: _Run.call) ----
    def rhs(self, s, y, f):
        torch.from_numpy(f).copy_(self.f_flat(s, self._y(y)))

    def jac(self, s, y, J):
        yt = self._y(y)
        Jt = torch.func.jacrev(lambda yy: self.f_flat(s, yy))(yt)
        torch.from_numpy(J).copy_(Jt)

    def jvp(self, s, y, v, f, jv):
        yt = self._y(y)
        vt = self._y(v)
        out, dout = torch.func.jvp(lambda yy: self.f_flat(s, yy), (yt,), (vt,))
        torch.from_numpy(f).copy_(out)
        torch.from_numpy(jv).copy_(dout)

    def vjp(self, s, y, w, ybar, thbar):
        yt = self._y(y).detach().clone().requires_grad_(True)
        wt = self._y(w)
        with torch.enable_grad():
            out = self.f_flat(s, yt)
            grads = torch.autograd.grad(out, (yt,) + self.params, wt, allow_unused=True)
        torch.from_numpy(ybar).copy_(grads[0] if grads[0] is not None else torch.zeros_like(yt))
        off = 0
        th = torch.from_numpy(thbar)
        for prm, g in zip(self.params, grads[1:]):
            k = prm.numel()
            if g is None:
                th[off:off + k] = 0.0
            else:
                th[off:off + k].copy_(g.reshape(-1))
            off += k


class _Run:
    """One solve: the callback model, its solver, the kernel's parameter vector."""

    def __init__(self, prob: _Problem, times: np.ndarray, y0flat: np.ndarray, method: str,
                 rtol: float, atol: float, opts: Dict[str, Any], event_fn=None,
                 adjoint_tols: Tuple[float, float] = (0.0, 0.0)):
        self.prob = prob
        self.times = times
        theta = [p.detach().to("cpu", torch.float64).reshape(-1) for p in prob.params]
        self.ntheta = sum(p.numel() for p in prob.params)
        self.p = np.ascontiguousarray(np.concatenate(
            [y0flat] + [t.numpy() for t in theta]) if theta else y0flat)
        kw = {}
        if method in _IMPLICIT:
            if opts["jacobian"] == "dense":
                kw["jac"] = prob.jac
            else:
                kw["jvp"] = prob.jvp
        if event_fn is not None:
            kw["stop"] = self._stop
            kw["nstop"] = 1
            self.event_fn = event_fn
        self.model = _kernel.CallbackModel(prob.n, self.ntheta, prob.rhs, vjp=prob.vjp, **kw)
        self.solver = _kernel.Solver(
            self.model, rtol=rtol, atol=atol, t0=float(times[0]), h0=opts["h0"],
            max_steps=opts["max_steps"], method=method, checkpoint_steps=opts["checkpoints"],
            adjoint_rtol=adjoint_tols[0], adjoint_atol=adjoint_tols[1],
            # the backward pass's own tolerances are those of the continuous adjoint
            adjoint_discrete=1 if opts["adjoint"] == "discrete" and not any(adjoint_tols) else 0)

    def _stop(self, s, y, g):
        prob = self.prob
        with torch.no_grad():
            v = self.event_fn(prob._t(s), prob.unflatten(prob._y(y)))
        v = torch.as_tensor(v)
        if v.numel() != 1:
            raise ValueError(f"event_fn must return a scalar, got shape {tuple(v.shape)}")
        g[0] = float(v.reshape(()))

    def call(self, name: str, *args):
        """self.solver.<name>(*args); an exception raised in a callback is re-raised as is."""
        model = self.model
        model.error = None
        try:
            with torch.no_grad():  # func's values; vjp enables grad for its products
                out = getattr(self.solver, name)(*args)
        except DiffsolError:
            err = model.take_error()
            if err is None:
                raise
        else:
            err = model.take_error()
            if err is None:
                return out
        raise err  # the original exception object, outside the except block (no context)

    def stats(self) -> Dict[str, int]:
        st = dict(self.solver.stats())
        m = self.model
        st.update(func_evals=m.n_rhs, jac_evals_python=m.n_jac, jvp_evals=m.n_jvp,
                  vjp_evals=m.n_vjp)
        return st


class _OdeintFunction(torch.autograd.Function):
    """y(t) (nt, n) from y0 and the parameters; backward by the kernel's adjoint."""

    @staticmethod
    def forward(ctx, run: _Run, y0flat: torch.Tensor, *params):  # noqa: D401
        y = run.call("forward_checkpointed", run.p, run.times)  # (n, nt)
        ctx.run = run
        ctx.y0_meta = (y0flat.dtype, y0flat.device)
        ctx.param_meta = [(p.dtype, p.device, p.shape) for p in params]
        return torch.from_numpy(np.ascontiguousarray(y.T)).to(
            device=y0flat.device, dtype=y0flat.dtype)

    @staticmethod
    def backward(ctx, gy):
        if torch.is_grad_enabled():  # create_graph=True: a graph of the gradient is wanted
            raise RuntimeError(
                "diffsol_pytorch.odeint does not support double backward (second derivatives, "
                "create_graph=True): its gradient comes from the kernel's adjoint"
            )
        run = ctx.run
        g = np.ascontiguousarray(gy.detach().to("cpu", torch.float64).numpy().T)
        grad = run.call("backward", g)
        n = run.prob.n
        dtype, device = ctx.y0_meta
        out = [None, torch.from_numpy(grad[:n].copy()).to(device=device, dtype=dtype)]
        off = n
        for pdtype, pdevice, shape in ctx.param_meta:
            k = int(np.prod(shape)) if len(shape) else 1
            out.append(torch.from_numpy(grad[off:off + k].copy()).reshape(shape).to(
                device=pdevice, dtype=pdtype))
            off += k
        return tuple(out)

    @staticmethod
    def jvp(ctx, *args):
        raise NotImplementedError(
            "diffsol_pytorch.odeint does not support forward-mode AD (torch.autograd.forward_ad "
            "/ torch.func.jvp): use reverse mode (backward)"
        )


class _EventFunction(torch.autograd.Function):
    """(event_t, [y0; y(event_t)]) with gradients through the event time.

    With the root condition g(t*, y(t*)) = 0, dt*/dp = -(g_y . Y_p + g_p) / D, D = g_t +
    g_y . f(t*, y*), and the total derivative of y* is Y_p + f* dt*/dp (Y_p: the
    sensitivity at a fixed time). So for a loss L(t*, y*) with a = dL/dy*, b = dL/dt*:
    dL/dp = (a - c g_y / D) . Y_p - c g_p / D with c = b + a . f*, the first term from one
    adjoint pass with that terminal weight.
    """

    @staticmethod
    def forward(ctx, run: _Run, event_fn, found: bool, sign: float, y0flat, *params):
        y = run.call("forward_checkpointed", run.p, run.times)  # (n, 2)
        ctx.run, ctx.event_fn, ctx.found, ctx.sign = run, event_fn, found, sign
        ctx.y0_meta = (y0flat.dtype, y0flat.device)
        ctx.params = params
        ctx.yend = y[:, 1].copy()
        dtype, device = y0flat.dtype, y0flat.device
        event_t = torch.tensor(sign * float(run.times[1]), dtype=dtype, device=device)
        return event_t, torch.from_numpy(np.ascontiguousarray(y.T)).to(device=device,
                                                                         dtype=dtype)

    @staticmethod
    def backward(ctx, g_t, g_y):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "diffsol_pytorch.odeint does not support double backward (second derivatives)")
        run, prob = ctx.run, ctx.run.prob
        dtype, device = ctx.y0_meta
        g_y = torch.zeros(2, prob.n, dtype=dtype, device=device) if g_y is None else g_y
        a = g_y[1].detach().to("cpu", torch.float64)
        G = a.clone()
        extra = [None] * len(ctx.params)
        if ctx.found:
            b = 0.0 if g_t is None else float(g_t)
            tstar = torch.tensor(ctx.sign * float(run.times[1]), dtype=dtype, device=device,
                                 requires_grad=True)
            ystar = torch.from_numpy(ctx.yend).to(device=device, dtype=dtype).requires_grad_()
            with torch.enable_grad():
                gv = torch.as_tensor(ctx.event_fn(tstar, prob.unflatten(ystar))).reshape(())
                parts = torch.autograd.grad(gv, (tstar, ystar) + tuple(ctx.params),
                                            allow_unused=True)
            with torch.no_grad():
                fstar = prob.flatten_out(prob.func(tstar.detach(), prob.unflatten(ystar.detach())))
            gt = 0.0 if parts[0] is None else float(parts[0])
            gy = (torch.zeros(prob.n, dtype=torch.float64) if parts[1] is None
                  else parts[1].detach().to("cpu", torch.float64))
            fs = fstar.detach().to("cpu", torch.float64)
            D = gt + float(gy @ fs)
            if D == 0.0:
                raise RuntimeError("event_fn crosses zero tangentially at the event: its time "
                                   "has no derivative")
            c = b + float(a @ fs)
            G = a - (c / D) * gy
            extra = [None if gp is None else (-c / D) * gp for gp in parts[2:]]
        g = np.ascontiguousarray(np.stack([
            g_y[0].detach().to("cpu", torch.float64).numpy(), G.numpy()], axis=1))  # (n, 2)
        grad = run.call("backward", g)
        n = prob.n
        out = [None, None, None, None,
               torch.from_numpy(grad[:n].copy()).to(device=device, dtype=dtype)]
        off = n
        for prm, e in zip(ctx.params, extra):
            k = prm.numel()
            gp = torch.from_numpy(grad[off:off + k].copy()).reshape(prm.shape).to(
                device=prm.device, dtype=prm.dtype)
            if e is not None:
                gp = gp + e.to(device=prm.device, dtype=prm.dtype)
            out.append(gp)
            off += k
        return tuple(out)


# ---- public functions -----------------------------------------------------------------


def _refuse_forward_ad(tensors) -> None:
    import torch.autograd.forward_ad as fwAD

    for x in tensors:
        if fwAD.unpack_dual(x).tangent is not None:
            raise NotImplementedError(
                "diffsol_pytorch.odeint does not support forward-mode AD "
                "(torch.autograd.forward_ad dual tensors): use reverse mode (backward)"
            )


def _find_params(func) -> Tuple[torch.Tensor, ...]:
    if isinstance(func, torch.nn.Module):
        return tuple(func.parameters())
    return ()


def _odeint(func, y0, t, rtol, atol, method, options, event_fn, adjoint_params,
            adjoint_tols=(0.0, 0.0)):
    if not callable(func):
        raise ValueError("func must be callable as func(t, y)")
    if method is None:
        method = "bdf"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    rtol = _check_tol(rtol, "rtol")
    atol = _check_tol(atol, "atol")
    ys, is_tuple = _check_y0(y0)
    times = _check_t(t, event_fn is not None)
    opts = _check_options(options, method)
    if adjoint_params is None:
        adjoint_params = _find_params(func)
    params = tuple(p for p in adjoint_params if isinstance(p, torch.Tensor) and p.requires_grad)
    _refuse_forward_ad(ys + tuple(params))
    sign = 1.0
    if len(times) > 1 and times[1] < times[0]:
        sign = -1.0
    s_times = sign * times
    prob = _Problem(func, ys, is_tuple, sign, params)
    y0flat_t = torch.cat([y.reshape(-1) for y in ys]) if is_tuple else ys[0].reshape(-1)
    y0flat = np.ascontiguousarray(y0flat_t.detach().to("cpu", torch.float64).numpy())
    run = _Run(prob, s_times, y0flat, method, rtol, atol, opts, event_fn, adjoint_tols)
    needs_grad = torch.is_grad_enabled() and (
        y0flat_t.requires_grad or any(p.requires_grad for p in params))

    if event_fn is not None:
        t_end = float(s_times[-1]) if len(s_times) > 1 else float(s_times[0]) + 1e12
        ts, ysol, stop = run.call("solve", run.p, t_end)
        if stop is None:
            event_s, y_end = float(ts[-1]), ysol[:, -1]
        else:
            event_s, y_end = float(stop[0]), ysol[:, -1]
        _LAST_STATS.clear()
        _LAST_STATS.update(run.stats())
        if needs_grad:
            # the same solve up to the event time, checkpointed, for the adjoint
            run2 = _Run(prob, np.array([s_times[0], event_s]), y0flat, method, rtol, atol, opts,
                        None, adjoint_tols)
            event_t, flat = _EventFunction.apply(run2, event_fn, stop is not None, sign,
                                                 y0flat_t, *params)
            return event_t, prob.unflatten(flat)
        flat = np.stack([y0flat, y_end])  # (2, n) like torchdiffeq
        sol = torch.from_numpy(flat).to(device=prob.device, dtype=prob.dtype)
        event_t = torch.tensor(sign * event_s, dtype=prob.dtype, device=prob.device)
        return event_t, prob.unflatten(sol)

    if needs_grad:
        flat = _OdeintFunction.apply(run, y0flat_t, *params)
    else:
        y = run.call("solve_dense", run.p, s_times)  # (n, nt)
        flat = torch.from_numpy(np.ascontiguousarray(y.T)).to(
            device=prob.device, dtype=prob.dtype)
    _LAST_STATS.clear()
    _LAST_STATS.update(run.stats())
    return prob.unflatten(flat)


_LAST_STATS: Dict[str, int] = {}


def last_stats() -> Dict[str, int]:
    """Counters of the last odeint forward solve (steps, rhs_evals, ..., func_evals).

    ``func_evals`` counts the calls of ``func`` for the right-hand side; Jacobians
    (``jac_evals_python``) and products (``jvp_evals``, ``vjp_evals``) are counted apart.
    """
    return dict(_LAST_STATS)


def odeint(func: Callable, y0: Tensors, t: Any, *, rtol: float = 1e-7, atol: float = 1e-9,
           method: Optional[str] = "bdf", options: Optional[Dict[str, Any]] = None,
           event_fn: Optional[Callable] = None):
    """Solve dy/dt = func(t, y), y(t[0]) = y0, like ``torchdiffeq.odeint``.

    Parameters
    ----------
    func : callable ``func(t, y)``
        ``t`` is a scalar tensor, ``y`` a tensor of ``y0``'s shape (or a tuple like
        ``y0``); returns dy/dt of the same shape. Typically an ``nn.Module``.
    y0 : torch.Tensor or tuple
        Initial state, float32 or float64 (the solve is float64; ``func`` sees and the
        result comes in ``y0``'s dtype and device).
    t : torch.Tensor, array or list
        Output times, strictly increasing or strictly decreasing; ``t[0]`` is the
        initial time.
    rtol, atol : float
        Tolerances of the integrator (and of the adjoint).
    method : str
        "bdf" (CVODES BDF, for stiff problems; default), "adams", "tsit45", "dopri5",
        "tr_bdf2", "esdirk34".
    options : dict
        ``max_num_steps`` (int), ``first_step`` (float), ``jacobian`` ("dense": from
        ``torch.func.jacrev``, or "matrix_free": from ``torch.func.jvp`` products),
        ``checkpoints`` (integration steps between checkpoints of the adjoint's forward
        pass).
    event_fn : callable ``event_fn(t, y)`` -> scalar tensor, optional
        The solve stops at its first root after ``t[0]``; returns ``(event_t, y)``
        with ``y`` of leading dimension 2 (``y0`` and the state at ``event_t``), as in
        torchdiffeq. Integrates up to ``t[-1]`` at most. Differentiable: the gradient
        of the event time and state (implicit function theorem at the root, one adjoint
        pass over the solve up to the event).

    Returns
    -------
    Tensor of shape ``(len(t), *y0.shape)`` (a tuple of them for a tuple ``y0``).
    Differentiable w.r.t. ``y0`` and the parameters of ``func`` (when it is an
    ``nn.Module``) through the kernel's checkpointed adjoint; not w.r.t. ``t``, no
    second derivatives, no forward-mode AD. Exceptions raised by ``func`` propagate
    unchanged. Invalid inputs raise ``ValueError`` before any work.
    """
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, None)


def odeint_adjoint(func: Callable, y0: Tensors, t: Any, *, rtol: float = 1e-7,
                   atol: float = 1e-9, method: Optional[str] = "bdf",
                   options: Optional[Dict[str, Any]] = None, event_fn: Optional[Callable] = None,
                   adjoint_rtol: Optional[float] = None, adjoint_atol: Optional[float] = None,
                   adjoint_method: Optional[str] = None,
                   adjoint_options: Optional[Dict[str, Any]] = None,
                   adjoint_params: Optional[Sequence[torch.Tensor]] = None):
    """``odeint`` with the gradient w.r.t. ``adjoint_params`` (default
    ``func.parameters()``) and ``y0`` from the adjoint method, like
    ``torchdiffeq.odeint_adjoint``.

    The backward pass integrates the adjoint over the checkpointed forward pass with
    vector-Jacobian products of ``func`` (``torch.autograd.grad``). ``adjoint_params``
    may name tensors ``func`` closes over (every one ``func``'s output depends on and
    you want a gradient for must be listed; those without ``requires_grad`` are
    skipped). ``adjoint_rtol`` / ``adjoint_atol`` are the tolerances of the backward
    integration (default: ``rtol`` / ``atol``). The kernel's adjoint integrates with the
    forward method: ``adjoint_method`` must be None or ``method``; ``adjoint_options``
    must be None or empty.
    """
    if adjoint_method is not None and adjoint_method != method:
        raise ValueError(
            "adjoint_method must be None or equal to method: the kernel's adjoint integrates "
            "with the forward method"
        )
    if adjoint_options:
        raise ValueError("adjoint_options is not supported (the adjoint uses options)")
    adjoint_tols = (0.0 if adjoint_rtol is None else _check_tol(adjoint_rtol, "adjoint_rtol"),
                    0.0 if adjoint_atol is None else _check_tol(adjoint_atol, "adjoint_atol"))
    if adjoint_params is not None:
        adjoint_params = tuple(adjoint_params)
        for p in adjoint_params:
            if not isinstance(p, torch.Tensor):
                raise ValueError("adjoint_params must be tensors")
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, adjoint_params,
                   adjoint_tols)
