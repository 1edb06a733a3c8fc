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


def test_record_lists_dropped_augmentations_and_no_cache_for_a_trainable_prefix(fit):
    _, run, _ = fit("split", epochs=1)  # the default augmentation: crop, flip, brightness
    assert run.record["resolved"]["feature_cache"] == {"kept": ["flip"], "dropped": ["crop", "brightness"]}
    _, run, _ = fit("split", epochs=1, model_options={"freeze": "no"})
    assert "feature_cache" not in run.record["resolved"]
