"""Matplotlib plots of solutions, sensitivities, phase portraits and benchmark history.

matplotlib is imported lazily, figures are made without pyplot (so nothing
depends on the backend and nothing is shown), and every function returns the
Figure; in Jupyter a returned Figure is displayed as the cell's value.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "benchmark_table",
    "plot_benchmark_history",
    "plot_phase",
    "plot_scaling",
    "plot_sensitivities",
    "plot_solution",
]


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


def _labels_for(n: int, labels: Optional[Sequence[str]], what: str, default: str) -> list[str]:
    if labels is None:
        return [default.format(i) for i in range(n)]
    labels = [str(s) for s in labels]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} {what}, expected {n}")
    return labels


def plot_sensitivities(
    times: Any,
    sens: Any,
    param_names: Optional[Sequence[str]] = None,
    *,
    output_labels: Optional[Sequence[str]] = None,
    logx: bool = False,
    title: Optional[str] = None,
) -> "Figure":
    """Plot the sensitivities ``d y_k / d p_j`` against time.

    One subplot per output (stacked, sharing the time axis), one line per
    parameter in each.

    Parameters
    ----------
    times : array_like or torch.Tensor
        Shape ``(nt,)``.
    sens : array_like or torch.Tensor
        Shape ``(nparams, nout, nt)``, as returned by ``forward_mode``; a
        ``(nparams, nt)`` array is taken as a single output.
    param_names : sequence of str, optional
        One name per parameter (e.g. ``module.param_names``); default
        ``p[0]``, ``p[1]``, ...

    Other Parameters
    ----------------
    output_labels : sequence of str, optional
        One label per output; default ``y[0]``, ``y[1]``, ...
    logx : bool, optional
        Logarithmic time axis. The default is False.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        ``nout`` Axes, in output order.
    """
    t = _as_array(times)
    s = _as_array(sens)
    if s.ndim == 2:
        s = s[:, None, :]
    if t.ndim != 1 or s.ndim != 3 or s.shape[2] != t.shape[0]:
        raise ValueError(
            f"sens must have shape (nparams, nout, {t.shape[0]}) to match times, got {s.shape}"
        )
    nparams, nout, nt = s.shape
    names = _labels_for(nparams, param_names, "param_names (one per parameter)", "p[{}]")
    outs = _labels_for(nout, output_labels, "output_labels (one per output)", "y[{}]")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.2 + 1.8 * nout), layout="constrained")
    axes = fig.subplots(nout, 1, sharex=True, squeeze=False)[:, 0]
    for k, ax in enumerate(axes):
        for j in range(nparams):
            ax.plot(t, s[j, k], marker="." if nt <= 50 else None, label=names[j])
        ax.set_ylabel(f"d {outs[k]} / dp")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        if logx:
            ax.set_xscale("log")
    axes[-1].set_xlabel("t")
    if title:
        fig.suptitle(title)
    return fig


def plot_phase(
    y: Any,
    i: int = 0,
    j: int = 1,
    labels: Optional[Sequence[str]] = None,
    ax: Optional["Axes"] = None,
    *,
    title: Optional[str] = None,
) -> "Figure":
    """Phase portrait: output ``i`` on the x axis against output ``j`` on the y axis.

    The trajectory is one line; its first point is marked with a circle
    (label ``"start"``) and its last with a square (label ``"end"``).

    Parameters
    ----------
    y : array_like or torch.Tensor
        Shape ``(nout, nt)`` (as returned by ``solve_dense``), ``nout >= 2``.
    i, j : int, optional
        The outputs on the x and y axes (negative indices count from the end).
        The defaults are 0 and 1.
    labels : sequence of str, optional
        Either one label per output (``len == nout``) or the two axis labels
        (``len == 2``); default ``y[i]`` and ``y[j]``.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes; by default a new Figure is made.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    values = _as_array(y)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"y must have shape (nout, nt) with nout >= 2, got {values.shape}")
    nout = values.shape[0]
    for name, k in (("i", i), ("j", j)):
        if not -nout <= int(k) < nout:
            raise ValueError(f"{name}={k} is out of range for {nout} outputs")
    i, j = int(i) % nout, int(j) % nout
    if i == j:
        raise ValueError(f"i and j must name two different outputs, got both {i}")
    if labels is None:
        xlabel, ylabel = f"y[{i}]", f"y[{j}]"
    elif len(labels) == nout:
        xlabel, ylabel = str(labels[i]), str(labels[j])
    elif len(labels) == 2:
        xlabel, ylabel = str(labels[0]), str(labels[1])
    else:
        raise ValueError(
            f"labels must have {nout} (one per output) or 2 entries, got {len(labels)}"
        )
    fig, ax = _create_ax(ax)
    xs, ys = values[i], values[j]
    (line,) = ax.plot(xs, ys, label=f"{ylabel} vs {xlabel}")
    ax.plot(xs[:1], ys[:1], "o", color=line.get_color(), label="start")
    ax.plot(xs[-1:], ys[-1:], "s", color="black", markerfacecolor="none", label="end")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    return fig


# ---- benchmark history ------------------------------------------------------------

#: pytest-benchmark statistics for which larger is better (all others: time, smaller is better)
_HIGHER_IS_BETTER = frozenset({"ops"})


def _parse_time(text: Any) -> Optional[datetime.datetime]:
    """An ISO 8601 time as an aware datetime (naive ones are taken as UTC), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def _benchmark_files(paths_or_dir: Any) -> list[pathlib.Path]:
    if isinstance(paths_or_dir, (str, os.PathLike)):
        path = pathlib.Path(paths_or_dir)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.json") if p.is_file())
            if not files:
                raise ValueError(f"no pytest-benchmark JSON files (*.json) under {path}")
            return files
        paths = [path]
    else:
        paths = [pathlib.Path(p) for p in paths_or_dir]
    if not paths:
        raise ValueError("no pytest-benchmark JSON files given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"benchmark file {p} does not exist")
    return paths


def _load_runs(paths_or_dir: Any) -> list[dict[str, Any]]:
    """Read pytest-benchmark JSON files and put them in commit/run order."""
    runs = []
    for path in _benchmark_files(paths_or_dir):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read benchmark file {path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise ValueError(
                f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list); "
                "write one with pytest --benchmark-json=PATH or --benchmark-autosave"
            )
        commit = data.get("commit_info") or {}
        commit_id = str(commit.get("id") or "")
        short = commit_id[:7] if commit_id else path.stem
        if commit.get("dirty"):
            short += "+"
        run_time = _parse_time(data.get("datetime"))
        commit_time = _parse_time(commit.get("time"))
        runs.append(
            {
                "path": path,
                "commit": short,
                "commit_id": commit_id,
                "datetime": data.get("datetime"),
                "key": (commit_time or run_time, run_time, str(path)),
                "benchmarks": data["benchmarks"],
            }
        )
    epoch = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    runs.sort(key=lambda r: (r["key"][0] or epoch, r["key"][1] or epoch, r["key"][2]))
    return runs


def benchmark_table(
    paths_or_dir: Any, *, metric: str = "median", threshold: float = 1.10
) -> list[dict[str, Any]]:
    """The benchmark history as rows, one per (benchmark, run), for dashboards.

    Parameters
    ----------
    paths_or_dir : str, os.PathLike or list
        A directory (searched recursively for ``*.json``, e.g. pytest-benchmark's
        ``.benchmarks/`` autosave directory), one file, or a list of files; each
        file is one pytest-benchmark run (``pytest --benchmark-json=PATH``).
    metric : str, optional
        The statistic of ``stats`` to compare: ``"median"`` (default), ``"mean"``,
        ``"min"``, ``"max"``, ... For ``"ops"`` (operations per second) larger
        is better; for every other statistic smaller is better.
    threshold : float, optional
        A point is a regression when it is worse than the best earlier value of
        the same benchmark by more than this factor. The default is 1.10 (10 %).

    Returns
    -------
    list of dict
        In run order, runs ordered by ``commit_info["time"]`` and then the run's
        ``datetime`` (file name last). Keys:

        ``benchmark`` (name; ``fullname`` when two benchmarks share a name),
        ``commit`` (short commit id, ``+`` when the tree was dirty),
        ``datetime`` (the run's time, as in the file), ``value`` (the metric),
        ``best_so_far`` (the best value of earlier runs, None for the first),
        ``ratio`` (how many times worse than ``best_so_far``: ``value /
        best_so_far``, inverted for ``"ops"``; None for the first),
        ``regression`` (``ratio > threshold``), ``run`` (0-based position in
        run order) and ``path`` (the file).

    Raises
    ------
    ValueError
        A file is not pytest-benchmark JSON, a benchmark has no ``metric``
        statistic, or ``threshold`` is not positive.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be a positive factor such as 1.10, got {threshold!r}")
    runs = _load_runs(paths_or_dir)
    # a short name per benchmark, unless two different fullnames share it
    fullnames: dict[str, set[str]] = {}
    for run in runs:
        for bench in run["benchmarks"]:
            name = str(bench.get("name") or bench.get("fullname"))
            fullnames.setdefault(name, set()).add(str(bench.get("fullname") or name))
    best: dict[str, float] = {}
    higher_is_better = metric in _HIGHER_IS_BETTER
    rows = []
    for index, run in enumerate(runs):
        for bench in run["benchmarks"]:
            name = str(bench.get("name") or bench.get("fullname"))
            if len(fullnames[name]) > 1:
                name = str(bench.get("fullname") or name)
            stats = bench.get("stats") or {}
            if metric not in stats:
                raise ValueError(
                    f"benchmark {name!r} in {run['path']} has no statistic {metric!r}; "
                    f"it has: {', '.join(sorted(stats)) or 'none'}"
                )
            value = float(stats[metric])
            previous = best.get(name)
            if previous is None:
                ratio = None
            elif higher_is_better:
                ratio = previous / value if value > 0 else math.inf
            else:
                ratio = value / previous if previous > 0 else (1.0 if value <= 0 else math.inf)
            rows.append(
                {
                    "benchmark": name,
                    "commit": run["commit"],
                    "datetime": run["datetime"],
                    "value": value,
                    "best_so_far": previous,
                    "ratio": ratio,
                    "regression": ratio is not None and ratio > threshold,
                    "run": index,
                    "path": str(run["path"]),
                }
            )
            if previous is None:
                best[name] = value
            else:
                best[name] = max(previous, value) if higher_is_better else min(previous, value)
    return rows


def plot_benchmark_history(
    paths_or_dir: Any,
    *,
    metric: str = "median",
    threshold: float = 1.10,
    ax: Optional["Axes"] = None,
    logy: Optional[bool] = None,
    max_listed: int = 3,
) -> "Figure":
    """Plot pytest-benchmark results over commits, with regressions marked.

    One line per benchmark: x is the run's position in commit order (tick
    labels are short commit ids), y the chosen statistic. Points worse than
    the best earlier value by more than ``threshold`` are marked with a red
    ``x`` (one extra line artist, legend entry "regression > ...", ``gid``
    ``"regressions"``) and listed in the title (one per line). The data are those of
    :func:`benchmark_table`.

    Parameters
    ----------
    paths_or_dir : str, os.PathLike or list
        A directory of pytest-benchmark JSON files (searched recursively), one
        file or a list of files.
    metric : str, optional
        Statistic to plot. The default is ``"median"``.
    threshold : float, optional
        Regression factor. The default is 1.10.

    Other Parameters
    ----------------
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes; by default a new Figure is made.
    logy : bool, optional
        Logarithmic y axis; by default chosen when the values span more than
        a decade.
    max_listed : int, optional
        How many regressions the title names (the rest are counted). Default 3.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = benchmark_table(paths_or_dir, metric=metric, threshold=threshold)
    commits: dict[int, str] = {}
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        commits[row["run"]] = row["commit"]
        series.setdefault(row["benchmark"], []).append(row)
    fig, ax = _create_ax(ax)
    for name, points in series.items():
        ax.plot(
            [p["run"] for p in points], [p["value"] for p in points], marker="o", label=name
        )
    regressions = [r for r in rows if r["regression"]]
    if regressions:
        (marks,) = ax.plot(
            [r["run"] for r in regressions],
            [r["value"] for r in regressions],
            linestyle="none",
            marker="x",
            markersize=11,
            markeredgewidth=2.5,
            color="red",
            zorder=5,
            label=f"regression (> {threshold:g}x previous best)",
        )
        marks.set_gid("regressions")
        listed = [
            f"{r['benchmark']} @ {r['commit']} ({r['ratio']:.2f}x)"
            for r in regressions[:max_listed]
        ]
        more = len(regressions) - max_listed
        if more > 0:
            listed.append(f"and {more} more")
        plural = "s" if len(regressions) > 1 else ""
        ax.set_title(
            "\n".join(
                [f"{len(regressions)} regression{plural} > {threshold:g}x previous best:"] + listed
            ),
            fontsize="small",
            color="red",
        )
    else:
        ax.set_title(
            f"benchmark history ({metric}): no regression > {threshold:g}x", fontsize="small"
        )
    positions = sorted(commits)
    ax.set_xticks(positions)
    ax.set_xticklabels([commits[p] for p in positions], rotation=45 if len(positions) > 6 else 0)
    values = [r["value"] for r in rows if r["value"] > 0]
    if logy is None:
        logy = bool(values) and max(values) / min(values) > 10.0
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("commit (run order)")
    ax.set_ylabel("operations per second" if metric == "ops" else f"{metric} time [s]")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


def plot_scaling(
    rows: Sequence[dict],
    *,
    x: str = "nstates",
    ax: Optional["Axes"] = None,
    title: Optional[str] = None,
) -> "Figure":
    """Plot solve time against problem size, one line per method (log-log).

    Parameters
    ----------
    rows : sequence of dict
        Each row has the size under ``x`` and ``times``, a dict mapping a method name to
        seconds (the rows of ``benchmarks/compare.py``). Methods missing from a row (not
        run, over budget) leave a gap; rows are sorted by size.
    x : str, optional
        The key of the size. The default is ``"nstates"``.

    Other Parameters
    ----------------
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes; by default a new Figure is made.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        One line per method, labelled with its name (``"ours"`` drawn first and
        thicker), x and y on logarithmic scales.
    """
    rows = sorted(rows, key=lambda r: r[x])
    methods: list[str] = []
    for r in rows:
        for name in r["times"]:
            if name not in methods:
                methods.append(name)
    if "ours" in methods:
        methods.remove("ours")
        methods.insert(0, "ours")
    fig, ax = _create_ax(ax)
    for name in methods:
        pts = [(r[x], r["times"][name]) for r in rows if name in r["times"]]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", label=name, linewidth=2.5 if name == "ours" else 1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("states" if x == "nstates" else x)
    ax.set_ylabel("time per solve [s]")
    if title:
        ax.set_title(title)
    if methods:
        ax.legend(fontsize="small")
    return fig
