"""--timm-args and --weights: parsing, what reaches create_model, local files, ImageNet offline, the CLI."""

from __future__ import annotations

import pytest
import torch

from cifarfw.errors import UsageError, WeightsError
from cifarfw.testing import assert_one_line_error, run_cli
from cifarfw_timm import plugin, zoo


def test_timm_args_are_toml_literals_split_at_top_level_commas():
    assert zoo.parse_timm_args("") == {}
    assert zoo.parse_timm_args("drop_path_rate=0.1, global_pool='max',act_layer=gelu") == {
        "drop_path_rate": 0.1,
        "global_pool": "max",
        "act_layer": "gelu",  # not TOML: the plain string, as --set reads it
    }
    assert zoo.parse_timm_args('depths=[1, 1, 2, 1],drop_rate=0,name="a,b",bias=true') == {
        "depths": [1, 1, 2, 1],
        "drop_rate": 0,
        "name": "a,b",
        "bias": True,
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        zoo.parse_timm_args("drop_path_rate")
    for key in ("num_classes", "pretrained", "img_size"):
        with pytest.raises(UsageError, match=f"cannot set {key}"):
            zoo.parse_timm_args(f"{key}=1")


def test_timm_args_reach_create_model():
    model = plugin.spec("resnet18").factory(num_classes=10, options={"timm_args": "drop_path_rate=0.1"})
    assert model.layer4[1].drop_path is not None and model.layer4[1].drop_path.drop_prob > 0
    vit = plugin.spec("vit_tiny_patch16_224").factory(num_classes=10, options={"timm_args": "depth=2"})
    assert len(vit.blocks) == 2 and vit.patch_embed.img_size == (32, 32)  # the zoo's img_size stays


def test_an_argument_the_model_does_not_take_is_a_usage_error_before_training():
    validate = plugin.spec("resnet18").validate
    with pytest.raises(UsageError, match=r"does not take.*window_size.*--timm-args"):
        validate({"timm_args": "window_size=4", "weights": "none"})
    validate({"timm_args": "drop_rate=0.2", "weights": "none"})  # fine


def test_weights_path_loads_a_saved_state_dict(tmp_path):
    spec = plugin.spec("regnetx_002")
    torch.manual_seed(1)
    trained = spec.factory(num_classes=10, options={})
    path = tmp_path / "regnet.pth"
    torch.save({"state_dict": trained.state_dict()}, path)  # a wrapped checkpoint, as training scripts save
    spec.validate({"timm_args": "", "weights": str(path)})
    loaded = spec.factory(num_classes=10, options={"weights": str(path)})
    for key, tensor in trained.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key


def test_an_imagenet_head_is_left_out_of_a_local_file(tmp_path):
    spec = plugin.spec("regnetx_002")
    imagenet_like = spec.factory(num_classes=1000, options={}).state_dict()
    path = tmp_path / "imagenet.pth"
    torch.save(imagenet_like, path)
    model = spec.factory(num_classes=10, options={"weights": str(path)})
    assert torch.equal(model.stem.conv.weight, imagenet_like["stem.conv.weight"])
    assert model.head.fc.weight.shape == (10, 368)


def test_bad_weights_files_are_weights_errors(tmp_path):
    spec = plugin.spec("regnetx_002")
    with pytest.raises(WeightsError, match="does not exist"):
        spec.validate({"weights": str(tmp_path / "nope.pth")})
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="truncated, tampered or not a state dict"):
        spec.factory(num_classes=10, options={"weights": str(garbage)})
    other = tmp_path / "resnet.pth"
    torch.save(plugin.spec("resnet18").factory(num_classes=10, options={}).state_dict(), other)
    with pytest.raises(WeightsError, match="not a state dict of this model: unexpected key"):
        spec.factory(num_classes=10, options={"weights": str(other)})


def test_imagenet_offline_is_a_one_line_weights_error(isolated, offline):
    with pytest.raises(WeightsError, match=r"cannot download timm's ImageNet weights.*--weights PATH"):
        plugin.spec("resnet18").factory(num_classes=10, options={"weights": "imagenet"})


def test_cli_imagenet_offline_and_bad_timm_args(isolated, offline):
    base = ("run", "--plugin", "timm", "--model", "resnet18", "--dataset", "synthetic", "--epochs", "1",
            "--set", "dataset_options.train_size=20", "--set", "dataset_options.test_size=10")  # fmt: skip
    code, _, err = run_cli(*base, "--timm-args", "img_size=64")
    assert_one_line_error(code, err, "--timm-args cannot set img_size")
    assert code == 2
    code, _, err = run_cli(*base, "--weights", "no/such/file.pth")
    assert_one_line_error(code, err, "does not exist")
    assert code == 4
    assert not (isolated / "runs").exists()  # both refused before any run folder
    code, _, err = run_cli(*base, "--weights", "imagenet")  # found out when the model is built, as for AlexNet
    line = assert_one_line_error(code, err, "ImageNet weights", "--weights PATH")
    assert code == 4, line
