"""The pytest plugin (diffsol_pytorch.pytest_plugin): markers, --run-perf, fixtures."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re

import pytest

from diffsol_pytorch import pytest_plugin

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKERS = ("unit", "integration", "gradient", "perf", "memory", "slow")


def test_registered_through_the_pytest11_entry_point(pytestconfig):
    eps = importlib.metadata.entry_points(group="pytest11")
    assert any(ep.name == "diffsol_pytorch" and ep.value == "diffsol_pytorch.pytest_plugin" for ep in eps)
    assert pytestconfig.pluginmanager.get_plugin("diffsol_pytorch") is pytest_plugin


def test_markers_are_listed(pytester):
    result = pytester.runpytest("--markers")
    assert result.ret == 0
    for name in MARKERS:
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}: *"])
    result.stdout.fnmatch_lines(["@pytest.mark.perf: *--run-perf*"])


def test_markers_pass_strict_markers(pytester):
    pytester.makepyfile(
        "\n".join(
            ["import pytest", ""]
            + [f"@pytest.mark.{name}\ndef test_{name}():\n    pass\n" for name in MARKERS if name != "perf"]
        )
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=len(MARKERS) - 1)


PERF_TESTS = """
import pytest

@pytest.mark.perf
def test_fast_enough():
    pass

def test_plain():
    pass
"""


def test_perf_tests_are_skipped_without_run_perf(pytester):
    pytester.makepyfile(PERF_TESTS)
    result = pytester.runpytest("--strict-markers", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*perf test: run with --run-perf*"])


def test_run_perf_runs_them(pytester):
    pytester.makepyfile(PERF_TESTS)
    result = pytester.runpytest("--strict-markers", "--run-perf")
    result.assert_outcomes(passed=2)


def test_run_perf_is_in_help(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--run-perf*"])


def test_model_fixtures(pytester):
    pytester.makepyfile(
        """
        import pathlib
        import pytest

        def test_dir(diffsol_models_dir):
            assert isinstance(diffsol_models_dir, pathlib.Path)
            assert (diffsol_models_dir / "decay.ds").is_file()
            assert (diffsol_models_dir / "lotka_volterra.ds").is_file()

        def test_source(diffsol_model_source, diffsol_models_dir):
            text = diffsol_model_source("lotka_volterra")
            assert text == (diffsol_models_dir / "lotka_volterra.ds").read_text()
            assert diffsol_model_source("decay.ds") == diffsol_model_source("decay")

        def test_unknown(diffsol_model_source):
            with pytest.raises(FileNotFoundError, match="no example model 'nope'.*robertson_ode"):
                diffsol_model_source("nope")
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)


def test_models_dir_from_environment(pytester, monkeypatch):
    models = pytester.mkdir("my_models")
    (models / "mine.ds").write_text("u { 1 }\nF { -u }\n")
    monkeypatch.setenv("DIFFSOL_PYTORCH_MODELS", str(models))
    pytester.makepyfile(
        """
        def test_mine(diffsol_models_dir, diffsol_model_source):
            assert diffsol_models_dir.name == "my_models"
            assert diffsol_model_source("mine").startswith("u {")
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_installed_models_are_all_listed_in_meson_build():
    meson = (ROOT / "meson.build").read_text()
    for path in sorted((ROOT / "examples" / "models").glob("*.ds")):
        assert f"'examples/models/{path.name}'" in meson, f"add {path.name} to meson.build"


MEMORY_TESTS = """
import numpy as np
import pytest

from diffsol_pytorch.testing import MemoryDriftError, MemoryProbe

KEPT = []

def test_frees(memory_probe):
    assert isinstance(memory_probe, MemoryProbe)
    assert memory_probe.limit_mb == 5.0
    block = np.ones(40 * 2**20 // 8)
    del block

def test_keeps(memory_probe):
    KEPT.append(np.ones(40 * 2**20 // 8))

@pytest.mark.memory(limit_mb=200)
def test_keeps_within_marker_limit(memory_probe):
    assert memory_probe.limit_mb == 200
    KEPT.append(np.ones(40 * 2**20 // 8))

@pytest.mark.memory(memory_limit_mb=150)
def test_alias_kwarg(memory_probe):
    assert memory_probe.limit_mb == 150

def test_fails_on_its_own(memory_probe):
    KEPT.append(np.ones(40 * 2**20 // 8))
    assert False, "own failure"

def test_last():
    KEPT.clear()
"""


def test_memory_probe_fixture(pytester):
    pytester.makepyfile(MEMORY_TESTS)
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=5, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_keeps*", "*MemoryDriftError: resident memory grew by*"]
    )
    output = result.stdout.str()
    assert "ERROR at teardown of test_fails_on_its_own" not in output
    grown = re.search(r"grew by ([0-9.]+) MiB", output)
    assert grown and 35.0 < float(grown.group(1)) < 70.0
