"""The torch trainer on tiny synthetic data: learning, precisions, checkpoints, resume, NaN, TTA."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_trainer_helpers import NaNNet, TinyNet, settings

from cifarfw import runner
from cifarfw.config import RunConfig
from cifarfw.errors import NonFiniteLossError, UsageError, WeightsError
from cifarfw_torch.optim import lr_factor
from cifarfw_torch.pipeline import BatchPipeline, DeviceSplit
from cifarfw_torch.runtime import cpu_bf16_native

PRECISIONS = [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(not cpu_bf16_native(), reason="no native bf16 on this CPU")),
]


TINY_PARAMS = 8 * 3 * 9 + 2 * 8 + 128 * 10 + 10  # conv, batch norm, linear


@pytest.mark.parametrize("precision", PRECISIONS)
def test_loss_falls_and_every_metric_is_reported(fit, precision):
    result, run, events = fit("tiny", epochs=3, lr=0.01, precision=precision)
    assert run.record["resolved"]["precision"] == precision and run.record["resolved"]["device"] == "cpu"
    assert events.params == {"total": TINY_PARAMS, "trainable": TINY_PARAMS}
    assert [e["epoch"] for e in events.epochs] == [1, 2, 3]
    for e in events.epochs:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"} <= set(e)
        assert 0 <= e["train_acc"] <= 1 and 0 <= e["test_acc"] <= 1
    assert events.epochs[-1]["train_loss"] < events.epochs[0]["train_loss"]
    assert events.epochs[-1]["test_acc"] > 0.3  # chance is 0.1
    assert result.final == {k: v for k, v in events.epochs[-1].items() if k != "epoch"}
    assert result.train_seconds > 0
    assert run.record["versions"]["torch"] == torch.__version__
    labels, predictions, images = events.predictions
    assert len(labels) == len(predictions) == 128 and images.shape == (32, 32, 32, 3)
    assert events.graph is not None and any(n.op == "aten::linear" for n in events.graph.node)


def test_checkpoint_reloads_to_the_same_predictions_and_only_two_are_kept(fit):
    _, run, events = fit("tiny", epochs=3)
    kept = sorted(p.name for p in (run.dir / "checkpoints").iterdir())
    assert kept == ["epoch-0002.pt", "epoch-0003.pt"]
    assert [e for e, _ in events.checkpoints] == [1, 2, 3]
    state = torch.load(run.dir / "checkpoints" / "epoch-0003.pt", weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 3
    model = TinyNet()
    model.load_state_dict(state["model"])
    model.eval()
    test = run.dataset.test
    split = DeviceSplit.from_numpy(test.images, test.labels, torch.device("cpu"))
    spec = run.model
    pipeline = BatchPipeline(spec.mean, spec.std, 32, run.config.augment, torch.device("cpu"))
    with torch.no_grad():
        predicted = model(pipeline.eval_batch(split, torch.arange(len(test)))).argmax(1).numpy()
    labels, predictions, _ = events.predictions
    np.testing.assert_array_equal(predicted, predictions)
    np.testing.assert_array_equal(labels, test.labels)


def test_resume_continues_exactly_like_an_uninterrupted_run(fit):
    straight, run_a, _ = fit("tiny", epochs=2, schedule="cosine")
    first = run_a.dir / "checkpoints" / "epoch-0001.pt"
    resumed, run_b, events = fit("tiny", epochs=2, schedule="cosine", resume=first)
    assert [e["epoch"] for e in events.epochs] == [2]  # continued with the next epoch
    learned = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [resumed.final[k] for k in learned] == [straight.final[k] for k in learned]  # bit for bit
    a = torch.load(run_a.dir / "checkpoints" / "epoch-0002.pt", weights_only=True)
    b = torch.load(run_b.dir / "checkpoints" / "epoch-0002.pt", weights_only=True)
    assert [[h[k] for k in learned] for h in a["history"]] == [[h[k] for k in learned] for h in b["history"]]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8


def test_a_damaged_checkpoint_is_a_weights_error(fit, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        fit("tiny", resume=broken)


def test_non_finite_loss_stops_after_the_last_good_checkpoint(train, tmp_path, monkeypatch):
    monkeypatch.setattr(NaNNet, "nan_after", 6)  # 4 steps an epoch: NaN in epoch 2
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*checkpoint of epoch 1 is kept") as caught:
        train("nan", epochs=3, prediction_samples=0)
    assert "\n" not in str(caught.value)
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "nan" and [e["epoch"] for e in record["epochs"]] == [1]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch-0001.pt"]


@pytest.mark.parametrize(("optimizer", "schedule"), [("sgd", "onecycle"), ("adamw", "step"), ("adam", "cosine")])
def test_optimizers_and_schedules_train(fit, optimizer, schedule):
    _, run, events = fit(
        "tiny",
        epochs=2,
        optimizer=optimizer,
        schedule=schedule,
        lr=0.05,
        nesterov=optimizer == "sgd",
        weight_decay=1e-4,
        step_epochs=1,
        step_gamma=0.5,
        label_smoothing=0.1,
    )
    lrs = [e["lr"] for e in events.epochs]
    if schedule == "step":
        assert lrs == [0.05, 0.025]
    elif schedule == "cosine":
        assert 0 < lrs[1] < lrs[0] < 0.05
    else:  # one-cycle: at the peak after the warm-up quarter, then annealing
        assert lrs[1] < lrs[0] <= 0.05
    assert all(np.isfinite(e["train_loss"]) for e in events.epochs)
    state = torch.load(run.dir / "checkpoints" / "epoch-0002.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 1e-4


def test_schedule_shapes():
    config = RunConfig(epochs=4, lr=1.0, schedule="onecycle", warmup_fraction=0.25)
    factor = lr_factor(config, steps_per_epoch=10)  # 40 steps, 10 of warm-up
    assert factor(0) == pytest.approx(1 / 25) and factor(10) == pytest.approx(1.0)
    assert factor(40) < 1e-4 and factor(5) < factor(10) and factor(30) < factor(20)
    step = lr_factor(RunConfig(epochs=4, schedule="step", step_epochs=2, step_gamma=0.1), 10)
    assert [step(s) for s in (0, 19, 20, 39)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]
    cosine = lr_factor(RunConfig(epochs=4, schedule="cosine"), 10)
    assert cosine(0) == 1.0 and cosine(20) == pytest.approx(0.5) and cosine(40) == pytest.approx(0.0)
    assert lr_factor(RunConfig(schedule="constant"), 10)(123) == 1.0


def test_test_time_augmentation_runs(fit):
    result, _, _ = fit("tiny", epochs=1, tta=True)
    assert 0 <= result.final["test_acc"] <= 1 and np.isfinite(result.final["test_loss"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"precision": "fp16"}, "--precision fp16 needs a CUDA device"),
        ({"optimizer": "adam", "nesterov": True}, "nesterov needs --optimizer sgd"),
        pytest.param(
            {"device": "cuda"},
            "no CUDA device is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_validate_refuses_what_this_machine_cannot_do(host, tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        runner.resolve(host, "tiny", None, {}, settings(tmp_path, **overrides))
    assert not (tmp_path / "runs").exists()  # refused before any run folder


def test_bf16_is_refused_where_the_cpu_lacks_it(host, tmp_path, monkeypatch):
    from cifarfw_torch import runtime

    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    with pytest.raises(UsageError, match="no native bfloat16"):
        runner.resolve(host, "tiny", None, {}, settings(tmp_path, precision="bf16"))
    _, _, cfg = runner.resolve(host, "tiny", None, {}, settings(tmp_path, precision="auto"))
    assert runtime.resolve(cfg).precision == "fp32"


def test_graph_is_built_without_importing_tensorflow():
    code = (
        "import sys, torch\n"
        "from cifarfw_torch.graph import model_graph\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))\n"
        "net(torch.zeros(1, 3, 8, 8))\n"
        "g = model_graph(net, torch.zeros(1, 3, 8, 8))\n"
        "ops = [n.op for n in g.node]\n"
        "assert 'aten::_convolution' in ops and 'aten::relu' in ops and 'aten::linear' in ops, ops\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(len(g.node))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 6
