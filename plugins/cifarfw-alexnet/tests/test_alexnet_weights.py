"""--weights imagenet | none | PATH: round trips, refused files and the offline message."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from cifarfw.errors import WeightsError
from cifarfw_alexnet.model import StudyAlexNet, build
from cifarfw_alexnet.weights import imagenet_cache_path, load_backbone


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision AlexNet state dict (ImageNet classifier included) saved to a file."""
    torch.manual_seed(3)
    state = torchvision.models.alexnet().state_dict()
    path = tmp_path_factory.mktemp("weights") / "alexnet-local.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def features_state() -> dict[str, torch.Tensor]:
    """A small (features-only) AlexNet state dict, cheap to alter and save."""
    torch.manual_seed(4)
    return {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_local_torchvision_file_round_trip(torchvision_file):
    path, saved = torchvision_file
    model = build(10, {"weights": str(path), "freeze": "study"})
    for key, tensor in model.state_dict().items():
        if key.startswith("features."):
            torch.testing.assert_close(tensor, saved[key], rtol=0, atol=0)
    # As in the study, the ImageNet classifier is replaced, not loaded: its 9216→4096 layer too.
    assert not torch.equal(model.classifier[1].weight, saved["classifier.1.weight"])
    assert model.classifier[6].out_features == 10


def test_imagenet_goes_through_the_same_loading_as_a_path(isolated, torchvision_file, monkeypatch):
    # A file in torchvision's cache whose SHA-256 does not match the prefix in its name is refused
    # (before this check the same reader and key/shape checks as --weights PATH run on it).
    cached = imagenet_cache_path()
    assert str(cached).startswith(str(isolated / "torch-home"))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(torchvision_file[0].read_bytes())
    with pytest.raises(WeightsError) as err:
        build(10, {"weights": "imagenet"})
    assert f"cached weights file {cached} does not match its SHA-256 prefix 7be5be79" in one_line(err)
    # With the hash check passing, the cached file loads like a local path.
    monkeypatch.setattr("cifarfw_alexnet.weights._check_hash_prefix", lambda path: None)
    model = StudyAlexNet(10)
    assert load_backbone(model, "imagenet") == str(cached)
    torch.testing.assert_close(model.features[0].weight, torchvision_file[1]["features.0.weight"], rtol=0, atol=0)


def test_own_checkpoint_round_trip_loads_the_classifier_too(tmp_path):
    torch.manual_seed(5)
    trained = StudyAlexNet(10, freeze="features")
    path = tmp_path / "cifar-alexnet.pt"
    torch.save({"model": trained.state_dict(), "epoch": 3}, path)  # a training checkpoint wraps it
    loaded = build(10, {"weights": str(path), "freeze": "study"})
    for key, tensor in trained.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], tensor, rtol=0, atol=0)


def test_weights_none_keeps_random_features():
    torch.manual_seed(6)
    a = build(10, {"weights": "none"}).features[0].weight
    torch.manual_seed(7)
    b = build(10, {"weights": "none"}).features[0].weight
    assert not torch.equal(a, b)


def test_wrong_shape_is_refused(tmp_path, features_state):
    bad = dict(features_state)
    bad["features.3.weight"] = torch.zeros(100, 64, 5, 5)
    path = tmp_path / "wide.pth"
    torch.save(bad, path)
    with pytest.raises(WeightsError) as err:
        build(10, {"weights": str(path)})
    assert one_line(err) == (
        f"weights file {path} has features.3.weight of shape [100, 64, 5, 5], but AlexNet's is [192, 64, 5, 5]"
    )


def test_other_classifier_is_refused(tmp_path, features_state):
    state = {**features_state, "classifier.6.weight": torch.zeros(100, 1024), "classifier.6.bias": torch.zeros(100)}
    path = tmp_path / "hundred-classes.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        build(10, {"weights": str(path)})
    assert one_line(err) == (
        f"weights file {path} has classifier.6.bias of shape [100], but this model's is [10] "
        "and it is not torchvision's ImageNet classifier either"
    )


@pytest.mark.parametrize(
    ("content", "name"),
    [
        ({"fc.weight": torch.zeros(3)}, "resnet-ish.pth"),
        ({"features.0.weight": torch.zeros(64, 3, 11, 11)}, "partial.pth"),
    ],
)
def test_not_an_alexnet_state_dict(tmp_path, content, name):
    path = tmp_path / name
    torch.save(content, path)
    with pytest.raises(WeightsError) as err:
        build(10, {"weights": str(path)})
    assert f"weights file {path}" in one_line(err)
    assert "AlexNet state dict" in one_line(err)


def _truncated(path: Path, source: Path) -> None:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path, source: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _flipped_bytes(path: Path, source: Path) -> None:
    data = bytearray(source.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _pickled_code(path: Path, source: Path) -> None:
    path.write_bytes(pickle.dumps(Path("/etc/passwd"), protocol=2))  # weights_only=True must refuse objects


@pytest.mark.parametrize("tamper", [_truncated, _garbage, _flipped_bytes, _pickled_code])
def test_tampered_file_is_refused(tmp_path, features_state, tamper):
    source = tmp_path / "good.pth"
    torch.save(features_state, source)
    path = tmp_path / "tampered.pth"
    tamper(path, source)
    with pytest.raises(WeightsError) as err:
        build(10, {"weights": str(path)})
    message = one_line(err)
    assert f"weights file {path}" in message
    assert "tampered or not a torch state dict" in message or "holds non-finite values" in message
    assert "weights_only=False" not in message  # never advise the unsafe loader


def test_missing_file_says_what_weights_takes(tmp_path):
    path = tmp_path / "imagnet"
    with pytest.raises(WeightsError) as err:
        build(10, {"weights": str(path)})
    assert one_line(err) == (
        f"weights file {path} does not exist; --weights takes imagenet, none or the path of an AlexNet state dict"
    )


def test_offline_without_a_cached_file(isolated, offline):
    with pytest.raises(WeightsError) as err:
        build(10, {"weights": "imagenet"})
    message = one_line(err)
    cache_dir = isolated / "torch-home" / "hub" / "checkpoints"
    assert message.startswith("cannot download the ImageNet AlexNet weights from https://download.pytorch.org/")
    assert f"put alexnet-owt-7be5be79.pth into {cache_dir} (torch.hub.get_dir()/checkpoints)" in message
    assert "--weights PATH" in message
    assert "--weights none" in message
    assert not (cache_dir / "alexnet-owt-7be5be79.pth").exists()
