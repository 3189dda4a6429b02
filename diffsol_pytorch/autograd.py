"""torch.autograd for DiffsolModule.solve_dense: reverse mode by the kernel's adjoint.

``module.solve_dense(params, times)`` with ``params.requires_grad`` returns a tensor
whose ``backward`` runs one backward pass of the checkpointed adjoint over the forward
pass that produced it (no finite differences, no second forward pass when nothing else
ran on the module in between; otherwise the forward pass is recomputed with checkpoints).
Where the adjoint does not cover a model yet (an ARKODE method on a model with ``M`` or
with events) the gradient comes from forward sensitivities instead.

Forward-mode AD with ``torch.autograd.forward_ad`` (dual tensors) uses the forward
sensitivities; the ``torch.func`` transforms (``jvp``, ``vmap``) are not supported yet. Second derivatives are not supported: differentiating the gradient again
raises.
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


def _vjp(module: "DiffsolModule", p: np.ndarray, t: np.ndarray, g: np.ndarray, ckpt) -> np.ndarray:
    """sum(g * dy/dp) for one parameter set, by the cheapest exact route available."""
    if ckpt is not None and ckpt[0] == module._solver_generation():
        try:
            return module._solver.backward(g)
        except ValueError:
            pass  # the checkpoints were overwritten: recompute below
    try:
        return module._solver.reverse(p, t, g)
    except ValueError as exc:
        forward = getattr(module._solver, "forward_mode", None)
        if forward is None or "reverse mode" not in str(exc):
            raise
        _, sens = forward(p, t)  # (nparams, nout, nt)
        return np.einsum("kij,ij->k", sens, g)


class _SolveDense(torch.autograd.Function):
    """y = solve_dense(params, times); backward by the adjoint."""

    @staticmethod
    def forward(ctx, params, module, times):  # noqa: D401 - autograd signature
        p = params.detach().to(device="cpu", dtype=torch.float64).numpy()
        p = np.ascontiguousarray(p)
        ckpts = []
        rows = [p] if p.ndim == 1 else list(p)
        ys = []
        for row in rows:
            row = np.ascontiguousarray(row)
            try:
                ys.append(module._solver.forward_checkpointed(row, times))
                ckpts.append((module._solver_generation(),))
            except ValueError as exc:
                if "reverse mode" not in str(exc):
                    raise
                ys.append(module._solver.solve_dense(row, times))
                ckpts.append(None)
        # only the last row's checkpoints survive the loop
        ckpts = [None] * (len(ckpts) - 1) + [ckpts[-1]]
        y = ys[0] if p.ndim == 1 else np.stack(ys)
        ctx.module, ctx.times, ctx.p, ctx.ckpts = module, times, p, ckpts
        ctx.param_dtype, ctx.param_device = params.dtype, params.device
        return torch.from_numpy(y).to(device=params.device, dtype=params.dtype)

    @staticmethod
    def jvp(ctx, dparams, _module, _times):
        """Forward-mode AD: dy = sum_k dparams_k dy/dp_k, from forward sensitivities."""
        m, t, p = ctx.module, ctx.times, ctx.p
        dp = dparams.detach().to(device="cpu", dtype=torch.float64).numpy()
        if p.ndim == 1:
            _, sens = m._solver.forward(p, t)
            dy = np.einsum("k,kij->ij", dp, sens)
        else:
            dy = np.stack([np.einsum("k,kij->ij", dp[b], m._solver.forward(
                np.ascontiguousarray(p[b]), t)[1]) for b in range(p.shape[0])])
        return torch.from_numpy(dy).to(device=ctx.param_device, dtype=ctx.param_dtype)

    @staticmethod
    def backward(ctx, grad_y):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative is being built
            raise RuntimeError(
                "diffsol_pytorch: second derivatives of solve_dense are not supported "
                "(the backward pass is the adjoint, not differentiable again); call backward "
                "or torch.autograd.grad without create_graph=True"
            )
        g = np.ascontiguousarray(grad_y.detach().to(device="cpu", dtype=torch.float64).numpy())
        m, t, p = ctx.module, ctx.times, ctx.p
        if p.ndim == 1:
            grad = _vjp(m, p, t, g, ctx.ckpts[0])
        else:
            grad = np.stack([
                _vjp(m, np.ascontiguousarray(p[b]), t, np.ascontiguousarray(g[b]), ctx.ckpts[b])
                for b in range(p.shape[0])
            ])
        grad_p = torch.from_numpy(grad).to(device=ctx.param_device, dtype=ctx.param_dtype)
        return grad_p, None, None


def solve_dense(module: "DiffsolModule", params: torch.Tensor, times: np.ndarray) -> torch.Tensor:
    """Differentiable solve (``params`` already validated; ``times`` a float64 array)."""
    return _SolveDense.apply(params, module, times)
