"""DiffsolModule: a DiffSL model compiled once and solved many times."""

from __future__ import annotations

import collections
import math
import threading
import warnings
from typing import Any, Sequence, Union

import numpy as np
import torch

from diffsol_pytorch import _kernel, autograd

__all__ = [
    "Checkpoint",
    "DiffsolModule",
    "Solution",
    "clear_module_cache",
    "reverse_mode",
    "set_module_cache_size",
    "solve_dense",
]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]

#: accepted values of ``method`` (docs/solvers.md)
METHODS = ("bdf", "adams", "tsit45", "dopri5", "tr_bdf2", "esdirk34")
#: accepted values of ``linear_solver``: "auto", "dense" and "klu" are the
#: documented ones; "lapack" and "sundials_dense" force one dense LU (benchmarks)
LINEAR_SOLVERS = ("auto", "dense", "klu", "lapack", "sundials_dense", "spgmr", "fixedpoint")
#: accepted values of ``gradient_method``
GRADIENT_METHODS = ("adjoint", "discrete", "forward", "auto")

_REJECTED_TORCH_DTYPES = (torch.float16, torch.bfloat16)
_F64 = np.dtype(np.float64)
_CPU = torch.device("cpu")


def _result(x: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A kernel result as a tensor of the caller's dtype and device (no copy for float64
    on the CPU, where ``.to`` alone costs a few microseconds per call)."""
    if dtype == torch.float64 and device.type == "cpu":
        return torch.from_numpy(x)
    return torch.from_numpy(x).to(device=device, dtype=dtype)


def _to_numpy(x: ArrayLike, what: str) -> tuple[np.ndarray, torch.dtype, torch.device]:
    """Convert params or times to a float64 NumPy array.

    Returns the array, the dtype the result should have (float32 for float32
    input, float64 otherwise) and the device of the input (CPU for non-tensors).
    """
    # the common cases first, without the checks below (about 1 us each per call)
    if type(x) is np.ndarray and x.dtype is _F64 and x.ndim and x.flags.c_contiguous:
        return x, torch.float64, _CPU  # (0-d arrays go below: ascontiguousarray makes them 1-d)
    if (type(x) is torch.Tensor and x.dtype is torch.float64 and x.is_cpu
            and not x.requires_grad and not torch._C._are_functorch_transforms_active()):
        return np.ascontiguousarray(x.numpy()), torch.float64, _CPU
    device = _CPU
    if isinstance(x, torch.Tensor):
        if x.dtype in _REJECTED_TORCH_DTYPES or not (
            x.dtype.is_floating_point and not x.dtype.is_complex
        ):
            raise ValueError(
                f"{what} must be a float32 or float64 tensor, got dtype {x.dtype}; "
                f"convert it with {what}.double()"
            )
        out_dtype = torch.float32 if x.dtype == torch.float32 else torch.float64
        device = x.device
        # (a plain tensor read inside a torch.func transform: detach() would wrap it)
        with torch._C._DisableFuncTorch():
            if x.dtype == torch.float64 and device.type == "cpu":
                arr = x.detach().numpy()  # what .to(cpu, float64) returns here, without the call
            else:
                arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
        return np.ascontiguousarray(arr), out_dtype, device
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.float32, np.float64):
            raise ValueError(
                f"{what} must be a float32 or float64 array, got dtype {x.dtype}; "
                f"convert it with {what}.astype(numpy.float64)"
            )
        out_dtype = torch.float32 if x.dtype == np.float32 else torch.float64
        return np.ascontiguousarray(x, dtype=np.float64), out_dtype, device
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a tensor, an array or a list of floats: {exc}") from None
    return arr, torch.float64, device


class Solution:
    """The result of :meth:`DiffsolModule.solve`: every internal solver step.

    Attributes
    ----------
    ts : torch.Tensor
        ``(nt,)`` times, starting at ``t0``, non-decreasing; at an event with
        reset the event time appears twice (the state before and after it).
    ys : torch.Tensor
        ``(nout, nt)`` outputs at ``ts``.
    stats : dict
        Solver statistics of this solve (steps, rhs_evals, jac_evals, lin_setups,
        err_test_fails, nonlin_iters, nonlin_fails, events).
    stop : None or tuple(float, int)
        ``(time, index)`` of the stop root that ended the solve (a model with
        ``stop`` and no ``reset``), else None.
    """

    __slots__ = ("ts", "ys", "stats", "stop")

    def __init__(self, ts: torch.Tensor, ys: torch.Tensor, stats: dict, stop: Any) -> None:
        self.ts = ts
        self.ys = ys
        self.stats = stats
        self.stop = stop

    def __repr__(self) -> str:
        return (
            f"Solution(nt={self.ts.shape[0]}, nout={self.ys.shape[0]}, "
            f"steps={self.stats.get('steps')}, stop={self.stop!r})"
        )


def _is_functorch_tensor(x: Any) -> bool:
    """Is x a tensor wrapped by a torch.func transform (grad, vjp, jvp, vmap)?"""
    return isinstance(x, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(x)


def _has_tangent(x: torch.Tensor) -> bool:
    """Is x a dual tensor of torch.autograd.forward_ad (forward-mode AD)?"""
    import torch.autograd.forward_ad as fwAD

    return fwAD.unpack_dual(x).tangent is not None


class DiffsolModule:
    """A DiffSL model compiled once, solved many times.

    Compiling is the expensive step (the generated C is compiled by the system
    C compiler and cached on disk by content hash); each solve then reuses the
    same solver.

    Parameters
    ----------
    code : str
        The DiffSL model (see ``docs/`` and ``shared/DIFFSL.md``).
    method : str, optional
        ``"bdf"`` (CVODES BDF, or IDAS when the model has a mass matrix ``M``),
        ``"adams"`` (CVODES Adams-Moulton), ``"tsit45"`` and ``"dopri5"``
        (explicit Runge-Kutta 5(4), ARKODE), ``"tr_bdf2"`` and ``"esdirk34"``
        (implicit Runge-Kutta, ARKODE). The ARKODE methods accept a
        non-singular ``M`` only. The default is ``"bdf"``. See docs/solvers.md.
    rtol : float, optional
        Relative tolerance. The default is 1e-6.
    atol : float or array_like, optional
        Absolute tolerance, one value or one per state. The default is 1e-6.
    t0 : float, optional
        Initial time: the state is ``u`` of the model at ``t0``. The default is 0.
    h0 : float or None, optional
        Initial step size; None lets the solver choose. The default is None.
    max_steps : int, optional
        Maximum number of solver steps in one solve. The default is 100000.
    linear_solver : str, optional
        ``"auto"`` (dense LU for small or dense Jacobians, KLU for large sparse
        ones), ``"dense"`` or ``"klu"``; ``"lapack"`` and ``"sundials_dense"``
        force one dense LU; ``"spgmr"`` is matrix-free GMRES; ``"fixedpoint"``
        (with ``method="adams"`` only) solves no linear system at all: the
        corrector is a fixed-point iteration, for non-stiff problems, as LSODA's
        Adams mode. The default is ``"auto"``. The explicit methods (``tsit45``,
        ``dopri5``) solve no linear system (unless the model has ``M``): another
        value than ``"auto"`` then only gives a ``UserWarning``.
    threads : int or None, optional
        Threads for a batch of parameter sets (``params`` of shape ``(B, nparams)``
        with ``B >= 2``): the rows are solved by the kernel on this many threads
        (each with its own solver), without the GIL. None uses
        ``torch.get_num_threads()`` at each call; a call's own ``threads=``
        overrides both. Results do not depend on it: each row is bit-identical to
        solving it alone. The default is None. See docs/batches.md.
    checkpoint_steps : int or None, optional
        Reverse mode with ``bdf``/``adams``: integration steps between two
        checkpoints of the forward pass. The interpolation data of that many steps
        is held in memory and every earlier interval is integrated again during
        the backward pass, so smaller values use less memory and more time. None
        (the default) takes as many steps as about 8 MB of interpolation data
        hold (from 100 for large states to 20000 for small ones). The ARKODE
        methods keep a checkpoint every 20 steps unless this is given. See
        docs/gradients.md.
    gradient_method : str, optional
        How :meth:`reverse_mode` and ``backward`` through :meth:`solve_dense`
        compute a gradient. ``"adjoint"`` (the default): the checkpointed adjoint,
        whose cost does not grow with the number of parameters. ``"discrete"``: with
        ``bdf`` on an ODE without events, the discrete adjoint of the BDF steps
        CVODES took: one backward step per forward step whatever the loss's output
        times, the exact gradient of the outputs :meth:`solve_dense` returns; about
        two solves in all (Robertson, Lotka-Volterra and heat1d with a loss on every
        output time: 2.0-2.5x a solve against 5-15x for ``"adjoint"``). It keeps
        ``nstates`` numbers and about 150 bytes per step (up to 512 MB) instead of
        checkpoints; elsewhere (events, ``M``, another method or ``linear_solver``,
        ``checkpoint_times``, more memory) it is ``"adjoint"``. ``"forward"``:
        forward sensitivities contracted with ``grad_output`` (the cost grows with
        the number of parameters, but the loss's output times cost nothing extra,
        where each one restarts the adjoint's backward integration).
        ``"auto"``: the discrete adjoint where it applies (unless the model has one
        parameter and a Jacobian of more than 8 colours); elsewhere, forward
        sensitivities when there are at most 8 parameters and
        at least ``max(4, 2 * nparams)`` output times with a non-zero gradient
        (for ``backward``, output times), else the adjoint, and forward
        sensitivities wherever the adjoint does not cover the model (as ``backward``
        always does): with few parameters and a loss over many times that is
        1.5-3.5x faster (docs/gradients.md). Otherwise ``"auto"`` runs the
        adjoint with a budget of backward steps: where its restarts make it
        clearly costlier than forward sensitivities (stiff problems with many
        output times), it stops and that gradient, and the later ones over the
        same output times, come from forward sensitivities (on a stiff decay
        chain with 8-32 parameters, 6-16x faster than the adjoint).
        ``last_gradient_method`` says which one ran (``"adjoint"``, ``"discrete"`` or
        ``"forward"``).
    adjoint_rtol, adjoint_atol : float or None, optional
        Tolerances of the adjoint's backward integration (``lambda`` and the
        gradient integral). None (the default): ``rtol``, and ``atol`` times the
        adjoint's scale (the largest ``|lambda_i|`` at a start of the backward
        integration), which makes the gradient's relative accuracy independent
        of the loss's scale. A looser ``adjoint_rtol`` buys a cheaper, less
        accurate gradient where the backward integration restarts often on a
        stiff problem (Robertson, 9 output times, rtol 1e-8: ``adjoint_rtol=1e-6``
        takes reverse mode from 5.9x to 2.7x a solve, the gradient's error from
        6e-7 to 4e-5). ``adjoint_atol`` is used as given (units of ``lambda``:
        loss per state). See docs/gradients.md.
    sens_rtol, sens_atol : float or None, optional
        Tolerances of the error control on forward sensitivities
        (:meth:`forward_mode`, and gradients that ``gradient_method`` takes from
        forward sensitivities). The sensitivity ``du/dp_k`` is checked against
        ``sens_rtol`` and ``sens_atol / |p_k|``. None (the default): ``rtol`` and
        ``atol``, so that sensitivities are as accurate as the solution. A looser
        ``sens_rtol`` takes fewer steps where the sensitivities, not the solution,
        limit the step size (rtol 1e-8, ``sens_rtol=1e-7``: the gradient of
        Robertson by forward sensitivities from 3.3x to 2.5x a solve, its error
        from 9e-8 to 1.3e-6; not every problem gains). :meth:`solve_dense` and the
        adjoint are not affected. See docs/gradients.md.

    Attributes
    ----------
    nstates, nparams, nout : int
        Sizes of the state, the parameters (``in``) and the outputs.
    param_names : tuple of str
        Parameter names in the order of ``in``.
    default_params : torch.Tensor
        float64 tensor of the literal values given in ``in``.
    code : str
        The DiffSL source.
    last_gradient_method : None or str
        ``"adjoint"`` or ``"forward"``: how the last gradient was computed.
    last_stop : None, tuple(float, int) or list
        After :meth:`solve_dense`: ``(time, index)`` of the stop root that ended
        the solve (outputs after it are NaN), or None; a list of these for a batch.

    Raises
    ------
    DiffSLSyntaxError, DiffSLError
        The source is not a valid model (message with ``line:col`` and a caret).
    CompileError
        The C compiler failed or the cache is unusable.
    ValueError
        An option has a bad value, or the method cannot take the model (a
        singular mass matrix with an ARKODE method, a mass matrix with adams).

    Examples
    --------
    >>> m = DiffsolModule("in_i { k = 1 }\\nu { 1 }\\nF { -k * u }\\n")
    >>> y = m.solve_dense(torch.tensor([0.5]), torch.linspace(0, 1, 5))
    >>> y.shape
    torch.Size([1, 5])
    """

    def __init__(
        self,
        code: str,
        *,
        method: str = "bdf",
        rtol: float = 1e-6,
        atol: Union[float, ArrayLike] = 1e-6,
        t0: float = 0.0,
        h0: float | None = None,
        max_steps: int = 100_000,
        linear_solver: str = "auto",
        threads: int | None = None,
        checkpoint_steps: int | None = None,
        gradient_method: str = "adjoint",
        adjoint_rtol: float | None = None,
        adjoint_atol: float | None = None,
        sens_rtol: float | None = None,
        sens_atol: float | None = None,
    ) -> None:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str of DiffSL source, got {type(code).__name__}")
        if method not in METHODS:
            raise ValueError(
                f"unknown method {method!r}; accepted values: {', '.join(map(repr, METHODS))}"
            )
        if linear_solver not in LINEAR_SOLVERS:
            raise ValueError(
                f"unknown linear_solver {linear_solver!r}; accepted values: "
                f"{', '.join(map(repr, LINEAR_SOLVERS))}"
            )
        if gradient_method not in GRADIENT_METHODS:
            raise ValueError(
                f"unknown gradient_method {gradient_method!r}; accepted values: "
                f"{', '.join(map(repr, GRADIENT_METHODS))}"
            )
        rtol = float(rtol)
        if not (math.isfinite(rtol) and rtol > 0):
            raise ValueError(f"rtol must be a positive finite number, got {rtol}")
        t0 = float(t0)
        if not math.isfinite(t0):
            raise ValueError(f"t0 must be finite, got {t0}")
        if h0 is not None:
            h0 = float(h0)
            if not (math.isfinite(h0) and h0 > 0):
                raise ValueError(f"h0 must be None or a positive finite number, got {h0}")
        if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if checkpoint_steps is not None and (
            isinstance(checkpoint_steps, bool)
            or not isinstance(checkpoint_steps, (int, np.integer))
            or not 1 <= checkpoint_steps <= 2**31 - 1
        ):
            raise ValueError(
                f"checkpoint_steps must be None or a positive integer, got {checkpoint_steps!r}"
            )
        adjoint_rtol = _check_optional_tol(adjoint_rtol, "adjoint_rtol")
        adjoint_atol = _check_optional_tol(adjoint_atol, "adjoint_atol")
        sens_rtol = _check_optional_tol(sens_rtol, "sens_rtol")
        sens_atol = _check_optional_tol(sens_atol, "sens_atol")
        atol_arr = _to_numpy(atol, "atol")[0] if not isinstance(atol, (int, float)) else None
        if atol_arr is not None and atol_arr.ndim == 0:
            atol = float(atol_arr)
            atol_arr = None
        if atol_arr is None:
            atol = float(atol)
            if not (math.isfinite(atol) and atol >= 0):
                raise ValueError(f"atol must be a non-negative finite number, got {atol}")
        elif atol_arr.ndim != 1 or not np.all(np.isfinite(atol_arr)) or np.any(atol_arr < 0):
            raise ValueError("atol must be a number or a 1-D array of non-negative finite values")

        self.code = code
        self.method = method
        self.rtol = rtol
        self.atol = atol if atol_arr is None else atol_arr.copy()
        self.t0 = t0
        self.h0 = h0
        self.max_steps = int(max_steps)
        self.linear_solver = linear_solver
        self.threads = _check_threads(threads)
        self.checkpoint_steps = None if checkpoint_steps is None else int(checkpoint_steps)
        self.gradient_method = gradient_method
        self.adjoint_rtol = adjoint_rtol
        self.adjoint_atol = adjoint_atol
        self.sens_rtol = sens_rtol
        self.sens_atol = sens_atol
        self.last_gradient_method: str | None = None
        # "auto": the adjoint's cost over forward sensitivities, measured per output
        # times (autograd.record_adjoint_cost)
        self._adjoint_cost: dict[bytes, float] = {}

        self._model = _kernel.Model(code)
        if atol_arr is not None and atol_arr.shape[0] != self._model.nstates:
            raise ValueError(
                f"atol has {atol_arr.shape[0]} values but the model has "
                f"{self._model.nstates} states"
            )
        self._solver = _kernel.Solver(
            self._model, rtol, self.atol, t0, h0, self.max_steps, method, linear_solver,
            checkpoint_steps=self.checkpoint_steps or 0, adjoint_rtol=adjoint_rtol or 0.0,
            adjoint_atol=adjoint_atol or 0.0, sens_rtol=sens_rtol or 0.0,
            sens_atol=sens_atol or 0.0, adjoint_discrete=self._adjoint_discrete(),
        )
        if linear_solver != "auto" and self._solver.linear_solver == "none":
            # as SciPy's solve_ivp does for jac with an explicit method
            warnings.warn(
                f"linear_solver={linear_solver!r} has no effect with the explicit method "
                f"{method!r}, which solves no linear system",
                UserWarning,
                stacklevel=2,
            )
        self.last_stop: Any = None
        self._batch: Any = None  # _kernel.Batch, created at the first batch call
        self._batch_lock = threading.Lock()

    # ---- batches: the kernel's thread pool -------------------------------------------------
    def _get_batch(self) -> Any:
        """The module's _kernel.Batch (worker solvers reused across calls)."""
        with self._batch_lock:
            if self._batch is None:
                self._batch = _kernel.Batch(
                    self._model, self.rtol, self.atol, self.t0, self.h0, self.max_steps,
                    self.method, self.linear_solver, checkpoint_steps=self.checkpoint_steps or 0,
                    adjoint_rtol=self.adjoint_rtol or 0.0, adjoint_atol=self.adjoint_atol or 0.0,
                    sens_rtol=self.sens_rtol or 0.0, sens_atol=self.sens_atol or 0.0,
                    adjoint_discrete=self._adjoint_discrete(),
                )
            return self._batch

    def _adjoint_discrete(self) -> int:
        """The kernel's adjoint_discrete option: 1 (the discrete adjoint of CVODES' BDF
        steps where it applies) for gradient_method "discrete" and "auto"."""
        return 1 if self.gradient_method in ("discrete", "auto") else 0

    def _gradient_by_forward(self, jumps: int, times: np.ndarray) -> bool:
        """Does a gradient over ``jumps`` of the output ``times`` come from forward
        sensitivities? ("auto": not where the discrete adjoint applies, which costs
        about two solves whatever the times and parameters; else few parameters against
        many output times, or an adjoint measured costlier for these times,
        autograd.adjoint_costlier)"""
        if self.gradient_method != "auto":
            return self.gradient_method == "forward"
        n = self.nparams
        if self._solver.discrete_adjoint() and (n >= 2 or self._model.jac_ncolors <= 8):
            return False
        # one parameter and a dear Jacobian (the discrete adjoint's backward step
        # solves with (I - gamma J)^T at every step: 5x a solve on a dense 16-state
        # network, where forward sensitivities cost 3x): the choice below
        if 0 < n <= 8 and jumps >= max(4, 2 * n):
            return True
        return n > 0 and autograd.adjoint_costlier(self, times)

    def _threads(self, threads: int | None) -> int:
        """The thread count of a batch call: the call's, the module's, else torch's."""
        threads = _check_threads(threads)
        if threads is None:
            threads = self.threads
        if threads is None:
            threads = max(1, int(torch.get_num_threads()))
        return min(threads, _kernel.BATCH_MAX_THREADS)

    # ---- pickling: by source and options; unpickling loads from the JIT cache --------------
    def _options(self) -> dict[str, Any]:
        return dict(method=self.method, rtol=self.rtol, atol=self.atol, t0=self.t0,
                    h0=self.h0, max_steps=self.max_steps, linear_solver=self.linear_solver,
                    threads=self.threads, checkpoint_steps=self.checkpoint_steps,
                    gradient_method=self.gradient_method, adjoint_rtol=self.adjoint_rtol,
                    adjoint_atol=self.adjoint_atol, sens_rtol=self.sens_rtol,
                    sens_atol=self.sens_atol)

    def __reduce__(self):
        return (_rebuild_module, (self.code, self._options()))

    # ---- sizes and metadata ----------------------------------------------------
    @property
    def nstates(self) -> int:
        """Number of states."""
        return self._model.nstates

    @property
    def nparams(self) -> int:
        """Number of parameters (length of ``in``)."""
        return self._model.nparams

    @property
    def nout(self) -> int:
        """Number of outputs."""
        return self._model.nout

    @property
    def param_names(self) -> tuple[str, ...]:
        """Parameter names, in the order of ``in``."""
        return self._model.param_names

    @property
    def default_params(self) -> torch.Tensor:
        """The literal values of ``in`` as a float64 tensor."""
        return torch.from_numpy(self._model.default_params)

    @property
    def integrator(self) -> str:
        """The integrator in use, e.g. ``"CVODES BDF"``, ``"IDAS BDF"``."""
        return self._solver.integrator

    @property
    def linear_solver_used(self) -> str:
        """The linear solver chosen, one of ``"none"``, ``"dense"``, ``"lapack"``, ``"klu"``."""
        return self._solver.linear_solver

    @property
    def stats(self) -> dict[str, int]:
        """Solver statistics of the last solve (steps, rhs_evals, ...).

        After ``reverse_mode`` (or ``ckpt.backward``) also ``backward_steps`` and
        ``backward_restarts``: the adjoint's steps in the last backward pass and how often
        it restarted (at each output time with a gradient, at events); the restarts are
        what makes a gradient over many output times cost more than one over few
        (docs/performance.md, Autodiff cost).
        """
        return self._solver.stats()

    def __repr__(self) -> str:
        return (
            f"DiffsolModule(nstates={self.nstates}, nparams={self.nparams}, "
            f"nout={self.nout}, method={self.method!r}, rtol={self.rtol}, atol={self.atol!r})"
        )

    # ---- validation -----------------------------------------------------------------
    def _check_params(self, params: ArrayLike) -> tuple[np.ndarray, torch.dtype, torch.device]:
        p, dtype, device = _to_numpy(params, "params")
        n = self.nparams
        if p.ndim not in (1, 2) or p.shape[-1] != n:
            names = ", ".join(self.param_names) or "none"
            raise ValueError(
                f"params must have shape ({n},) (or (B, {n}) for a batch) for the "
                f"parameters ({names}), got shape {tuple(p.shape)}"
            )
        if _kernel.first_nonfinite(p.reshape(-1)) >= 0:
            raise ValueError("params must be finite (found NaN or inf)")
        return p, dtype, device

    def _check_times(self, times: ArrayLike) -> np.ndarray:
        t = _to_numpy(times, "times")[0]
        if t.ndim != 1:
            raise ValueError(f"times must be 1-D, got shape {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise ValueError("times must not be empty")
        if _kernel.first_nonfinite(t) >= 0:
            raise ValueError("times must be finite (found NaN or inf)")
        i = _kernel.first_decrease(t)
        if i >= 0:
            raise ValueError(
                f"times must be non-decreasing: times[{i}] = {t[i]!r} > times[{i + 1}] = {t[i + 1]!r}"
            )
        if t[0] < self.t0:
            raise ValueError(f"times[0] = {t[0]!r} is before t0 = {self.t0!r}")
        return t

    # ---- solving -----------------------------------------------------------------------
    def solve_dense(
        self, params: ArrayLike, times: ArrayLike, *, threads: int | None = None
    ) -> torch.Tensor:
        """Solve and return the outputs at the given times.

        Parameters
        ----------
        params : torch.Tensor, numpy.ndarray or list of float
            Shape ``(nparams,)``, or ``(B, nparams)`` for a batch of parameter sets.
        times : torch.Tensor, numpy.ndarray or list of float
            1-D, non-empty, finite, non-decreasing, ``times[0] >= t0``.
        threads : int or None, optional
            Threads for a batch (``B >= 2``), overriding the module's ``threads``;
            see :class:`DiffsolModule`. The default is None.

        Returns
        -------
        torch.Tensor
            ``(nout, len(times))``, or ``(B, nout, len(times))`` for a batch; float32
            when ``params`` is float32, float64 otherwise; on the device of ``params``.
            The solve itself always runs on the CPU in float64. For a model with
            ``stop`` and no ``reset`` the solve ends at the first root: later
            columns are NaN and ``last_stop`` gives ``(time, index)``.

        Raises
        ------
        ValueError
            Bad shape, length, dtype, non-finite values or unordered times; raised
            before any solve starts.
        SolverError
            The solver failed (carries ``t``, ``flag`` and ``stats``).
        """
        if isinstance(times, torch.Tensor) and times.requires_grad:
            raise ValueError(
                "gradients with respect to times are not supported: pass times.detach()"
            )
        t = self._check_times(times)
        nthreads = self._threads(threads)
        if _is_functorch_tensor(params):
            # under torch.func: shape and dtype here, values checked in the forward
            with torch._C._DisableFuncTorch():
                self._check_params(torch.zeros(params.shape, dtype=params.dtype))
            self.last_stop = None
            return autograd.solve_dense(self, params, t, nthreads)
        p, dtype, device = self._check_params(params)
        if isinstance(params, torch.Tensor) and (
            (params.requires_grad and torch.is_grad_enabled()) or _has_tangent(params)
        ):
            self.last_stop = None
            return autograd.solve_dense(self, params, t, nthreads)
        if p.ndim == 1:
            self.last_stop = None
            y = self._solver.solve_dense(p, t)
            self.last_stop = self._solver.last_stop()
        elif p.shape[0] != 1:
            self.last_stop = None
            y, self.last_stop = self._get_batch().solve_dense(p, t, nthreads)
        else:
            ys, stops = [], []
            self.last_stop = None
            for row in p:
                ys.append(self._solver.solve_dense(np.ascontiguousarray(row), t))
                stops.append(self._solver.last_stop())
            self.last_stop = stops
            y = np.stack(ys)
        return _result(y, dtype, device)

    def _solver_generation(self) -> int:
        """A token that changes whenever the solver runs (checkpoints are per run)."""
        return self._solver.generation()

    # ---- forward mode -------------------------------------------------------------------
    def forward_mode(
        self, params: ArrayLike, times: ArrayLike, *, threads: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve and return the outputs and their sensitivities to every parameter.

        Forward sensitivities: CVODES / IDAS forward sensitivity analysis for
        ``bdf`` and ``adams``, the sensitivity equations integrated alongside the
        state by the same Runge-Kutta method for the ARKODE methods; built from
        the model's generated tangent code and exact through ``stop``/``reset``
        events. The cost grows with the number of parameters (see
        docs/gradients.md); for a gradient of a scalar loss with many parameters
        :meth:`reverse_mode` is cheaper.

        Parameters
        ----------
        params : torch.Tensor, numpy.ndarray or list of float
            Shape ``(nparams,)``, or ``(B, nparams)`` for a batch of parameter sets.
        times : torch.Tensor, numpy.ndarray or list of float
            1-D, non-empty, finite, non-decreasing, ``times[0] >= t0``.
        threads : int or None, optional
            Threads for a batch (``B >= 2``); see :class:`DiffsolModule`.

        Returns
        -------
        (y, sens) : tuple of torch.Tensor
            ``y`` as :meth:`solve_dense`, ``(nout, len(times))``; ``sens`` of shape
            ``(nparams, nout, len(times))`` with ``sens[k, i, j] = d y[i, j] / d params[k]``.
            For a batch: ``(B, nout, len(times))`` and ``(B, nparams, nout, len(times))``.
            dtype and device follow ``params`` as in :meth:`solve_dense`. After a stop
            root without reset the later columns of both are NaN (``last_stop``).

        Raises
        ------
        ValueError
            Bad shape, length, dtype, non-finite values or unordered times; raised
            before any solve starts.
        SolverError
            The solver failed (carries ``t``, ``flag`` and ``stats``).

        Examples
        --------
        >>> m = DiffsolModule("in_i { k = 1 }\\nu { 1 }\\nF { -k * u }\\n")
        >>> y, sens = m.forward_mode(torch.tensor([0.5]), torch.linspace(0, 1, 5))
        >>> sens.shape
        torch.Size([1, 1, 5])
        """
        p, dtype, device = self._check_params(params)
        t = self._check_times(times)
        nthreads = self._threads(threads)
        self.last_stop = None
        if p.ndim == 1:
            y, sens = self._solver.forward(p, t)
            self.last_stop = self._solver.last_stop()
        elif p.shape[0] != 1:
            y, sens, self.last_stop = self._get_batch().forward(p, t, nthreads)
        else:
            ys, ss, stops = [], [], []
            for row in p:
                y1, s1 = self._solver.forward(np.ascontiguousarray(row), t)
                ys.append(y1)
                ss.append(s1)
                stops.append(self._solver.last_stop())
            self.last_stop = stops
            y = np.stack(ys) if ys else np.zeros((0, self.nout, t.shape[0]))
            sens = np.stack(ss) if ss else np.zeros((0, self.nparams, self.nout, t.shape[0]))
        return (
            _result(y, dtype, device),
            _result(sens, dtype, device),
        )

    # ---- reverse mode -------------------------------------------------------------------
    def _check_grad_output(self, grad_output: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
        g = _to_numpy(grad_output, "grad_output")[0]
        if tuple(g.shape) != shape:
            raise ValueError(
                f"grad_output must have the shape of the solution {shape} "
                f"(nout, len(times)), got {tuple(g.shape)}"
            )
        g = np.ascontiguousarray(g)
        if _kernel.first_nonfinite(g.reshape(-1)) >= 0:
            raise ValueError("grad_output must be finite (found NaN or inf)")
        return g

    def reverse_mode(
        self,
        params: ArrayLike,
        times: ArrayLike,
        grad_output: ArrayLike,
        *,
        threads: int | None = None,
    ) -> torch.Tensor:
        """Gradient of ``sum(grad_output * y)`` w.r.t. the parameters, by the adjoint.

        One forward pass with checkpoints and one backward pass of the adjoint
        equations (CVODES adjoint module, with the model's generated
        vector-Jacobian products), whatever the number of parameters. Output
        times whose ``grad_output`` column is zero cost nothing, and the forward
        pass stops at the last time with a non-zero one. With the module's
        ``gradient_method="discrete"`` (or ``"auto"``), on ODEs with ``bdf`` and no
        events, it is the discrete adjoint of the BDF steps instead (one backward step
        per forward step, no restart at output times: docs/gradients.md); with
        ``"forward"`` (or ``"auto"`` elsewhere, few parameters against many output
        times) forward sensitivities contracted with ``grad_output``;
        ``last_gradient_method`` says which ran.

        Parameters
        ----------
        params : tensor, array or list
            ``(nparams,)``, or ``(B, nparams)`` for a batch.
        times : tensor, array or list
            As in :meth:`solve_dense`.
        grad_output : tensor, array or list
            ``(nout, len(times))`` (``(B, nout, len(times))`` for a batch).
        threads : int or None, optional
            Threads for a batch (``B >= 2``); see :class:`DiffsolModule`.

        Returns
        -------
        torch.Tensor
            ``(nparams,)`` (or ``(B, nparams)``), dtype and device of ``params``.

        Raises
        ------
        ValueError
            Bad shapes (naming both), non-finite values, or a method/model that reverse
            mode does not cover yet (covered: ``bdf``/``adams`` on ODEs and ``bdf`` on
            index-1 DAEs whose ``M`` does not depend on ``t``, with or without
            ``stop``/``reset`` events; ``tsit45``/``dopri5``/``tr_bdf2``/``esdirk34`` on
            ODEs without ``M`` and without events), before any solve; a non-zero
            ``grad_output`` after a ``stop`` without ``reset`` (NaN outputs).
        SolverError
            The forward or backward integration failed.
        """
        p, dtype, device = self._check_params(params)
        t = self._check_times(times)
        shape = (self.nout, t.shape[0]) if p.ndim == 1 else (p.shape[0], self.nout, t.shape[0])
        g = self._check_grad_output(grad_output, shape)
        nthreads = self._threads(threads)
        # "auto" also means forward sensitivities where the adjoint does not cover the
        # model; "adjoint" says so with a ValueError
        fallback = self.gradient_method == "auto"
        if p.ndim == 1:
            grad = autograd.row_gradient(self, p, t, g, fallback=fallback)
        elif p.shape[0] != 1:
            grad = autograd.batch_gradient(self, p, t, g, nthreads, fallback=fallback)
        else:
            grad = np.stack(
                [autograd.row_gradient(self, np.ascontiguousarray(row), t,
                                       np.ascontiguousarray(gb), fallback=fallback)
                 for row, gb in zip(p, g)]
            )
        return _result(grad, dtype, device)

    def solve_dense_with_checkpointing(
        self, params: ArrayLike, times: ArrayLike, checkpoint_times: Any = None
    ) -> tuple[torch.Tensor, "Checkpoint"]:
        """Solve and keep checkpoints for any number of backward passes.

        Returns ``(y, ckpt)``: ``y`` as :meth:`solve_dense` (``(nout, len(times))``), and a
        :class:`Checkpoint` whose ``backward(grad_output)`` returns the gradient of
        ``sum(grad_output * y)`` without a new forward pass. The checkpoints live in this
        module's solver: a later solve on the module invalidates them (``backward`` then
        raises ``ValueError``).

        Parameters
        ----------
        params : torch.Tensor, numpy.ndarray or list of float
            One parameter set, shape ``(nparams,)``.
        times : torch.Tensor, numpy.ndarray or list of float
            Output times, as :meth:`solve_dense`.
        checkpoint_times : array_like or None, optional
            ``bdf``/``adams`` only: strictly increasing times in ``(t0, times[-1]]``. The
            forward pass then keeps just the state at these times (``nstates`` numbers
            each) and no integrator checkpoints; each ``backward`` integrates every
            stretch between two of them again, last first, with the integrator's
            checkpoints for that stretch alone. Memory then grows with the longest
            stretch instead of the whole solve, at the price of one more forward
            integration per backward pass. None (the default): the integrator's
            checkpoints every ``checkpoint_steps`` steps (see :class:`DiffsolModule`).
        """
        p, dtype, device = self._check_params(params)
        if p.ndim != 1:
            raise ValueError("solve_dense_with_checkpointing takes one parameter set (nparams,)")
        t = self._check_times(times)
        ck = None
        if checkpoint_times is not None:
            ck = self._check_checkpoint_times(checkpoint_times, t)
        y = self._solver.forward_checkpointed(p, t, checkpoint_times=ck)
        ckpt = Checkpoint(self, (self.nout, t.shape[0]), dtype, device)
        return _result(y, dtype, device), ckpt

    def _check_checkpoint_times(self, checkpoint_times: ArrayLike, t: np.ndarray) -> np.ndarray:
        """checkpoint_times as a float64 array; ValueError when unusable."""
        if self.method not in ("bdf", "adams"):
            raise ValueError(
                f"checkpoint_times are available for method 'bdf' or 'adams'; {self.method!r} "
                "places its own checkpoints (every checkpoint_steps steps): pass None"
            )
        ck = np.ascontiguousarray(_to_numpy(checkpoint_times, "checkpoint_times")[0],
                                  dtype=np.float64)
        if ck.ndim != 1:
            raise ValueError(f"checkpoint_times must be 1-D, got shape {tuple(ck.shape)}")
        if not np.all(np.isfinite(ck)):
            raise ValueError("checkpoint_times must be finite (found NaN or inf)")
        if ck.shape[0] > 1 and np.any(np.diff(ck) <= 0):
            i = int(np.argmax(np.diff(ck) <= 0))
            raise ValueError(
                "checkpoint_times must be strictly increasing: "
                f"checkpoint_times[{i}] = {ck[i]!r} >= checkpoint_times[{i + 1}] = {ck[i + 1]!r}"
            )
        if ck.shape[0] and (ck[0] <= self.t0 or ck[-1] > t[-1]):
            raise ValueError(
                f"checkpoint_times must lie in (t0, times[-1]] = ({self.t0!r}, {t[-1]!r}], "
                f"got [{ck[0]!r}, {ck[-1]!r}]"
            )
        return ck

    def solve(self, params: ArrayLike, t_final: float) -> Solution:
        """Solve from ``t0`` to ``t_final`` and return every internal step.

        Parameters
        ----------
        params : torch.Tensor, numpy.ndarray or list of float
            Shape ``(nparams,)``.
        t_final : float
            Final time, ``>= t0``.

        Returns
        -------
        Solution
            ``ts`` (nt,), ``ys`` (nout, nt), ``stats`` (dict) and ``stop``
            (None, or ``(time, index)`` of the stop root that ended the solve);
            tensors in the dtype and on the device of ``params``.

        Raises
        ------
        ValueError
            Bad shapes or values (before any work).
        SolverError
            The solver failed (carries ``t``, ``flag`` and ``stats``).
        """
        p, dtype, device = self._check_params(params)
        if p.ndim != 1:
            raise ValueError(f"solve takes one parameter set of shape ({self.nparams},)")
        t_final = float(t_final)
        if not math.isfinite(t_final):
            raise ValueError(f"t_final must be finite, got {t_final}")
        if t_final < self.t0:
            raise ValueError(f"t_final = {t_final!r} is before t0 = {self.t0!r}")
        ts, ys, stop = self._solver.solve(p, t_final)
        return Solution(
            _result(ts, dtype, device),
            _result(ys, dtype, device),
            self._solver.stats(),
            stop,
        )

    def __call__(self, params: ArrayLike, times: ArrayLike) -> torch.Tensor:
        """Same as :meth:`solve_dense`."""
        return self.solve_dense(params, times)


class Checkpoint:
    """The forward pass of :meth:`DiffsolModule.solve_dense_with_checkpointing`.

    ``backward(grad_output)`` runs one backward (adjoint) pass and returns the
    gradient of ``sum(grad_output * y)`` w.r.t. the parameters; it may be called
    again with another ``grad_output``.
    """

    def __init__(self, module: DiffsolModule, shape: tuple[int, int], dtype, device) -> None:
        self._module = module
        self._shape = shape
        self._dtype = dtype
        self._device = device
        # the solver's checkpoints are those of its last run: remember which run is ours
        # (reverse_mode leaves checkpoints of its own forward pass, so the kernel's own
        # check alone would let a stale Checkpoint use another pass's checkpoints)
        self._generation = module._solver_generation()

    def backward(self, grad_output: ArrayLike) -> torch.Tensor:
        """Gradient ``(nparams,)`` of ``sum(grad_output * y)``; grad_output ``(nout, nt)``.

        Raises ``ValueError`` once the module has solved again since this forward pass.
        """
        g = self._module._check_grad_output(grad_output, self._shape)
        if self._module._solver_generation() != self._generation:
            raise ValueError(
                "this checkpointed forward pass is gone: the module has solved again since "
                "solve_dense_with_checkpointing; run the forward pass again"
            )
        grad = self._module._solver.backward(g)
        return _result(grad, self._dtype, self._device)


def _check_optional_tol(value: Any, name: str) -> float | None:
    """None, or a positive finite tolerance (adjoint_rtol, sens_rtol, ...)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be None or a positive finite number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be None or a positive finite number, got {value}")
    return value


def _check_threads(threads: Any) -> int | None:
    """None, or a positive int (ValueError otherwise)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be None or a positive integer, got {threads!r}")
    return int(threads)


def _rebuild_module(code: str, options: dict[str, Any]) -> DiffsolModule:
    """Unpickle a DiffsolModule (compiles, or loads the shared object from the JIT cache)."""
    return DiffsolModule(code, **options)


# ---- module-level forms ----------------------------------------------------------------

_CACHE_SIZE = 32
_cache: "collections.OrderedDict[Any, DiffsolModule]" = collections.OrderedDict()
_cache_lock = threading.Lock()


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an option value (arrays and tensors become tuples)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.detach().cpu().double().flatten().tolist()))
    if isinstance(value, np.ndarray):
        return ("array", tuple(np.asarray(value, dtype=np.float64).ravel().tolist()))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_freeze(v) for v in value))
    return value


def _module_for(code: str, options: dict[str, Any]) -> DiffsolModule:
    key = (code, tuple(sorted((k, _freeze(v)) for k, v in options.items())))
    with _cache_lock:
        module = _cache.get(key)
        if module is not None:
            _cache.move_to_end(key)
            return module
    module = DiffsolModule(code, **options)
    with _cache_lock:
        _cache[key] = module
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return module


def clear_module_cache() -> None:
    """Forget the modules kept by :func:`solve_dense`."""
    with _cache_lock:
        _cache.clear()


def set_module_cache_size(size: int) -> None:
    """How many distinct (source, options) modules :func:`solve_dense` and
    :func:`reverse_mode` keep (least recently used dropped first). Default 32."""
    global _CACHE_SIZE
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"the module cache size must be a positive integer, got {size!r}")
    with _cache_lock:
        _CACHE_SIZE = int(size)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def reverse_mode(
    code: str, params: ArrayLike, times: ArrayLike, grad_output: ArrayLike, **options: Any
) -> torch.Tensor:
    """Compile (once per distinct ``code`` and options) and run :meth:`DiffsolModule.reverse_mode`."""
    return _module_for(code, options).reverse_mode(params, times, grad_output)


def solve_dense(code: str, params: ArrayLike, times: ArrayLike, **options: Any) -> torch.Tensor:
    """Compile (once per distinct ``code`` and options) and solve a DiffSL model.

    Parameters
    ----------
    code : str
        The DiffSL model.
    params, times
        As in :meth:`DiffsolModule.solve_dense`.
    **options
        Keyword arguments of :class:`DiffsolModule` (``method``, ``rtol``, ``atol``,
        ``t0``, ``h0``, ``max_steps``, ``linear_solver``).

    Returns
    -------
    torch.Tensor
        ``(nout, len(times))``.

    Notes
    -----
    The last 32 distinct (code, options) modules are kept in memory; the
    compiled shared objects are also cached on disk.
    """
    return _module_for(code, options).solve_dense(params, times)
