"""scripts/build_sundials.sh refuses what is not Debian's SUNDIALS source, and cleans up.

(The successful build is exercised by `make setup` and by meson's default configuration:
the extension under test links it, which tests/test_cli.py checks.)
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_sundials.sh"
TARBALL = "sundials_6.4.1+dfsg1.orig.tar.xz"

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(shutil.which("curl") is None and shutil.which("wget") is None,
                       reason="the script downloads with curl or wget"),
]


def run(prefix: pathlib.Path, mirror: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_MIRROR=mirror)
    return subprocess.run(["bash", str(SCRIPT), str(prefix)], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.skipif(shutil.which("curl") is None, reason="file:// mirror needs curl")
def test_a_tarball_with_another_checksum_is_refused(tmp_path):
    pool = tmp_path / "mirror" / "pool" / "main" / "s" / "sundials"
    pool.mkdir(parents=True)
    (pool / TARBALL).write_bytes(b"not the Debian source")
    prefix = tmp_path / "sundials"
    proc = run(prefix, (tmp_path / "mirror").as_uri())
    assert proc.returncode != 0
    assert "does not have the SHA-256 of Debian's sundials_6.4.1+dfsg1-3.dsc" in proc.stderr
    assert not prefix.exists() and not (tmp_path / "sundials.work").exists()


def test_an_unreachable_mirror_fails_cleanly(tmp_path):
    prefix = tmp_path / "sundials"
    proc = run(prefix, "http://127.0.0.1:9/debian")  # the discard port: nothing listens
    assert proc.returncode != 0
    assert "could not download http://127.0.0.1:9/debian/pool/main/s/sundials/" in proc.stderr
    assert not prefix.exists() and not (tmp_path / "sundials.work").exists()


def _stamp(script_sha: str) -> str:
    tarball_sha = next(line.split("=", 1)[1] for line in SCRIPT.read_text().splitlines()
                       if line.startswith("sha256="))
    return f"{tarball_sha} {script_sha}\n"


def test_a_finished_build_is_kept(tmp_path):
    """A prefix built from the same tarball by the same script is left alone (no download)."""
    prefix = tmp_path / "sundials"
    prefix.mkdir()
    (prefix / ".build-stamp").write_text(_stamp(hashlib.sha256(SCRIPT.read_bytes()).hexdigest()))
    (prefix / "keep").write_text("x")
    proc = run(prefix, "http://127.0.0.1:9/debian")
    assert proc.returncode == 0, proc.stderr
    assert "already built" in proc.stdout and (prefix / "keep").read_text() == "x"


def test_a_build_by_another_script_is_redone(tmp_path):
    """After the script changed (other compiler flags, say) the prefix is built again:
    here that means a download, which fails, and the old build is gone."""
    prefix = tmp_path / "sundials"
    prefix.mkdir()
    (prefix / ".build-stamp").write_text(_stamp("0" * 64))
    proc = run(prefix, "http://127.0.0.1:9/debian")
    assert proc.returncode != 0 and "could not download" in proc.stderr
    assert not prefix.exists()
