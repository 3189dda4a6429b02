"""Matplotlib plots of solutions.

matplotlib is imported lazily, figures are made without pyplot (so nothing
depends on the backend and nothing is shown), and every function returns the
Figure; in Jupyter a returned Figure is displayed as the cell's value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_solution"]


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _create_ax(ax: Optional["Axes"]) -> tuple["Figure", "Axes"]:
    """Use the Axes given, or make a Figure (without pyplot) with one Axes."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    return fig, fig.add_subplot()


def plot_solution(
    times: Any,
    y: Any,
    labels: Optional[Sequence[str]] = None,
    ax: Optional["Axes"] = None,
    *,
    logx: bool = False,
    title: Optional[str] = None,
) -> "Figure":
    """Plot each output of a solution against time.

    Parameters
    ----------
    times : array_like or torch.Tensor
        Shape ``(nt,)``.
    y : array_like or torch.Tensor
        Shape ``(nout, nt)`` (as returned by ``solve_dense``) or ``(nt,)``.
    labels : sequence of str, optional
        One label per output; default ``y[0]``, ``y[1]``, ...
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes; by default a new Figure is made.
    logx : bool, optional
        Logarithmic time axis. The default is False.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into; ``plt.show()`` is never called.
    """
    t = _as_array(times)
    values = _as_array(y)
    if values.ndim == 1:
        values = values[None, :]
    if t.ndim != 1 or values.ndim != 2 or values.shape[1] != t.shape[0]:
        raise ValueError(
            f"y must have shape (nout, {t.shape[0]}) to match times, got {values.shape}"
        )
    if labels is None:
        labels = [f"y[{i}]" for i in range(values.shape[0])]
    elif len(labels) != values.shape[0]:
        raise ValueError(f"got {len(labels)} labels for {values.shape[0]} outputs")
    fig, ax = _create_ax(ax)
    for row, label in zip(values, labels):
        ax.plot(t, row, marker="." if t.shape[0] <= 50 else None, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("t")
    if title:
        ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    return fig
