"""pytest plugin of diffsol_pytorch: markers, ``--run-perf`` and fixtures.

Loaded automatically by pytest once diffsol-pytorch is installed (entry point
``pytest11``: ``diffsol_pytorch = "diffsol_pytorch.pytest_plugin"``); disable
it with ``pytest -p no:diffsol_pytorch``.

Markers (registered, so ``--strict-markers`` accepts them): ``unit``,
``integration``, ``gradient``, ``perf``, ``memory``, ``slow``. Tests marked
``perf`` are skipped unless pytest runs with ``--run-perf``.

Fixtures:

``diffsol_models_dir``
    Directory of the example DiffSL models (``decay.ds``, ``lotka_volterra.ds``,
    ...): ``$DIFFSOL_PYTORCH_MODELS`` if set, else the copy installed with the
    package, else ``examples/models`` of a source checkout.
``diffsol_model_source``
    A function ``name -> str`` returning the text of ``<name>.ds`` from there.
``memory_probe``
    :func:`diffsol_pytorch.testing.memory_drift` around the test: fails it
    (at teardown) when resident memory grew by more than 5 MiB, or by more than
    ``limit_mb`` given as ``@pytest.mark.memory(limit_mb=20)``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable, Iterator

import pytest

from diffsol_pytorch.testing import MemoryProbe, memory_drift

__all__ = [
    "MARKERS",
    "PERF_SKIP_REASON",
    "diffsol_model_source",
    "diffsol_models_dir",
    "find_models_dir",
    "memory_probe",
]

#: marker name -> description, as shown by ``pytest --markers``
MARKERS = {
    "unit": "fast tests of the Python layer, no solver needed",
    "integration": "solves real models through the C kernel",
    "gradient": "derivative checks (finite differences, forward and reverse mode)",
    "perf": "performance tests; skipped unless pytest runs with --run-perf",
    "memory": "memory-drift and leak probes; memory(limit_mb=X) sets the memory_probe limit",
    "slow": "tests that take more than a few seconds",
}

PERF_SKIP_REASON = "perf test: run with --run-perf"

#: default limit of the memory_probe fixture, in MiB
DEFAULT_MEMORY_LIMIT_MB = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diffsol_pytorch", "diffsol-pytorch")
    group.addoption(
        "--run-perf",
        action="store_true",
        default=False,
        help="run the tests marked perf (skipped by default)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("run_perf", default=False):
        return
    skip = pytest.mark.skip(reason=PERF_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("perf") is not None:
            item.add_marker(skip)


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed


def find_models_dir() -> pathlib.Path:
    """Where the example models are (see the ``diffsol_models_dir`` fixture).

    Raises
    ------
    FileNotFoundError
        None of the places holds ``*.ds`` files.
    """
    package = pathlib.Path(__file__).resolve().parent
    candidates = []
    if os.environ.get("DIFFSOL_PYTORCH_MODELS"):
        candidates.append(pathlib.Path(os.environ["DIFFSOL_PYTORCH_MODELS"]))
    candidates += [package / "models", package.parent / "examples" / "models"]
    for path in candidates:
        if path.is_dir() and any(path.glob("*.ds")):
            return path
    raise FileNotFoundError(
        "no example models (*.ds) found in "
        + ", ".join(str(p) for p in candidates)
        + "; set DIFFSOL_PYTORCH_MODELS to a directory of DiffSL models"
    )


@pytest.fixture(scope="session")
def diffsol_models_dir() -> pathlib.Path:
    """Directory of the example DiffSL models (``decay.ds``, ``robertson_ode.ds``, ...)."""
    return find_models_dir()


@pytest.fixture(scope="session")
def diffsol_model_source(diffsol_models_dir: pathlib.Path) -> Callable[[str], str]:
    """``diffsol_model_source("decay")`` is the text of ``decay.ds`` of the example models."""

    def source(name: str) -> str:
        path = diffsol_models_dir / (name if name.endswith(".ds") else f"{name}.ds")
        if not path.is_file():
            names = sorted(p.stem for p in diffsol_models_dir.glob("*.ds"))
            raise FileNotFoundError(
                f"no example model {name!r} in {diffsol_models_dir}; there are: {', '.join(names)}"
            )
        return path.read_text(encoding="utf-8")

    return source


def _memory_limit(request: pytest.FixtureRequest) -> float:
    marker = request.node.get_closest_marker("memory")
    if marker is None:
        return DEFAULT_MEMORY_LIMIT_MB
    for key in ("limit_mb", "memory_limit_mb"):
        if key in marker.kwargs:
            return float(marker.kwargs[key])
    return DEFAULT_MEMORY_LIMIT_MB


@pytest.fixture
def memory_probe(request: pytest.FixtureRequest) -> Iterator[MemoryProbe]:
    """:func:`~diffsol_pytorch.testing.memory_drift` around the test body.

    Fixtures set up before this one count as warm-up. The limit is 5 MiB, or
    ``limit_mb`` of the test's ``memory`` marker: ``@pytest.mark.memory(limit_mb=20)``.
    A drift raises :class:`~diffsol_pytorch.testing.MemoryDriftError` at
    teardown; a test that fails on its own is not checked.
    """
    drift = memory_drift(_memory_limit(request))
    probe = drift.__enter__()
    yield probe
    if request.node.stash.get(_CALL_FAILED, False):
        return  # its traceback holds the test's locals: not a drift, and it failed already
    drift.__exit__(None, None, None)
