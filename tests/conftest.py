"""Shared pytest set-up: --run-perf, an isolated JIT cache, model paths."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-perf", action="store_true", default=False, help="run tests marked perf")


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-perf"):
        return
    skip = pytest.mark.skip(reason="perf test: run with --run-perf")
    for item in items:
        if "perf" in item.keywords:
            item.add_marker(skip)


def model_source(name: str) -> str:
    """The text of examples/models/NAME.ds."""
    return (MODELS / f"{name}.ds").read_text(encoding="utf-8")


@pytest.fixture
def models_dir() -> pathlib.Path:
    return MODELS
