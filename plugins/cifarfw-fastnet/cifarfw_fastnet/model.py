"""FastNet: a small VGG-style CIFAR-10 network built to train to high accuracy quickly.

The ideas follow the published fast CIFAR-10 trainers (David Page's "How to train your
ResNet" series and Keller Jordan's airbench); the code is ours. Everything here lives in
the model, so the stock torch trainer trains it unchanged:

* A frozen **patch-whitening** first layer: a 2x2 convolution whose filters are the
  eigenvectors of the covariance of 2x2 input patches, scaled by 1/sqrt(eigenvalue), in
  both signs (24 channels), followed by the activation. The model has no access to the
  data when it is built, so the filters are computed from the first training batch it
  sees (data-dependent initialisation); a buffer records that it happened, so checkpoints
  carry it.
* Three blocks ``conv3x3 -> maxpool2 -> BN -> act -> conv3x3 -> BN -> act``
  (31 -> 15 -> 7 -> 3 pixels), then a 3x3 max-pool, a bias-free linear layer and a fixed
  logit scale of 1/9.
* **Identity (Dirac) initialisation** of every 3x3 convolution's first ``in_channels``
  filters: each block starts close to passing its input through (an implicit residual).
* Batch norms without a trainable scale, with fast running statistics (momentum 0.4) and a
  **faster-learning bias**: the bias is stored divided by ``sqrt(bias_lr_scale)`` and
  multiplied back in the forward pass, which under SGD multiplies its effective learning
  rate by ``bias_lr_scale`` while leaving its weight-decay rate unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues before the 1/sqrt
WHITEN_MAX_IMAGES = 512  # images of the first batch used for the patch statistics
LOGIT_SCALE = 1 / 9
BN_MOMENTUM = 0.4  # PyTorch's convention: the weight of the newest batch's statistics
BN_EPS = 1e-12
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class ShiftBatchNorm(nn.BatchNorm2d):
    """Batch norm with the scale fixed at 1 and a bias learning ``lr_scale`` times faster (SGD).

    The stored parameter ``bias`` is the effective bias divided by ``sqrt(lr_scale)``.
    """

    def __init__(self, channels: int, lr_scale: float = 1.0) -> None:
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.weight.requires_grad_(False)
        self.bias_multiplier = math.sqrt(lr_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias * self.bias_multiplier,
            self.training,
            self.momentum,
            self.eps,
        )


def dirac_conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    """A bias-free 3x3 'same' convolution whose first ``channels_in`` filters start as identities."""
    conv = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(channels_in, channels_out)])
    return conv


class ConvBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, activation: str, bias_lr_scale: float) -> None:
        super().__init__()
        self.conv1 = dirac_conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = ShiftBatchNorm(channels_out, bias_lr_scale)
        self.conv2 = dirac_conv(channels_out, channels_out)
        self.norm2 = ShiftBatchNorm(channels_out, bias_lr_scale)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """The network; ``widths`` are the channels of the three blocks."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (64, 256, 256),
        activation: str = "gelu",
        whiten: bool = True,
        bias_lr_scale: float = 64.0,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be three positive integers, got {tuple(widths)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        stem = 2 * 3 * WHITEN_KERNEL**2
        self.whiten = nn.Conv2d(3, stem, WHITEN_KERNEL, padding=0, bias=True)
        nn.init.zeros_(self.whiten.bias)
        self.uses_whitening = whiten
        if whiten:
            self.whiten.weight.requires_grad_(False)
        # Set once the whitening filters hold real patch statistics (saved with checkpoints).
        self.register_buffer("whitening_ready", torch.tensor(not whiten))
        self._ready_seen = not whiten  # a host-side copy, so training steps never sync on the buffer
        self.act = ACTIVATIONS[activation]()
        w1, w2, w3 = (int(w) for w in widths)
        self.blocks = nn.Sequential(
            ConvBlock(stem, w1, activation, bias_lr_scale),
            ConvBlock(w1, w2, activation, bias_lr_scale),
            ConvBlock(w2, w3, activation, bias_lr_scale),
        )
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(w3, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._ready_seen:
            self._maybe_init_whitening(x)
        x = self.act(self.whiten(x))
        x = self.pool(self.blocks(x))
        return self.head(torch.flatten(x, 1)) * LOGIT_SCALE

    def _maybe_init_whitening(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if bool(self.whitening_ready):  # e.g. restored from a checkpoint
            self._ready_seen = True
            return
        if x.shape[0] < 2:
            return  # one image says too little about patch statistics
        self.init_whitening(x[:WHITEN_MAX_IMAGES])

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the whitening filters from the 2x2 patches of ``images`` (normalised, N,3,H,W)."""
        k = WHITEN_KERNEL
        with torch.autocast(images.device.type, enabled=False):
            patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
            covariance = patches.T @ patches / patches.shape[0]
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
            filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + WHITEN_EPS)[:, None]).flip(0)
            filters = filters.reshape(3 * k * k, 3, k, k)
            self.whiten.weight.copy_(torch.cat((filters, -filters)))
        self.whitening_ready.fill_(True)
        self._ready_seen = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready_seen = bool(self.whitening_ready)  # a checkpoint decides whether to whiten again


def parse_widths(text: str) -> tuple[int, int, int]:
    """``"64,256,256"`` -> ``(64, 256, 256)``; ValueError for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        widths = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"widths must be three comma-separated integers, got {text!r}") from None
    if len(widths) != 3 or any(w < 1 for w in widths):
        raise ValueError(f"widths must be three comma-separated positive integers, got {text!r}")
    return widths  # type: ignore[return-value]
