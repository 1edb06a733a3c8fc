"""fastnet: its network's parts behave as documented, and it runs through cifarfw as a plugin.

Everything trains on tiny synthetic data with narrow widths: the suite shares two CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cifarfw_fastnet import plugin
from cifarfw_fastnet.model import FastNet, ShiftBatchNorm, parse_widths

from cifarfw.testing import ModelPluginContract, check_recipes, load_plugin

TINY = {"widths": "8,16,16"}
CIFARFW = Path(sys.executable).with_name("cifarfw")


def expected_counts(w1: int, w2: int, w3: int, classes: int = 10) -> tuple[int, int]:
    """(total, trainable), counted by hand from the architecture in model.py's docstring."""
    stem_weight, stem_bias = 24 * 3 * 2 * 2, 24
    total, frozen = stem_weight + stem_bias, stem_weight  # the whitening filters are frozen
    for cin, cout in ((24, w1), (w1, w2), (w2, w3)):
        total += cin * cout * 9 + cout * cout * 9 + 2 * (2 * cout)  # two convs, two BNs (scale, bias)
        frozen += 2 * cout  # the BN scales are fixed at 1
    total += w3 * classes  # bias-free head
    return total, total - frozen


def counts(model: torch.nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@pytest.mark.parametrize("widths", [(64, 256, 256), (64, 128, 128), (8, 16, 16)])
def test_parameter_counts(widths):
    assert counts(FastNet(10, widths=widths)) == expected_counts(*widths)


def test_gpu_recipe_widths_are_airbench94_size():
    # 1,972,792 parameters: the size of the network of the published 94% runs (1.97M)
    model = plugin.build_model(10, plugin.RECIPES["gpu"]["model_options"])
    assert counts(model)[0] == 1_972_792


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_forward_shape_and_finite(activation):
    model = FastNet(7, widths=(8, 16, 16), activation=activation).eval()
    out = model(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Correlated pixels (neighbours and channels alike), so whitening has work to do."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 16, 16, generator=g)
    x = torch.nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, 32, 32, generator=g)


def test_first_training_batch_whitens_the_stem():
    model = FastNet(10, widths=(8, 16, 16)).train()
    before = model.whiten.weight.clone()
    x = smooth_images(64)
    model(x)
    assert bool(model.whitening_ready)
    assert not torch.equal(before, model.whiten.weight)
    # the first 12 filters decorrelate 2x2 patches: their outputs' covariance is ~identity
    out = torch.nn.functional.conv2d(x, model.whiten.weight[:12])
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / flat.shape[0]
    strong = torch.linalg.eigvalsh(
        torch.cov(x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).T)
    )
    assert strong.max() / strong.min() > 100  # the input patches really were correlated
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=0.02)
    assert torch.diagonal(cov).max() < 1.01
    # the second 12 filters are the first 12 negated
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])


def test_whitening_is_not_redone_after_loading_a_checkpoint():
    trained = FastNet(10, widths=(8, 16, 16)).train()
    trained(smooth_images(32, seed=1))
    fresh = FastNet(10, widths=(8, 16, 16)).train()
    fresh.load_state_dict(trained.state_dict())
    fresh(smooth_images(32, seed=2))  # a different batch would give different filters
    assert torch.equal(fresh.whiten.weight, trained.whiten.weight)


def test_eval_mode_and_tiny_batches_do_not_whiten():
    model = FastNet(10, widths=(8, 16, 16))
    model.eval()(smooth_images(8))
    model.train()(smooth_images(1))
    assert not bool(model.whitening_ready)


def test_whiten_off_trains_the_stem():
    model = FastNet(10, widths=(8, 16, 16), whiten=False)
    assert model.whiten.weight.requires_grad
    before = model.whiten.weight.clone()
    model.train()(smooth_images(16))
    assert torch.equal(before, model.whiten.weight)


def test_block_convolutions_start_as_identities():
    model = FastNet(10, widths=(8, 16, 16))
    block = model.blocks[1]
    x = torch.randn(2, 16, 7, 7)
    assert torch.allclose(block.conv2(x), x, atol=1e-6)  # square: the whole conv is the identity
    y = block.conv1(torch.randn(2, 8, 7, 7))
    assert y.shape[1] == 16


def test_batchnorm_bias_learns_scale_times_faster_under_sgd():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5)
    target = torch.randn(8, 4, 5, 5)
    moved = []
    for scale in (1.0, 64.0):
        norm = ShiftBatchNorm(4, lr_scale=scale)
        optimizer = torch.optim.SGD(norm.parameters(), lr=0.01)
        ((norm(x) - target) ** 2).mean().backward()
        optimizer.step()
        moved.append(norm.bias.detach() * norm.bias_multiplier)  # the effective bias after one step
    assert torch.allclose(moved[1], 64 * moved[0], rtol=1e-4)
    assert moved[0].abs().min() > 0


def test_parse_widths():
    assert parse_widths("64, 128,128") == (64, 128, 128)
    for bad in ("64,128", "a,b,c", "64,0,64"):
        with pytest.raises(ValueError):
            parse_widths(bad)


def test_every_recipe_resolves():
    put = load_plugin("fastnet")
    spec = put.model("fastnet")
    assert check_recipes(put, spec) == ["cpu", "gpu"]
    assert spec.default_recipe == "cpu"


class TestContract(ModelPluginContract):
    """The cifarfw contract kit (registration, light import, forward, learns, recipes, a run)."""

    plugin = "fastnet"
    options = TINY


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CIFARFW), "run", "--plugin", "fastnet", "--dataset", "synthetic", "--runs-root", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_one_epoch_through_the_cli(tmp_path):
    done = run_cli(
        tmp_path,
        "--set",
        "dataset_options.train_size=200",
        "--set",
        "dataset_options.test_size=50",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--widths",
        "8,16,16",
        "--device",
        "cpu",
        "--set",
        "prediction_samples=4",
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["recipe"] == "cpu"
    assert record["config"]["tta"] is True
    assert record["config"]["model_options"]["widths"] == "8,16,16"
    assert (record["params"]["total"], record["params"]["trainable"]) == expected_counts(8, 16, 16)
    assert [e["epoch"] for e in record["epochs"]] == [1]
    assert 0 <= record["epochs"][0]["test_acc"] <= 1
    checkpoint = run_dir / record["checkpoint"]["path"]  # stored relative to the run folder
    state = torch.load(checkpoint, weights_only=True)
    assert bool(state["model"]["whitening_ready"])  # the stem was whitened from the first batch


def test_bad_widths_is_a_one_line_usage_error(tmp_path):
    done = run_cli(tmp_path, "--epochs", "1", "--widths", "64,128", "--device", "cpu")
    assert done.returncode == 2
    assert "widths" in done.stderr
    assert "Traceback" not in done.stderr
