"""A Checkpoint belongs to its own forward pass: after any other solve on the module
(including reverse_mode, which leaves checkpoints of its own) backward raises."""

from __future__ import annotations

import pytest
import torch

import diffsol_pytorch as dsp

DECAY = "in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n"


@pytest.mark.integration
@pytest.mark.gradient
@pytest.mark.parametrize("other", ["reverse_mode", "solve_dense", "forward_mode", "checkpointed"])
def test_stale_checkpoint_is_refused(other):
    m = dsp.DiffsolModule(DECAY, rtol=1e-10, atol=1e-12)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    g = torch.ones(1, 5, dtype=torch.float64)
    y, ckpt = m.solve_dense_with_checkpointing([0.7, 2.0], t)
    first = ckpt.backward(g)
    # closed form: d/dk sum a0 e^{-k t} = sum -t a0 e^{-k t}, d/da0 = sum e^{-k t}
    want = torch.stack([(-t * 2.0 * torch.exp(-0.7 * t)).sum(), torch.exp(-0.7 * t).sum()])
    assert torch.allclose(first, want, rtol=1e-7)
    assert torch.equal(ckpt.backward(g), first)           # repeatable
    other_p = [1.5, 3.0]
    if other == "reverse_mode":
        m.reverse_mode(other_p, t, g)
    elif other == "solve_dense":
        m.solve_dense(other_p, t)
    elif other == "forward_mode":
        m.forward_mode(other_p, t)
    else:
        m.solve_dense_with_checkpointing(other_p, t)
    with pytest.raises(ValueError, match="solved again"):
        ckpt.backward(g)
