"""The CUDA path (AMP with a GradScaler, data on the device, checkpoints, the feature cache).

Skipped without a CUDA device (CI has none); run on a GPU machine with
``pytest plugins/cifarfw-torch/tests/test_torch_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_precision_is_fp16_amp_and_the_loss_falls(fit):
    _, run, events = fit("tiny", epochs=3, lr=0.01, device="auto", precision="auto")
    resolved = run.record["resolved"]
    assert resolved["device"].startswith("cuda") and resolved["precision"] == "fp16"
    assert run.record["hardware"]["accelerator"] != "cpu"
    assert events.epochs[-1]["train_loss"] < events.epochs[0]["train_loss"]
    assert events.epochs[-1]["test_acc"] > 0.3
    state = torch.load(run.dir / "checkpoints" / "epoch-0003.pt", weights_only=True, map_location="cpu")
    assert state["scaler"]["scale"] > 0  # the GradScaler's state travels with the checkpoint
    assert state["rng"]["cuda"], "CUDA generator states are saved"


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_other_precisions_train_on_cuda(fit, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    _, run, events = fit("tiny", epochs=2, lr=0.01, device="cuda", precision=precision)
    assert run.record["resolved"]["precision"] == precision
    assert events.epochs[-1]["train_loss"] < events.epochs[0]["train_loss"]


def test_data_lives_on_the_device():
    import numpy as np

    from cifarfw_torch.pipeline import DeviceSplit

    images = np.zeros((4, 32, 32, 3), np.uint8)
    split = DeviceSplit.from_numpy(images, np.arange(4), torch.device("cuda"))
    assert split.pixels.is_cuda and split.labels.is_cuda


def test_feature_cache_and_tta_on_cuda(fit):
    result, run, _ = fit("split", epochs=2, lr=0.01, device="cuda", precision="auto", tta=True)
    assert run.record["resolved"]["feature_cache"]["kept"] == ["flip"]
    assert result.extra["feature_cache_bytes"] == (2 * 256 + 2 * 128) * 54 * 2  # fp16 storage
    assert 0 <= result.final["test_acc"] <= 1


def test_resume_on_cuda_continues_with_the_next_epoch(fit):
    straight, run_a, _ = fit("tiny", epochs=2, device="cuda", deterministic=True)
    resumed, _, events = fit("tiny", epochs=2, device="cuda", deterministic=True,
                             resume=run_a.dir / "checkpoints" / "epoch-0001.pt")  # fmt: skip
    assert [e["epoch"] for e in events.epochs] == [2]
    assert resumed.final["train_loss"] == pytest.approx(straight.final["train_loss"], rel=1e-3)
