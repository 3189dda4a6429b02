"""Shared pytest set-up: an isolated JIT cache, model paths.

Markers and ``--run-perf`` come from the package's pytest plugin
(diffsol_pytorch/pytest_plugin.py, loaded through its pytest11 entry point).
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np
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

def central_fd(m, params, times, g, rel=1e-4):
    """Central differences of sum(g * y); a relative step of 1e-4 keeps the solver's
    tolerance-level noise (rtol 1e-10) well below the truncation error."""
    params = np.asarray(params, dtype=np.float64)
    out = np.zeros_like(params)
    for k in range(params.size):
        h = rel * max(abs(params[k]), 1e-3)
        pp, pm = params.copy(), params.copy()
        pp[k] += h
        pm[k] -= h
        lp = float((m.solve_dense(pp, times).numpy() * g).sum())
        lm = float((m.solve_dense(pm, times).numpy() * g).sum())
        out[k] = (lp - lm) / (2 * h)
    return out


# Integrate-and-fire: u' = (cur - u) / tau, reset to 0 when u reaches vth.
THRESHOLD_MODEL = """
in_i { cur = 2.0, tau = 1.5, vth = 1.0 }
u { 0.0 }
F { (cur - u) / tau }
stop { u - vth }
reset { 0.0 }
"""


def threshold_sensitivities(ts: np.ndarray, I: float = 2.0, tau: float = 1.5,
                            vth: float = 1.0) -> np.ndarray:
    """Closed-form d u(t) / d (cur, tau, vth) of THRESHOLD_MODEL, shape (3, len(ts)).

    The firing period T = tau ln(I / (I - vth)) depends on all three parameters, so
    the sensitivities carry the event-time terms."""
    T = tau * np.log(I / (I - vth))
    dT = np.array([tau * (1 / I - 1 / (I - vth)), np.log(I / (I - vth)), tau / (I - vth)])
    nsp = np.floor(ts / T)
    r = ts - nsp * T
    E = np.exp(-r / tau)
    return np.stack([(q == 0) * (1 - E) - I * E * -((-nsp * dT[q]) * tau - r * (q == 1)) / tau**2
                     for q in range(3)])


def dosing_closed_form_grad(ts, g, cl=2.0, vol=10.0):
    """d sum(g * q/vol) / d (cl, vol) for the dosing model (doses of 50 at t = 0, 4, 8, 12),
    from its closed form."""
    k = cl / vol
    q = np.zeros_like(ts)
    dq = np.zeros_like(ts)  # dq/dk
    for d in (0.0, 4.0, 8.0, 12.0):
        on = ts >= d
        q += on * 50 * np.exp(-k * (ts - d))
        dq += on * -50 * (ts - d) * np.exp(-k * (ts - d))
    dcl = dq / vol / vol
    dvol = dq * (-cl / vol**2) / vol - q / vol**2
    return np.array([(g * dcl).sum(), (g * dvol).sum()])
