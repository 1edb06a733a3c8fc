"""The batch pipeline: a split held as one tensor on the device, augmented a batch at a time.

Each image is stored as packed pixels: RGB plus a zero byte in one int32, (N, H, W). A
random crop (zero padding ``P``) and a horizontal flip then become ONE ``index_select``
of 32-bit pixels with per-image offsets (no per-image Python, no PIL); padding pixels
are masked to zero. Brightness (a factor in [1-b, 1+b] per image, clipped at white),
normalisation with the model's mean/std and the resize to ``model.input_size``
(bilinear, no antialiasing) follow as whole-batch float ops (evaluation batches asked
for in 16 bits resize the uint8 pixels first: see :meth:`BatchPipeline.eval_batch`).
The result is NCHW in channels_last memory (NHWC storage) unless the run turned
channels_last off.

Randomness comes from an explicit generator (see :func:`draw_epoch`), seeded per epoch
from (seed, epoch), so a resumed run sees the same batches.

What a fit trains on is a :class:`BatchSource`, chosen once when the fit starts:
:class:`LivePipeline` (these augmented batches through the whole model) or
:class:`cifarfw_torch.features.FeatureCache` (a frozen prefix's outputs, computed once,
through the head). The trainer's loop is the same for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarfw.config import Augment
from cifarfw_torch.runtime import epoch_generator

if TYPE_CHECKING:
    from cifarfw.runs import Run
    from cifarfw_torch.distributed import Group
    from cifarfw_torch.runtime import Runtime

Batch = tuple[int, torch.Tensor, torch.Tensor, int]  # (step, inputs, labels, global batch size)


@dataclass
class DeviceSplit:
    """One split on the training device: packed int32 pixels (N, H, W) and int64 labels."""

    pixels: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: np.ndarray, device: torch.device) -> DeviceSplit:
        """``images`` uint8 (N, H, W, 3). On CUDA the copy goes through pinned memory."""
        rgb = torch.from_numpy(np.ascontiguousarray(images))
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"expected RGB images (N, H, W, 3), got {tuple(rgb.shape)}")
        packed = F.pad(rgb, (0, 1)).view(torch.int32).squeeze(-1)  # (N, H, W), bytes R G B 0
        label_tensor = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        if device.type == "cuda":
            packed = packed.pin_memory().to(device, non_blocking=True)
            label_tensor = label_tensor.pin_memory().to(device, non_blocking=True)
        return cls(packed, label_tensor)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[2]


@dataclass
class EpochDraw:
    """One epoch's randomness, one entry per position in ``order``, on the device."""

    order: torch.Tensor  # a permutation of the split
    dy: torch.Tensor  # crop offsets in [-P, P] (0 = centred)
    dx: torch.Tensor
    flip: torch.Tensor  # bool
    brightness: torch.Tensor  # factors in [1-b, 1+b]

    def batch(self, start: int, stop: int) -> EpochDraw:
        """The draw of positions ``start:stop`` (one batch)."""
        return EpochDraw(*(getattr(self, f.name)[start:stop] for f in fields(self)))


def draw_epoch(n: int, augment: Augment, generator: torch.Generator, device: torch.device) -> EpochDraw:
    """Shuffle and per-image augmentation parameters for an epoch of ``n`` images, drawn on
    the CPU from ``generator`` (so CPU and CUDA runs draw the same numbers)."""
    pad = int(augment.crop_padding)
    order = torch.randperm(n, generator=generator)
    dy = torch.randint(-pad, pad + 1, (n,), generator=generator)
    dx = torch.randint(-pad, pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if augment.flip else torch.zeros(n, dtype=torch.bool)
    b = float(augment.brightness)
    brightness = 1 + b * (2 * torch.rand(n, generator=generator) - 1) if b > 0 else torch.ones(n)
    tensors = (order, dy, dx, flip, brightness.clamp_(min=0))
    return EpochDraw(*(t.to(device, non_blocking=True) for t in tensors))


class BatchPipeline:
    """Turns indices into model-ready float batches: augmented (training) or plain (evaluation)."""

    def __init__(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        input_size: int,
        augment: Augment,
        device: torch.device,
        channels_last: bool = True,
    ) -> None:
        self.input_size = int(input_size)
        self.augment = augment
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        std_t = torch.tensor(std, dtype=torch.float32, device=device)
        # x_norm = (x / 255 - mean) / std = x * scale - shift, per channel
        self.scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1)
        self.shift = (torch.tensor(mean, dtype=torch.float32, device=device) / std_t).view(1, 3, 1, 1)
        self._positions: dict[int, torch.Tensor] = {}
        self._affine_rows: dict[tuple[int, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def _arange(self, size: int, device: torch.device) -> torch.Tensor:
        if size not in self._positions:
            self._positions[size] = torch.arange(size, device=device)
        return self._positions[size]

    def train_batch(self, split: DeviceSplit, draw: EpochDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented batch ``draw.order`` (a slice of an epoch's draw) and its labels."""
        index = draw.order
        height, width = split.image_size
        rows = draw.dy[:, None] + self._arange(height, index.device)  # (B, H) source rows
        cols = draw.dx[:, None] + self._arange(width, index.device)  # (B, W) source columns
        cols = torch.where(draw.flip[:, None], width - 1 - cols, cols)
        flat = (index * (height * width))[:, None, None] + (
            rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
        )
        pixels = split.pixels.view(-1).index_select(0, flat.view(-1)).view(len(index), height, width)
        if self.augment.crop_padding > 0:  # positions in the zero padding
            inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
            pixels = pixels.masked_fill_(~inside, 0)
        x = _planes(pixels)
        if self.augment.brightness > 0:  # ColorJitter's brightness: scale, then clip at white
            x = x.mul_(draw.brightness[:, None, None, None]).clamp_(max=255.0)
        return self._finish(x), split.labels[index]

    def eval_batch(
        self, split: DeviceSplit, index: torch.Tensor, flip: bool = False, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Images ``index`` normalised and resized, no augmentation (``flip`` mirrors all).

        ``dtype`` (default float32) is the result's. With a 16-bit one (the feature cache
        asks for autocast's dtype: autocast would round the model's input to it anyway) an
        upscale on the CPU resizes the uint8 pixels and normalises afterwards, in that
        dtype: 0.2 instead of 0.8 ms per 224-pixel image on the 2-core machine, where the
        float path had been a fifth of AlexNet's cache build (AlexNet now folds the resize
        into its first layer instead: ``cifarfw_native_prefix``, :mod:`.features`). The
        price is rounding: resized pixels are whole gray levels and the normalisation
        rounds to 16 bits (together 0.6 gray levels rms in bf16, against 0.15 for the float
        path), so AlexNet's frozen features differed from an all-fp32 pass by 0.7% (rms,
        relative) instead of 0.4%: far below the noise of the JPEG-75 copy of CIFAR-10.
        """
        pixels = split.pixels[index]
        if dtype in (torch.bfloat16, torch.float16) and pixels.device.type == "cpu" and self._resizes(split):
            return self._finish_uint8(pixels, flip, dtype)
        x = _planes(pixels)
        return self._finish(x.flip(3) if flip else x, dtype)

    def _resizes(self, split: DeviceSplit) -> bool:
        return split.image_size != (self.input_size, self.input_size)

    def _finish_uint8(self, pixels: torch.Tensor, flip: bool, dtype: torch.dtype) -> torch.Tensor:
        """Packed pixels -> resized, normalised ``dtype`` batch, resizing the uint8 planes
        (torch's vectorised uint8 bilinear kernel for channels_last on the CPU)."""
        x = pixels.view(torch.uint8).unflatten(-1, (-1, 4)).permute(0, 3, 1, 2)[:, :3]
        x = (x.flip(3) if flip else x).contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self._normalise_(x.to(dtype)).contiguous(memory_format=self.memory_format)

    def _normalise_(self, x: torch.Tensor) -> torch.Tensor:
        """``x * scale - shift`` per channel, in place, in ``x``'s dtype.

        On NHWC storage a (1, 3, 1, 1) broadcast runs an inner loop three values wide
        (0.6 ms per 224-pixel image here); viewed as rows of W*3 values multiplied by a row
        of repeated factors, the same arithmetic vectorises (0.05 ms).
        """
        if not x.is_contiguous(memory_format=torch.channels_last) or x.shape[1] != 3:
            return x.mul_(self.scale.to(x.dtype)).sub_(self.shift.to(x.dtype))
        batch, channels, height, width = x.shape
        key = (width, x.dtype)
        if key not in self._affine_rows:
            self._affine_rows[key] = tuple(t.to(x.dtype).view(3).repeat(width) for t in (self.scale, self.shift))
        scale_row, shift_row = self._affine_rows[key]
        x.permute(0, 2, 3, 1).view(batch, height, width * channels).mul_(scale_row).sub_(shift_row)
        return x

    def _finish(self, planes: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Normalise float NCHW pixels (0-255), resize to the model's input size, set the layout."""
        x = self._normalise_(planes)
        if dtype is not None:
            x = x.to(dtype)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x.contiguous(memory_format=self.memory_format)


def _planes(pixels: torch.Tensor) -> torch.Tensor:
    """Packed int32 pixels (B, H, W) -> float (B, 3, H, W), contiguous, values 0-255."""
    return pixels.view(torch.uint8).unflatten(-1, (-1, 4)).permute(0, 3, 1, 2)[:, :3].float()


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches of an epoch: the last, partial batch is kept unless it holds a single image
    per process (batch norm cannot train on one)."""
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if rest >= 2 * world_size else 0))


class BatchSource(Protocol):
    """Where a fit's training batches and evaluation inputs come from.

    ``trained`` is the module the optimizer trains, called on every training batch;
    ``evaluated``, when not None, is called on the evaluation inputs instead of it.
    """

    trained: nn.Module
    evaluated: nn.Module | None
    train: DeviceSplit
    test: DeviceSplit
    steps: int  # training steps per epoch

    def describe(self) -> dict[str, Any]:
        """Entries for run.json's ``resolved``."""
        ...

    def prepare(self) -> float:
        """Work done once before training (a cache build); returns its seconds."""
        ...

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """Epoch ``epoch``'s batches, this process's block of each global batch."""
        ...

    def eval_batches(self, first: int, last: int) -> Iterator[tuple[torch.Tensor, Iterator[torch.Tensor]]]:
        """``(index, views)`` for test images ``first:last`` in batches: the inputs of the
        image and, under test-time augmentation, of its mirror (made as they are used)."""
        ...

    def extra(self) -> dict[str, Any]:
        """Entries for the run result's ``extra``."""
        ...


class LivePipeline:
    """Both splits on the device and a :class:`BatchPipeline`: augmented batches for the whole model."""

    def __init__(self, model: nn.Module, run: Run, runtime: Runtime, group: Group) -> None:
        config, spec, dataset = run.config, run.model, run.dataset
        self.trained: nn.Module = model
        self.evaluated: nn.Module | None = None
        self.train = DeviceSplit.from_numpy(dataset.train.images, dataset.train.labels, runtime.device)
        self.test = DeviceSplit.from_numpy(dataset.test.images, dataset.test.labels, runtime.device)
        self.pipeline = BatchPipeline(
            spec.mean, spec.std, spec.input_size, config.augment, runtime.device, runtime.channels_last
        )
        self.augment = config.augment  # what an epoch's draw covers
        self.seed, self.batch_size, self.tta = config.seed, config.batch_size, config.tta
        self.device, self.group = runtime.device, group
        self.steps = steps_per_epoch(len(self.train), config.batch_size, group.world_size)
        self.eval_size = 512 if spec.input_size <= 64 else 128

    def describe(self) -> dict[str, Any]:
        return {}

    def prepare(self) -> float:
        return 0.0

    def extra(self) -> dict[str, Any]:
        return {}

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        draw = draw_epoch(len(self.train), self.augment, epoch_generator(self.seed, epoch), self.device)
        return self._steps(draw)

    def _steps(self, draw: EpochDraw) -> Iterator[Batch]:
        n, size = len(self.train), self.batch_size
        for step in range(1, self.steps + 1):
            start, stop = (step - 1) * size, min(n, step * size)
            x, y = self._batch(draw.batch(*self.group.shard(start, stop)))
            yield step, x, y, stop - start

    def _batch(self, draw: EpochDraw) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pipeline.train_batch(self.train, draw)

    def eval_batches(self, first: int, last: int) -> Iterator[tuple[torch.Tensor, Iterator[torch.Tensor]]]:
        flips = (False, True) if self.tta else (False,)
        for start in range(first, last, self.eval_size):
            index = torch.arange(start, min(last, start + self.eval_size), device=self.device)
            yield index, self._views(index, flips)

    def _views(self, index: torch.Tensor, flips: tuple[bool, ...]) -> Iterator[torch.Tensor]:
        for flip in flips:
            yield self._eval_inputs(index, flip)

    def _eval_inputs(self, index: torch.Tensor, flip: bool) -> torch.Tensor:
        return self.pipeline.eval_batch(self.test, index, flip=flip)
