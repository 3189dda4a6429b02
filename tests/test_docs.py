"""The documentation: the Sphinx build has no warning (``make docs`` does the same), and
the code blocks of the tutorial pages run and their assertions hold."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: pages whose ```python blocks are run, in order, in one namespace per page
RUNNABLE_PAGES = ["quickstart.md", "pytorch.md"]


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


def python_blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


@pytest.mark.integration
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_code_blocks_run(page, monkeypatch):
    blocks = python_blocks(page)
    assert blocks, f"{page} has no python code block"
    monkeypatch.chdir(ROOT)  # the pages open examples/models/... from the repository root
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{page}"}
    for k, block in enumerate(blocks):
        code = compile(block, f"{page} (python block {k + 1})", "exec")
        exec(code, namespace)  # noqa: S102 - the documentation's own examples
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")
