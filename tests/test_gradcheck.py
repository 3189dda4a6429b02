"""torch.autograd.gradcheck on every example model (examples/models/*.ds).

How the check is made honest and cheap:

* The parameters are checked through a scale ``s`` (``params = p0 * s`` at ``s = 1``):
  gradcheck's ``eps`` is an absolute step, and the models' parameters span 0.04 to 3e7
  (Robertson), so ``eps`` is a relative step of the parameters this way. The
  multiplication is plain torch; the derivative checked is still solve_dense's.
* Solver tolerances are tight (``rtol`` 1e-10 and ``atol`` 1e-10 times the
  scale of the states), on a short time grid. Adaptive step control makes
  the computed solution a slightly non-smooth function of the parameters,
  with jumps of the order of the tolerance; central differences with a
  relative step ``eps = 1e-4`` then carry about ``tol / eps ~ 1e-6`` of noise
  (relative to the outputs) and ``eps**2 ~ 1e-8`` of truncation error, so
  gradcheck's ``rtol`` is 1e-4 and its ``atol`` 1e-5 times the outputs'
  scale: three orders of magnitude above the expected error and well below
  the size of any wrong derivative term.
* Every check also runs forward-mode AD (``check_forward_ad``: the Function's
  ``jvp`` through forward sensitivities). ``check_batched_grad`` stays off: gradcheck
  batches with the legacy ``torch._vmap_internals`` vmap, which does not call an
  autograd Function's vmap rule; the torch.func vmapped backward pass (jacrev,
  vmap of grad) is checked in tests/test_func.py.
* heat1d has 50 outputs: gradcheck needs one backward pass per output
  element, so the check looks at every tenth output.
"""

from __future__ import annotations

import pytest
import torch

import diffsol_pytorch as dsp
from diffsol_pytorch import autograd
from conftest import MODELS, model_source

pytestmark = pytest.mark.gradient

# model -> (module options, times, output scale, outputs to check or None for all)
GRADCHECK = {
    "decay": (dict(atol=1e-10), [0.0, 0.5, 2.0], 1.0, None),
    "dosing": (dict(atol=1e-9), [0.0, 3.0, 5.0, 9.0], 5.0, None),
    "heat1d": (dict(atol=1e-10), [0.0, 0.005, 0.02], 1.0, slice(None, None, 10)),
    "logistic": (dict(atol=1e-10), [0.0, 1.0, 3.0], 1.0, None),
    "lotka_volterra": (dict(atol=1e-9), [0.0, 1.0, 3.0], 10.0, None),
    "robertson_dae": (dict(atol=1e-12), [0.0, 0.4, 4.0], 1.0, None),
    "robertson_ode": (dict(atol=1e-12), [0.0, 0.4, 4.0], 1.0, None),
    "vanderpol": (dict(atol=1e-10), [0.0, 50.0, 300.0], 2.0, None),  # slow drift: mu matters
}


def test_every_example_model_is_checked():
    assert sorted(GRADCHECK) == sorted(p.stem for p in MODELS.glob("*.ds"))


def _gradcheck(name: str, **kwargs) -> bool:
    opts, times, scale, outs = GRADCHECK[name]
    m = dsp.DiffsolModule(model_source(name), rtol=1e-10, **opts)
    times = torch.tensor(times, dtype=torch.float64)
    p0 = m.default_params

    def f(s):
        y = m.solve_dense(p0 * s, times)
        return y if outs is None else y[outs]

    s = torch.ones(m.nparams, dtype=torch.float64, requires_grad=True)
    return torch.autograd.gradcheck(f, (s,), eps=1e-4, atol=1e-5 * scale, rtol=1e-4, **kwargs)


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_gradcheck_example_model(name):
    assert _gradcheck(name, check_forward_ad=True)


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_gradcheck_catches_a_gradient_off_by_a_tenth_of_a_percent(name, monkeypatch):
    """The settings above are tight enough to fail on a slightly wrong gradient."""
    right = autograd._vjp_values
    monkeypatch.setattr(autograd, "_vjp_values", lambda *a: right(*a) * 1.001)
    assert not _gradcheck(name, raise_exception=False)


def test_gradcheck_batch():
    """The batched path (B = 3 rows on 2 threads; batched reverse pass)."""
    m = dsp.DiffsolModule(model_source("lotka_volterra"), rtol=1e-10, atol=1e-9, threads=2)
    times = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    p0 = m.default_params
    rows = torch.tensor([[1.0], [1.05], [0.95]], dtype=torch.float64)
    s = torch.ones(3, m.nparams, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: m.solve_dense(p0 * rows * s, times), (s,), eps=1e-4, atol=1e-4, rtol=1e-4,
        check_forward_ad=True,
    )
