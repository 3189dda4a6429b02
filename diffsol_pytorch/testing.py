"""Helpers for unit tests of models built with diffsol_pytorch (and of the package itself).

>>> from diffsol_pytorch import testing
>>> with testing.memory_drift(limit_mb=5.0, warmup=lambda: m.solve_dense(p, t)) as probe:
...     for _ in range(1000):
...         m.solve_dense(p, t)
>>> probe.growth_mb            # resident memory growth over the body, in MiB

The pytest plugin (``diffsol_pytorch.pytest_plugin``, loaded automatically
once the package is installed) offers the same probe as the ``memory_probe``
fixture.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from types import TracebackType
from typing import Any, Callable, Optional

__all__ = [
    "GradientCheckError",
    "GradientReport",
    "check_gradients",
    "MemoryDriftError",
    "MemoryProbe",
    "memory_drift",
]

_MIB = 1024.0 * 1024.0


class GradientCheckError(AssertionError):
    """Finite differences and the solver's gradients disagree.

    The message is a table: one row per parameter with the finite-difference
    derivative, the derivative of each mode checked, and the relative error.
    An ``AssertionError``, so pytest reports it as a test failure.
    """


class MemoryDriftError(AssertionError):
    """Resident memory grew by more than the allowed limit over a probed block.

    An ``AssertionError``, so pytest reports it as a test failure.

    Attributes
    ----------
    rss_before_mb : float
        Resident set size (MiB) before the block.
    rss_after_mb : float
        Resident set size (MiB) after the block.
    growth_mb : float
        ``rss_after_mb - rss_before_mb``.
    limit_mb : float
        The allowed growth.
    """

    def __init__(
        self, message: str, *, rss_before_mb: float, rss_after_mb: float, limit_mb: float
    ) -> None:
        super().__init__(message)
        self.rss_before_mb = rss_before_mb
        self.rss_after_mb = rss_after_mb
        self.growth_mb = rss_after_mb - rss_before_mb
        self.limit_mb = limit_mb


def _rss_mb() -> float:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a test dependency
        raise ImportError(
            "memory_drift needs psutil: pip install psutil (or install diffsol-pytorch[test])"
        ) from None
    return psutil.Process().memory_info().rss / _MIB


def _malloc_trim() -> None:
    """Ask glibc to return freed heap memory to the system (no-op elsewhere).

    Without this, memory that was allocated and freed in many small pieces can
    stay resident and look like growth although nothing is held.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _settle(gc_collect: bool) -> None:
    if gc_collect:
        gc.collect()
        _malloc_trim()


class MemoryProbe:
    """What :func:`memory_drift` measured (MiB); the ``after`` values are None until the block ends.

    Attributes
    ----------
    limit_mb : float
        The allowed growth.
    rss_before_mb : float
        Resident set size after the warm-up and garbage collection, just
        before the block.
    rss_after_mb : float or None
        Resident set size after the block and garbage collection.
    growth_mb : float or None
        ``rss_after_mb - rss_before_mb`` (negative when memory was returned).
    """

    def __init__(self, limit_mb: float, rss_before_mb: float) -> None:
        self.limit_mb = limit_mb
        self.rss_before_mb = rss_before_mb
        self.rss_after_mb: Optional[float] = None

    @property
    def growth_mb(self) -> Optional[float]:
        if self.rss_after_mb is None:
            return None
        return self.rss_after_mb - self.rss_before_mb

    def current_growth_mb(self) -> float:
        """Growth so far, measured now (no garbage collection)."""
        return _rss_mb() - self.rss_before_mb

    def __repr__(self) -> str:
        after = "running" if self.rss_after_mb is None else f"{self.rss_after_mb:.1f}"
        growth = "" if self.growth_mb is None else f", growth_mb={self.growth_mb:+.1f}"
        return (
            f"MemoryProbe(limit_mb={self.limit_mb:g}, rss_before_mb={self.rss_before_mb:.1f}, "
            f"rss_after_mb={after}{growth})"
        )


class memory_drift:  # noqa: N801 - used like a function: ``with memory_drift(...)``
    """Context manager: fail when resident memory grows by more than ``limit_mb`` over the block.

    On entry it runs ``warmup`` (if given), collects garbage and measures the
    resident set size (RSS, with psutil); on a normal exit it collects garbage
    again, measures again and raises :class:`MemoryDriftError` when the growth
    exceeds ``limit_mb``. When the block raises, that exception propagates
    unchanged and nothing is checked.

    Parameters
    ----------
    limit_mb : float, optional
        Allowed growth in MiB. The default is 5.0.
    warmup : callable, optional
        Called once, with no arguments, before the first measurement: let it
        do one iteration of the body so that one-off allocations (compiled
        models, caches, lazily imported modules, allocator pools) are not
        counted as drift.
    gc_collect : bool, optional
        Run ``gc.collect()`` (and, on glibc, ``malloc_trim(0)``) before each
        measurement. The default is True.

    Returns
    -------
    MemoryProbe
        Bound by ``with ... as probe``; its ``rss_after_mb`` and
        ``growth_mb`` are filled in when the block ends.

    Notes
    -----
    RSS counts pages actually touched: a buffer that is allocated but never
    written (``numpy.empty``, ``bytearray``) may not show. Choose a limit well
    above the noise of the allocator (a few MiB) and make the body repeat the
    operation under test many times, so that a per-call leak adds up to more
    than the limit.

    Examples
    --------
    >>> with memory_drift(limit_mb=5.0, warmup=lambda: m.solve_dense(p, t)) as probe:
    ...     for _ in range(2000):
    ...         m.solve_dense(p, t)
    """

    def __init__(
        self,
        limit_mb: float = 5.0,
        *,
        warmup: Optional[Callable[[], Any]] = None,
        gc_collect: bool = True,
    ) -> None:
        if not limit_mb >= 0:
            raise ValueError(f"limit_mb must be a non-negative number of MiB, got {limit_mb!r}")
        if warmup is not None and not callable(warmup):
            raise TypeError(f"warmup must be a callable taking no arguments, got {warmup!r}")
        self.limit_mb = float(limit_mb)
        self.warmup = warmup
        self.gc_collect = gc_collect
        self.probe: Optional[MemoryProbe] = None

    def __enter__(self) -> MemoryProbe:
        if self.warmup is not None:
            self.warmup()
        _settle(self.gc_collect)
        self.probe = MemoryProbe(self.limit_mb, _rss_mb())
        return self.probe

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        probe = self.probe
        assert probe is not None, "memory_drift.__exit__ without __enter__"
        if exc_type is not None:
            return None
        _settle(self.gc_collect)
        probe.rss_after_mb = _rss_mb()
        growth = probe.rss_after_mb - probe.rss_before_mb
        if growth > self.limit_mb:
            raise MemoryDriftError(
                f"resident memory grew by {growth:.1f} MiB over the block "
                f"(from {probe.rss_before_mb:.1f} MiB to {probe.rss_after_mb:.1f} MiB), "
                f"more than the limit of {self.limit_mb:g} MiB. Something allocated in the "
                "block is still held: a leak, or a cache that keeps growing. If it is a "
                "one-off allocation, do it in `warmup`.",
                rss_before_mb=probe.rss_before_mb,
                rss_after_mb=probe.rss_after_mb,
                limit_mb=self.limit_mb,
            )
        return None


# ---- gradient checks ---------------------------------------------------------------------


class GradientReport:
    """What :func:`check_gradients` compared: one entry per parameter.

    Attributes
    ----------
    names : tuple of str
        Parameter names.
    fd : numpy.ndarray
        Central finite differences of the loss.
    modes : dict
        Mode name (``"reverse"``, ``"forward"``) -> the gradient that mode gave
        (numpy.ndarray).
    rel_errors : dict
        Mode name -> ``|mode - fd| / max(|fd|, atol)`` per parameter (numpy.ndarray).
    steps : numpy.ndarray
        The finite-difference step of each parameter.
    """

    def __init__(self, names, fd, modes, rel_errors, steps, loss) -> None:
        self.names, self.fd, self.modes = names, fd, modes
        self.rel_errors, self.steps, self.loss = rel_errors, steps, loss

    def table(self) -> str:
        """The comparison as a readable table."""
        cols = ["parameter", "FD"] + [m for m in self.modes] + [f"rel err {m}" for m in self.modes]
        rows = []
        for k, name in enumerate(self.names):
            rows.append([name, f"{self.fd[k]: .6e}"]
                        + [f"{self.modes[m][k]: .6e}" for m in self.modes]
                        + [f"{self.rel_errors[m][k]:.2e}" for m in self.modes])
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"GradientReport(loss={self.loss:.6g})\n{self.table()}"


def check_gradients(
    code_or_module: Any,
    params: Any,
    times: Any,
    loss_fn: Optional[Callable] = None,
    *,
    eps: Optional[float] = None,
    rtol: float = 1e-4,
    atol: float = 1e-8,
    modes: tuple = ("reverse", "forward"),
) -> GradientReport:
    """Compare central finite differences of a loss with the solver's gradients.

    Parameters
    ----------
    code_or_module : str or DiffsolModule
        The model (DiffSL source is compiled once, with default options, and cached).
        Use tight solver tolerances (``rtol`` around 1e-10): the finite differences
        divide the solver's error by the step.
    params, times
        One parameter set ``(nparams,)`` and the output times.
    loss_fn : callable, optional
        ``loss_fn(y)`` for the solution ``y`` ``(nout, len(times))`` (a float64 tensor)
        returns a scalar tensor (``dloss/dy`` then comes from autograd) or a pair
        ``(loss, dloss_dy)``. None: ``loss = sum(w * y)`` with fixed random weights ``w``.
    eps : float, optional
        Relative finite-difference step; the default is 1e-4 of each parameter's scale
        (``max(|p|, 1e-3)``).
    rtol, atol : float
        A mode passes when ``|mode - fd| <= atol + rtol * |fd|`` for every parameter.
    modes : tuple of str
        ``"reverse"`` (the adjoint, driven by ``dloss/dy``) and/or ``"forward"`` (the
        sensitivities contracted with ``dloss/dy``).

    Returns
    -------
    GradientReport

    Raises
    ------
    GradientCheckError
        A mode disagrees with the finite differences; the message is the table.
    """
    import numpy as np
    import torch

    from diffsol_pytorch.module import DiffsolModule, _module_for

    m = code_or_module if isinstance(code_or_module, DiffsolModule) else _module_for(
        code_or_module, {})
    unknown = set(modes) - {"reverse", "forward"}
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty subset of ('reverse', 'forward'), got {modes}")
    p = np.asarray(params.detach().cpu() if isinstance(params, torch.Tensor) else params,
                   dtype=np.float64)
    if p.shape != (m.nparams,):
        raise ValueError(f"params must have shape ({m.nparams},), got {p.shape}")
    t = np.asarray(times.detach().cpu() if isinstance(times, torch.Tensor) else times,
                   dtype=np.float64)
    if loss_fn is None:
        w = np.random.default_rng(12345).normal(size=(m.nout, t.shape[0]))

        def loss_fn(y):
            return float((w * y.detach().numpy()).sum()), w

    def evaluate(pp):
        yy = m.solve_dense(pp, t).to(torch.float64).requires_grad_(True)
        res = loss_fn(yy)
        if isinstance(res, tuple):
            return float(res[0]), np.asarray(res[1], dtype=np.float64)
        (g,) = torch.autograd.grad(res, yy)
        return float(res.detach()), g.numpy()

    loss0, dldy = evaluate(p)
    steps = (1e-4 if eps is None else eps) * np.maximum(np.abs(p), 1e-3)
    fd = np.zeros_like(p)
    for k in range(p.size):
        pp, pm = p.copy(), p.copy()
        pp[k] += steps[k]
        pm[k] -= steps[k]
        fd[k] = (evaluate(pp)[0] - evaluate(pm)[0]) / (2 * steps[k])
    got = {}
    if "reverse" in modes:
        got["reverse"] = m.reverse_mode(p, t, dldy).numpy()
    if "forward" in modes:
        _, sens = m.forward_mode(p, t)
        got["forward"] = np.einsum("kij,ij->k", sens.numpy(), dldy)
    rel = {k: np.abs(v - fd) / np.maximum(np.abs(fd), atol) for k, v in got.items()}
    report = GradientReport(m.param_names, fd, got, rel, steps, loss0)
    bad = [k for k, v in got.items() if np.any(np.abs(v - fd) > atol + rtol * np.abs(fd))]
    if bad:
        raise GradientCheckError(
            f"gradient check failed for {', '.join(bad)} (rtol={rtol:g}, atol={atol:g}):\n"
            + report.table()
        )
    return report
