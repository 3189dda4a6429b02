"""DiffSL language features solved end to end, against independent references:
SciPy (Radau at rtol 1e-12, matrix exponentials) and NumPy re-implementations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.integrate import solve_ivp

import diffsol_pytorch as dsp
from conftest import model_source

pytestmark = pytest.mark.integration


def test_heat1d_matches_radau():
    """Tridiagonal stencil as a sparse matrix, a sparse boundary vector, contraction."""
    m = dsp.DiffsolModule(model_source("heat1d"), rtol=1e-10, atol=1e-12)
    assert (m.nstates, m.nparams, m.nout) == (50, 2, 50)
    kappa, tb = 0.5, 1.0
    n, dx = 50, 1.0 / 51.0
    lap = (np.diag(-2.0 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1))
    b = np.zeros(n)
    b[0] = b[-1] = tb
    u0 = np.zeros(n)
    u0[20:30] = 2.0
    times = np.array([0.0, 1e-4, 1e-3, 1e-2, 0.1])
    ref = solve_ivp(lambda t, u: kappa * (lap @ u + b) / dx**2, (0, times[-1]), u0,
                    method="Radau", t_eval=times, rtol=1e-12, atol=1e-14,
                    jac=kappa * lap / dx**2).y
    y = m.solve_dense([kappa, tb], times).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-9)


LINEAR = """
in_i { a = 0.5, b = 2.0 }
A_ij { (0..3, 0..3): -a, (0:1, 1:3): 0.1 * b, (2, 0): -0.25 }
B_ij { A_ji * 0.5 }
C_ij { A_ij + B_ij }
u_i { x = 1, y = -0.5, z = 2 }
F_i { C_ij * u_j }
s { u_i }
rs_i { C_ij }
out_i { u_i[0:2], s, z * b, rs_i[2] }
"""


def linear_matrix(a, b):
    A = -a * np.eye(3)
    A[0, 1] = A[0, 2] = 0.1 * b
    A[2, 0] = -0.25
    return A + 0.5 * A.T


def test_linear_system_matches_expm():
    """Diagonal, dense and single-entry blocks, a transpose, contraction, totals, indexing."""
    m = dsp.DiffsolModule(LINEAR, rtol=1e-11, atol=1e-13)
    assert m.param_names == ("a", "b")
    assert m.nout == 5
    params = np.array([0.7, 1.3])
    C = linear_matrix(*params)
    u0 = np.array([1.0, -0.5, 2.0])
    times = np.linspace(0.0, 3.0, 7)
    y = m.solve_dense(params, times).numpy()
    for j, t in enumerate(times):
        u = scipy.linalg.expm(C * t) @ u0
        want = [u[0], u[1], u.sum(), u[2] * params[1], C[2].sum()]
        np.testing.assert_allclose(y[:, j], want, rtol=1e-8, atol=1e-10)


def test_named_vector_elements_and_broadcast():
    """`(0:n): x = ...` names a vector; a scalar broadcasts along it."""
    code = """
in_i { r = 0.3 }
w_i { 1.0, 2.0, 3.0 }
u_i { (0:3): x = 1.0, y = 2.0 }
F_i { (0:3): -r * w_i * x_i, -y }
out_i { x_i * y }
"""
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    t = np.array([0.0, 0.5, 2.0])
    y = m.solve_dense([0.3], t).numpy()
    x = np.exp(-0.3 * np.outer([1, 2, 3], t))
    np.testing.assert_allclose(y, x * 2.0 * np.exp(-t), rtol=1e-8)


def test_three_index_contraction_matches_numpy():
    code = """
in_i { a = 0.7 }
T_ijk { (0:2, 0:2, 0:1): a, (1, 1, 1): 2.5 }
u_i { 1, 2 }
w_ij { T_ijk * u_k }
F_i { -0.1 * w_ij * u_j }
"""
    m = dsp.DiffsolModule(code, rtol=1e-11, atol=1e-13)
    T = np.zeros((2, 2, 2))
    T[:, :, 0] = 0.7
    T[1, 1, 1] = 2.5
    times = np.array([0.0, 0.2, 0.5])
    ref = solve_ivp(lambda t, u: -0.1 * np.einsum("ijk,k,j->i", T, u, u), (0, 0.5), [1.0, 2.0],
                    method="Radau", t_eval=times, rtol=1e-12, atol=1e-14).y
    np.testing.assert_allclose(m.solve_dense([0.7], times).numpy(), ref, rtol=1e-7)


@pytest.mark.parametrize(
    "code, where, text",
    [
        ("a_i { 1, 2 }\nb_i { 1, 2, 3 }\nu_i { 1, 2 }\nF_i { a_i + b_i }", "4:7", "do not broadcast"),
        ("A_ij { (0:2, 0:3): 1 }\nu_i { 1, 2 }\nF_i { A_ij * u_j }", "3:7", "contraction over 'j'"),
        ("u_i { 1, 2 }\nF_i { u_i }\nreset_i { u_i }", "3:1", "reset needs stop"),
        ("u_i { 1, 2 }\nF_i { u_i }\nM_i { u_i }", "3:1", "M must not depend on the state"),
        ("u_i { 1, 2 }\nF_i { u_i[5] }", "2:7", "out of range"),
    ],
)
def test_model_errors_have_position(code, where, text):
    with pytest.raises(dsp.DiffSLError) as info:
        dsp.DiffsolModule(code)
    msg = str(info.value)
    assert msg.startswith(where + ": error:"), msg
    assert text in msg
    assert "^" in msg.splitlines()[-1]


@pytest.mark.parametrize("method", ["tsit45", "dopri5", "tr_bdf2", "esdirk34"])
def test_dae_with_arkode_method_is_refused(method):
    """A singular M (an algebraic state) with an ARKODE method is refused, pointing at bdf."""
    with pytest.raises(ValueError, match="method='bdf'"):
        dsp.DiffsolModule(model_source("robertson_dae"), method=method)


def test_interp1d_forcing_integrates_exactly():
    """u' = interp1d(x, y, t): u is the integral of a piecewise-linear function."""
    code = """
in_i { a = 2.0 }
xg_i { 0.0, 1.0, 2.5, 4.0 }
yv_i { 1.0, a, -1.0, 0.5 }
u { 0 }
F { interp1d(xg_i, yv_i, t) }
"""
    m = dsp.DiffsolModule(code, rtol=1e-10, atol=1e-12)
    xg = np.array([0.0, 1.0, 2.5, 4.0])
    yv = np.array([1.0, 3.0, -1.0, 0.5])
    times = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 5.0])

    def integral(t):
        # the trapezoid rule is exact on a piecewise-linear function sampled at its kinks
        ts = np.union1d([0.0, min(t, 4.0)], xg[xg < min(t, 4.0)])
        inside = np.trapezoid(np.interp(ts, xg, yv), ts)
        return inside + max(t - 4.0, 0.0) * yv[-1]  # clamped beyond the grid

    want = [integral(t) for t in times]
    np.testing.assert_allclose(m.solve_dense([3.0], times).numpy()[0], want, rtol=1e-7, atol=1e-9)


def test_read_tns_matrix(tmp_path, monkeypatch):
    """read('file.tns'): a sparse constant matrix in FROSTT format, relative to the cwd."""
    (tmp_path / "a.tns").write_text("# 1-based\n1 1 -1.0\n2 2 -2.0\n2 1 0.5\n")
    monkeypatch.chdir(tmp_path)
    code = "A_ij { (0:2, 0:2): read('a.tns') }\nu_i { 1, 1 }\nF_i { A_ij * u_j }\n"
    m = dsp.DiffsolModule(code, rtol=1e-11, atol=1e-13)
    A = np.array([[-1.0, 0.0], [0.5, -2.0]])
    times = np.array([0.0, 0.3, 1.0])
    y = m.solve_dense([], times).numpy()
    for j, t in enumerate(times):
        np.testing.assert_allclose(y[:, j], scipy.linalg.expm(A * t) @ [1.0, 1.0], rtol=1e-8)


def test_read_missing_file_is_a_positioned_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(dsp.DiffSLError, match=r"1:25: error: cannot read 'missing.tns'"):
        dsp.DiffsolModule("A_ij { (0:2, 0:2): read('missing.tns') }\nu { 1 }\nF { u }")
