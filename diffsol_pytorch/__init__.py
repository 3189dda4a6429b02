"""diffsol_pytorch: DiffSL ODE models compiled to C, solved with SUNDIALS, in PyTorch.

>>> import diffsol_pytorch as dsp
>>> m = dsp.DiffsolModule(code)
>>> y = m.solve_dense(params, times)     # (nout, len(times))
"""

from diffsol_pytorch.errors import (
    CompileError as CompileError,
    DiffsolError as DiffsolError,
    DiffSLError as DiffSLError,
    DiffSLSyntaxError as DiffSLSyntaxError,
    SolverError as SolverError,
)
from diffsol_pytorch.layer import DiffsolLayer as DiffsolLayer
from diffsol_pytorch.odeint import odeint as odeint, odeint_adjoint as odeint_adjoint
from diffsol_pytorch.module import (
    Checkpoint as Checkpoint,
    DiffsolModule as DiffsolModule,
    reverse_mode as reverse_mode,
    Solution as Solution,
    clear_module_cache as clear_module_cache,
    set_module_cache_size as set_module_cache_size,
    solve_dense as solve_dense,
)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("diffsol-pytorch")
    except Exception:  # not installed as a distribution (e.g. run from a build tree)
        return "0+unknown"


__version__ = _version()

__all__ = [
    "Checkpoint",
    "CompileError",
    "DiffsolError",
    "DiffSLError",
    "DiffSLSyntaxError",
    "DiffsolLayer",
    "DiffsolModule",
    "Solution",
    "SolverError",
    "__version__",
    "clear_module_cache",
    "odeint",
    "odeint_adjoint",
    "reverse_mode",
    "set_module_cache_size",
    "solve_dense",
]
