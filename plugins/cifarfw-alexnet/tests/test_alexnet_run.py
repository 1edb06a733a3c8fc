"""End to end through the torch trainer: a tiny run, and weights errors as the CLI shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from alexnet_helpers import requires_torch_trainer

from cifarfw.testing import assert_one_line_error

pytestmark = requires_torch_trainer

TINY = ("--dataset", "synthetic", "--set", "dataset_options.train_size=40", "--set", "dataset_options.test_size=20")


def _run_json(runs_root: Path) -> dict:
    (record,) = runs_root.glob("*/run.json")
    return json.loads(record.read_text())


def test_one_epoch_on_tiny_data_records_params_and_the_feature_cache(cli, isolated):
    code, _, err = cli("run", "--plugin", "alexnet", *TINY, "--weights", "none", "--epochs", "1", "-b", "8")
    assert code == 0, err
    record = _run_json(isolated / "runs")
    assert record["status"] == "finished"
    assert record["params"] == {"total": 44_428_106, "trainable": 4_205_578}
    assert record["config"]["model_options"] == {"weights": "none", "freeze": "study"}
    # The trainer cached the frozen prefix (features + avgpool), plain and mirrored, for 40 + 20 images.
    assert record["resolved"]["feature_cache"] == {
        "kept": ["flip"],
        "dropped": ["crop", "brightness"],
        "resize": "folded into the prefix",  # the 32 -> 224 resize done inside the first convolution
        # Test features also went through the classifier's frozen layers, once.
        "test_through": ["UniformDropout", "CastCachingLinear", "ReLU", "UniformDropout"],
    }
    bytes_per_value = 2 if record["resolved"]["precision"] in ("bf16", "fp16") else 4
    assert record["extra"]["feature_cache_bytes"] == (2 * 40 * 9216 + 20 * 4096) * bytes_per_value
    assert len(record["epochs"]) == 1
    assert 0.0 <= record["epochs"][0]["test_acc"] <= 1.0


def test_no_feature_cache_when_everything_trains(cli, isolated):
    smallest = ("--set", "dataset_options.train_size=10", "--set", "dataset_options.test_size=10")
    flags = ("--weights", "none", "--freeze", "none", "--epochs", "1", "-b", "10", "--set", "checkpoint=false")
    code, _, err = cli("run", "--plugin", "alexnet", "--dataset", "synthetic", *smallest, *flags)
    assert code == 0, err
    record = _run_json(isolated / "runs")
    assert record["params"] == {"total": 44_428_106, "trainable": 44_428_106}
    assert "feature_cache" not in record["resolved"]  # the prefix trains: nothing can be cached
    assert "feature_cache_bytes" not in record.get("extra", {})


@pytest.fixture
def wrong_shape_file(tmp_path) -> Path:
    state = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    state["features.0.weight"] = torch.zeros(32, 3, 11, 11)
    path = tmp_path / "wrong-shape.pth"
    torch.save(state, path)
    return path


def test_cli_wrong_shape_weights(cli, wrong_shape_file):
    code, _, err = cli("run", "--plugin", "alexnet", *TINY, "--epochs", "1", "--weights", str(wrong_shape_file))
    assert_one_line_error(code, err, f"weights file {wrong_shape_file}", "features.0.weight")
    assert code == 4


def test_cli_tampered_weights(cli, wrong_shape_file, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(wrong_shape_file.read_bytes()[:1000])
    code, _, err = cli("run", "--plugin", "alexnet", *TINY, "--epochs", "1", "--weights", str(path))
    assert_one_line_error(code, err, f"cannot read weights file {path}", "tampered")
    assert code == 4


def test_cli_offline_without_cached_weights(cli, isolated, offline):
    code, _, err = cli("run", "--plugin", "alexnet", *TINY, "--epochs", "1")  # default --weights imagenet
    line = assert_one_line_error(code, err, "cannot download the ImageNet AlexNet weights", "--weights PATH")
    assert str(isolated / "torch-home" / "hub" / "checkpoints") in line
    assert code == 4


def test_cli_missing_weights_file_fails_before_any_run_folder(cli, isolated):
    missing = isolated / "no-such.pth"
    code, _, err = cli(
        "run", "--plugin", "alexnet", *TINY, "--weights", str(missing), "--runs-root", str(isolated / "r")
    )
    assert_one_line_error(code, err, f"weights file {missing} does not exist")
    assert code == 4
    assert not (isolated / "r").exists()  # refused while validating, before any folder was written
