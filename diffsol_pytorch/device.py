"""Device placement: the solver runs on the host, tensors stay where they live.

The C kernel solves on the CPU in float64. Parameters on an accelerator are
copied to the host for the solve and the result is copied back, so a model can
sit inside a PyTorch pipeline that runs on CUDA, ROCm or MPS.

>>> from diffsol_pytorch import device
>>> info = device.select_device()            # DeviceInfo(device=device(type='cpu'), backend='cpu')
>>> y = device.solve_dense_tensor(m, params, times)   # on params.device
>>> device.supported_backends_message()
'CUDA: no, ROCm: no, MPS: no, CPU: yes'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

import torch

if TYPE_CHECKING:  # pragma: no cover
    from diffsol_pytorch.module import DiffsolModule

__all__ = [
    "DeviceInfo",
    "select_device",
    "reverse_mode_tensor",
    "solve_dense_tensor",
    "supported_backends_message",
]

#: backends in the order select_device prefers them
BACKENDS = ("cuda", "rocm", "mps", "cpu")
_DISPLAY = {"cuda": "CUDA", "rocm": "ROCm", "mps": "MPS", "cpu": "CPU"}


class DeviceInfo(NamedTuple):
    """A device and the backend behind it.

    Attributes
    ----------
    device : torch.device
        Where tensors go, e.g. ``torch.device("cuda", 0)``.
    backend : str
        ``"cuda"``, ``"rocm"`` (an AMD GPU: PyTorch calls it ``"cuda"`` too),
        ``"mps"`` or ``"cpu"``.
    """

    device: torch.device
    backend: str


def _is_rocm_build() -> bool:
    return getattr(torch.version, "hip", None) is not None


def _gpu_available() -> bool:
    """CUDA API devices (NVIDIA on a CUDA build, AMD on a ROCm build)."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver must not break CPU users
        return False


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    try:
        return mps is not None and bool(mps.is_available())
    except Exception:
        return False


def _available() -> dict[str, bool]:
    gpu = _gpu_available()
    rocm = _is_rocm_build()
    return {
        "cuda": gpu and not rocm,
        "rocm": gpu and rocm,
        "mps": _mps_available(),
        "cpu": True,
    }


def _backend_of(dev: torch.device) -> str:
    if dev.type == "cuda":
        return "rocm" if _is_rocm_build() else "cuda"
    return dev.type


def supported_backends_message() -> str:
    """One line saying which backends this PyTorch can use here.

    Returns
    -------
    str
        For example ``"CUDA: no, ROCm: no, MPS: no, CPU: yes"``.
    """
    available = _available()
    return ", ".join(f"{_DISPLAY[b]}: {'yes' if available[b] else 'no'}" for b in BACKENDS)


def _unavailable(what: Any, available: dict[str, bool]) -> ValueError:
    usable = [b if b != "rocm" else "cuda (ROCm)" for b in BACKENDS if available[b]]
    return ValueError(
        f"device {str(what)!r} is not available here ({supported_backends_message()}); "
        f"use one of: {', '.join(usable)}"
    )


def _explicit_device(explicit: Union[str, torch.device], available: dict[str, bool]) -> DeviceInfo:
    if isinstance(explicit, str) and explicit.strip().lower() == "rocm":
        explicit = "cuda"  # PyTorch addresses AMD GPUs through the CUDA API
        if not available["rocm"]:
            raise _unavailable("rocm", available)
    try:
        dev = torch.device(explicit)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device {explicit!r} is not a device name; use 'cpu', 'cuda', 'cuda:1', 'mps' "
            f"or a torch.device ({supported_backends_message()})"
        ) from None
    backend = _backend_of(dev)
    if backend not in available or not available[backend]:
        raise _unavailable(explicit, available)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(dev)!r} does not exist: there are {torch.cuda.device_count()} "
            f"{_DISPLAY[backend]} devices"
        )
    return DeviceInfo(dev, backend)


def select_device(
    explicit: Union[str, torch.device, None] = None, *, sample: Any = None
) -> DeviceInfo:
    """Choose the device that results should live on.

    Parameters
    ----------
    explicit : str or torch.device, optional
        The caller's choice (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``,
        ``"rocm"`` for an AMD GPU, or a ``torch.device``); it wins over
        everything else.
    sample : torch.Tensor, optional
        A tensor whose device is used when ``explicit`` is not given (NumPy
        arrays and lists live on the CPU).

    Returns
    -------
    DeviceInfo
        ``(device, backend)``. Without ``explicit`` and ``sample``: the first
        available of CUDA, ROCm, MPS, then the CPU.

    Raises
    ------
    ValueError
        ``explicit`` is not a device name, or names a device that is not
        available here; the message lists what is available.
    """
    if explicit is not None:
        if isinstance(explicit, DeviceInfo):
            explicit = explicit.device
        return _explicit_device(explicit, _available())
    if sample is not None:
        if isinstance(sample, torch.Tensor):
            return DeviceInfo(sample.device, _backend_of(sample.device))
        return DeviceInfo(torch.device("cpu"), "cpu")
    available = _available()
    for backend in BACKENDS:
        if available[backend]:
            kind = "cuda" if backend == "rocm" else backend
            return DeviceInfo(torch.device(kind), backend)
    raise AssertionError("unreachable: the CPU is always available")  # pragma: no cover


def solve_dense_tensor(
    module: Union["DiffsolModule", str],
    params: Any,
    times: Any,
    *,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """``module.solve_dense(params, times)`` with the result on a chosen device.

    The solve runs on the host in float64; ``params`` and ``times`` may live on
    any device (or be NumPy arrays or lists). Autograd follows the transfer.

    Parameters
    ----------
    module : DiffsolModule or str
        A compiled module, or DiffSL source (compiled once per process and
        reused, as by :func:`diffsol_pytorch.solve_dense`).
    params : torch.Tensor, numpy.ndarray or list of float
        ``(nparams,)`` or ``(B, nparams)``.
    times : torch.Tensor, numpy.ndarray or list of float
        1-D, non-decreasing.
    device : str or torch.device, optional
        Where the result goes; by default the device of ``params`` (the CPU
        for arrays and lists). See :func:`select_device`.

    Returns
    -------
    torch.Tensor
        ``(nout, len(times))`` or ``(B, nout, len(times))``; float32 when
        ``params`` is float32, float64 otherwise.

    Raises
    ------
    ValueError
        ``device`` is not available here, or ``params``/``times`` are invalid.
    """
    target = select_device(device, sample=params).device
    if isinstance(module, str):
        from diffsol_pytorch.module import solve_dense

        y = solve_dense(module, params, times)
    else:
        y = module.solve_dense(params, times)
    return y if y.device == target else y.to(target)


def reverse_mode_tensor(
    code_or_module: Union["DiffsolModule", str],
    params: Any,
    times: Any,
    grad_output: Any,
    *,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """``reverse_mode(params, times, grad_output)`` with the gradient on a chosen device.

    Parameters
    ----------
    code_or_module : DiffsolModule or str
        A compiled module, or DiffSL source (compiled once per process and reused).
    params, times, grad_output
        As in :meth:`diffsol_pytorch.DiffsolModule.reverse_mode`; tensors may live on any device.
    device : str or torch.device, optional
        Where the gradient goes; by default the device of ``params``.

    Returns
    -------
    torch.Tensor
        ``(nparams,)`` (or ``(B, nparams)``), float32 when ``params`` is float32.
    """
    target = select_device(device, sample=params).device
    if isinstance(code_or_module, str):
        from diffsol_pytorch.module import reverse_mode

        g = reverse_mode(code_or_module, params, times, grad_output)
    else:
        g = code_or_module.reverse_mode(params, times, grad_output)
    return g if g.device == target else g.to(target)
