"""A sample of timm architectures across families: each builds at its input side with timm's
own parameter count for 10 classes, trains two steps with a finite, falling loss, passes the
contract kit's checks, and its table entry is what a fresh probe finds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifarfw.testing import check_forward, check_params
from cifarfw_timm import plugin, zoo
from cifarfw_timm.probe import probe

# timm.create_model(name, num_classes=10, **the table's arguments).parameters(), timm 1.0.31;
# the issue measured three of them the same way (resnet18, convnext_atto, vit_tiny with img_size=32).
SAMPLE = {
    "resnet18": 11_181_642,
    "resnext26ts": 8_269_442,
    "regnetx_002": 2_319_482,
    "convnext_atto": 3_377_730,
    "efficientnet_b0": 4_020_358,
    "mobilenetv3_small_050": 578_474,
    "ghostnet_050": 1_319_102,
    "lcnet_050": 612_666,
    "dla46_c": 1_046_970,
    "vit_tiny_patch16_224": 5_489_482,  # img_size=32: 2x2 patches
    "deit_tiny_patch16_224": 5_489_482,
    "swin_tiny_patch4_window7_224": 27_506_020,  # img_size=32: windows shrink to the 8x8 tokens
    "maxvit_nano_rw_256": 14_920_878,  # window and grid attention, img_size=32
    "tiny_vit_5m_224": 5_074_974,  # windowed attention at 32 as built
    "mixer_s16_224": 17_232_426,
    "mobilevit_xxs": 954_234,
    "levit_128s": 7_009_574,
    "edgenext_xx_small": 1_159_906,
    "fastvit_t8": 3_264_922,
    "poolformer_s12": 11_407_306,
}
OPTIONS = {"timm_args": "", "weights": "none"}


def two_steps(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The training-mode loss on a fixed batch before and after two Adam steps on it (the same
    dropout/drop-path masks each time, so the loss is deterministic)."""
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def loss_now() -> float:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            return float(F.cross_entropy(model(xt), yt))

    before = loss_now()
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        optimizer.step()
    return before, loss_now()


def batch(spec, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    from cifarfw.data import synthetic

    split = synthetic.generate(n, 0, size=spec.input_size)
    x = (split.images.astype(np.float32) / 255.0 - np.float32(spec.mean)) / np.float32(spec.std)
    return x.astype(np.float32), split.labels


@pytest.fixture(scope="module")
def adapter():
    import torch

    from cifarfw_torch.kit import TorchAdapter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread beats two that contend
    yield TorchAdapter()
    torch.set_num_threads(threads)  # later tests (the torch trainer's thread choice) see the default


@pytest.mark.parametrize("name", list(SAMPLE))
def test_builds_counts_and_learns(name, adapter):
    spec = plugin.spec(name)
    assert spec.input_size == 32
    model = check_forward(adapter, spec, OPTIONS, batch=2)  # the kit: builds, (2, 10) finite outputs
    assert check_params(adapter, model, spec, {"total": SAMPLE[name]})[0] == SAMPLE[name]
    before, after = two_steps(model, *batch(spec))
    assert math.isfinite(before) and math.isfinite(after) and after < before, (before, after)


def test_a_model_that_needs_more_than_32_px(adapter):
    """GhostNetV2's stride-32 stem and fixed pooling leave no pixel at 32: it declares a larger
    side, and the trainer resizes the batches to it."""
    spec = plugin.spec("ghostnetv2_100")
    assert spec.input_size > 32 and spec.input_size == zoo.table()["ghostnetv2_100"][0]
    model = check_forward(adapter, spec, OPTIONS, batch=2)
    before, after = two_steps(model, *batch(spec))
    assert math.isfinite(after) and after < before


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "ghostnetv2_100"])
def test_the_table_is_what_a_fresh_probe_finds(name):
    assert probe(name) == zoo.table()[name]
