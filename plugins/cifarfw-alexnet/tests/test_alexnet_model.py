"""The study's AlexNet: classifier layout, freeze policies, the feature-cache split, registration."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarfw.plugins import PluginHost
from cifarfw.specs import IMAGENET_MEAN, IMAGENET_STD
from cifarfw.testing import assert_one_line_error
from cifarfw_alexnet import plugin
from cifarfw_alexnet.model import FREEZE_POLICIES, CastCachingLinear, StudyAlexNet, count_parameters
from cifarfw_torch.layers import UniformDropout, UpscaledConv2d

TOTAL = 44_428_106  # features 2,469,696 + classifier 41,958,410


@pytest.fixture(scope="module")
def models() -> dict[str, StudyAlexNet]:
    torch.manual_seed(0)
    return {policy: StudyAlexNet(10, freeze=policy) for policy in FREEZE_POLICIES}


def test_classifier_is_the_studys_exactly(models):
    classifier = models["study"].classifier
    kinds = [type(layer) for layer in classifier]
    assert kinds == [UniformDropout, CastCachingLinear, nn.ReLU, UniformDropout, nn.Linear, nn.ReLU, nn.Linear]
    assert issubclass(CastCachingLinear, nn.Linear) and issubclass(UniformDropout, nn.Dropout)
    assert [classifier[i].p for i in (0, 3)] == [0.5, 0.5]
    shapes = [(classifier[i].in_features, classifier[i].out_features) for i in (1, 4, 6)]
    assert shapes == [(9216, 4096), (4096, 1024), (1024, 10)]
    assert isinstance(models["study"].avgpool, nn.AdaptiveAvgPool2d)
    assert models["study"].avgpool.output_size == (6, 6)


def test_num_classes_sets_the_last_layer():
    assert StudyAlexNet(7).classifier[6].out_features == 7


def test_study_freeze_trains_only_the_last_two_linear_layers(models):
    model = models["study"]
    assert count_parameters(model) == {"total": TOTAL, "trainable": 4_205_578}
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["classifier.4.bias", "classifier.4.weight", "classifier.6.bias", "classifier.6.weight"]


def test_features_freeze_trains_the_whole_classifier(models):
    model = models["features"]
    classifier_params = sum(p.numel() for p in model.classifier.parameters())
    assert classifier_params == 41_958_410
    assert count_parameters(model) == {"total": TOTAL, "trainable": classifier_params}
    assert not any(p.requires_grad for p in model.features.parameters())


def test_no_freeze_trains_everything(models):
    model = models["none"]
    assert count_parameters(model) == {"total": TOTAL, "trainable": TOTAL}
    assert sum(p.numel() for p in model.features.parameters()) == 2_469_696


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown freeze policy 'all'"):
        StudyAlexNet(10, freeze="all")


@pytest.mark.parametrize("policy", ["study", "features"])
def test_split_prefix_then_head_is_the_model(models, policy):
    model = models[policy].eval()
    split = model.cifarfw_split()
    assert split is not None
    prefix, head = split
    assert not any(p.requires_grad for p in prefix.parameters())
    assert head is model.classifier
    assert prefix[0] is model.features  # shares the model's weights, copies nothing
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = prefix(x)
        assert features.shape == (2, 9216)
        torch.testing.assert_close(head(features), model(x), rtol=0, atol=0)
        torch.testing.assert_close(prefix(x), features, rtol=0, atol=0)  # deterministic: cacheable


@pytest.mark.parametrize("policy", ["study", "features"])
def test_native_prefix_folds_the_resize_into_the_first_convolution(models, policy):
    """The feature cache's prefix for 32-pixel images: the same features as resizing to 224
    and running the prefix, sharing every later layer with the model."""
    model = models[policy].eval()
    prefix, _ = model.cifarfw_split()
    native = model.cifarfw_native_prefix(32, 224)
    assert isinstance(native[0], UpscaledConv2d)
    later = list(model.features)[1:]  # shared with the model, each max-pool moved before its ReLU
    assert {id(m) for m in list(native)[1:-2]} == {id(m) for m in later}
    kinds = [type(m).__name__ for m in list(native)[1:-2]]
    assert kinds[:5] == ["MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"] and kinds[-2:] == ["MaxPool2d", "ReLU"]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = prefix(F.interpolate(x, size=224, mode="bilinear", align_corners=False))
        torch.testing.assert_close(native(x), expected, rtol=1e-4, atol=1e-5)


def test_no_native_prefix_when_the_first_convolution_trains(models):
    assert models["none"].cifarfw_native_prefix(32, 224) is None


def test_head_is_random_in_training_so_the_cache_stops_before_it(models):
    head = models["study"].classifier.train()
    features = torch.rand(4, 9216)
    with torch.no_grad():
        assert not torch.equal(head(features), head(features))  # dropout
    head.eval()


def test_no_split_when_the_prefix_trains(models):
    assert models["none"].cifarfw_split() is None


def test_cast_caching_linear_gives_autocasts_values_and_follows_weight_changes():
    torch.manual_seed(2)
    cached = CastCachingLinear(64, 32).requires_grad_(False)
    plain = nn.Linear(64, 32).requires_grad_(False)
    plain.load_state_dict(cached.state_dict())
    x = torch.randn(8, 64)
    torch.testing.assert_close(cached(x), plain(x), rtol=0, atol=0)  # no autocast: plain nn.Linear
    for _ in range(2):  # the second call uses the kept copy
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, expected = cached(x), plain(x)
        assert out.dtype == expected.dtype == torch.bfloat16
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with torch.no_grad():
        cached.weight.mul_(2)  # an in-place change (as load_state_dict makes) invalidates the copy
        plain.weight.mul_(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(cached(x), plain(x), rtol=0, atol=0)
    cached.requires_grad_(True)  # trainable: autocast's own path, gradients flow
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached(x).float().sum().backward()
    assert cached.weight.grad is not None


def test_registered_spec():
    host = PluginHost(load_entry_points=False)
    host.add(plugin, "alexnet")
    _, spec = host.resolve_model("alexnet", None)
    assert (spec.name, spec.framework, spec.input_size) == ("alexnet", "torch", 224)
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    recipe = spec.recipe(None)
    assert {k: recipe[k] for k in ("epochs", "batch_size", "optimizer", "lr")} == {
        "epochs": 10,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 0.01,
    }
    assert recipe["augment"] == {"crop_padding": 2, "flip": True, "brightness": 0.2}
    options = {o.name: o for o in spec.options}
    assert options["weights"].default == "imagenet"
    assert (options["freeze"].default, tuple(options["freeze"].choices)) == ("study", FREEZE_POLICIES)


def test_factory_builds_the_policy_asked_for():
    model = plugin.build_model(num_classes=10, options={"weights": "none", "freeze": "features"})
    assert count_parameters(model)["trainable"] == 41_958_410


def test_plugin_module_imports_no_torch():
    code = "import sys, cifarfw_alexnet.plugin; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_freeze_value_is_a_one_line_error(cli):
    code, _, err = cli("run", "--plugin", "alexnet", "--dataset", "synthetic", "--freeze", "everything")
    line = assert_one_line_error(code, err, "--freeze must be one of study, features, none", "'everything'")
    assert code == 2, line
