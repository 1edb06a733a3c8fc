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

from dataclasses import dataclass

import torch
from torch import nn

from cifarfw.config import Augment
from cifarfw.errors import PluginError
from cifarfw_torch.pipeline import BatchPipeline, DeviceSplit
from cifarfw_torch.runtime import Runtime


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


@dataclass
class FeatureCache:
    """Prefix outputs: ``train`` (variants, N, ...) and ``test`` (variants, N, ...); variant
    0 is the plain image, variant 1 (when present) its mirror."""

    train: torch.Tensor
    test: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.train.numel() * self.train.element_size() + self.test.numel() * self.test.element_size()


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
