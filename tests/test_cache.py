"""The JIT cache: one compiler run per distinct model, across modules and processes."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.integration

CHILD = r"""
import json, sys
import diffsol_pytorch as dsp
from diffsol_pytorch import _kernel
code = sys.argv[1]
a = dsp.DiffsolModule(code)
b = dsp.DiffsolModule(code)
ya = a.solve_dense(a.default_params, [0.0, 1.0])
yb = b.solve_dense(b.default_params, [0.0, 1.0])
print(json.dumps({"count": _kernel.jit_compile_count(), "same": bool((ya == yb).all())}))
"""


def _compiler_invocations(log: pathlib.Path) -> list[str]:
    """Lines of the wrapper's log that are compilations (not version queries)."""
    if not log.exists():
        return []
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return [line for line in lines if "--version" not in line and "-dumpversion" not in line]


def test_same_model_compiles_once(tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    assert cc, "no C compiler"
    log = tmp_path / "cc.log"
    wrapper = tmp_path / "cc-wrapper.sh"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{cc}" "$@"\n')
    wrapper.chmod(0o755)
    cache = tmp_path / "cache"
    env = dict(os.environ, DIFFSOL_PYTORCH_CACHE=str(cache), CC=str(wrapper))
    # a model no other test compiles
    rate = 0.5 + uuid.uuid4().int % 1000 / 1e4
    code = f"in_i {{ k = {rate!r} }}\nu {{ 1 }}\nF {{ -k * u }}\n"

    def run():
        proc = subprocess.run([sys.executable, "-c", CHILD, code], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first = run()
    assert first["same"]
    assert first["count"] == 1
    assert len(_compiler_invocations(log)) == 1, log.read_text()

    # a new process finds the shared object on disk: no compiler run at all
    second = run()
    assert second["count"] == 0
    assert len(_compiler_invocations(log)) == 1, log.read_text()

    # the cache directory is private to the user
    assert cache.is_dir()
    assert cache.stat().st_mode & 0o022 == 0
