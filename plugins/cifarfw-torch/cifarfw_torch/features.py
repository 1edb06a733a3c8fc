"""The frozen-prefix feature cache.

Protocol (for model authors): a model may define

    def cifarfw_split(self) -> tuple[nn.Module, nn.Module] | None

returning ``(prefix, head)`` with ``model(x) == head(prefix(x))``, where the prefix has
no trainable parameter and is deterministic in eval mode (no dropout, no batch
statistics), or ``None`` when no such split exists (e.g. nothing is frozen).

With ``config.feature_cache`` on and such a split, the trainer runs the prefix once per
training image (eval mode, the run's precision, in chunks) and once more for its mirror
image when flips are on, stores the outputs compactly (bf16 under bf16, fp16 under
fp16, else fp32), and trains only the head on them: each epoch picks the plain or the
flipped entry per image at random. Random crops and brightness cannot be cached and are
dropped; run.json's ``resolved.feature_cache`` lists what was kept and dropped. Test
features are cached once too (plus their mirrors when test-time augmentation is on).
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
