"""Generated code for constant matrices written entry by entry (emit_c.c).

A dense matrix W becomes a static table read by unrolled row sums; an irregular sparse S
(a few entries a row at random columns) is multiplied by one loop over a table of its
points; a 2-D stencil's rows share one loop nest. The model

    du/dt = gain * S tanh(W u + c) - u

is checked against closed forms in NumPy (right-hand side, J v, J^T w, dF/dp), against
SciPy's DOP853 (the solution) and against central differences (gradients of the solution,
reverse and forward mode). The generated functions are called through their table
(dsk_gen.h) with ctypes, as benchmarks/bench_compile.py does.
"""

from __future__ import annotations

import ctypes
import tempfile
import time

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from diffsol_pytorch import _kernel

pytestmark = pytest.mark.integration

GAIN, C = 0.8, 0.3


def matrices(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 1.5 / np.sqrt(n), (n, n))
    s = np.zeros((n, n))
    for i in range(n):
        for j in rng.choice(n, size=3, replace=False):
            s[i, j] = rng.uniform(0.5, 1.5)
    return w, s


def model_code(n: int, seed: int = 3) -> str:
    w, s = matrices(n, seed)
    wt = ", ".join(f"({i}, {j}): {float(w[i, j])!r}" for i in range(n) for j in range(n))
    st = ", ".join(f"({i}, {j}): {float(s[i, j])!r}" for i, j in zip(*np.nonzero(s)))
    return "\n".join([
        f"in_i {{ gain = {GAIN}, c = {C} }}",
        f"W_ij {{ {wt} }}",
        f"S_ij {{ {st} }}",
        f"u_i {{ (0:{n}): 0.5 }}",
        "z_i { W_ij * u_j }",
        "h_i { tanh(z_i + c) }",
        "v_i { S_ij * h_j }",
        "F_i { gain * v_i - u_i }",
    ]) + "\n"


def rhs(u, w, s, gain=GAIN, c=C):
    return gain * s @ np.tanh(w @ u + c) - u


def jac(u, w, s, gain=GAIN, c=C):
    d = 1.0 - np.tanh(w @ u + c) ** 2
    return gain * (s * d) @ w - np.eye(len(u))


# ---- the generated functions through ctypes ------------------------------------------
NFN = 7
DP = ctypes.POINTER(ctypes.c_double)
EVAL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, DP, DP, DP)
JVP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, DP, DP, DP, DP, DP, DP)
VJP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, DP, DP, DP, DP, DP)
VJP2 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, DP, DP, DP, DP, DP, DP)


class GenTable(ctypes.Structure):
    """dsk_gen_table of dsk_gen.h (ABI 3)."""

    _fields_ = [(k, ctypes.c_int) for k in ("abi_version", "nstates", "nparams", "nout",
                                             "nstop", "has_mass", "nws", "n_slot")] + [
        ("param_names", ctypes.c_void_p), ("default_params", DP),
        ("init", ctypes.CFUNCTYPE(ctypes.c_int, DP)),
        ("set_inputs", ctypes.CFUNCTYPE(ctypes.c_int, DP, DP)),
        ("eval", EVAL * NFN), ("jvp_x", JVP * NFN), ("jvp_p", JVP * NFN),
        ("vjp_x", VJP * NFN), ("vjp_p", VJP * NFN), ("vjp_xp", VJP2 * NFN),
    ]


def _ptr(a):
    return a.ctypes.data_as(DP)


@pytest.fixture(scope="module", params=[6, 13, 40], ids=lambda n: f"n{n}")
def compiled(request, tmp_path_factory):
    n = request.param
    model = _kernel.Model(model_code(n), cache_dir=str(tmp_path_factory.mktemp("cache")))
    lib = ctypes.CDLL(model.path)
    lib.dsk_model_table.restype = ctypes.POINTER(GenTable)
    tab = lib.dsk_model_table().contents
    assert tab.abi_version == 3 and tab.nstates == n and tab.nparams == 2
    ws = np.zeros(tab.nws)
    assert tab.init(_ptr(ws)) == 0
    p = np.array([GAIN, C])
    assert tab.set_inputs(_ptr(p), _ptr(ws)) == 0
    return n, tab, ws, lib


def test_rhs_and_derivatives_match_closed_forms(compiled):
    n, tab, ws, _ = compiled
    w, s = matrices(n)
    rng = np.random.default_rng(n)
    dws, bws = np.zeros_like(ws), np.zeros_like(ws)
    u, du, wv = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    f, f2, df, ubar, pbar = (np.zeros(n) for _ in range(5))
    assert tab.eval[1](0.0, _ptr(u), _ptr(ws), _ptr(f)) == 0
    np.testing.assert_allclose(f, rhs(u, w, s), rtol=1e-13, atol=1e-13)
    J = jac(u, w, s)
    # J v (one Jacobian column family: what the solver's Jacobian is made of)
    assert tab.jvp_x[1](0.0, _ptr(u), _ptr(du), _ptr(ws), _ptr(dws), _ptr(f2), _ptr(df)) == 0
    assert np.array_equal(f2, f)  # the tangent's primal is eval's, bit for bit
    np.testing.assert_allclose(df, J @ du, rtol=1e-12, atol=1e-12)
    # J^T w
    assert tab.vjp_x[1](0.0, _ptr(u), _ptr(wv), _ptr(ws), _ptr(bws), _ptr(ubar)) == 0
    np.testing.assert_allclose(ubar, J.T @ wv, rtol=1e-12, atol=1e-12)
    # dF/dp: columns S h (gain) and gain S (1 - h^2) (c)
    h = np.tanh(w @ u + C)
    dfdp = np.stack([s @ h, GAIN * s @ (1.0 - h * h)], axis=1)
    dp = np.array([0.7, -1.3])
    pb = np.zeros(2)
    assert tab.jvp_p[1](0.0, _ptr(u), _ptr(dp), _ptr(ws), _ptr(dws), _ptr(f2), _ptr(df)) == 0
    np.testing.assert_allclose(df, dfdp @ dp, rtol=1e-12, atol=1e-12)
    assert tab.vjp_p[1](0.0, _ptr(u), _ptr(wv), _ptr(ws), _ptr(bws), _ptr(pb)) == 0
    np.testing.assert_allclose(pb, dfdp.T @ wv, rtol=1e-12, atol=1e-12)
    # both in one sweep (the ARKODE adjoint's right-hand side)
    ubar[:] = pb[:] = np.inf
    assert tab.vjp_xp[1](0.0, _ptr(u), _ptr(wv), _ptr(ws), _ptr(bws), _ptr(ubar), _ptr(pb)) == 0
    np.testing.assert_allclose(ubar, J.T @ wv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pb, dfdp.T @ wv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [13, 40])
def test_solution_matches_scipy(n):
    from scipy.integrate import solve_ivp

    w, s = matrices(n)
    times = np.array([0.0, 0.5, 2.0, 5.0])
    m = dsp.DiffsolModule(model_code(n), rtol=1e-10, atol=1e-12)
    y = m.solve_dense(m.default_params, times).numpy()
    ref = solve_ivp(lambda t, u: rhs(u, w, s), (0.0, times[-1]), np.full(n, 0.5),
                    method="DOP853", t_eval=times, rtol=1e-12, atol=1e-13).y
    np.testing.assert_allclose(y, ref, rtol=1e-7, atol=1e-9)


@pytest.mark.gradient
def test_gradients_match_central_differences():
    """Reverse and forward mode of the solution w.r.t. (gain, c) against central
    differences (gradcheck, through a relative scale of the parameters as in
    test_gradcheck.py)."""
    m = dsp.DiffsolModule(model_code(13), rtol=1e-10, atol=1e-10)
    times = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    p0 = m.default_params

    def f(scale):
        return m.solve_dense(p0 * scale, times)

    scale = torch.ones(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (scale,), eps=1e-4, atol=1e-5, rtol=1e-4,
                                    check_forward_ad=True)


def test_source_size_follows_blocks_not_entries():
    """Doubling n quadruples the matrix entries; the generated C grows by a number literal
    (and a few index digits for S) per entry, not by a statement per entry (about 100
    bytes each when unrolled)."""
    sizes = {n: len(_kernel.translate(model_code(n))) for n in (32, 64)}
    entries = {n: n * n + 3 * n for n in sizes}
    per_entry = (sizes[64] - sizes[32]) / (entries[64] - entries[32])
    assert per_entry < 32, (sizes, per_entry)


@pytest.mark.perf
def test_cold_compile_of_a_64_state_dense_model_is_fast():
    """A 9-line model with a 64 x 64 dense constant matrix and a sparse one compiles cold
    (translate + cc + dlopen) within the 0.5 s budget of docs/performance.md (about 6 s
    when every entry was a statement); the best of three fresh caches."""
    code = model_code(64)
    best = float("inf")
    for _ in range(3):
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            _kernel.Model(code, cache_dir=cache)
            best = min(best, time.perf_counter() - t0)
    assert best < 0.5, f"cold compile took {best:.2f} s"
