# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Thin Cython layer over the C kernel (_ckernel/dsk.h).

Only typed conversions live here: NumPy buffers in and out, kernel status
codes to exceptions, and the GIL released around compilation and solves.
Argument checking with helpful messages is done by diffsol_pytorch.module.
"""

from libc.stdlib cimport free
from libc.string cimport memcpy
from libc.math cimport isfinite

import os
import threading

import numpy as np

from diffsol_pytorch.errors import (
    CompileError,
    DiffsolError,
    DiffSLError,
    DiffSLSyntaxError,
    SolverError,
)


# ---- declarations of dsk_gen.h / dsk.h, in the headers' order ---------------

cdef extern from "dsk_gen.h" nogil:
    int DSK_GEN_ABI_VERSION

    ctypedef struct dsk_gen_table:
        int abi_version
        int nstates
        int nparams
        int nout
        int nstop
        int has_mass
        int nws
        const char * const * param_names
        const double * default_params


cdef extern from "dsk.h" nogil:
    # status
    ctypedef enum dsk_code:
        DSK_OK
        DSK_E_SYNTAX
        DSK_E_MODEL
        DSK_E_JIT
        DSK_E_SOLVER
        DSK_E_NOMEM
        DSK_E_ARG
        DSK_E_MODELFN
        DSK_E_BUDGET

    ctypedef struct dsk_status:
        int code
        int line
        int col
        double t
        char flag[64]
        char msg[2048]

    void dsk_status_clear(dsk_status *st)

    # compiler
    int dsk_translate(const char *src, char **c_source, dsk_status *st)

    # JIT
    ctypedef struct dsk_jit_options:
        const char *cache_dir
        const char *cc

    ctypedef struct dsk_model:
        pass

    int dsk_model_compile(const char *diffsl, const dsk_jit_options *opt,
                          dsk_model **out, dsk_status *st)
    long dsk_jit_compile_count()
    const dsk_gen_table *dsk_model_table(const dsk_model *m)
    int dsk_model_jac_ncolors(const dsk_model *m)
    const char *dsk_model_path(const dsk_model *m)
    void dsk_model_free(dsk_model *m)

    # callback models
    ctypedef struct dsk_callbacks:
        void *user
        int nstates
        int ntheta
        int nstop
        int (*rhs)(void *user, double t, const double *y, const double *theta, double *f)
        int (*jac)(void *user, double t, const double *y, const double *theta, double *J)
        int (*jvp)(void *user, double t, const double *y, const double *theta,
                   const double *v, double *f, double *jv)
        int (*vjp)(void *user, double t, const double *y, const double *theta,
                   const double *w, double *ybar, double *thbar)
        int (*stop)(void *user, double t, const double *y, const double *theta, double *g)

    int dsk_model_from_callbacks(const dsk_callbacks *cb, dsk_model **out, dsk_status *st)

    # solvers
    ctypedef enum dsk_method:
        DSK_BDF
        DSK_ADAMS
        DSK_TSIT45
        DSK_DOPRI5
        DSK_TR_BDF2
        DSK_ESDIRK34

    ctypedef enum dsk_linsol:
        DSK_LS_AUTO
        DSK_LS_DENSE
        DSK_LS_KLU
        DSK_LS_LAPACK
        DSK_LS_SUNDENSE
        DSK_LS_SPGMR
        DSK_LS_FIXEDPOINT

    int DSK_LS_LAPACK_MIN
    int DSK_LS_KLU_MIN
    double DSK_LS_KLU_DENSITY

    ctypedef struct dsk_solver_options:
        int method
        double rtol
        double atol
        const double *atol_vec
        double t0
        double h0
        long max_steps
        int linear_solver
        int checkpoint_steps
        double adjoint_rtol
        double adjoint_atol
        double sens_rtol
        double sens_atol
        int adjoint_discrete

    void dsk_solver_options_default(dsk_solver_options *o)

    ctypedef struct dsk_stats:
        long steps, rhs_evals, jac_evals, lin_setups, err_test_fails
        long nonlin_iters, nonlin_fails, events
        long backward_steps, backward_restarts

    ctypedef struct dsk_solver:
        pass

    int dsk_solver_create(const dsk_model *m, const dsk_solver_options *o,
                          dsk_solver **out, dsk_status *st)
    int dsk_solver_solve_dense(dsk_solver *s, const double *p, const double *times,
                               int nt, double *y, dsk_status *st)
    int dsk_solver_solve(dsk_solver *s, const double *p, double t_final, int *nt,
                         const double **ts, const double **ys, dsk_status *st)
    int dsk_solver_last_stop(const dsk_solver *s, double *t, int *index)
    int dsk_solver_forward(dsk_solver *s, const double *p, const double *times, int nt,
                           double *y, double *sens, dsk_status *st)
    int dsk_solver_forward_checkpointed(dsk_solver *s, const double *p, const double *times,
                                        int nt, double *y, dsk_status *st)
    int dsk_solver_forward_checkpointed_at(dsk_solver *s, const double *p, const double *times,
                                           int nt, const double *ck, int nck, double *y,
                                           dsk_status *st)
    int dsk_solver_backward(dsk_solver *s, const double *g, double *grad, dsk_status *st)
    long dsk_solver_generation(const dsk_solver *s)
    int dsk_solver_discrete_adjoint(const dsk_solver *s)
    int dsk_solver_discrete_recorded(const dsk_solver *s)
    int dsk_solver_reverse(dsk_solver *s, const double *p, const double *times, int nt,
                           const double *g, double *grad, dsk_status *st)
    void dsk_solver_set_backward_budget(dsk_solver *s, double ratio)
    void dsk_solver_stats(const dsk_solver *s, dsk_stats *out)
    const char *dsk_solver_integrator_name(const dsk_solver *s)
    const char *dsk_solver_linsol_name(const dsk_solver *s)
    void dsk_solver_free(dsk_solver *s)

    # batches
    int DSK_BATCH_MAX_THREADS

    ctypedef struct dsk_batch:
        pass

    int dsk_batch_create(const dsk_model *m, const dsk_solver_options *o, dsk_batch **out,
                         dsk_status *st)
    int dsk_batch_solve_dense(dsk_batch *b, int nthreads, int nrows, const double *p,
                              const double *times, int nt, double *y, int *row_status,
                              double *stop_t, int *stop_index, dsk_status *st)
    int dsk_batch_forward(dsk_batch *b, int nthreads, int nrows, const double *p,
                          const double *times, int nt, double *y, double *sens,
                          int *row_status, double *stop_t, int *stop_index, dsk_status *st)
    int dsk_batch_reverse(dsk_batch *b, int nthreads, int nrows, const double *p,
                          const double *times, int nt, const double *g, double *grad,
                          int *row_status, dsk_status *st)
    int dsk_batch_reverse_budget(dsk_batch *b, int nthreads, int nrows, const double *p,
                                 const double *times, int nt, const double *g, double *grad,
                                 int *row_status, double budget, long *steps,
                                 dsk_status *st)
    int dsk_batch_workers(dsk_batch *b)
    void dsk_batch_free(dsk_batch *b)


#: method name -> dsk_method
METHODS = {
    "bdf": DSK_BDF,
    "adams": DSK_ADAMS,
    "tsit45": DSK_TSIT45,
    "dopri5": DSK_DOPRI5,
    "tr_bdf2": DSK_TR_BDF2,
    "esdirk34": DSK_ESDIRK34,
}

#: linear_solver name -> dsk_linsol ("lapack" and "sundials_dense" force one
#: dense implementation, for benchmarks)
LINEAR_SOLVERS = {
    "auto": DSK_LS_AUTO,
    "dense": DSK_LS_DENSE,
    "klu": DSK_LS_KLU,
    "lapack": DSK_LS_LAPACK,
    "sundials_dense": DSK_LS_SUNDENSE,
    "spgmr": DSK_LS_SPGMR,
    "fixedpoint": DSK_LS_FIXEDPOINT,
}

#: thresholds of linear_solver="auto" (see docs/solvers.md)
AUTO_THRESHOLDS = {
    "lapack_min_states": DSK_LS_LAPACK_MIN,
    "klu_min_states": DSK_LS_KLU_MIN,
    "klu_max_density": DSK_LS_KLU_DENSITY,
}


# ---- helpers -----------------------------------------------------------------

cdef str _text(const char *s):
    """Decode a NUL-terminated C string (NULL gives '')."""
    if s == NULL:
        return ""
    return (<bytes>s).decode("utf-8", "replace")


cdef dict _stats_dict(const dsk_stats *s):
    return {
        "steps": s.steps,
        "rhs_evals": s.rhs_evals,
        "jac_evals": s.jac_evals,
        "lin_setups": s.lin_setups,
        "err_test_fails": s.err_test_fails,
        "nonlin_iters": s.nonlin_iters,
        "nonlin_fails": s.nonlin_fails,
        "events": s.events,
        "backward_steps": s.backward_steps,
        "backward_restarts": s.backward_restarts,
    }


cdef int check(int code, const dsk_status *st, object stats=None) except -1:
    """Raise the exception that matches a kernel return code (no-op for DSK_OK)."""
    if code == DSK_OK:
        return 0
    msg = _text(st.msg) or "kernel error %d" % code
    if code == DSK_E_SYNTAX:
        raise DiffSLSyntaxError(msg, st.line or None, st.col or None)
    elif code == DSK_E_MODEL:
        raise DiffSLError(msg, st.line or None, st.col or None)
    elif code == DSK_E_JIT:
        raise CompileError(msg)
    elif code == DSK_E_SOLVER:
        raise SolverError(msg, t=st.t, flag=_text(st.flag) or None, stats=stats)
    elif code == DSK_E_MODELFN:
        raise SolverError(msg, t=st.t, flag=_text(st.flag) or None, stats=stats)
    elif code == DSK_E_ARG:
        raise ValueError(msg)
    elif code == DSK_E_NOMEM:
        raise MemoryError(msg)
    raise DiffsolError("unknown kernel error code %d: %s" % (code, msg))


def translate(str src):
    """translate(src) -> str

    Translate DiffSL source to the C source the kernel would compile
    (for debugging). Raises DiffSLSyntaxError or DiffSLError.
    """
    cdef bytes bsrc = src.encode("utf-8")
    cdef const char *csrc = bsrc
    cdef char *out = NULL
    cdef dsk_status st
    cdef int rc
    dsk_status_clear(&st)
    with nogil:
        rc = dsk_translate(csrc, &out, &st)
    try:
        check(rc, &st)
        return _text(out)
    finally:
        free(out)


def first_nonfinite(const double[::1] a not None):
    """first_nonfinite(a) -> int

    Index of the first NaN or infinity in the contiguous float64 array a, or -1
    (one C loop: the argument checks of module.py, without NumPy temporaries).
    """
    cdef Py_ssize_t i
    for i in range(a.shape[0]):
        if not isfinite(a[i]):
            return i
    return -1


def first_decrease(const double[::1] t not None):
    """first_decrease(t) -> int

    The first i with t[i + 1] < t[i] in the contiguous float64 array t, or -1.
    """
    cdef Py_ssize_t i
    for i in range(t.shape[0] - 1):
        if t[i + 1] < t[i]:
            return i
    return -1


cdef extern from *:
    """
    #include <sundials/sundials_config.h>
    #ifndef DSK_SUNDIALS_PREFIX
    #define DSK_SUNDIALS_PREFIX ""
    #endif
    static const char *dsk_sundials_prefix = DSK_SUNDIALS_PREFIX;
    static const char *dsk_sundials_version = SUNDIALS_VERSION;
    """
    const char *dsk_sundials_prefix
    const char *dsk_sundials_version


def sundials_build():
    """sundials_build() -> (version, prefix)

    The SUNDIALS this extension was built against: its version, and the prefix of
    the optimised static build linked in (meson option sundials_prefix, set by
    `make setup`), or '' for the system's shared libraries.
    """
    return dsk_sundials_version.decode(), dsk_sundials_prefix.decode()


def jit_compile_count():
    """jit_compile_count() -> int

    Number of times this process has invoked the C compiler (JIT cache misses).
    """
    return dsk_jit_compile_count()


# ---- Model -------------------------------------------------------------------

cdef class Model:
    """Model(diffsl_source, cache_dir=None, cc=None)

    A DiffSL model compiled to a shared object and loaded (owns a dsk_model).
    Compilation runs without the GIL and is cached on disk by content hash.

    Parameters
    ----------
    diffsl_source : str
        The DiffSL model.
    cache_dir : str or os.PathLike, optional
        JIT cache directory; default ``$DIFFSOL_PYTORCH_CACHE``, else
        ``$XDG_CACHE_HOME/diffsol_pytorch``, else ``~/.cache/diffsol_pytorch``.
    cc : str, optional
        C compiler command; default ``$CC``, else ``cc``.
    """

    cdef dsk_model *ptr
    cdef readonly str source

    def __cinit__(self):
        self.ptr = NULL

    def __init__(self, str diffsl_source, cache_dir=None, cc=None):
        cdef bytes bsrc = diffsl_source.encode("utf-8")
        cdef bytes bdir = None
        cdef bytes bcc = None
        cdef const char *csrc = bsrc
        cdef dsk_jit_options opt
        cdef dsk_status st
        cdef dsk_model *m = NULL
        cdef int rc
        opt.cache_dir = NULL
        opt.cc = NULL
        if cache_dir is not None:
            bdir = os.fsencode(cache_dir)
            opt.cache_dir = bdir
        if cc is not None:
            bcc = os.fsencode(cc)
            opt.cc = bcc
        dsk_status_clear(&st)
        with nogil:
            rc = dsk_model_compile(csrc, &opt, &m, &st)
        if rc != DSK_OK:
            if m != NULL:
                dsk_model_free(m)
            check(rc, &st)
        if m == NULL:
            raise DiffsolError("dsk_model_compile returned no model")
        if self.ptr != NULL:
            dsk_model_free(self.ptr)
        self.ptr = m
        self.source = diffsl_source

    cdef const dsk_gen_table *_table(self) except NULL:
        if self.ptr == NULL:
            raise ValueError("Model is not initialised")
        cdef const dsk_gen_table *t = dsk_model_table(self.ptr)
        if t == NULL:
            raise DiffsolError("model has no table")
        return t

    @property
    def nstates(self):
        """Number of states (length of u)."""
        return self._table().nstates

    @property
    def nparams(self):
        """Number of parameters (length of in)."""
        return self._table().nparams

    @property
    def nout(self):
        """Number of outputs (length of out, or nstates without out)."""
        return self._table().nout

    @property
    def nstop(self):
        """Number of stop (event) functions."""
        return self._table().nstop

    @property
    def has_mass(self):
        """True when the model defines a mass term M."""
        return bool(self._table().has_mass)

    @property
    def param_names(self):
        """Tuple of parameter names, in the order of in."""
        cdef const dsk_gen_table *t = self._table()
        return tuple(_text(t.param_names[i]) for i in range(t.nparams))

    @property
    def default_params(self):
        """NumPy float64 array of the literal values of in."""
        cdef const dsk_gen_table *t = self._table()
        out = np.empty(t.nparams, dtype=np.float64)
        cdef double[::1] v = out
        cdef int i
        for i in range(t.nparams):
            v[i] = t.default_params[i]
        return out

    @property
    def jac_ncolors(self):
        """Colours of the Jacobian's sparsity pattern: the tangent evaluations one
        Jacobian costs."""
        self._table()
        return dsk_model_jac_ncolors(self.ptr)

    @property
    def path(self):
        """Path of the loaded shared object in the JIT cache."""
        if self.ptr == NULL:
            raise ValueError("Model is not initialised")
        return _text(dsk_model_path(self.ptr))

    def __repr__(self):
        if self.ptr == NULL:
            return "<Model (uninitialised)>"
        return "<Model nstates=%d nparams=%d nout=%d>" % (self.nstates, self.nparams, self.nout)

    def __dealloc__(self):
        if self.ptr != NULL:
            dsk_model_free(self.ptr)
            self.ptr = NULL


# ---- Solver ------------------------------------------------------------------

cdef object _fill_options(dsk_solver_options *o, Model model, double rtol, atol, double t0,
                          h0, long max_steps, str method, str linear_solver,
                          int checkpoint_steps, double adjoint_rtol, double adjoint_atol,
                          double sens_rtol, double sens_atol, int adjoint_discrete=0):
    """Solver options from Python values (ValueError for bad ones); returns the
    per-state tolerance array that o.atol_vec points into (keep it alive), or None."""
    cdef double[::1] av
    model._table()
    if method not in METHODS:
        raise ValueError("unknown method %r" % method)
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError("unknown linear_solver %r" % linear_solver)
    dsk_solver_options_default(o)
    o.method = METHODS[method]
    o.linear_solver = LINEAR_SOLVERS[linear_solver]
    o.rtol = rtol
    o.t0 = t0
    o.h0 = 0.0 if h0 is None else float(h0)
    o.max_steps = max_steps
    o.checkpoint_steps = checkpoint_steps
    o.adjoint_rtol = adjoint_rtol
    o.adjoint_atol = adjoint_atol
    o.sens_rtol = sens_rtol
    o.sens_atol = sens_atol
    o.adjoint_discrete = adjoint_discrete
    o.atol_vec = NULL
    if np.ndim(atol) == 0:
        o.atol = float(atol)
        return None
    vec = np.ascontiguousarray(atol, dtype=np.float64)
    if vec.ndim != 1 or vec.shape[0] != model.nstates:
        raise ValueError("atol must be a float or have one value per state (%d), got shape %s"
                         % (model.nstates, vec.shape))
    av = vec
    o.atol = 0.0
    if av.shape[0] > 0:
        o.atol_vec = &av[0]
    return vec


cdef class Solver:
    """Solver(model, rtol=1e-6, atol=1e-6, t0=0.0, h0=None, max_steps=100000, method="bdf", linear_solver="auto")

    A solver (CVODES, IDAS or ARKODE, by method and model) for one Model,
    reusable across solves: its SUNDIALS objects are created once. One
    solver is used by one thread at a time (calls are serialised by a lock).

    Parameters
    ----------
    model : Model
    rtol : float
    atol : float or array of nstates floats
    t0 : float
        Initial time.
    h0 : float or None
        Initial step; None lets the solver choose.
    max_steps : int
        Maximum number of steps per solve.
    method : str
        One of METHODS.
    linear_solver : str
        One of LINEAR_SOLVERS.
    """

    cdef dsk_solver *ptr
    cdef readonly Model model
    cdef object _lock
    cdef object _atol_vec   # keeps the per-state tolerances alive

    def __cinit__(self):
        self.ptr = NULL

    def __init__(self, Model model not None, double rtol=1e-6, atol=1e-6, double t0=0.0,
                 h0=None, long max_steps=100000, str method="bdf", str linear_solver="auto",
                 int checkpoint_steps=0, double adjoint_rtol=0.0, double adjoint_atol=0.0,
                 double sens_rtol=0.0, double sens_atol=0.0, int adjoint_discrete=0):
        cdef dsk_solver_options o
        cdef dsk_status st
        cdef dsk_solver *s = NULL
        cdef int rc
        self._atol_vec = _fill_options(&o, model, rtol, atol, t0, h0, max_steps, method,
                                       linear_solver, checkpoint_steps, adjoint_rtol,
                                       adjoint_atol, sens_rtol, sens_atol, adjoint_discrete)
        dsk_status_clear(&st)
        with nogil:
            rc = dsk_solver_create(model.ptr, &o, &s, &st)
        if rc != DSK_OK:
            if s != NULL:
                dsk_solver_free(s)
            check(rc, &st)
        if self.ptr != NULL:
            dsk_solver_free(self.ptr)
        self.ptr = s
        self.model = model
        self._lock = threading.Lock()

    cdef int _ready(self) except -1:
        if self.ptr == NULL:
            raise ValueError("Solver is not initialised")
        return 0

    @property
    def integrator(self):
        """The integrator chosen, e.g. "CVODES BDF" or "IDAS BDF"."""
        self._ready()
        return _text(dsk_solver_integrator_name(self.ptr))

    @property
    def linear_solver(self):
        """The linear solver chosen: "none", "dense", "lapack" or "klu"."""
        self._ready()
        return _text(dsk_solver_linsol_name(self.ptr))

    def solve_dense(self, const double[::1] p not None, const double[::1] times not None):
        """solve_dense(p, times) -> numpy.ndarray of shape (nout, len(times))

        Solve with parameters p (nparams float64) and return the outputs at
        the given non-decreasing times. Runs without the GIL. After a stop
        root (no reset) the remaining columns are NaN: see last_stop().
        """
        self._ready()
        cdef int nparams = self.model.nparams
        cdef int nout = self.model.nout
        cdef Py_ssize_t nt = times.shape[0]
        if p.shape[0] != nparams:
            raise ValueError("expected %d parameters, got %d" % (nparams, p.shape[0]))
        if nt > 2147483647:
            raise ValueError("too many output times")
        y = np.zeros((nout, nt), dtype=np.float64)
        if nt == 0:
            return y
        cdef double[:, ::1] yv = y
        cdef const double *pp = &p[0] if nparams > 0 else NULL
        cdef const double *tp = &times[0]
        cdef double *yp = &yv[0, 0] if nout > 0 else NULL
        cdef dsk_status st
        cdef dsk_stats stats
        cdef int rc
        dsk_status_clear(&st)
        with self._lock:
            with nogil:
                rc = dsk_solver_solve_dense(self.ptr, pp, tp, <int>nt, yp, &st)
            if rc != DSK_OK:
                dsk_solver_stats(self.ptr, &stats)
                check(rc, &st, _stats_dict(&stats))
        return y

    def forward_checkpointed(self, const double[::1] p not None,
                             const double[::1] times not None, bint with_generation=False,
                             const double[::1] checkpoint_times=None):
        """forward_checkpointed(p, times, with_generation=False, checkpoint_times=None) -> numpy.ndarray (nout, len(times))

        The forward pass of reverse mode: outputs as solve_dense, and the
        checkpoints that backward() goes back over (until the next solve).
        with_generation: return (y, generation), the generation of this pass
        read under the solver's lock (no other solve can come in between).
        checkpoint_times: strictly increasing times in (t0, times[-1]] where the
        pass keeps the state (bdf/adams); None: the integrator's own checkpoints.
        """
        self._ready()
        cdef int nparams = self.model.nparams
        cdef int nout = self.model.nout
        cdef Py_ssize_t nt = times.shape[0]
        if p.shape[0] != nparams:
            raise ValueError("expected %d parameters, got %d" % (nparams, p.shape[0]))
        if nt < 1 or nt > 2147483647:
            raise ValueError("need between 1 and 2**31 - 1 output times")
        y = np.zeros((nout, nt), dtype=np.float64)
        cdef double[:, ::1] yv = y
        cdef const double *pp = &p[0] if nparams > 0 else NULL
        cdef double *yp = &yv[0, 0] if nout > 0 else NULL
        cdef const double *ckp = NULL
        cdef int nck = 0
        cdef dsk_status st
        cdef dsk_stats stats
        cdef int rc
        if checkpoint_times is not None and checkpoint_times.shape[0] > 0:
            if checkpoint_times.shape[0] > 2147483647:
                raise ValueError("too many checkpoint times")
            ckp = &checkpoint_times[0]
            nck = <int>checkpoint_times.shape[0]
        dsk_status_clear(&st)
        with self._lock:
            with nogil:
                rc = dsk_solver_forward_checkpointed_at(self.ptr, pp, &times[0], <int>nt,
                                                        ckp, nck, yp, &st)
            if rc != DSK_OK:
                dsk_solver_stats(self.ptr, &stats)
                check(rc, &st, _stats_dict(&stats))
            generation = dsk_solver_generation(self.ptr)
        return (y, generation) if with_generation else y

    def generation(self):
        """generation() -> int: changes with every solve this solver starts."""
        self._ready()
        with self._lock:
            return dsk_solver_generation(self.ptr)

    def discrete_adjoint(self):
        """discrete_adjoint() -> bool: reverse mode takes the discrete adjoint of
        CVODES' BDF steps (adjoint_discrete set and the model and method allow it)."""
        self._ready()
        with self._lock:
            return bool(dsk_solver_discrete_adjoint(self.ptr))

    def discrete_recorded(self):
        """discrete_recorded() -> bool: the last forward_checkpointed pass (or reverse
        call) recorded the steps for the discrete adjoint."""
        self._ready()
        with self._lock:
            return bool(dsk_solver_discrete_recorded(self.ptr))

    def backward(self, const double[:, ::1] g not None, double budget=0.0):
        """backward(g, budget=0.0) -> numpy.ndarray (nparams,) or None

        One backward pass over the last forward_checkpointed pass: the
        gradient of sum(g * y) w.r.t. the parameters, g of shape (nout, nt).
        budget > 0: None when the pass would take more than budget backward
        steps per forward step (dsk_solver_set_backward_budget).
        """
        self._ready()
        cdef int nparams = self.model.nparams
        grad = np.zeros(nparams, dtype=np.float64)
        cdef double[::1] gv = grad
        cdef double *gp = &gv[0] if nparams > 0 else NULL
        cdef const double *gin = &g[0, 0] if g.shape[0] * g.shape[1] > 0 else NULL
        cdef dsk_status st
        cdef int rc
        if g.shape[0] != self.model.nout:
            raise ValueError("g must have %d rows (nout), got %d" % (self.model.nout, g.shape[0]))
        if gin == NULL:
            return grad
        dsk_status_clear(&st)
        with self._lock:
            dsk_solver_set_backward_budget(self.ptr, budget)
            with nogil:
                rc = dsk_solver_backward(self.ptr, gin, gp, &st)
            dsk_solver_set_backward_budget(self.ptr, 0.0)
            if rc == DSK_E_BUDGET:
                return None
            if rc != DSK_OK:
                check(rc, &st, None)
        return grad

    def reverse(self, const double[::1] p not None, const double[::1] times not None,
                const double[:, ::1] g not None, double budget=0.0):
        """reverse(p, times, g, budget=0.0) -> numpy.ndarray (nparams,) or None

        Gradient of sum(g * y(p, times)) by the checkpointed adjoint; the
        forward pass stops at the last time with a non-zero column of g.
        budget > 0: None when the backward pass would take more than budget
        backward steps per forward step (dsk_solver_set_backward_budget).
        """
        self._ready()
        cdef int nparams = self.model.nparams
        cdef Py_ssize_t nt = times.shape[0]
        if p.shape[0] != nparams:
            raise ValueError("expected %d parameters, got %d" % (nparams, p.shape[0]))
        if g.shape[0] != self.model.nout or g.shape[1] != nt:
            raise ValueError("g must have shape (%d, %d), got (%d, %d)"
                             % (self.model.nout, nt, g.shape[0], g.shape[1]))
        grad = np.zeros(nparams, dtype=np.float64)
        if nt == 0 or self.model.nout == 0:
            return grad
        cdef double[::1] gv = grad
        cdef double *gp = &gv[0] if nparams > 0 else NULL
        cdef const double *pp = &p[0] if nparams > 0 else NULL
        cdef dsk_status st
        cdef dsk_stats stats
        cdef int rc
        dsk_status_clear(&st)
        with self._lock:
            dsk_solver_set_backward_budget(self.ptr, budget)
            with nogil:
                rc = dsk_solver_reverse(self.ptr, pp, &times[0], <int>nt, &g[0, 0], gp, &st)
            dsk_solver_set_backward_budget(self.ptr, 0.0)
            if rc == DSK_E_BUDGET:
                return None
            if rc != DSK_OK:
                dsk_solver_stats(self.ptr, &stats)
                check(rc, &st, _stats_dict(&stats))
        return grad

    def solve(self, const double[::1] p not None, double t_final):
        """solve(p, t_final) -> (ts, ys, stop)

        Integrate from t0 to t_final in one-step mode and return every
        internal step: ts (nt,), ys (nout, nt), and stop (None, or
        (t, index) when a stop root without reset ended the solve).
        """
        self._ready()
        cdef int nparams = self.model.nparams
        cdef int nout = self.model.nout
        if p.shape[0] != nparams:
            raise ValueError("expected %d parameters, got %d" % (nparams, p.shape[0]))
        cdef const double *pp = &p[0] if nparams > 0 else NULL
        cdef const double *tsp = NULL
        cdef const double *ysp = NULL
        cdef int nt = 0
        cdef dsk_status st
        cdef dsk_stats stats
        cdef int rc
        cdef double[::1] tv
        cdef double[:, ::1] yv
        dsk_status_clear(&st)
        with self._lock:
            with nogil:
                rc = dsk_solver_solve(self.ptr, pp, t_final, &nt, &tsp, &ysp, &st)
            if rc != DSK_OK:
                dsk_solver_stats(self.ptr, &stats)
                check(rc, &st, _stats_dict(&stats))
            ts = np.empty(nt, dtype=np.float64)
            ys = np.empty((nt, nout), dtype=np.float64)
            if nt > 0:
                tv = ts
                memcpy(&tv[0], tsp, nt * sizeof(double))
                if nout > 0:
                    yv = ys
                    memcpy(&yv[0, 0], ysp, nt * nout * sizeof(double))
            stop = self._last_stop()
        return ts, np.ascontiguousarray(ys.T), stop

    def forward(self, const double[::1] p not None, const double[::1] times not None):
        """forward(p, times) -> (y, sens)

        Solve with forward sensitivities: y (nout, len(times)) as solve_dense,
        sens (nparams, nout, len(times)) with sens[k, i, j] = d y[i, j] / d p[k].
        Runs without the GIL. After a stop root (no reset) the remaining
        columns of y and sens are NaN: see last_stop().
        """
        self._ready()
        cdef int nparams = self.model.nparams
        cdef int nout = self.model.nout
        cdef Py_ssize_t nt = times.shape[0]
        if p.shape[0] != nparams:
            raise ValueError("expected %d parameters, got %d" % (nparams, p.shape[0]))
        if nt > 2147483647:
            raise ValueError("too many output times")
        y = np.zeros((nout, nt), dtype=np.float64)
        sens = np.zeros((nparams, nout, nt), dtype=np.float64)
        if nt == 0:
            return y, sens
        cdef double[:, ::1] yv = y
        cdef double[:, :, ::1] sv = sens
        cdef const double *pp = &p[0] if nparams > 0 else NULL
        cdef const double *tp = &times[0]
        cdef double *yp = &yv[0, 0] if nout > 0 else NULL
        cdef double *sp = &sv[0, 0, 0] if nout > 0 and nparams > 0 else NULL
        cdef dsk_status st
        cdef dsk_stats stats
        cdef int rc
        dsk_status_clear(&st)
        with self._lock:
            with nogil:
                rc = dsk_solver_forward(self.ptr, pp, tp, <int>nt, yp, sp, &st)
            if rc != DSK_OK:
                dsk_solver_stats(self.ptr, &stats)
                check(rc, &st, _stats_dict(&stats))
        return y, sens

    def forward_mode(self, const double[::1] p not None, const double[::1] times not None):
        """forward_mode(p, times) -> (y, sens): the same as forward()."""
        return self.forward(p, times)

    cdef object _last_stop(self):
        cdef double t = 0.0
        cdef int index = 0
        if dsk_solver_last_stop(self.ptr, &t, &index):
            return (t, index)
        return None

    def last_stop(self):
        """last_stop() -> None or (t, index)

        The stop root (time, element of stop) that ended the last solve, for
        a model with stop and no reset; None otherwise.
        """
        self._ready()
        with self._lock:
            return self._last_stop()

    def stats(self):
        """stats() -> dict

        Statistics of the last solve: steps, rhs_evals, jac_evals, lin_setups,
        err_test_fails, nonlin_iters, nonlin_fails, events.
        """
        self._ready()
        cdef dsk_stats s
        with self._lock:
            dsk_solver_stats(self.ptr, &s)
        return _stats_dict(&s)

    def __dealloc__(self):
        if self.ptr != NULL:
            dsk_solver_free(self.ptr)
            self.ptr = NULL


#: the largest thread count a Batch call accepts
BATCH_MAX_THREADS = DSK_BATCH_MAX_THREADS


cdef object _batch_stops(const int[::1] index, const double[::1] t):
    """Per-row stop roots as a list of None or (t, index)."""
    return [None if index[i] < 0 else (t[i], index[i]) for i in range(index.shape[0])]


cdef int _batch_check(int rc, const dsk_status *st, const int[::1] status) except -1:
    """check() for a batch call; the exception gets a ``row`` attribute: the
    lowest failing row."""
    if rc == DSK_OK:
        return 0
    cdef Py_ssize_t i
    row = None
    for i in range(status.shape[0]):
        if status[i] > 0:
            row = int(i)
            break
    try:
        check(rc, st, None)
    except Exception as exc:
        exc.row = row
        raise
    return 0


cdef class Batch:
    """Batch(model, rtol=1e-6, atol=1e-6, t0=0.0, h0=None, max_steps=100000, method="bdf", linear_solver="auto")

    Many parameter sets of one Model solved on threads (_ckernel/batch.c):
    worker solvers with the given options, created on first use and reused.
    Each call releases the GIL for the whole batch and takes ``threads``
    threads (the calling one plus threads - 1 spawned for the call). Row r
    of every result is bit-identical to the same Solver call on row r.
    Calls from several Python threads on one Batch are serialised by the
    batch's own mutex (waiting without the GIL).
    """

    cdef dsk_batch *ptr
    cdef readonly Model model
    cdef object _atol_vec
    cdef readonly object last_steps  # reverse: (forward, backward) steps of the last call

    def __cinit__(self):
        self.ptr = NULL
        self.last_steps = (0, 0)

    def __init__(self, Model model not None, double rtol=1e-6, atol=1e-6, double t0=0.0,
                 h0=None, long max_steps=100000, str method="bdf", str linear_solver="auto",
                 int checkpoint_steps=0, double adjoint_rtol=0.0, double adjoint_atol=0.0,
                 double sens_rtol=0.0, double sens_atol=0.0, int adjoint_discrete=0):
        cdef dsk_solver_options o
        cdef dsk_status st
        cdef dsk_batch *b = NULL
        cdef int rc
        self._atol_vec = _fill_options(&o, model, rtol, atol, t0, h0, max_steps, method,
                                       linear_solver, checkpoint_steps, adjoint_rtol,
                                       adjoint_atol, sens_rtol, sens_atol, adjoint_discrete)
        dsk_status_clear(&st)
        with nogil:
            rc = dsk_batch_create(model.ptr, &o, &b, &st)
        check(rc, &st)
        if self.ptr != NULL:
            dsk_batch_free(self.ptr)
        self.ptr = b
        self.model = model

    cdef int _ready(self, const double[:, ::1] p, const double[::1] times, int threads) except -1:
        if self.ptr == NULL:
            raise ValueError("Batch is not initialised")
        if threads < 1 or threads > DSK_BATCH_MAX_THREADS:
            raise ValueError("threads must be between 1 and %d, got %d"
                             % (DSK_BATCH_MAX_THREADS, threads))
        if p.shape[1] != self.model.nparams:
            raise ValueError("expected %d parameters per row, got %d"
                             % (self.model.nparams, p.shape[1]))
        if times.shape[0] < 1 or times.shape[0] > 2147483647:
            raise ValueError("need between 1 and 2**31 - 1 output times")
        if p.shape[0] > 2147483647:
            raise ValueError("too many rows")
        return 0

    def workers(self):
        """Number of worker solvers created so far."""
        return dsk_batch_workers(self.ptr) if self.ptr != NULL else 0

    def solve_dense(self, const double[:, ::1] p not None, const double[::1] times not None,
                    int threads=1):
        """solve_dense(p, times, threads=1) -> (y, stops)

        p (B, nparams) -> y (B, nout, len(times)); stops: list of None or
        (t, index) per row (Solver.last_stop()).
        """
        self._ready(p, times, threads)
        cdef int nrows = <int>p.shape[0], nt = <int>times.shape[0]
        cdef int nout = self.model.nout
        y = np.zeros((nrows, nout, nt), dtype=np.float64)
        status = np.full(nrows, -1, dtype=np.intc)
        stop_i = np.full(nrows, -1, dtype=np.intc)
        stop_t = np.zeros(nrows, dtype=np.float64)
        if nrows == 0:
            return y, []
        cdef double[:, :, ::1] yv = y
        cdef int[::1] sv = status, siv = stop_i
        cdef double[::1] stv = stop_t
        cdef const double *pp = &p[0, 0] if p.shape[1] > 0 else NULL
        cdef double *yp = &yv[0, 0, 0] if nout > 0 else NULL
        cdef dsk_status st
        cdef int rc
        dsk_status_clear(&st)
        with nogil:
            rc = dsk_batch_solve_dense(self.ptr, threads, nrows, pp, &times[0], nt, yp, &sv[0],
                                       &stv[0], &siv[0], &st)
        _batch_check(rc, &st, sv)
        return y, _batch_stops(siv, stv)

    def forward(self, const double[:, ::1] p not None, const double[::1] times not None,
                int threads=1):
        """forward(p, times, threads=1) -> (y, sens, stops)

        Forward sensitivities per row: y (B, nout, nt), sens (B, nparams, nout, nt).
        """
        self._ready(p, times, threads)
        cdef int nrows = <int>p.shape[0], nt = <int>times.shape[0]
        cdef int nout = self.model.nout, nparams = self.model.nparams
        y = np.zeros((nrows, nout, nt), dtype=np.float64)
        sens = np.zeros((nrows, nparams, nout, nt), dtype=np.float64)
        status = np.full(nrows, -1, dtype=np.intc)
        stop_i = np.full(nrows, -1, dtype=np.intc)
        stop_t = np.zeros(nrows, dtype=np.float64)
        if nrows == 0:
            return y, sens, []
        cdef double[:, :, ::1] yv = y
        cdef double[:, :, :, ::1] sensv = sens
        cdef int[::1] sv = status, siv = stop_i
        cdef double[::1] stv = stop_t
        cdef const double *pp = &p[0, 0] if nparams > 0 else NULL
        cdef double *yp = &yv[0, 0, 0] if nout > 0 else NULL
        cdef double *sp = &sensv[0, 0, 0, 0] if nout > 0 and nparams > 0 else NULL
        cdef dsk_status st
        cdef int rc
        dsk_status_clear(&st)
        with nogil:
            rc = dsk_batch_forward(self.ptr, threads, nrows, pp, &times[0], nt, yp, sp, &sv[0],
                                   &stv[0], &siv[0], &st)
        _batch_check(rc, &st, sv)
        return y, sens, _batch_stops(siv, stv)

    def reverse(self, const double[:, ::1] p not None, const double[::1] times not None,
                const double[:, :, ::1] g not None, int threads=1, double budget=0.0):
        """reverse(p, times, g, threads=1, budget=0.0) -> grad (B, nparams) or None

        Row r: the gradient of sum(g[r] * y(p[r], times)) by the checkpointed
        adjoint (Solver.reverse), g of shape (B, nout, len(times)). budget > 0:
        None when a row's backward pass would take more than budget backward
        steps per forward step (dsk_batch_reverse_budget). ``last_steps`` then
        holds the forward and backward steps of the rows that ran, summed.
        """
        self._ready(p, times, threads)
        cdef int nrows = <int>p.shape[0], nt = <int>times.shape[0]
        cdef int nout = self.model.nout, nparams = self.model.nparams
        if g.shape[0] != nrows or g.shape[1] != nout or g.shape[2] != nt:
            raise ValueError("g must have shape (%d, %d, %d), got (%d, %d, %d)"
                             % (nrows, nout, nt, g.shape[0], g.shape[1], g.shape[2]))
        grad = np.zeros((nrows, nparams), dtype=np.float64)
        status = np.full(nrows, -1, dtype=np.intc)
        if nrows == 0 or nout == 0:
            return grad
        cdef double[:, ::1] gv = grad
        cdef int[::1] sv = status
        cdef const double *pp = &p[0, 0] if nparams > 0 else NULL
        cdef double *gp = &gv[0, 0] if nparams > 0 else NULL
        cdef dsk_status st
        cdef int rc
        dsk_status_clear(&st)
        cdef long steps[2]
        steps[0] = steps[1] = 0
        with nogil:
            rc = dsk_batch_reverse_budget(self.ptr, threads, nrows, pp, &times[0], nt,
                                          &g[0, 0, 0], gp, &sv[0], budget, steps, &st)
        self.last_steps = (steps[0], steps[1])
        if rc == DSK_E_BUDGET:
            return None
        _batch_check(rc, &st, sv)
        return grad

    def __dealloc__(self):
        if self.ptr != NULL:
            dsk_batch_free(self.ptr)
            self.ptr = NULL


# ---- callback models -----------------------------------------------------------
#
# The C callbacks below run inside a solve that released the GIL: they take it
# back (`with gil`), hand the kernel's buffers to the Python callables as
# NumPy views (no copies), and turn any Python exception into a negative code
# (unrecoverable: the solver stops and cleans up). The exception object is kept
# on the model (`error`) for the caller to re-raise unchanged.

cdef inline object _vec(const double *p, int n):
    return np.asarray(<double[:n]> (<double *> p))


cdef int _cb_fail(CallbackModel m, BaseException e):
    if m.error is None:
        m.error = e
    return -1


cdef int _cb_rhs(void *user, double t, const double *y, const double *theta,
                 double *f) noexcept with gil:
    cdef CallbackModel m = <CallbackModel> user
    cdef int n = m.n
    if m.error is not None:
        return -1
    try:
        m.n_rhs += 1
        m._rhs(t, _vec(y, n), _vec(f, n))
        return 0
    except BaseException as e:
        return _cb_fail(m, e)


cdef int _cb_jac(void *user, double t, const double *y, const double *theta,
                 double *J) noexcept with gil:
    cdef CallbackModel m = <CallbackModel> user
    cdef int n = m.n
    if m.error is not None:
        return -1
    try:
        m.n_jac += 1
        # J is column-major: the transposed view of a C-ordered (n, n) buffer
        m._jac(t, _vec(y, n), np.asarray(<double[:n, :n]> J).T)
        return 0
    except BaseException as e:
        return _cb_fail(m, e)


cdef int _cb_jvp(void *user, double t, const double *y, const double *theta,
                 const double *v, double *f, double *jv) noexcept with gil:
    cdef CallbackModel m = <CallbackModel> user
    cdef int n = m.n
    if m.error is not None:
        return -1
    try:
        m.n_jvp += 1
        m._jvp(t, _vec(y, n), _vec(v, n), _vec(f, n), _vec(jv, n))
        return 0
    except BaseException as e:
        return _cb_fail(m, e)


cdef int _cb_vjp(void *user, double t, const double *y, const double *theta,
                 const double *w, double *ybar, double *thbar) noexcept with gil:
    cdef CallbackModel m = <CallbackModel> user
    cdef int n = m.n
    if m.error is not None:
        return -1
    try:
        m.n_vjp += 1
        m._vjp(t, _vec(y, n), _vec(w, n), _vec(ybar, n),
               _vec(thbar, m.ntheta) if m.ntheta > 0 else np.empty(0))
        return 0
    except BaseException as e:
        return _cb_fail(m, e)


cdef int _cb_stop(void *user, double t, const double *y, const double *theta,
                  double *g) noexcept with gil:
    cdef CallbackModel m = <CallbackModel> user
    cdef int n = m.n
    if m.error is not None:
        return -1
    try:
        m.n_stop += 1
        m._stop(t, _vec(y, n), _vec(g, m.nstop_))
        return 0
    except BaseException as e:
        return _cb_fail(m, e)


cdef class CallbackModel(Model):
    """CallbackModel(nstates, ntheta, rhs, jac=None, jvp=None, vjp=None, stop=None, nstop=0)

    A model whose right-hand side is Python code (see dsk_model_from_callbacks):
    du/dt = F(t, u), u(t0) = y0; the outputs are the states, and the parameter
    vector of a solve is p = [y0 (nstates), theta (ntheta)]: reverse mode
    returns the gradient w.r.t. y0 first, then w.r.t. theta. The callables
    write their results into the NumPy views they are given (float64, no
    copies; valid during the call only):

    - rhs(t, y, f): f[:] = F(t, y)
    - jac(t, y, J): J[i, j] = dF_i/dy_j (for the implicit methods)
    - jvp(t, y, v, f, jv): f = F, jv = dF/dy v (used when jac is None)
    - vjp(t, y, w, ybar, thbar): ybar = (dF/dy)^T w, thbar = (dF/dtheta)^T w
    - stop(t, y, g): g[:] = nstop event functions (the solve ends at a root)

    The values of theta in p are not passed to the callables: they must use
    the same parameters. An exception in a callable ends the solve; it is
    stored in `error` (the first one) and the solver raises a SolverError,
    which the caller replaces with the stored exception.
    """

    cdef readonly int n
    cdef readonly int ntheta
    cdef readonly int nstop_
    cdef object _rhs, _jac, _jvp, _vjp, _stop
    cdef public object error
    cdef public long n_rhs, n_jac, n_jvp, n_vjp, n_stop

    def __init__(self, int nstates, int ntheta, rhs, jac=None, jvp=None, vjp=None,
                 stop=None, int nstop=0):
        cdef dsk_callbacks cb
        cdef dsk_status st
        cdef dsk_model *m = NULL
        cdef int rc
        if not callable(rhs):
            raise TypeError("rhs must be callable")
        if nstop > 0 and stop is None:
            raise ValueError("nstop > 0 needs a stop callable")
        self.n = nstates
        self.ntheta = ntheta
        self.nstop_ = nstop
        self._rhs, self._jac, self._jvp, self._vjp, self._stop = rhs, jac, jvp, vjp, stop
        self.error = None
        self.n_rhs = self.n_jac = self.n_jvp = self.n_vjp = self.n_stop = 0
        cb.user = <void *> self
        cb.nstates = nstates
        cb.ntheta = ntheta
        cb.nstop = nstop
        cb.rhs = _cb_rhs
        cb.jac = NULL
        cb.jvp = NULL
        cb.vjp = NULL
        cb.stop = NULL
        if jac is not None:
            cb.jac = _cb_jac
        if jvp is not None:
            cb.jvp = _cb_jvp
        if vjp is not None:
            cb.vjp = _cb_vjp
        if stop is not None:
            cb.stop = _cb_stop
        dsk_status_clear(&st)
        rc = dsk_model_from_callbacks(&cb, &m, &st)
        if rc != DSK_OK:
            check(rc, &st)
        if self.ptr != NULL:
            dsk_model_free(self.ptr)
        self.ptr = m
        self.source = ""

    def take_error(self):
        """take_error() -> the stored exception (or None), and forget it."""
        e = self.error
        self.error = None
        return e

    @property
    def param_names(self):
        return tuple("y0[%d]" % i for i in range(self.n)) + tuple(
            "theta[%d]" % i for i in range(self.ntheta))

    @property
    def default_params(self):
        return np.zeros(self.n + self.ntheta)

    @property
    def path(self):
        return ""

    def __repr__(self):
        return "<CallbackModel nstates=%d ntheta=%d>" % (self.n, self.ntheta)
