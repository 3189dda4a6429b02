"""Shared pytest set-up: an isolated JIT cache, model paths.

Markers and ``--run-perf`` come from the package's pytest plugin
(diffsol_pytorch/pytest_plugin.py, loaded through its pytest11 entry point).
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"


def pytest_configure(config: pytest.Config) -> None:
    # Keep the test run's compiled models out of the user's cache (and the
    # user's stale cache out of the tests), unless the caller chose a cache.
    if "DIFFSOL_PYTORCH_CACHE" not in os.environ:
        config._dsp_cache = tempfile.TemporaryDirectory(prefix="dsp-test-cache-")
        os.environ["DIFFSOL_PYTORCH_CACHE"] = config._dsp_cache.name


def pytest_unconfigure(config: pytest.Config) -> None:
    cache = getattr(config, "_dsp_cache", None)
    if cache is not None:
        os.environ.pop("DIFFSOL_PYTORCH_CACHE", None)
        cache.cleanup()


def model_source(name: str) -> str:
    """The text of examples/models/NAME.ds."""
    return (MODELS / f"{name}.ds").read_text(encoding="utf-8")


@pytest.fixture
def models_dir() -> pathlib.Path:
    return MODELS

def central_fd(m, params, times, g, rel=1e-4):
    """Central differences of sum(g * y); a relative step of 1e-4 keeps the solver's
    tolerance-level noise (rtol 1e-10) well below the truncation error."""
    params = np.asarray(params, dtype=np.float64)
    out = np.zeros_like(params)
    for k in range(params.size):
        h = rel * max(abs(params[k]), 1e-3)
        pp, pm = params.copy(), params.copy()
        pp[k] += h
        pm[k] -= h
        lp = float((m.solve_dense(pp, times).numpy() * g).sum())
        lm = float((m.solve_dense(pm, times).numpy() * g).sum())
        out[k] = (lp - lm) / (2 * h)
    return out
