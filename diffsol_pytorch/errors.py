"""Exceptions raised by diffsol_pytorch.

Every error the package raises on purpose derives from :class:`DiffsolError`.
Errors that are also a bad value or a failed computation derive from the
matching built-in too (``ValueError``, ``RuntimeError``), so callers can catch
either.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "DiffsolError",
    "DiffSLError",
    "DiffSLSyntaxError",
    "CompileError",
    "SolverError",
]


class DiffsolError(Exception):
    """Base class of every error raised by diffsol_pytorch."""


class DiffSLError(DiffsolError, ValueError):
    """The DiffSL source is not a valid model.

    The message has the form ``"line:col: error: ..."`` followed by the source
    line and a caret under the offending text.

    Attributes
    ----------
    line : int or None
        1-based line of the error in the DiffSL source.
    col : int or None
        1-based column of the error in the DiffSL source.
    """

    def __init__(self, message: str, line: Optional[int] = None, col: Optional[int] = None):
        super().__init__(message)
        self.line = line
        self.col = col


class DiffSLSyntaxError(DiffSLError):
    """The DiffSL source could not be parsed."""


class CompileError(DiffsolError):
    """The generated C could not be compiled, cached or loaded.

    Check that a C compiler is installed (``cc``, or the one named by the
    ``CC`` environment variable) and that the cache directory
    (``$DIFFSOL_PYTORCH_CACHE``) is writable by you alone.
    """


class SolverError(DiffsolError, RuntimeError):
    """The ODE/DAE solver failed.

    The message names the integrator, the time reached, the SUNDIALS flag,
    the SUNDIALS message, and ends with ``Suggestion: ...`` (raise
    ``max_steps``, try ``method="bdf"``, check the model, ...). The module
    that raised it stays usable for the next solve.

    Attributes
    ----------
    t : float or None
        Time reached when the solver stopped.
    flag : str or None
        SUNDIALS return flag name, for example ``"CV_TOO_MUCH_WORK"``.
    stats : dict or None
        Solver statistics (steps, rhs_evals, ...) up to the failure.
    suggestion : str or None
        What to try, the ``Suggestion:`` part of the message.
    """

    def __init__(
        self,
        message: str,
        *,
        t: Optional[float] = None,
        flag: Optional[str] = None,
        stats: Optional[dict[str, Any]] = None,
    ):
        super().__init__(message)
        self.t = t
        self.flag = flag
        self.stats = stats
        marker = "Suggestion: "
        self.suggestion = message.split(marker, 1)[1] if marker in message else None

    def __str__(self) -> str:
        text = super().__str__()
        if self.stats:
            keys = ("steps", "rhs_evals", "jac_evals", "err_test_fails", "nonlin_fails")
            text += " [" + ", ".join(f"{k}={self.stats[k]}" for k in keys if k in self.stats) + "]"
        return text
