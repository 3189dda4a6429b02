"""viz: each plot returns a Figure, never needs a display, and draws what it should."""

import json

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


# ---- plot_sensitivities, plot_phase -------------------------------------------------


def test_plot_sensitivities_one_axes_per_output(tmp_path):
    t = np.linspace(0, 2, 21)
    nparams, nout = 3, 2
    sens = torch.tensor(np.stack([[np.sin((j + 1) * t + k) for k in range(nout)] for j in range(nparams)]))
    fig = viz.plot_sensitivities(t, sens, param_names=["a", "b", "c"])
    fig.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    assert len(fig.axes) == nout
    for k, ax in enumerate(fig.axes):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["a", "b", "c"]
        np.testing.assert_allclose(lines[1].get_ydata(), sens[1, k].numpy())
        assert [text.get_text() for text in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert fig.axes[-1].get_xlabel() == "t"


def test_plot_sensitivities_defaults_lists_and_log_axis():
    t = [1e-3, 1e-2, 1e-1, 1.0]
    sens = [[[1.0, 2.0, 3.0, 4.0]], [[0.0, 1.0, 0.0, 1.0]]]  # (2, 1, 4) as lists
    fig = viz.plot_sensitivities(t, sens, logx=True, output_labels=["x"])
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["p[0]", "p[1]"]
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "d x / dp"


def test_plot_sensitivities_shape_errors():
    with pytest.raises(ValueError, match="nparams, nout, 3"):
        viz.plot_sensitivities(np.arange(3.0), np.zeros((2, 1, 4)))
    with pytest.raises(ValueError, match="param_names"):
        viz.plot_sensitivities(np.arange(3.0), np.zeros((2, 1, 3)), param_names=["only"])


def test_plot_phase_line_and_markers(tmp_path):
    s = np.linspace(0, 2 * np.pi, 50)
    y = np.vstack([np.cos(s), np.sin(s), s])
    fig = viz.plot_phase(torch.tensor(y), i=0, j=1, labels=["prey", "pred", "other"])
    fig.savefig(tmp_path / "phase.png")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"pred vs prey", "start", "end"}
    np.testing.assert_allclose(lines["pred vs prey"].get_xdata(), y[0])
    np.testing.assert_allclose(lines["pred vs prey"].get_ydata(), y[1])
    assert (lines["start"].get_xdata()[0], lines["start"].get_ydata()[0]) == (y[0, 0], y[1, 0])
    assert (lines["end"].get_xdata()[0], lines["end"].get_ydata()[0]) == (y[0, -1], y[1, -1])
    assert lines["start"].get_marker() == "o" and lines["end"].get_marker() == "s"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("prey", "pred")


def test_plot_phase_into_axes_with_axis_labels_and_negative_index():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    y = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 0.0, 1.0]]
    assert viz.plot_phase(y, i=-1, j=0, labels=["z", "x"], ax=ax) is fig
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z", "x")
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), y[2])


def test_plot_phase_errors():
    with pytest.raises(ValueError, match="nout >= 2"):
        viz.plot_phase(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="out of range"):
        viz.plot_phase(np.zeros((2, 5)), j=2)
    with pytest.raises(ValueError, match="different"):
        viz.plot_phase(np.zeros((2, 5)), i=1, j=1)
    with pytest.raises(ValueError, match="labels"):
        viz.plot_phase(np.zeros((3, 5)), labels=["a"])


# ---- benchmark history ----------------------------------------------------------------


def write_run(directory, commit, commit_time, run_time, medians, *, name=None, dirty=False):
    """A pytest-benchmark JSON file with the real schema; medians: {benchmark name: seconds}."""
    benchmarks = []
    for bench, median in medians.items():
        benchmarks.append(
            {
                "group": None,
                "name": bench,
                "fullname": f"benchmarks/bench_solve.py::{bench}",
                "params": None,
                "param": None,
                "extra_info": {},
                "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5,
                            "max_time": 1.0, "min_time": 5e-06, "warmup": False},
                "stats": {"min": median * 0.9, "max": median * 1.3, "mean": median * 1.05,
                          "stddev": median * 0.1, "rounds": 20, "median": median,
                          "iqr": median * 0.05, "q1": median * 0.97, "q3": median * 1.02,
                          "iqr_outliers": 1, "stddev_outliers": 2, "outliers": "2;1",
                          "ld15iqr": median * 0.9, "hd15iqr": median * 1.2, "ops": 1.0 / median,
                          "total": median * 20, "iterations": 1},
            }
        )
    data = {
        "machine_info": {"node": "ci", "processor": "x86_64", "machine": "x86_64",
                         "python_implementation": "CPython", "python_version": "3.11.2",
                         "system": "Linux", "release": "6.1.0", "cpu": {"count": 2}},
        "commit_info": {"id": commit, "time": commit_time, "author_time": commit_time,
                        "dirty": dirty, "project": "diffsol-pytorch", "branch": "main"},
        "benchmarks": benchmarks,
        "datetime": run_time,
        "version": "4.0.0",
    }
    path = directory / (name or f"{commit[:4]}_{run_time[:10]}.json")
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def history(tmp_path):
    """Four runs written out of order; in commit order solve: 1.0, 0.9, 1.2 (regression), 0.95,
    compile: 2.0, 2.1, 2.0, 2.5 (regression)."""
    d = tmp_path / "bench"
    d.mkdir()
    write_run(d, "cccccccc33", "2024-03-03T10:00:00+00:00", "2024-03-03T11:00:00",
              {"test_solve": 1.2, "test_compile": 2.0}, name="a.json")
    write_run(d, "aaaaaaaa11", "2024-03-01T10:00:00+00:00", "2024-03-05T09:00:00",
              {"test_solve": 1.0, "test_compile": 2.0}, name="d.json")
    write_run(d, "dddddddd44", "2024-03-04T12:00:00+02:00", "2024-03-04T11:00:00",
              {"test_solve": 0.95, "test_compile": 2.5}, name="b.json")
    write_run(d, "bbbbbbbb22", "2024-03-02T10:00:00+00:00", "2024-03-02T11:00:00",
              {"test_solve": 0.9, "test_compile": 2.1}, name="c.json")
    return d


def test_benchmark_table_rows(history):
    rows = viz.benchmark_table(history)
    assert len(rows) == 8
    assert set(rows[0]) >= {"benchmark", "commit", "datetime", "value", "best_so_far", "ratio",
                            "regression"}
    solve = [r for r in rows if r["benchmark"] == "test_solve"]
    assert [r["commit"] for r in solve] == ["aaaaaaa", "bbbbbbb", "ccccccc", "ddddddd"]
    assert [r["value"] for r in solve] == [1.0, 0.9, 1.2, 0.95]
    assert [r["best_so_far"] for r in solve] == [None, 1.0, 0.9, 0.9]
    assert solve[0]["ratio"] is None
    assert solve[2]["ratio"] == pytest.approx(1.2 / 0.9)
    assert [r["regression"] for r in solve] == [False, False, True, False]  # 0.95/0.9 < 1.10
    compile_ = [r for r in rows if r["benchmark"] == "test_compile"]
    assert [r["regression"] for r in compile_] == [False, False, False, True]
    assert solve[0]["datetime"] == "2024-03-05T09:00:00"


def test_benchmark_table_threshold_metric_and_list_of_paths(history):
    files = sorted(history.glob("*.json"))
    strict = viz.benchmark_table(files, threshold=1.05)
    assert sum(r["regression"] for r in strict) == 3  # also solve 0.95 vs 0.9 (1.056)
    loose = viz.benchmark_table(files, threshold=2.0)
    assert not any(r["regression"] for r in loose)
    # ops: larger is better, so the same runs regress at the same points
    ops = viz.benchmark_table(history, metric="ops")
    assert [r["regression"] for r in ops if r["benchmark"] == "test_solve"] == [False, False, True, False]
    with pytest.raises(ValueError, match="no statistic 'p99'"):
        viz.benchmark_table(history, metric="p99")
    with pytest.raises(ValueError, match="threshold"):
        viz.benchmark_table(history, threshold=0)


def test_benchmark_table_bad_inputs(tmp_path):
    (tmp_path / "x.json").write_text('{"not": "a benchmark"}')
    with pytest.raises(ValueError, match="not a pytest-benchmark JSON"):
        viz.benchmark_table(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pytest-benchmark JSON files"):
        viz.benchmark_table(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        viz.benchmark_table([tmp_path / "missing.json"])


def test_plot_benchmark_history_lines_ticks_and_regression_markers(history, tmp_path):
    fig = viz.plot_benchmark_history(str(history))
    fig.savefig(tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 0
    (ax,) = fig.axes
    lines = [line for line in ax.get_lines() if line.get_gid() != "regressions"]
    assert sorted(line.get_label() for line in lines) == ["test_compile", "test_solve"]
    solve = next(line for line in lines if line.get_label() == "test_solve")
    np.testing.assert_allclose(solve.get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(solve.get_ydata(), [1.0, 0.9, 1.2, 0.95])
    # x tick labels: short commit ids in commit order
    assert [t.get_text() for t in ax.get_xticklabels()] == ["aaaaaaa", "bbbbbbb", "ccccccc", "ddddddd"]
    # regression markers: red x at (2, 1.2) for solve and (3, 2.5) for compile
    marks = [line for line in ax.get_lines() if line.get_gid() == "regressions"]
    assert len(marks) == 1
    (mark,) = marks
    assert mark.get_marker() == "x" and mark.get_color() == "red" and mark.get_linestyle() == "None"
    assert sorted(zip(mark.get_xdata(), mark.get_ydata())) == [(2, 1.2), (3, 2.5)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "regression (> 1.1x previous best)" in legend
    title = ax.get_title()
    assert title.startswith("2 regressions > 1.1x previous best:\n")
    assert "test_solve @ ccccccc (1.33x)" in title and "test_compile @ ddddddd (1.25x)" in title
    assert ax.get_yscale() == "linear"  # 0.9 .. 2.5: within a decade


def test_plot_benchmark_history_without_regressions_and_log_scale(tmp_path):
    write_run(tmp_path, "1111111aaa", "2024-01-01T00:00:00", "2024-01-01T00:00:00",
              {"test_tiny": 1e-6, "test_huge": 1.0})
    write_run(tmp_path, "2222222bbb", "2024-01-02T00:00:00", "2024-01-02T00:00:00",
              {"test_tiny": 1e-6, "test_huge": 0.5}, dirty=True)
    fig = viz.plot_benchmark_history(tmp_path, threshold=1.5)
    (ax,) = fig.axes
    assert not [line for line in ax.get_lines() if line.get_gid() == "regressions"]
    assert len(ax.get_lines()) == 2
    assert "no regression" in ax.get_title()
    assert ax.get_yscale() == "log"  # six decades between the benchmarks
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1111111", "2222222+"]


def test_plot_benchmark_history_into_given_axes(history):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert viz.plot_benchmark_history(history, ax=ax, metric="mean", logy=True) is fig
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "mean time [s]"


@pytest.mark.unit
def test_plot_scaling_one_line_per_method_sorted_log_log():
    rows = [
        {"nstates": 900, "times": {"ours": 0.02, "c": 0.018, "scipy_bdf": 0.5}},
        {"nstates": 100, "times": {"ours": 0.002, "c": 0.0021}},
        {"nstates": 2500, "times": {"c": 0.06, "ours": 0.07}},
    ]
    fig = viz.plot_scaling(rows, title="heat2d")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["ours", "c", "scipy_bdf"]  # ours first
    np.testing.assert_allclose(lines["ours"].get_xdata(), [100, 900, 2500])
    np.testing.assert_allclose(lines["ours"].get_ydata(), [0.002, 0.02, 0.07])
    np.testing.assert_allclose(lines["scipy_bdf"].get_xdata(), [900])  # gaps where missing
    assert lines["ours"].get_linewidth() > lines["c"].get_linewidth()
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_title() == "heat2d" and ax.get_ylabel() == "time per solve [s]"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ours", "c", "scipy_bdf"]
