"""Drop-in layers that compute the same thing as torch's, faster on a CPU.

Model plugins may use them; each behaves exactly like the torch layer it subclasses,
except where its docstring says otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_BITS_PER_DRAW = 63  # random bits in one int64 draw from [0, 2**63 - 1)


class UniformDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same ``1 / (1 - p)`` scaling, identity in eval mode)
    with a cheaper mask on CPUs, from torch's generator as ever.

    ``bernoulli_`` costs about 11 ns per value on the 2-core machine: 1.5 ms of a 64x2048
    batch, 6.5 ms of AlexNet's 64x9216, a visible share of a small model's training step.
    For ``p = 0.5`` (the usual value) each mask value is one bit of 63-bit random integers
    (about 0.3 ms for 64x9216); for other ``p`` it is ``rand_like(x) >= p`` (about 2 ms).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        return x * keep_mask(x, self.p) * (1.0 / (1.0 - self.p))


_SHIFTS: dict[torch.device, torch.Tensor] = {}


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A bool tensor like ``x``, each value True with probability ``1 - p``, independently."""
    if p != 0.5:
        return torch.rand_like(x) >= p
    shifts = _SHIFTS.get(x.device)
    if shifts is None:
        shifts = _SHIFTS[x.device] = torch.arange(_BITS_PER_DRAW, dtype=torch.int64, device=x.device)
    n = x.numel()
    draws = torch.randint(0, 2**63 - 1, (-(-n // _BITS_PER_DRAW), 1), dtype=torch.int64, device=x.device)
    return ((draws >> shifts) & 1).bool().view(-1)[:n].view(x.shape)


def _linear_resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64: torch's 1-D linear resize (align_corners=False, no antialias).

    Bilinear resizing is this matrix applied along rows and along columns; it is made by
    resizing the unit vectors, so it is torch's own arithmetic (edge clamping included).
    """
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]  # n_in signals, one channel each
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T


class UpscaledConv2d(nn.Module):
    """A frozen ``conv(F.interpolate(x, size_out, mode="bilinear"))`` computed on the small ``x``.

    Upscaling is linear, so a convolution of the upscaled image is a convolution of the
    small image with kernels that depend on the output position only through its phase:
    AlexNet's first layer (11x11, stride 4, padding 2) on CIFAR-10 upscaled 32 -> 224
    repeats every 7 outputs, which move 4 source pixels, so each of the 7x7 phases is a
    4x4 convolution of stride 4 over the 32x32 image. The few outputs near the borders,
    where the resize clamps and the convolution's zero padding breaks the pattern, get a
    folded kernel each. Same function to float rounding (float64 tests agree to 1e-6
    with float32 kernels), a seventh of the multiply-adds of the 11x11 convolution of the
    224-pixel image, and no 224-pixel image: about 0.55 instead of 0.8 ms per image
    (resize plus convolution) on the 2-core machine under bf16.

    The kernels are folded from the convolution's weights when this module is built, so it
    is for frozen layers only: ``from_conv`` returns ``None`` when the layer trains, has a
    shape this does not handle or shows no period, and the caller then resizes as before.
    """

    def __init__(self, plan: dict[str, Any]) -> None:
        super().__init__()
        self.n_out, self.period, self.source_step = plan["n_out"], plan["period"], plan["step"]
        self.pad_lo, self.pad_hi, self.phase_starts = plan["pad_lo"], plan["pad_hi"], plan["phase_starts"]
        # Derived from the conv's weights and never trained: buffers outside the state dict.
        self.register_buffer("phase_weight", plan["phase_weight"].float(), persistent=False)  # (q, q, O, C, w, w)
        self.register_buffer("bias", plan["bias"].float(), persistent=False)
        self.register_buffer("edge_index", plan["edge_index"], persistent=False)  # (E, C*w*w) into x.flatten(1)
        self.register_buffer("edge_weight", plan["edge_weight"].float(), persistent=False)  # (E, C*w*w, O)
        self.register_buffer("edge_positions", plan["edge_positions"], persistent=False)  # (E,) into n_out**2

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, size_in: int, size_out: int) -> UpscaledConv2d | None:
        """The folded equivalent of ``conv`` after a bilinear upscale ``size_in -> size_out``, or None."""
        if any(p.requires_grad for p in conv.parameters()) or size_out <= size_in:
            return None
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        if not isinstance(p, int) or conv.kernel_size != (k, k) or conv.stride != (s, s) or conv.padding != (p, p):
            return None
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            return None
        plan = _fold_plan(conv, size_in, size_out)
        return None if plan is None else cls(plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            # Autocast would run the convolutions in its dtype but not the border's index_put:
            # one dtype throughout, as a plain Conv2d under autocast would give.
            x = x.to(torch.get_autocast_dtype(x.device.type))
        n, q, dtype = x.shape[0], self.period, x.dtype
        weight, bias = self.phase_weight.to(dtype), self.bias.to(dtype)
        padded = F.pad(x, (self.pad_lo, self.pad_hi, self.pad_lo, self.pad_hi))
        out = torch.empty(
            (n, weight.shape[2], self.n_out, self.n_out),
            dtype=dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        for fi, row in enumerate(self.phase_starts):
            rows = len(range(fi, self.n_out, q))
            for fj, col in enumerate(self.phase_starts):
                cols = len(range(fj, self.n_out, q))
                phase = F.conv2d(padded[:, :, row:, col:], weight[fi, fj], bias, stride=self.source_step)
                out[:, :, fi::q, fj::q] = phase[:, :, :rows, :cols]
        # The border outputs: a kernel each, on the source pixels it reads.
        patches = x.flatten(1)[:, self.edge_index.view(-1)].view(n, *self.edge_index.shape).transpose(0, 1)
        edges = torch.baddbmm(bias, patches, self.edge_weight.to(dtype))  # (E, N, O)
        out.permute(0, 2, 3, 1).view(n, self.n_out * self.n_out, -1)[:, self.edge_positions] = edges.transpose(0, 1)
        return out


def _fold_plan(conv: nn.Conv2d, size_in: int, size_out: int) -> dict[str, Any] | None:
    """The folded kernels of :class:`UpscaledConv2d`; None when the outputs show no period."""
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    resize = _linear_resize_matrix(size_in, size_out)
    zeros = torch.zeros(p, size_in, dtype=torch.float64)
    padded = torch.cat([zeros, resize, zeros])  # the conv's zero padding as rows of zeros
    n_out = (size_out + 2 * p - k) // s + 1
    rows = torch.stack([padded[s * i : s * i + k] for i in range(n_out)])  # (n_out, k, size_in): output row i
    used = rows.abs().sum(1) > 0
    first = used.double().argmax(1).long()
    last = size_in - 1 - used.flip(1).double().argmax(1).long()
    width = int((last - first + 1).max())
    start = first.clamp(max=size_in - width)  # each output's window of `width` source pixels
    window = torch.stack([rows[i, :, start[i] : start[i] + width] for i in range(n_out)])  # (n_out, k, width)
    # The period q: outputs i and i + q read the same weights `step` source pixels further on.
    middle = n_out // 2
    for q in range(1, middle):
        if (s * q * size_in) % size_out:
            continue
        step = s * q * size_in // size_out
        base = middle - middle % q  # phases counted from a multiple of q in the middle
        regular = torch.zeros(n_out, dtype=torch.bool)
        for i in range(n_out):
            j = base + i % q
            shift = (i - j) // q * step
            moved = int(start[j]) + shift  # where output i's window would start
            inside = 0 <= moved <= size_in - width
            regular[i] = inside and torch.allclose(rows[i], torch.roll(rows[j], shift, 1), rtol=0, atol=1e-12)
        if int(regular.sum()) >= middle:
            break
    else:
        return None
    weight = conv.weight.detach().double().cpu()
    out_ch, in_ch = weight.shape[:2]
    bias = conv.bias.detach().double().cpu() if conv.bias is not None else torch.zeros(out_ch, dtype=torch.float64)
    offset = [int(start[base + f]) - base // q * step for f in range(q)]  # output m*q + f reads from m*step + offset
    pad_lo = max(0, -min(offset))
    counts = [len(range(f, n_out, q)) for f in range(q)]
    pad_hi = max(0, max((c - 1) * step + o + width for c, o in zip(counts, offset, strict=True)) - size_in)
    phase_weight = torch.stack(
        [
            torch.stack(
                [torch.einsum("ocab,as,bt->ocst", weight, window[base + fi], window[base + fj]) for fj in range(q)]
            )
            for fi in range(q)
        ]
    )
    edge = [(i, j) for i in range(n_out) for j in range(n_out) if not (regular[i] and regular[j])]
    span = torch.arange(width)
    channel = torch.arange(in_ch)[:, None, None] * size_in * size_in
    edge_index = torch.stack(
        [(channel + (start[i] + span)[:, None] * size_in + (start[j] + span)[None, :]).flatten() for i, j in edge]
    )
    edge_weight = torch.stack(
        [torch.einsum("ocab,as,bt->csto", weight, window[i], window[j]).reshape(-1, out_ch) for i, j in edge]
    )
    device = conv.weight.device
    return {
        "n_out": n_out,
        "period": q,
        "step": step,
        "pad_lo": pad_lo,
        "pad_hi": pad_hi,
        "phase_starts": [o + pad_lo for o in offset],
        "phase_weight": phase_weight.to(device),
        "bias": bias.to(device),
        "edge_index": edge_index.to(device),
        "edge_weight": edge_weight.to(device),
        "edge_positions": torch.tensor([i * n_out + j for i, j in edge], dtype=torch.int64, device=device),
    }
