"""cifarfw_torch.layers: drop-in layers that compute what torch's do, faster on a CPU."""

from __future__ import annotations

import pytest
import torch


def test_dropout_keeps_a_scaled_half_in_training_and_everything_in_eval():
    from cifarfw_torch.layers import UniformDropout

    torch.manual_seed(0)
    dropout = UniformDropout(0.5)
    x = torch.ones(200, 2048)
    y = dropout(x)
    kept = y != 0
    assert 0.49 < kept.float().mean().item() < 0.51
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0))  # survivors scaled by 1 / (1 - p)
    assert not torch.equal(dropout(x), y)  # a fresh mask per call
    dropout.eval()
    assert torch.equal(dropout(x), x)
    assert torch.equal(UniformDropout(1.0)(x), torch.zeros_like(x))


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_mask_values_are_independent_with_the_right_rate(p):
    from cifarfw_torch.layers import keep_mask

    torch.manual_seed(1)
    mask = keep_mask(torch.empty(400, 1000), p).float()
    assert abs(mask.mean().item() - (1 - p)) < 0.005
    # neighbours (same 63-bit draw) and values 63 apart (next draw, same bit) are uncorrelated
    flat = mask.view(-1) - mask.mean()
    for lag in (1, 62, 63):
        correlation = (flat[:-lag] * flat[lag:]).mean() / flat.square().mean()
        assert abs(correlation.item()) < 0.01, lag
    torch.manual_seed(1)
    assert torch.equal(keep_mask(torch.empty(400, 1000), p).float(), mask)  # torch's generator decides
