"""The Sphinx documentation builds without a warning (``make docs`` does the same)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.unit
def test_docs_build_without_warnings(tmp_path):
    import myst_parser  # noqa: F401  (the test extra installs it: fail, do not skip)
    import sphinx  # noqa: F401

    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    html = tmp_path / "html"
    for page in ["index", "api"] + [p.stem for p in DOCS.glob("*.md")]:
        assert (html / f"{page}.html").is_file(), f"{page}.md was not built"
    api = (html / "api.html").read_text(encoding="utf-8")
    for name in ("DiffsolModule.solve_dense", "DiffsolLayer", "SolverError",
                 "device.select_device", "viz.plot_benchmark_history"):
        assert f'id="diffsol_pytorch.{name}"' in api, f"{name} missing from the API reference"
