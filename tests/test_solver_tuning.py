"""How the kernel configures SUNDIALS for speed (issue 8), and that results stay right.

- small dense systems (SUNDIALS' dense LU): IDAS rebuilds its Newton matrix when cj
  changes by more than 5% (SUNDIALS: 25%); CVODES refreshes its Jacobian at least every 20
  steps where the step is stiff (SUNDIALS: 51);
- KLU factors with AMD ordering (KLU's default; SUNDIALS sets COLAMD);
- state vectors use the plain-loop operations of nvec_ops.c (bit-for-bit equal to
  nvector_serial, which Debian builds without optimisation; checked in the C tests,
  _ckernel/tests/test_linsol.c).

References: SciPy Radau at rtol 1e-11, and the matrix exponential for the (linear) heat
equation.
"""

from __future__ import annotations

import functools
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import problems as P  # noqa: E402

import diffsol_pytorch as dsp  # noqa: E402

pytestmark = pytest.mark.integration

SMALL = {"robertson_ode": P.robertson_ode, "robertson_dae": P.robertson_dae,
         "lotka_volterra": P.lotka_volterra, "vanderpol": P.vanderpol}


@functools.lru_cache(maxsize=None)
def _radau_final(name):
    from scipy.integrate import solve_ivp

    # the DAE's differential part is the ODE's; a + b + c = 1 holds
    prob = SMALL["robertson_ode" if name == "robertson_dae" else name]()
    return solve_ivp(prob.rhs, (0.0, float(prob.times[-1])), prob.y0, method="Radau",
                     rtol=1e-11, atol=1e-13, jac=prob.jac).y[:, -1]


def _radau(prob):
    return _radau_final(prob.name)


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("scale", [1.0, 1e-2])
def test_small_problems_at_benchmark_tolerances(name, scale):
    """At the tolerances of benchmarks/compare.py the final state is as accurate as the
    tolerance asks (within a factor 200: global error grows over the interval)."""
    prob = SMALL[name]()
    rtol, atol = prob.rtol * scale, prob.atol * scale
    m = dsp.DiffsolModule(prob.code, rtol=rtol, atol=atol)
    assert m.linear_solver_used == "dense"
    y = m.solve_dense(m.default_params, prob.times).numpy()[:, -1]
    ref = _radau(prob)
    err = np.max(np.abs(y - ref))
    assert err <= 200 * (rtol * np.max(np.abs(ref)) + atol), (err, ref)


@pytest.mark.parametrize("name", ["robertson_ode", "vanderpol", "lotka_volterra"])
@pytest.mark.parametrize("scale", [1.0, 1e-2])
def test_cvodes_jacobian_reuse_by_stiffness(name, scale):
    """CVODES reuses its Jacobian; where the step is stiff (gamma ||J||_1 > 1) it refreshes
    it at least every 20 steps (SUNDIALS: 51). Robertson and Van der Pol take a Jacobian
    every 30-34 steps (50-60 with SUNDIALS' default), Lotka-Volterra (never stiff) keeps
    the default: 55-58."""
    prob = SMALL[name]()
    m = dsp.DiffsolModule(prob.code, rtol=prob.rtol * scale, atol=prob.atol * scale)
    m.solve_dense(m.default_params, prob.times)
    st = m.stats
    assert 0 < st["jac_evals"] < 0.5 * st["lin_setups"], st
    per_jac = st["steps"] / st["jac_evals"]
    if prob.stiff:
        assert per_jac <= 40, st
    else:
        assert per_jac >= 45, st
    # the accuracy at these tolerances: test_small_problems_at_benchmark_tolerances


def test_cvodes_solve_does_not_depend_on_the_one_before():
    """The stiffness decision is taken afresh in every solve (CVODES evaluates J at its
    first step, where the frequency is set again): Van der Pol with mu = 1
    after a stiff solve (mu = 1000) on the same module is bit-for-bit a fresh module's."""
    prob = P.vanderpol()
    m = dsp.DiffsolModule(prob.code, rtol=1e-6, atol=1e-8)
    stiff = m.default_params.clone()
    mild = stiff.clone()
    mild[0] = 1.0
    m.solve_dense(stiff, prob.times)
    assert m.stats["steps"] <= 35 * m.stats["jac_evals"]  # stiff: a Jacobian every <= 35 steps
    times = np.linspace(0.0, 30.0, 31)
    y = m.solve_dense(mild, times).numpy()
    fresh = dsp.DiffsolModule(prob.code, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(y, fresh.solve_dense(mild, times).numpy())
    assert m.stats == fresh.stats


def test_idas_dense_newton_matrix_updates():
    """Robertson DAE at rtol 1e-8: 1002 steps with the Newton matrix rebuilt at a 5%
    change of cj, 1123 with SUNDIALS' default 25% (SUNDIALS 6.4)."""
    prob = P.robertson_dae()
    m = dsp.DiffsolModule(prob.code, rtol=1e-8, atol=1e-12)
    y = m.solve_dense(m.default_params, prob.times).numpy()[:, -1]
    st = m.stats
    assert st["jac_evals"] == st["lin_setups"]  # IDAS: a Jacobian with every setup
    assert st["steps"] < 1080, st
    np.testing.assert_allclose(y, _radau(prob), rtol=1e-6, atol=1e-9)


def test_klu_keeps_jacobian_reuse_and_is_exact():
    """heat2d on a 12 x 12 grid (KLU, AMD ordering) against exp(t L) u0."""
    from scipy.linalg import expm

    prob = P.heat2d(12)
    m = dsp.DiffsolModule(prob.code, rtol=1e-10, atol=1e-12)
    assert m.linear_solver_used == "klu"
    y = m.solve_dense(m.default_params, prob.times).numpy()
    st = m.stats
    assert st["jac_evals"] < st["lin_setups"], st  # the Jacobian is reused between setups
    lap = prob.jac(0.0, prob.y0).toarray()
    for j in (1, 5, len(prob.times) - 1):
        ref = expm(lap * prob.times[j]) @ prob.y0
        np.testing.assert_allclose(y[:, j], ref, rtol=0, atol=1e-8)


def test_robertson_grid_klu_matches_three_state_solution():
    """Every cell of the diffusion-coupled grid follows the 3-state Robertson solution."""
    prob = P.robertson_grid(6)
    m = dsp.DiffsolModule(prob.code, rtol=1e-10, atol=1e-14)
    assert m.linear_solver_used == "klu"
    y = m.solve_dense(m.default_params, prob.times).numpy()[:, -1]
    ref = np.repeat(_radau(P.robertson_ode()), 36)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-10)
