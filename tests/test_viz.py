"""viz.plot_solution returns a Figure and never needs a display."""

import numpy as np
import pytest
import torch

from diffsol_pytorch import viz

pytestmark = pytest.mark.unit


def test_plot_solution_returns_figure(tmp_path):
    from matplotlib.figure import Figure

    t = np.linspace(0, 1, 11)
    y = torch.tensor(np.vstack([np.exp(-t), np.exp(-2 * t)]))
    fig = viz.plot_solution(t, y, labels=["a", "b"])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_plot_into_given_axes_with_log_x():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    out = viz.plot_solution(np.logspace(-3, 3, 7), np.ones(7), ax=ax, logx=True)
    assert out is fig
    assert ax.get_xscale() == "log"


def test_shape_mismatch():
    with pytest.raises(ValueError):
        viz.plot_solution(np.arange(3), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        viz.plot_solution(np.arange(3), np.zeros((2, 3)), labels=["only one"])
