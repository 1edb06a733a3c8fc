"""cifarfw_torch.layers: drop-in layers that compute what torch's do, faster on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarfw_torch.layers import UpscaledConv2d


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


@pytest.mark.parametrize(
    ("in_channels", "kernel", "stride", "padding", "size_in", "size_out"),
    [
        (3, 11, 4, 2, 32, 224),  # AlexNet's first layer on CIFAR-10 (period 7)
        (3, 3, 1, 1, 32, 64),  # period 2
        (3, 5, 2, 2, 16, 40),  # period 5
        (2, 3, 2, 0, 8, 24),  # no padding
    ],
)
def test_upscaled_conv_is_the_conv_of_the_resized_image(in_channels, kernel, stride, padding, size_in, size_out):
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, 6, kernel, stride=stride, padding=padding).double().requires_grad_(False)
    folded = UpscaledConv2d.from_conv(conv, size_in, size_out)
    assert folded is not None and len(folded.state_dict()) == 0  # derived buffers only
    x = torch.randn(3, in_channels, size_in, size_in, dtype=torch.float64)
    expected = conv(F.interpolate(x, size=size_out, mode="bilinear", align_corners=False))
    out = folded(x)
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)  # float32 kernels
    assert folded.edge_positions.numel() < expected.shape[-1] ** 2 // 2  # most outputs are the strided phases


def test_upscaled_conv_under_bf16_is_as_close_as_the_resize_path():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 11, stride=4, padding=2).requires_grad_(False)
    folded = UpscaledConv2d.from_conv(conv, 32, 224)
    x = torch.randn(4, 3, 32, 32)
    exact = conv.double()(F.interpolate(x.double(), size=224, mode="bilinear", align_corners=False))
    conv.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        resized = conv(F.interpolate(x, size=224, mode="bilinear", align_corners=False).bfloat16())
        out = folded(x.bfloat16())
        from_float = folded(x)  # float32 images under autocast, as a plain Conv2d takes them
    assert out.dtype == torch.bfloat16 and from_float.dtype == torch.bfloat16
    assert torch.equal(from_float, out)
    error = lambda y: float((y.double() - exact).norm() / exact.norm())  # noqa: E731
    assert error(out) < max(2 * error(resized), 0.01)


def test_upscaled_conv_only_for_frozen_plain_convolutions():
    assert UpscaledConv2d.from_conv(nn.Conv2d(3, 4, 3), 8, 16) is None  # trains: its folded kernels would go stale
    frozen = lambda **kw: nn.Conv2d(3, 6, 3, **kw).requires_grad_(False)  # noqa: E731
    assert UpscaledConv2d.from_conv(frozen(), 16, 8) is None  # a downscale
    assert UpscaledConv2d.from_conv(frozen(dilation=2), 8, 16) is None
    assert UpscaledConv2d.from_conv(frozen(groups=3, padding=1), 8, 16) is None
    assert UpscaledConv2d.from_conv(frozen(padding=1, padding_mode="reflect"), 8, 16) is None
    assert UpscaledConv2d.from_conv(frozen(padding=1), 8, 16) is not None
