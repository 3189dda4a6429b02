"""DiffsolLayer: a DiffSL model as a torch.nn.Module with trainable parameters."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import nn

from diffsol_pytorch.module import DiffsolModule

__all__ = ["DiffsolLayer"]


class DiffsolLayer(nn.Module):
    """A DiffSL model whose parameters (``in``) are one ``nn.Parameter``.

    ``forward(times)`` returns the outputs ``(nout, len(times))``; gradients w.r.t. the
    parameters come from the kernel's adjoint, so the layer trains with any
    ``torch.optim`` optimiser and its parameters appear in ``state_dict``.

    Parameters
    ----------
    code_or_module : str or DiffsolModule
        DiffSL source (compiled here with ``**options``) or a compiled module.
    params : tensor, array or list, optional
        Initial parameter values; the default is the literal values in ``in``.
    **options
        Keyword arguments of :class:`DiffsolModule` (``method``, ``rtol``, ...), when
        ``code_or_module`` is source.

    Examples
    --------
    >>> layer = DiffsolLayer("in_i { k = 1 }\\nu { 1 }\\nF { -k * u }")
    >>> opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    >>> loss = (layer(torch.linspace(0, 1, 5)) - 0.5).square().sum()
    >>> loss.backward(); opt.step()
    """

    def __init__(
        self,
        code_or_module: Union[str, DiffsolModule],
        params: Optional[Any] = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if isinstance(code_or_module, DiffsolModule):
            if options:
                raise TypeError(
                    f"options {sorted(options)} apply only when the layer compiles DiffSL source"
                )
            self.module = code_or_module
        else:
            self.module = DiffsolModule(code_or_module, **options)
        init = self.module.default_params if params is None else torch.as_tensor(
            params, dtype=torch.float64)
        if init.shape != (self.module.nparams,):
            raise ValueError(
                f"params must have shape ({self.module.nparams},) for "
                f"{self.module.param_names}, got {tuple(init.shape)}"
            )
        self.params = nn.Parameter(init.detach().clone().to(torch.float64))

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the entries of ``self.params``, in the order of ``in``."""
        return self.module.param_names

    def named_values(self) -> dict[str, float]:
        """The current parameter values by name."""
        return dict(zip(self.param_names, self.params.detach().tolist()))

    def forward(self, times: Any) -> torch.Tensor:
        """Outputs at ``times``: ``(nout, len(times))``, differentiable w.r.t. ``params``."""
        if isinstance(times, torch.Tensor):
            times = times.detach()
        return self.module.solve_dense(self.params, times)

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={v:.6g}" for n, v in self.named_values().items())
