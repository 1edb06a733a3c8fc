"""The frozen-prefix feature cache.

Protocol (for model authors): a model may define

    def cifarfw_split(self) -> tuple[nn.Module, nn.Module] | None

returning ``(prefix, head)`` with ``model(x) == head(prefix(x))``, where the prefix has
no trainable parameter and is deterministic in eval mode (no dropout, no batch
statistics), or ``None`` when no such split exists (e.g. nothing is frozen). A model whose input is
an upscale of the stored images (AlexNet: CIFAR-10's 32 pixels to 224) may also define

    def cifarfw_native_prefix(self, native_size: int, input_size: int) -> nn.Module | None

returning a module equal to ``prefix(F.interpolate(x, input_size, mode="bilinear"))``
for normalised images ``x`` of ``native_size`` pixels (the resize folded into its first
layer, see :class:`cifarfw_torch.layers.UpscaledConv2d`), or ``None``; the cache then
feeds it the stored images unresized, and run.json's ``resolved.feature_cache.resize``
says ``"folded into the prefix"``.

With ``config.feature_cache`` on and such a split, the trainer runs the prefix once per
training image (eval mode, the run's precision, in chunks) and once more for its mirror
image when flips are on, stores the outputs compactly (bf16 under bf16, fp16 under
fp16, else fp32), and trains only the head on them: each epoch picks the plain or the
flipped entry per image at random. Random crops and brightness cannot be cached and are
dropped; run.json's ``resolved.feature_cache`` lists what was kept and dropped. Test
features are cached once too (plus their mirrors when test-time augmentation is on), and
where the head starts with frozen layers (see :func:`eval_split`) they go through those
once as well, so an evaluation runs only the trained layers; in training the trainer runs
those frozen layers outside autograd on several steps' batches at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cifarfw.config import Augment
from cifarfw.errors import PluginError
from cifarfw_torch.pipeline import Batch, BatchPipeline, DeviceSplit, EpochDraw, LivePipeline
from cifarfw_torch.runtime import Runtime

if TYPE_CHECKING:
    from cifarfw.runs import Run
    from cifarfw_torch.distributed import Group


def frozen_split(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The model's (prefix, head) when it offers a split whose prefix is fully frozen."""
    split_fn = getattr(model, "cifarfw_split", None)
    if not callable(split_fn):
        return None
    split = split_fn()
    if split is None:
        return None
    if not (isinstance(split, tuple) and len(split) == 2 and all(isinstance(m, nn.Module) for m in split)):
        raise PluginError(
            f"{type(model).__name__}.cifarfw_split() must return (prefix, head) modules or None, got {type(split).__name__}"
        )
    prefix, head = split
    if any(p.requires_grad for p in prefix.parameters()):
        return None  # its outputs would change as it trains
    return prefix, head


def native_prefix(model: nn.Module, native_size: int, input_size: int) -> nn.Module | None:
    """The model's prefix for unresized images, when it offers one and a resize is due."""
    native_fn = getattr(model, "cifarfw_native_prefix", None)
    if native_size == input_size or not callable(native_fn):
        return None
    prefix = native_fn(native_size, input_size)
    if prefix is not None and not isinstance(prefix, nn.Module):
        raise PluginError(
            f"{type(model).__name__}.cifarfw_native_prefix() must return a module or None, got {type(prefix).__name__}"
        )
    return prefix


# Layers that are deterministic in eval mode and keep no state that training changes
# (dropout is the identity there); batch norm is not among them: its statistics move.
_EVAL_STATELESS = (nn.Linear, nn.Dropout, nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Flatten, nn.Identity)


def eval_split(head: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(frozen, rest)`` with ``head(x) == rest(frozen(x))`` in eval mode, when the head is an
    ``nn.Sequential`` whose leading layers hold no trainable parameter (AlexNet's classifier:
    dropout, the frozen 9216→4096 layer, ReLU, dropout), at least one with weights; else None.

    Random in training (dropout), the frozen run is fixed in eval mode, so the test features
    can go through it once instead of at every evaluation.
    """
    if not isinstance(head, nn.Sequential):
        return None
    count = 0
    for layer in head:
        if not isinstance(layer, _EVAL_STATELESS) or any(p.requires_grad for p in layer.parameters()):
            break
        count += 1
    frozen = head[:count]
    if count == len(head) or not any(True for _ in frozen.parameters()):
        return None  # nothing left to train, or nothing worth computing ahead
    return frozen, head[count:]


@torch.inference_mode()
def apply(module: nn.Module, cached: torch.Tensor, runtime: Runtime, chunk: int) -> torch.Tensor:
    """``module`` (in eval mode, under the run's autocast) over every entry of a cache tensor
    ``(variants, N, ...)``, in chunks; stored in the cache's dtype."""
    was_training = module.training
    module.eval()
    try:
        parts = []
        for variant in cached:
            outputs = []
            for start in range(0, variant.shape[0], chunk):
                with runtime.autocast():
                    outputs.append(module(variant[start : start + chunk]).to(cached.dtype))
            parts.append(torch.cat(outputs))
    finally:
        module.train(was_training)
    return torch.stack(parts)


def cache_plan(augment: Augment) -> dict[str, list[str]]:
    """Which of the run's augmentations a cache keeps and which it drops."""
    kept = ["flip"] if augment.flip else []
    dropped = []
    if augment.crop_padding > 0:
        dropped.append("crop")
    if augment.brightness > 0:
        dropped.append("brightness")
    return {"kept": kept, "dropped": dropped}


class FeatureCache(LivePipeline):
    """A :class:`~cifarfw_torch.pipeline.BatchSource` that trains the head on the prefix's
    cached outputs: ``train_features`` and ``test_features`` are (variants, N, ...), variant
    0 the plain image, variant 1 (when present) its mirror. :meth:`prepare` computes them.

    With a head that starts with frozen layers (:func:`eval_split`), those run outside
    autograd: once per test image in :meth:`prepare`, and in training, in training mode
    (dropout live), on ``head_block`` steps' batches at once (see :meth:`_steps`).
    """

    def __init__(
        self,
        model: nn.Module,
        split: tuple[nn.Module, nn.Module],
        run: Run,
        runtime: Runtime,
        group: Group,
        head_block: int,
    ) -> None:
        super().__init__(model, run, runtime, group)
        self.model, self.runtime, self.spec = model, runtime, run.model
        self.prefix, head = split
        self.head_split = eval_split(head)
        self.trained = self.head_split[1] if self.head_split is not None else head
        self.evaluated = self.head_split[1] if self.head_split is not None else None
        self.head_block = head_block
        self.plan: dict[str, Any] = cache_plan(run.config.augment)
        self.augment = Augment(crop_padding=0, flip=run.config.augment.flip, brightness=0)  # what a cache keeps
        self.eval_size = 1024
        self.train_features = self.test_features = torch.zeros(0)
        self.seconds = 0.0

    def describe(self) -> dict[str, Any]:
        return {"feature_cache": self.plan}

    def prepare(self) -> float:
        """Run the prefix over every training and test image (and their mirrors as needed)."""
        prefix, pipeline, spec, runtime = self.prefix, self.pipeline, self.spec, self.runtime
        # Large inputs in small chunks: AlexNet's prefix ran 8% faster per image in chunks of
        # 64 than of 128 here (its activations then stay in the CPU's caches).
        chunk = 256 if spec.input_size <= 64 else 64
        started = time.perf_counter()
        height, width = self.train.image_size
        native = native_prefix(self.model, height, spec.input_size) if height == width else None
        if native is not None:  # the resize is folded into the prefix: feed it the stored images
            prefix = native
            pipeline = BatchPipeline(spec.mean, spec.std, height, self.augment, runtime.device, runtime.channels_last)
            self.plan["resize"] = "folded into the prefix"
        train_flips = (False, True) if self.augment.flip else (False,)
        test_flips = (False, True) if self.tta else (False,)
        self.train_features = compute(prefix, pipeline, self.train, train_flips, runtime, chunk)
        self.test_features = compute(prefix, pipeline, self.test, test_flips, runtime, chunk)
        if self.head_split is not None:  # evaluation: the head's frozen leading layers once per test image
            frozen = self.head_split[0]
            self.test_features = apply(frozen, self.test_features, runtime, chunk=1024)
            self.plan["test_through"] = [type(m).__name__ for m in frozen]
        self.seconds = time.perf_counter() - started
        return self.seconds

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.train_features, self.test_features))

    def extra(self) -> dict[str, Any]:
        return {"feature_cache_seconds": self.seconds, "feature_cache_bytes": self.nbytes}

    def _batch(self, draw: EpochDraw) -> tuple[torch.Tensor, torch.Tensor]:
        variant = draw.flip.long() if self.train_features.shape[0] > 1 else 0
        return self.train_features[variant, draw.order], self.train.labels[draw.order]

    def _steps(self, draw: EpochDraw) -> Iterator[Batch]:
        """The epoch's batches; a head's frozen layers run here, outside autograd, on blocks
        of ``head_block`` steps' batches: each image gets its own dropout masks as before, and
        the frozen matrix product runs at a fraction of the calls, where batch 64 leaves it
        short of the CPU's peak (13.3 ms for 64 rows of AlexNet's 9216→4096 layer, 11.4 ms
        per 64 in 256)."""
        if self.head_split is None:
            yield from super()._steps(draw)
            return
        frozen = self.head_split[0]
        frozen.train()  # dropout live in training (evaluation never calls it: see prepare)
        steps = super()._steps(draw)
        while block := list(itertools.islice(steps, self.head_block)):
            with torch.no_grad(), self.runtime.autocast():
                ahead = frozen(torch.cat([x for _, x, _, _ in block]))
            for (step, _, y, size), x in zip(block, ahead.split([len(x) for _, x, _, _ in block]), strict=True):
                yield step, x, y, size

    def _eval_inputs(self, index: torch.Tensor, flip: bool) -> torch.Tensor:
        return self.test_features[int(flip), index]


@torch.inference_mode()
def compute(
    prefix: nn.Module,
    pipeline: BatchPipeline,
    split: DeviceSplit,
    flips: tuple[bool, ...],
    runtime: Runtime,
    chunk: int,
) -> torch.Tensor:
    """Prefix outputs for every image of ``split``, one variant per entry of ``flips``."""
    was_training = prefix.training
    prefix.eval()
    dtype = runtime.autocast_dtype or torch.float32
    out: torch.Tensor | None = None
    n = len(split)
    try:
        for variant, flip in enumerate(flips):
            for start in range(0, n, chunk):
                index = torch.arange(start, min(n, start + chunk), device=runtime.device)
                with runtime.autocast():
                    features = prefix(pipeline.eval_batch(split, index, flip=flip, dtype=runtime.autocast_dtype))
                if out is None:
                    out = torch.empty((len(flips), n, *features.shape[1:]), dtype=dtype, device=runtime.device)
                out[variant, start : start + len(index)] = features
    finally:
        prefix.train(was_training)
    assert out is not None, "empty split"
    return out
