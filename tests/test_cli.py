"""python -m diffsol_pytorch solve ... / info"""

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from diffsol_pytorch.__main__ import parse_floats, parse_times

ROOT_ARGS = [sys.executable, "-m", "diffsol_pytorch"]


def run_cli(*args, cwd=None):
    return subprocess.run([*ROOT_ARGS, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.unit
class TestParsing:
    def test_linspace(self):
        t, log = parse_times("0:2:5")
        np.testing.assert_allclose(t, [0, 0.5, 1, 1.5, 2])
        assert not log

    def test_logspace(self):
        t, log = parse_times("logspace:-5:5:11")
        np.testing.assert_allclose(t, np.logspace(-5, 5, 11))
        assert log

    def test_list(self):
        t, _ = parse_times("0, 1e-3,2.5")
        np.testing.assert_allclose(t, [0, 1e-3, 2.5])

    @pytest.mark.parametrize("bad", ["0:1", "a:b:3", "logspace:0:1", "0:1:0", "x,y"])
    def test_bad_times(self, bad):
        with pytest.raises(ValueError):
            parse_times(bad)

    def test_floats(self):
        assert parse_floats("0.04,1e4,3e7") == [0.04, 1e4, 3e7]

    def test_grad_prints_the_gradient(self, models_dir):
        """decay: y(1) = a0 exp(-k): d/dk = -a0 exp(-k), d/da0 = exp(-k) (closed form)."""
        proc = run_cli("solve", models_dir / "decay.ds", "--params", "0.7,2.0", "--times",
                       "0:1:2", "--rtol", "1e-10", "--atol", "1e-12", "--grad")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        at = lines.index("d(sum of outputs at t = 1) / d(params):")
        k = float(lines[at + 1].split()[1])
        a0 = float(lines[at + 2].split()[1])
        assert lines[at + 1].split()[0] == "k" and lines[at + 2].split()[0] == "a0"
        assert abs(k + 2.0 * math.exp(-0.7)) < 1e-6
        assert abs(a0 - math.exp(-0.7)) < 1e-6


@pytest.mark.integration
def test_solve_prints_table_and_saves_plot(tmp_path, models_dir):
    png = tmp_path / "decay.png"
    proc = run_cli("solve", models_dir / "decay.ds", "--params", "0.7,2.0", "--times", "0:2:5",
                   "--rtol", "1e-10", "--atol", "1e-12", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[0].split() == ["time", "y[0]"]
    rows = [[float(x) for x in line.split()] for line in lines[1:]]
    assert len(rows) == 5
    for t, y in rows:
        assert y == pytest.approx(2.0 * math.exp(-0.7 * t), rel=1e-6)
    assert png.exists() and png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_robertson_demo_command(tmp_path, models_dir):
    png = tmp_path / "demo.png"
    proc = run_cli("solve", models_dir / "robertson_ode.ds", "--params", "0.04,1e4,3e7",
                   "--times", "logspace:-5:5:11", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[0].split() == ["time", "y[0]", "y[1]", "y[2]"]
    assert len(lines) == 12
    assert png.stat().st_size > 0


@pytest.mark.integration
def test_default_params_when_omitted(models_dir):
    proc = run_cli("solve", models_dir / "decay.ds", "--times", "1")
    assert proc.returncode == 0, proc.stderr
    t, y = map(float, proc.stdout.splitlines()[1].split())
    assert y == pytest.approx(2.0 * math.exp(-0.7), rel=1e-4)


@pytest.mark.integration
def test_model_error_is_clean(tmp_path):
    bad = tmp_path / "bad.ds"
    bad.write_text("in_i { k = 1 }\nu { 1 }\nF { -kk * u }\n")
    proc = run_cli("solve", bad, "--times", "0:1:3")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "bad.ds:3:6" in proc.stderr


@pytest.mark.unit
def test_missing_file_is_clean(tmp_path):
    proc = run_cli("solve", tmp_path / "nope.ds", "--times", "0:1:3")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:")


@pytest.mark.integration
def test_wrong_param_count_is_clean(models_dir):
    proc = run_cli("solve", models_dir / "decay.ds", "--params", "1", "--times", "0:1:3")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "k, a0" in proc.stderr


@pytest.mark.unit
def test_info_names_the_sundials_build():
    """`info` prints every version; the SUNDIALS line says which build is linked in.

    `make test` sets DIFFSOL_EXPECT_SUNDIALS_PREFIX to the prefix `make setup` chose
    (empty: the system libraries, chosen or fallen back to with a warning), so that an
    extension built against another SUNDIALS than the set-up's fails here.
    """
    from diffsol_pytorch import _kernel

    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    info = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert set(info) == {"diffsol-pytorch", "python", "numpy", "torch", "sundials"}
    version, prefix = _kernel.sundials_build()
    assert version.startswith("6.") and info["sundials"].startswith(version + ", ")
    expected = os.environ.get("DIFFSOL_EXPECT_SUNDIALS_PREFIX")
    if expected is not None:
        assert prefix == expected
    if prefix:  # (a wheel's was a temporary build directory, gone now)
        assert "-O2" in info["sundials"] and pathlib.Path(prefix).is_absolute()
    else:
        assert "system" in info["sundials"]


def test_info_says_when_the_sundials_build_directory_is_gone(monkeypatch):
    """A wheel's SUNDIALS was built in pip's temporary directory: `info` says it is gone
    and the libraries are inside the extension, instead of naming a path that does not
    exist as if it did."""
    from diffsol_pytorch import __main__ as cli
    from diffsol_pytorch import _kernel

    monkeypatch.setattr(_kernel, "sundials_build", lambda: ("6.4.1", "/tmp/pip-build-xyz/sd"))
    assert cli.build_info()["sundials"] == (
        "6.4.1, static, compiled with -O2 (scripts/build_sundials.sh, into /tmp/pip-build-xyz/sd, "
        "a build directory removed since: linked into the extension)")
    monkeypatch.setattr(_kernel, "sundials_build", lambda: ("6.4.1", str(pathlib.Path.cwd())))
    assert "removed" not in cli.build_info()["sundials"]
