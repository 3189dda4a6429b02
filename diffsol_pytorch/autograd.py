"""torch.autograd and torch.func for DiffsolModule.solve_dense: reverse mode by the kernel's adjoint.

``module.solve_dense(params, times)`` with ``params.requires_grad`` returns a tensor
whose ``backward`` runs one backward pass of the checkpointed adjoint over the forward
pass that produced it (no finite differences, no second forward pass when nothing else
ran on the module in between; otherwise the forward pass is recomputed with checkpoints).
A batch ``params`` of shape ``(B, nparams)``, ``B >= 2``, is solved by the kernel's
thread pool (docs/batches.md) and its gradient ``(B, nparams)`` comes from the batched
reverse pass, each row with its own ``grad_output``.
Where the adjoint does not cover a model yet (an ARKODE method on a model with ``M``)
the gradient comes from forward sensitivities instead, and so it does when the module's
``gradient_method`` picks them (``"forward"``, or ``"auto"`` with few parameters against
many output times): the solve then computes them and ``backward`` only contracts them
with the incoming gradient.

Forward-mode AD with ``torch.autograd.forward_ad`` (dual tensors) uses the forward
sensitivities. The ``torch.func`` transforms work on ``params``: ``grad``, ``vjp``,
``jvp``, ``jacrev``, ``jacfwd`` and ``vmap`` (a vmapped solve or vector-Jacobian product
runs as one native batch; ``jvp`` contracts the forward sensitivities with the
tangents in torch ops, so ``jacfwd`` costs one sensitivity solve).
Second derivatives are not supported: differentiating the gradient again raises
(``create_graph=True``, ``torch.func.grad(torch.func.grad(...))``, ``hessian``).
Gradients with respect to ``times`` are not supported either: passing ``times`` that
require grad raises ``ValueError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from diffsol_pytorch.module import DiffsolModule

__all__ = ["solve_dense"]

_SECOND_DERIVATIVE = (
    "diffsol_pytorch: second derivatives of solve_dense are not supported "
    "(the backward pass is the adjoint, not differentiable again); call backward "
    "or torch.autograd.grad without create_graph=True"
)


def _numpy(x: torch.Tensor) -> np.ndarray:
    """A float64 C-contiguous CPU copy (or view) of a plain tensor."""
    with torch._C._DisableFuncTorch():
        return np.ascontiguousarray(x.detach().to(device="cpu", dtype=torch.float64).numpy())


def _in_functorch() -> bool:
    """Is a torch.func transform (grad, vjp, jacrev, vmap, ...) active?"""
    return torch._C._functorch.maybe_current_level() is not None


class _Meta:
    """What a solve needs besides the parameter tensor: module, times, threads; and,
    when the gradient comes from forward sensitivities, those of the forward pass
    (``sens``) with the parameters they belong to (``sens_key``)."""

    __slots__ = ("module", "times", "threads", "sens", "sens_key")

    def __init__(self, module: "DiffsolModule", times: np.ndarray, threads: int) -> None:
        self.module, self.times, self.threads = module, times, threads
        self.sens, self.sens_key = None, None


def contract(sens: np.ndarray, g: np.ndarray) -> np.ndarray:
    """sum(g * dy/dp): sens (nparams, nout, nt) with g (nout, nt), or the batched
    (B, nparams, nout, nt) with (B, nout, nt).

    Columns after a stop root without reset are NaN in ``sens``; they count as zero
    where ``g`` is zero and raise ``ValueError`` (as the adjoint does) where it is not.
    """
    nan = np.isnan(sens)
    if nan.any():
        if np.any(nan.any(axis=-3) & (g != 0)):
            raise ValueError(
                "the gradient has non-zero entries after the solve stopped at an event, "
                "where the outputs are NaN; set grad_output to zero there"
            )
        sens = np.where(nan, 0.0, sens)
    if sens.ndim == 3:
        return np.einsum("kij,ij->k", sens, g)
    return np.einsum("bkij,bij->bk", sens, g)


# ---- the kernel calls ----------------------------------------------------------------


def _forward_values(meta: _Meta, p: np.ndarray) -> np.ndarray:
    """y for p (nparams,) or (B, nparams); one row keeps its checkpoints for backward,
    or, when the module's gradient_method picks forward sensitivities, the solve
    computes them too and the backward pass only contracts them."""
    m, t = meta.module, meta.times
    if not np.all(np.isfinite(p)):  # checked here for params under torch.func
        raise ValueError("params must be finite (found NaN or inf)")
    if m._gradient_by_forward(t.shape[0], t):
        meta.sens_key = p.tobytes()
        if p.ndim == 1:
            y, meta.sens = m._solver.forward(p, t)
            return y
        if p.shape[0] == 1:
            y, sens = m._solver.forward(np.ascontiguousarray(p[0]), t)
            meta.sens = sens[None]
            return y[None]
        y, meta.sens, _ = m._get_batch().forward(p, t, meta.threads)
        return y
    if p.ndim == 2 and p.shape[0] != 1:
        return m._get_batch().solve_dense(p, t, meta.threads)[0]
    row = p if p.ndim == 1 else p[0]
    try:
        y, generation = m._solver.forward_checkpointed(row, t, True)
        # the backward pass may reuse these checkpoints while they are the solver's
        # latest (same generation) and were taken for the same parameters and times
        m._last_checkpoint = (generation, row.tobytes(), t.tobytes())
    except ValueError as exc:
        if "reverse mode" not in str(exc):
            raise
        y = m._solver.solve_dense(row, t)
    return y if p.ndim == 1 else y[None]


def _jumps(g: np.ndarray) -> int:
    """Output times with a non-zero gradient column (in any row of a batch)."""
    return int(np.any(g != 0, axis=tuple(range(g.ndim - 1))).sum())


def _by_forward(m: "DiffsolModule", t: np.ndarray, g: np.ndarray) -> bool:
    """Does the module's gradient_method take forward sensitivities for g over the
    output times t? (the count of output times only when it matters)"""
    return m.gradient_method != "adjoint" and m._gradient_by_forward(_jumps(g), t)


# "auto" learns which method is cheaper for a loss over many output times. Each output
# time with a gradient restarts the adjoint's backward integration, and on a stiff
# problem every restart resolves a new fast transient of lambda to the tolerance
# (hundreds of steps: docs/gradients.md), while forward sensitivities cost the same
# whatever the output times. From the step counts of an adjoint pass, a gradient costs
# about 1.35 (F + B) / F plain solves by the adjoint (F forward, B backward steps) and
# 1.5 + 0.75 P by forward sensitivities (P parameters): the fits of
# benchmarks/bench_gradients.py's problems and a stiff chain (tests/test_gradient_method.py).
# Once the adjoint measured more than _ADJOINT_MARGIN times that for some output times,
# later gradients over the same times take forward sensitivities. The adjoint of "auto"
# also runs with a step budget (adjoint_budget): a backward pass that goes over it stops
# there, and that gradient too comes from forward sensitivities, so that even the first
# gradient costs at most about 1 + _ADJOINT_MARGIN times the cheaper method.
_ADJOINT_MARGIN = 1.5
_ADJOINT_RECORDS = 64  # output-time arrays remembered per module


def _forward_estimate(nparams: int) -> float:
    """Forward sensitivities' cost in plain solves, estimated."""
    return 1.5 + 0.75 * nparams


def adjoint_budget(m: "DiffsolModule") -> float:
    """Backward steps per forward step at which the adjoint's estimated cost,
    1.35 (F + B) / F, reaches _ADJOINT_MARGIN times that of forward sensitivities."""
    return _ADJOINT_MARGIN * _forward_estimate(m.nparams) / 1.35 - 1.0


def record_adjoint_cost(m: "DiffsolModule", t: np.ndarray,
                        steps: tuple[int, int] | None = None) -> None:
    """After an adjoint pass over the output times t: its cost over that of forward
    sensitivities, estimated from its forward and backward step counts (``steps``,
    else the solver's)."""
    if steps is None:
        st = m._solver.stats()
        steps = (st["steps"], st["backward_steps"])
    f = max(int(steps[0]), 1)
    adjoint = 1.35 * (f + int(steps[1])) / f
    forward = _forward_estimate(m.nparams)
    cost = m._adjoint_cost
    if len(cost) >= _ADJOINT_RECORDS:
        cost.clear()
    cost[t.tobytes()] = adjoint / forward


def adjoint_costlier(m: "DiffsolModule", t: np.ndarray) -> bool:
    """Did the adjoint over the output times t measure clearly costlier than forward
    sensitivities would be?"""
    return m._adjoint_cost.get(t.tobytes(), 0.0) > _ADJOINT_MARGIN


def row_gradient(m: "DiffsolModule", p: np.ndarray, t: np.ndarray, g: np.ndarray, *,
                 fallback: bool = True) -> np.ndarray:
    """sum(g * dy/dp) for one parameter set: the adjoint (over the checkpoints of the
    last forward pass when they are for p and t), or forward sensitivities when the
    module's gradient_method picks them, or (``fallback``) where the adjoint does not
    cover the model."""
    if not _by_forward(m, t, g):
        auto = m.gradient_method == "auto"
        m.last_gradient_method = "adjoint"
        try:
            grad = _adjoint_row(m, p, t, g, adjoint_budget(m) if auto else 0.0)
        except ValueError as exc:
            if not fallback or "reverse mode" not in str(exc):
                raise
        else:
            if m._solver.discrete_recorded():
                m.last_gradient_method = "discrete"
            elif auto:
                record_adjoint_cost(m, t)
            if grad is not None:
                return grad
            # "auto": the adjoint went over its budget, forward sensitivities are cheaper
    m.last_gradient_method = "forward"
    return contract(m._solver.forward(p, t)[1], g)


def _adjoint_row(m: "DiffsolModule", p: np.ndarray, t: np.ndarray, g: np.ndarray,
                 budget: float) -> np.ndarray | None:
    """The adjoint gradient over the checkpoints of the last forward pass when they are
    for p and t, else with a new forward pass; None when the backward pass went over
    ``budget`` backward steps per forward step (> 0)."""
    ck = getattr(m, "_last_checkpoint", None)
    if ck is not None and ck == (m._solver_generation(), p.tobytes(), t.tobytes()):
        try:
            return m._solver.backward(g, budget)
        except ValueError:
            pass  # another solve came in between: recompute below
    return m._solver.reverse(p, t, g, budget)


def batch_gradient(m: "DiffsolModule", p: np.ndarray, t: np.ndarray, g: np.ndarray,
                   threads: int, *, fallback: bool = True) -> np.ndarray:
    """(B, nparams) gradients of a batch p (B >= 2, nparams) with g (B, nout, nt), as
    row_gradient: the batched adjoint or batched forward sensitivities."""
    batch = m._get_batch()
    if not _by_forward(m, t, g):
        auto = m.gradient_method == "auto"
        m.last_gradient_method = "adjoint"
        try:
            grad = batch.reverse(p, t, g, threads, adjoint_budget(m) if auto else 0.0)
        except ValueError as exc:
            if not fallback or "reverse mode" not in str(exc):
                raise
        else:
            if m._solver.discrete_adjoint():  # the workers' solvers have the same options
                m.last_gradient_method = "discrete"
            elif auto:
                record_adjoint_cost(m, t, batch.last_steps)
            if grad is not None:
                return grad
    m.last_gradient_method = "forward"
    return contract(batch.forward(p, t, threads)[1], g)


def _vjp_values(meta: _Meta, p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient for p (nparams,) / g (nout, nt), or p (B, nparams) / g (B, nout, nt)."""
    m, t = meta.module, meta.times
    if meta.sens is not None and meta.sens_key == p.tobytes():
        m.last_gradient_method = "forward"
        return contract(meta.sens, g)  # the forward pass's sensitivities
    if p.ndim == 1:
        return row_gradient(m, p, t, g)
    if p.shape[0] == 1:
        return row_gradient(m, np.ascontiguousarray(p[0]), t, np.ascontiguousarray(g[0]))[None]
    return batch_gradient(m, p, t, g, meta.threads)


def _sensitivities(meta: _Meta, p: np.ndarray) -> np.ndarray:
    """d y / d p: (nparams, nout, nt), or (B, nparams, nout, nt) for a batch."""
    m, t = meta.module, meta.times
    if p.ndim == 1:
        return m._solver.forward(p, t)[1]
    if p.shape[0] == 1:
        return m._solver.forward(np.ascontiguousarray(p[0]), t)[1][None]
    return m._get_batch().forward(p, t, meta.threads)[1]


def _flatten_batch(x: torch.Tensor, bdim: int | None, n: int, tail: int) -> torch.Tensor:
    """Move a vmap dimension to the front (or add one of size n) and flatten every
    leading dimension but the last ``tail`` ones into one."""
    x = x.movedim(bdim, 0) if bdim is not None else x.expand(n, *x.shape)
    return x.reshape(-1, *x.shape[x.dim() - tail:])


# ---- the autograd Functions ----------------------------------------------------------


class _SolveDense(torch.autograd.Function):
    """y = solve_dense(params, times); backward by the adjoint, jvp by forward
    sensitivities, vmap as one native batch."""

    @staticmethod
    def forward(params, meta):  # noqa: D401 - autograd signature
        y = _forward_values(meta, _numpy(params))
        return torch.from_numpy(y).to(device=params.device, dtype=params.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        params, meta = inputs
        ctx.meta = meta
        ctx.save_for_backward(params)
        ctx.save_for_forward(params)

    @staticmethod
    def backward(ctx, grad_y):
        if torch.is_grad_enabled() and not _in_functorch():
            # create_graph=True: a second derivative is being built
            raise RuntimeError(_SECOND_DERIVATIVE)
        (params,) = ctx.saved_tensors
        return _VJP.apply(grad_y, params, ctx.meta), None

    @staticmethod
    def jvp(ctx, dparams, _meta):
        """Forward-mode AD: dy = sum_k dparams_k dy/dp_k, from forward sensitivities
        (contracted in torch ops, so a vmapped jvp, i.e. jacfwd, solves once)."""
        (params,) = ctx.saved_tensors
        sens = torch.from_numpy(_sensitivities(ctx.meta, _numpy(params)))
        sens = sens.to(device=dparams.device, dtype=dparams.dtype)
        if params.dim() == 1:
            return torch.einsum("k,kij->ij", dparams, sens)
        return torch.einsum("bk,bkij->bij", dparams, sens)

    @staticmethod
    def vmap(info, in_dims, params, meta):
        """vmap over params: every mapped parameter set in one native batch."""
        bdim = in_dims[0]
        if bdim is None:
            return _SolveDense.apply(params, meta), None
        n = info.batch_size
        flat = _flatten_batch(params, bdim, n, 1)
        y = _SolveDense.apply(flat, meta)  # (M, nout, nt)
        lead = params.movedim(bdim, 0).shape[:-1]
        return y.reshape(*lead, *y.shape[1:]), 0


class _VJP(torch.autograd.Function):
    """grad_params = vjp(grad_y) of _SolveDense; not differentiable again."""

    @staticmethod
    def forward(grad_y, params, meta):  # noqa: D401 - autograd signature
        grad = _vjp_values(meta, _numpy(params), _numpy(grad_y))
        return torch.from_numpy(grad).to(device=params.device, dtype=params.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, _grad):
        raise RuntimeError(_SECOND_DERIVATIVE)

    @staticmethod
    def jvp(ctx, *_tangents):
        raise RuntimeError(_SECOND_DERIVATIVE)

    @staticmethod
    def vmap(info, in_dims, grad_y, params, meta):
        """vmap over grad_y (jacrev) and/or params: one batched reverse pass."""
        gdim, pdim = in_dims[0], in_dims[1]
        if gdim is None and pdim is None:
            return _VJP.apply(grad_y, params, meta), None
        n = info.batch_size
        g = _flatten_batch(grad_y, gdim, n, 2)
        p = _flatten_batch(params, pdim, n, 1)
        grad = _VJP.apply(g, p, meta)  # (M, nparams)
        lead = (n,) + tuple(params.shape if pdim is None else params.movedim(pdim, 0).shape[1:])
        return grad.reshape(lead), 0


def solve_dense(
    module: "DiffsolModule", params: torch.Tensor, times: np.ndarray, threads: int = 1
) -> torch.Tensor:
    """Differentiable solve (``params`` already validated; ``times`` a float64 array)."""
    return _SolveDense.apply(params, _Meta(module, times, threads))
