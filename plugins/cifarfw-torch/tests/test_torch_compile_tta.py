"""Test-time augmentation against a hand computation, and --compile training a few steps."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

FLIP_ONLY = {"crop_padding": 0, "flip": True, "brightness": 0.0}


def by_hand(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, H, W), in numpy: no code of the pipeline."""
    x = (images.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize(
    ("model", "overrides"), [("tiny", {}), ("split", {"augment": FLIP_ONLY})], ids=["live", "feature-cache"]
)
def test_tta_averages_the_logits_of_each_image_and_its_mirror(fit, model, overrides):
    result, run, events = fit(model, epochs=1, tta=True, label_smoothing=0.1, **overrides)
    spec, test = run.model, run.dataset.test
    net = spec.factory(num_classes=10, options=run.config.model_options)
    net.load_state_dict(torch.load(run.dir / "checkpoints" / "epoch-0001.pt", weights_only=True)["model"])
    net.eval()
    labels = torch.from_numpy(test.labels.astype(np.int64))
    with torch.no_grad():
        plain = net(by_hand(test.images, spec.mean, spec.std))
        mirror = net(by_hand(test.images[:, :, ::-1], spec.mean, spec.std))  # (N, H, W, 3): W is axis 2
    mean = (plain + mirror) / 2
    loss = F.cross_entropy(mean, labels, label_smoothing=0.1).item()
    assert result.final["test_loss"] == pytest.approx(loss, rel=1e-5)
    np.testing.assert_array_equal(events.predictions[1], mean.argmax(1).numpy())
    assert result.final["test_acc"] == (mean.argmax(1) == labels).double().mean().item()
    plain_loss = F.cross_entropy(plain, labels, label_smoothing=0.1).item()
    assert abs(plain_loss - loss) > 1e-4  # the mirror really counts


def compile_toolchain_missing() -> str:
    """Why torch.compile cannot build CPU kernels here ("" when it can)."""
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler on PATH (torch.compile's CPU backend needs one)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h), which torch.compile's CPU kernels include"
    return ""


@pytest.mark.slow
@pytest.mark.skipif(bool(compile_toolchain_missing()), reason=compile_toolchain_missing() or "toolchain present")
def test_compile_trains_a_few_steps_like_eager(fit):
    compiled, run, events = fit("tiny", epochs=1, compile=True, lr=0.01)
    eager, _, _ = fit("tiny", epochs=1, lr=0.01)
    assert run.record["resolved"]["compile"] is True and compiled.extra["steps"] == 4  # 256 images, batch 64
    # Not bit for bit: compiled dropout draws its masks from inductor's own generator.
    for key in ("train_loss", "test_loss"):
        assert np.isfinite(compiled.final[key])
        assert compiled.final[key] == pytest.approx(eager.final[key], rel=0.02), key
    assert compiled.final["train_loss"] < np.log(10)  # below chance's cross-entropy: it learned
    assert [e["epoch"] for e in events.epochs] == [1]
