"""diffsol_pytorch.device: device selection (CPU here; accelerators simulated) and transfers."""

import numpy as np
import pytest
import torch

import diffsol_pytorch as dsp
from diffsol_pytorch import device
from diffsol_pytorch.device import DeviceInfo

pytestmark = pytest.mark.unit


@pytest.fixture
def fake(monkeypatch):
    """Pretend to have the given backends: fake(cuda=True), fake(rocm=True), fake(mps=True)."""

    def set_backends(*, cuda=False, rocm=False, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda or rocm)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if (cuda or rocm) else 0)
        monkeypatch.setattr(torch.version, "hip", "6.0.0" if rocm else None)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_backends


def test_this_machine_is_cpu_only():
    assert device.select_device() == DeviceInfo(torch.device("cpu"), "cpu")
    assert device.supported_backends_message() == "CUDA: no, ROCm: no, MPS: no, CPU: yes"


def test_explicit_cpu_as_string_and_device():
    for explicit in ("cpu", torch.device("cpu")):
        info = device.select_device(explicit)
        assert isinstance(info, DeviceInfo)
        assert info.device == torch.device("cpu") and info.backend == "cpu"
    dev, backend = device.select_device("cpu")  # a named tuple
    assert (dev.type, backend) == ("cpu", "cpu")


def test_sample_on_cpu_wins_over_the_automatic_order(fake):
    fake(cuda=True)
    assert device.select_device(sample=torch.zeros(2)) == DeviceInfo(torch.device("cpu"), "cpu")
    assert device.select_device(sample=np.zeros(2)).backend == "cpu"
    # explicit wins over the sample
    assert device.select_device("cuda", sample=torch.zeros(2)).backend == "cuda"


def test_unavailable_cuda_names_what_is_available():
    with pytest.raises(ValueError, match=r"'cuda' is not available.*CPU: yes.*use one of: cpu"):
        device.select_device("cuda")
    with pytest.raises(ValueError, match="not available"):
        device.select_device(torch.device("mps"))
    with pytest.raises(ValueError, match="not available"):
        device.select_device("rocm")
    with pytest.raises(ValueError, match="not a device name"):
        device.select_device("gpu-please")


@pytest.mark.parametrize(
    "backends, expected",
    [
        ({"cuda": True, "mps": True}, ("cuda", "cuda")),
        ({"rocm": True, "mps": True}, ("cuda", "rocm")),
        ({"mps": True}, ("mps", "mps")),
        ({}, ("cpu", "cpu")),
    ],
)
def test_selection_order(fake, backends, expected):
    fake(**backends)
    info = device.select_device()
    assert (info.device.type, info.backend) == expected


def test_messages_with_simulated_backends(fake):
    fake(rocm=True, mps=True)
    assert device.supported_backends_message() == "CUDA: no, ROCm: yes, MPS: yes, CPU: yes"
    assert device.select_device("rocm") == DeviceInfo(torch.device("cuda"), "rocm")
    assert device.select_device("cuda:1").backend == "rocm"
    with pytest.raises(ValueError, match="does not exist: there are 2 ROCm devices"):
        device.select_device("cuda:2")
    fake(cuda=True)
    assert device.supported_backends_message() == "CUDA: yes, ROCm: no, MPS: no, CPU: yes"


def test_broken_driver_counts_as_unavailable(monkeypatch):
    def broken():
        raise RuntimeError("driver too old")

    monkeypatch.setattr(torch.cuda, "is_available", broken)
    assert device.select_device().backend == "cpu"


@pytest.fixture(scope="module")
def decay(diffsol_model_source):
    return dsp.DiffsolModule(diffsol_model_source("decay"), rtol=1e-10, atol=1e-12)


@pytest.mark.integration
def test_solve_dense_tensor_keeps_device_and_dtype(decay):
    times = torch.linspace(0, 1, 5, dtype=torch.float64)
    params = torch.tensor([0.7, 2.0], dtype=torch.float32)
    y = device.solve_dense_tensor(decay, params, times)
    assert y.device.type == "cpu" and y.dtype == torch.float32
    expected = 2.0 * np.exp(-0.7 * times.numpy())
    np.testing.assert_allclose(y[0].numpy(), expected, rtol=1e-6)
    y64 = device.solve_dense_tensor(decay, [0.7, 2.0], times, device="cpu")
    assert y64.dtype == torch.float64 and y64.device == torch.device("cpu")
    np.testing.assert_allclose(y64[0].numpy(), expected, rtol=1e-8)


@pytest.mark.integration
def test_solve_dense_tensor_from_source_and_bad_device(decay):
    y = device.solve_dense_tensor(decay.code, torch.tensor([0.7, 2.0], dtype=torch.float64), [0.0, 1.0])
    np.testing.assert_allclose(y[0].numpy(), [2.0, 2.0 * np.exp(-0.7)], rtol=1e-5)
    with pytest.raises(ValueError, match="not available"):
        device.solve_dense_tensor(decay, [0.7, 2.0], [0.0, 1.0], device="cuda")
