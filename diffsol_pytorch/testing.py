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
    rss_before_mb, rss_after_mb : float
        Resident set size (MiB) before and after the block.
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
