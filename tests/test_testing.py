"""testing.memory_drift and the exception classes of diffsol_pytorch.testing."""

import numpy as np
import pytest

from diffsol_pytorch import testing

pytestmark = [pytest.mark.unit, pytest.mark.memory]

MB = 1024 * 1024


def test_exception_classes_are_assertion_errors():
    assert issubclass(testing.MemoryDriftError, AssertionError)
    assert issubclass(testing.GradientCheckError, AssertionError)


def test_holding_50_mb_raises_with_the_numbers():
    kept = []
    with pytest.raises(testing.MemoryDriftError) as info:
        with testing.memory_drift(limit_mb=5.0) as probe:
            kept.append(np.ones(50 * MB // 8))  # written, so resident
    err = info.value
    assert 45.0 < err.growth_mb < 80.0
    assert err.limit_mb == 5.0
    assert err.rss_after_mb - err.rss_before_mb == pytest.approx(err.growth_mb)
    assert probe.growth_mb == pytest.approx(err.growth_mb)
    assert "MiB" in str(err) and "limit of 5 MiB" in str(err)
    kept.clear()


def test_allocating_and_freeing_does_not_raise():
    with testing.memory_drift(limit_mb=5.0) as probe:
        assert probe.rss_after_mb is None and probe.growth_mb is None
        for _ in range(5):
            block = np.ones(50 * MB // 8)
            block += 1.0
            del block
        chunks = [bytes(1000) + bytes([i % 256]) for i in range(20000)]  # many small objects
        del chunks
    assert probe.rss_after_mb is not None
    assert probe.growth_mb < 5.0
    assert "growth_mb" in repr(probe)


def test_warmup_allocations_are_not_counted():
    cache = []
    with testing.memory_drift(limit_mb=5.0, warmup=lambda: cache.append(np.ones(30 * MB // 8))):
        assert len(cache) == 1  # ran before the body
    cache.clear()


def test_exception_in_body_propagates_unchanged():
    kept = []
    with pytest.raises(KeyError):
        with testing.memory_drift(limit_mb=0.0):
            kept.append(np.ones(20 * MB // 8))
            raise KeyError("boom")
    kept.clear()


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="limit_mb"):
        testing.memory_drift(limit_mb=-1)
    with pytest.raises(TypeError, match="warmup"):
        testing.memory_drift(warmup=3)


def test_check_gradients_passes_and_reports():
    import diffsol_pytorch as dsp
    from conftest import model_source
    from diffsol_pytorch import testing

    m = dsp.DiffsolModule(model_source("logistic"), rtol=1e-11, atol=1e-13)
    report = testing.check_gradients(m, [1.5, 20.0], [0.0, 1.0, 2.0, 4.0])
    assert set(report.modes) == {"reverse", "forward"}
    assert report.names == ("r", "cap") and max(report.rel_errors["reverse"]) < 1e-4
    # a loss returning a scalar tensor: autograd gives dloss/dy
    r2 = testing.check_gradients(m, [1.5, 20.0], [0.0, 2.0], lambda y: (y**2).sum(),
                                 modes=("reverse",))
    assert "reverse" in r2.table()


def test_check_gradients_catches_a_broken_gradient(monkeypatch):
    import numpy as np

    import diffsol_pytorch as dsp
    from conftest import model_source
    from diffsol_pytorch import testing

    m = dsp.DiffsolModule(model_source("logistic"), rtol=1e-11, atol=1e-13)
    real = m._solver.reverse

    def broken(p, t, g, budget=0.0):  # a deliberately wrong adjoint: 1% off in the first
        out = np.array(real(p, t, g, budget))  # parameter
        out[0] *= 1.01
        return out

    monkeypatch.setattr(m, "_solver", _Proxy(m._solver, reverse=broken))
    with pytest.raises(testing.GradientCheckError) as info:
        testing.check_gradients(m, [1.5, 20.0], [0.0, 1.0, 2.0], modes=("reverse", "forward"))
    msg = str(info.value)
    assert "reverse" in msg.splitlines()[0] and "forward" not in msg.splitlines()[0]
    assert "parameter" in msg and "r" in msg and "cap" in msg


class _Proxy:
    """The module's solver with one method replaced."""

    def __init__(self, inner, **overrides):
        self._inner, self._overrides = inner, overrides

    def __getattr__(self, name):
        return self._overrides.get(name) or getattr(self._inner, name)
