"""Errors: bad arguments are ValueErrors raised before solving; DiffSL errors
point at line:col with a caret; solver failures carry t and the SUNDIALS flag."""

import math
import re

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from conftest import model_source


@pytest.fixture(scope="module")
def decay():
    return dsp.DiffsolModule(model_source("decay"))


# ---- argument validation (before any solve) ----------------------------------------

@pytest.mark.integration
class TestArguments:
    def test_wrong_param_count_names_length_and_params(self, decay):
        with pytest.raises(ValueError, match=r"\(2,\)") as info:
            decay.solve_dense([0.7], [0.0, 1.0])
        assert "k, a0" in str(info.value)

    def test_params_3d(self, decay):
        with pytest.raises(ValueError):
            decay.solve_dense(torch.zeros(1, 1, 2, dtype=torch.float64), [0.0, 1.0])

    def test_times_2d(self, decay):
        with pytest.raises(ValueError, match="1-D"):
            decay.solve_dense([0.7, 2.0], [[0.0, 1.0]])

    def test_times_empty(self, decay):
        with pytest.raises(ValueError, match="empty"):
            decay.solve_dense([0.7, 2.0], [])

    def test_times_decreasing(self, decay):
        with pytest.raises(ValueError, match="non-decreasing"):
            decay.solve_dense([0.7, 2.0], [0.0, 2.0, 1.0])

    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_times_not_finite(self, decay, bad):
        with pytest.raises(ValueError, match="finite"):
            decay.solve_dense([0.7, 2.0], [0.0, bad])

    def test_times_before_t0(self):
        m = dsp.DiffsolModule(model_source("decay"), t0=1.0)
        with pytest.raises(ValueError, match="t0"):
            m.solve_dense([0.7, 2.0], [0.5, 2.0])

    def test_params_not_finite(self, decay):
        with pytest.raises(ValueError, match="finite"):
            decay.solve_dense([math.nan, 2.0], [0.0, 1.0])

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.bool])
    def test_rejected_tensor_dtypes(self, decay, dtype):
        params = torch.tensor([1, 2]).to(dtype)
        with pytest.raises(ValueError, match="dtype"):
            decay.solve_dense(params, [0.0, 1.0])

    def test_float16_numpy_rejected(self, decay):
        with pytest.raises(ValueError, match="dtype"):
            decay.solve_dense(np.array([0.7, 2.0], dtype=np.float16), [0.0, 1.0])

    def test_python_ints_accepted(self, decay):
        y = decay.solve_dense([1, 2], [0, 1])
        assert y.dtype == torch.float64

    def test_atol_vector_length(self):
        with pytest.raises(ValueError, match="atol"):
            dsp.DiffsolModule(model_source("decay"), atol=[1e-6, 1e-6])


# ---- options (checked before compiling) ------------------------------------------------

@pytest.mark.unit
class TestOptions:
    def test_unknown_method(self):
        with pytest.raises(ValueError, match="'bdf'"):
            dsp.DiffsolModule("u { 1 }\nF { -u }\n", method="rk4")

    def test_unknown_linear_solver(self):
        with pytest.raises(ValueError, match="'auto', 'dense'"):
            dsp.DiffsolModule("u { 1 }\nF { -u }\n", linear_solver="gmres")

    def test_unknown_keyword(self):
        with pytest.raises(TypeError):
            dsp.DiffsolModule("u { 1 }\nF { -u }\n", rtoll=1e-3)

    def test_bad_tolerances(self):
        with pytest.raises(ValueError, match="rtol"):
            dsp.DiffsolModule("u { 1 }\nF { -u }\n", rtol=-1.0)
        with pytest.raises(ValueError, match="atol"):
            dsp.DiffsolModule("u { 1 }\nF { -u }\n", atol=math.nan)

    def test_bad_max_steps(self):
        with pytest.raises(ValueError, match="max_steps"):
            dsp.DiffsolModule("u { 1 }\nF { -u }\n", max_steps=0)

    def test_code_must_be_str(self):
        with pytest.raises(TypeError):
            dsp.DiffsolModule(b"u { 1 }")

    def test_hierarchy(self):
        assert issubclass(dsp.DiffSLError, dsp.DiffsolError)
        assert issubclass(dsp.DiffSLError, ValueError)
        assert issubclass(dsp.DiffSLSyntaxError, dsp.DiffSLError)
        assert issubclass(dsp.CompileError, dsp.DiffsolError)
        assert issubclass(dsp.SolverError, dsp.DiffsolError)
        assert issubclass(dsp.SolverError, RuntimeError)
        e = dsp.SolverError("boom", t=1.5, flag="CV_TOO_MUCH_WORK", stats={"steps": 3})
        assert (e.t, e.flag, e.stats) == (1.5, "CV_TOO_MUCH_WORK", {"steps": 3})
        e = dsp.DiffSLError("3:6: error: x", 3, 6)
        assert (e.line, e.col) == (3, 6)


# ---- DiffSL errors -------------------------------------------------------------------------

@pytest.mark.integration
class TestDiffSL:
    def test_unknown_name_line_col_and_caret(self):
        src = "in_i { k = 1 }\nu { 1 }\nF { -kk * u }\n"
        with pytest.raises(dsp.DiffSLError) as info:
            dsp.DiffsolModule(src)
        err = info.value
        msg = str(err)
        assert "3:6" in msg
        assert "kk" in msg
        assert (err.line, err.col) == (3, 6)
        lines = msg.splitlines()
        caret = [line for line in lines if re.fullmatch(r"\s*\^[~^]*\s*", line)]
        assert caret, f"no caret line in:\n{msg}"
        # the caret sits under the offending name in the echoed source line
        src_line = lines[lines.index(caret[0]) - 1]
        assert "F { -kk * u }" in src_line
        assert src_line[caret[0].index("^"):].startswith("kk")

    def test_syntax_error(self):
        with pytest.raises(dsp.DiffSLSyntaxError) as info:
            dsp.DiffsolModule("u { 1 }\nF { -u * }\n")
        assert info.value.line == 2
        assert str(info.value).startswith("2:")

    def test_diffsl_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            dsp.DiffsolModule("u { 1 }\nF { -zz }\n")


# ---- solver errors -----------------------------------------------------------------------

@pytest.mark.integration
def test_index_arithmetic_on_n_failing_at_run_time_is_a_solver_error():
    """x[7 / (N - 1) + 7] is valid at N = 0 and divides by zero once the second stop
    element fires (N = 1): a SolverError at that time, not a SIGFPE of the process
    (the generated code did the integer division itself)."""
    code = ("a_i { 1, 2 }\nu_i { x = 1 }\nF_i { -a_i[7 / (N - 1) + 7] * x }\n"
            "stop_i { x - 0.5, x - 0.25 }\nreset_i { x }\n")
    m = dsp.DiffsolModule(code)
    with pytest.raises(dsp.SolverError) as info:
        m.solve_dense(m.default_params, [0.0, 3.0])
    assert "index N out of range" in str(info.value)
    assert info.value.t == pytest.approx(math.log(4.0), rel=1e-4)  # x = exp(-t) reaches 0.25
    y = m.solve_dense(m.default_params, [0.0, 0.5])  # before that root: still usable
    assert y[0, 1].item() == pytest.approx(math.exp(-0.5), rel=1e-5)


@pytest.mark.integration
def test_too_much_work_is_a_solver_error():
    m = dsp.DiffsolModule(model_source("robertson_ode"), max_steps=10)
    with pytest.raises(dsp.SolverError) as info:
        m.solve_dense([0.04, 1e4, 3e7], [0.0, 1e5])
    err = info.value
    assert err.flag == "CV_TOO_MUCH_WORK"
    assert isinstance(err.t, float)
    assert 0.0 < err.t < 1e5
    assert isinstance(err.stats, dict) and err.stats["steps"] >= 10
    # the module is still usable afterwards
    y = m.solve_dense([0.04, 1e4, 3e7], [0.0, 1e-6])
    assert y.shape == (3, 2)
