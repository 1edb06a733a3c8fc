"""The frozen-prefix feature cache: same outputs as the live path, and the kept/dropped record."""

from __future__ import annotations

import pytest
import torch
from torch_trainer_helpers import SplitNet

from cifarfw.config import Augment
from cifarfw.data.synthetic import generate
from cifarfw.errors import PluginError
from cifarfw_torch import features
from cifarfw_torch.pipeline import BatchPipeline, DeviceSplit
from cifarfw_torch.runtime import Runtime

CPU = torch.device("cpu")
FLIP_ONLY = {"crop_padding": 0, "flip": True, "brightness": 0.0}


def test_cached_features_give_the_head_the_same_outputs_as_the_whole_model():
    data = generate(40, seed=5)
    split = DeviceSplit.from_numpy(data.images, data.labels, CPU)
    pipeline = BatchPipeline((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32, Augment(), CPU)
    model = SplitNet().eval()
    prefix, head = features.frozen_split(model)
    cache = features.compute(prefix, pipeline, split, (False, True), Runtime(CPU, "fp32", True), chunk=16)
    assert cache.shape == (2, 40, 54) and cache.dtype == torch.float32
    index = torch.arange(40)
    with torch.no_grad():
        for variant, flip in enumerate((False, True)):
            whole = model(pipeline.eval_batch(split, index, flip=flip))
            torch.testing.assert_close(head(cache[variant]), whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cache[0], cache[1])  # the mirror really is another input


def test_bf16_cache_is_stored_compactly():
    data = generate(20, seed=1)
    split = DeviceSplit.from_numpy(data.images, data.labels, CPU)
    pipeline = BatchPipeline((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32, Augment(), CPU)
    prefix, _ = SplitNet().cifarfw_split()
    cache = features.compute(prefix, pipeline, split, (False,), Runtime(CPU, "bf16", True), chunk=8)
    assert cache.dtype == torch.bfloat16 and cache.shape == (1, 20, 54)


def test_split_offered_only_when_the_prefix_is_frozen():
    assert features.frozen_split(SplitNet(freeze=True)) is not None
    assert features.frozen_split(SplitNet(freeze=False)) is None
    assert features.frozen_split(torch.nn.Linear(2, 2)) is None

    class Broken(torch.nn.Module):
        def cifarfw_split(self):
            return "prefix", "head"

    with pytest.raises(PluginError, match="must return"):
        features.frozen_split(Broken())


def test_cache_plan_names_what_is_kept_and_dropped():
    assert features.cache_plan(Augment(4, True, 0.2)) == {"kept": ["flip"], "dropped": ["crop", "brightness"]}
    assert features.cache_plan(Augment(0, False, 0.0)) == {"kept": [], "dropped": []}


def test_training_on_the_cache_matches_the_live_pipeline(fit):
    """With flips only (what a cache keeps), cached and live training draw the same batches and
    flips from the same (seed, epoch) generators: the results agree to float rounding."""
    cached, run_cached, _ = fit("split", epochs=2, lr=0.01, augment=FLIP_ONLY, tta=True)
    live, run_live, _ = fit("split", epochs=2, lr=0.01, augment=FLIP_ONLY, tta=True, feature_cache=False)
    assert run_cached.record["resolved"]["feature_cache"] == {"kept": ["flip"], "dropped": []}
    assert "feature_cache" not in run_live.record["resolved"]
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert cached.final[key] == pytest.approx(live.final[key], rel=1e-4, abs=1e-4), key
    assert cached.extra["feature_cache_bytes"] == (2 * 256 + 2 * 128) * 54 * 4  # flips of train and (TTA) test


def test_a_heads_frozen_layers_run_ahead_and_training_still_matches_the_live_pipeline(fit):
    """The head's frozen Linear runs outside autograd on blocks of steps: with no dropout
    the results are those of the whole model trained live on the same batches."""
    frozen_head = {"head": "frozen-first", "head_dropout": 0.0}
    cached, run, events = fit("split", epochs=2, lr=0.01, augment=FLIP_ONLY, model_options=frozen_head)
    live, _, _ = fit("split", epochs=2, lr=0.01, augment=FLIP_ONLY, model_options=frozen_head, feature_cache=False)
    assert run.record["resolved"]["feature_cache"]["test_through"] == ["Dropout", "Linear", "ReLU"]
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert cached.final[key] == pytest.approx(live.final[key], rel=1e-4, abs=1e-4), key
    assert events.epochs[1]["train_loss"] < events.epochs[0]["train_loss"]  # the trainable layer learns


def test_frozen_head_layers_see_blocks_of_batches_in_training_mode(fit, monkeypatch):
    from cifarfw_torch import trainer

    monkeypatch.setattr(trainer, "HEAD_BLOCK", 3)
    seen = []

    def record(module, args, output):
        if isinstance(module, torch.nn.Dropout) and module.training and not torch.is_grad_enabled():
            seen.append(args[0].shape[0])

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        fit("split", epochs=1, batch_size=50, augment=FLIP_ONLY, model_options={"head": "frozen-first"})
    finally:
        handle.remove()
    # 256 images at batch 50: steps of 50, 50, 50 | 50, 50, 6, each block through the frozen layers at once
    assert seen == [150, 106]


def test_record_lists_dropped_augmentations_and_no_cache_for_a_trainable_prefix(fit):
    _, run, _ = fit("split", epochs=1)  # the default augmentation: crop, flip, brightness
    assert run.record["resolved"]["feature_cache"] == {"kept": ["flip"], "dropped": ["crop", "brightness"]}
    _, run, _ = fit("split", epochs=1, model_options={"freeze": "no"})
    assert "feature_cache" not in run.record["resolved"]


class UpscalingSplitNet(torch.nn.Module):
    """A frozen prefix fed 64-pixel inputs (upscaled from 32) that also offers its native form."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.prefix = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 5, stride=2, padding=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(3),
            torch.nn.Flatten(1),
        ).requires_grad_(False)
        self.head = torch.nn.Linear(54, 10)

    def cifarfw_split(self):
        return self.prefix, self.head

    def cifarfw_native_prefix(self, native_size: int, input_size: int):
        from cifarfw_torch.layers import UpscaledConv2d

        first = UpscaledConv2d.from_conv(self.prefix[0], native_size, input_size)
        return None if first is None else torch.nn.Sequential(first, *self.prefix[1:])


def test_native_prefix_gives_the_cache_of_the_resized_images():
    data = generate(24, seed=3)
    split = DeviceSplit.from_numpy(data.images, data.labels, CPU)
    stats = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    model = UpscalingSplitNet()
    native = features.native_prefix(model, 32, 64)
    assert native is not None and features.native_prefix(model, 64, 64) is None  # nothing to fold
    runtime = Runtime(CPU, "fp32", True)
    resized = features.compute(
        model.prefix, BatchPipeline(*stats, 64, Augment(), CPU), split, (False, True), runtime, 8
    )
    folded = features.compute(native, BatchPipeline(*stats, 32, Augment(), CPU), split, (False, True), runtime, 8)
    torch.testing.assert_close(folded, resized, rtol=1e-4, atol=1e-5)


def test_native_prefix_must_be_a_module():
    class Broken(torch.nn.Module):
        def cifarfw_native_prefix(self, native_size, input_size):
            return "prefix"

    with pytest.raises(PluginError, match="must return a module or None"):
        features.native_prefix(Broken(), 32, 224)
    assert features.native_prefix(torch.nn.Linear(2, 2), 32, 224) is None  # not offered


def test_eval_split_takes_the_heads_frozen_leading_layers():
    torch.manual_seed(3)
    frozen_linear = torch.nn.Linear(12, 8).requires_grad_(False)
    head = torch.nn.Sequential(
        torch.nn.Dropout(0.5), frozen_linear, torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)
    )
    frozen, rest = features.eval_split(head)
    assert list(frozen) == list(head)[:4] and list(rest) == list(head)[4:]
    x = torch.randn(2, 6, 12)  # (variants, N, features): a cache tensor
    through = features.apply(frozen, x, Runtime(CPU, "fp32", True), chunk=4)
    assert through.shape == (2, 6, 8) and frozen.training  # apply restores the training mode
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(rest(through[1]), head(x[1]))
    # Nothing to take: the first weighted layer trains, batch norm's statistics move, or all is frozen.
    assert features.eval_split(SplitNet().head) is None
    assert features.eval_split(torch.nn.Sequential(torch.nn.BatchNorm1d(12), torch.nn.Linear(12, 3))) is None
    assert features.eval_split(torch.nn.Sequential(frozen_linear, torch.nn.ReLU())) is None
    assert features.eval_split(torch.nn.Linear(3, 3)) is None
