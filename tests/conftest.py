"""Shared pytest set-up: an isolated JIT cache, model paths.

Markers and ``--run-perf`` come from the package's pytest plugin
(diffsol_pytorch/pytest_plugin.py, loaded through its pytest11 entry point).
"""

from __future__ import annotations

import os
import pathlib
import tempfile

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
