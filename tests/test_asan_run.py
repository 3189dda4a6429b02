"""scripts/asan_run.sh (make test-asan): a failing program fails the run, and only
LeakSanitizer's own fatal error (it needs ptrace, which some machines forbid) makes it
run the program again without leak checking. Checked with stand-in programs, which
print what ASan would."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "asan_run.sh"

pytestmark = pytest.mark.unit

# exits 23 with LSan's fatal error while leak checking is on, else passes
NO_PTRACE = """#!/usr/bin/env bash
case "$ASAN_OPTIONS" in
  *detect_leaks=1*) echo "==1==LeakSanitizer has encountered a fatal error."; exit 23 ;;
esac
echo "ran with $ASAN_OPTIONS, $UBSAN_OPTIONS"
"""

# a real finding: exits 1 with an ASan report, whatever the options
REPORT = """#!/usr/bin/env bash
echo "==1==ERROR: AddressSanitizer: heap-buffer-overflow"; exit 1
"""


def run(tmp_path: pathlib.Path, body: str) -> subprocess.CompletedProcess:
    prog = tmp_path / "prog"
    prog.write_text(body)
    prog.chmod(0o755)
    return subprocess.run(["bash", str(SCRIPT), str(prog)], capture_output=True, text=True,
                          timeout=60)


def test_lsan_that_cannot_run_falls_back_without_leak_checking(tmp_path):
    proc = run(tmp_path, NO_PTRACE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING: LeakSanitizer cannot run" in proc.stderr
    assert "ran with detect_leaks=0:halt_on_error=1" in proc.stdout
    assert "halt_on_error=1:print_stacktrace=1" in proc.stdout  # UBSan's options


def test_a_sanitizer_report_fails_the_run(tmp_path):
    proc = run(tmp_path, REPORT)
    assert proc.returncode == 1
    assert "heap-buffer-overflow" in proc.stdout
    assert "WARNING" not in proc.stderr  # no second run
