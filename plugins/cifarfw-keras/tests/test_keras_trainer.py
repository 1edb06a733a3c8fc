"""The keras trainer on small synthetic data: events, TensorBoard tags, checkpoints and resume,
augmentation, precision and device checks, non-finite losses.

TensorFlow takes seconds to import, so everything runs in this one process and the
trainings are shared at module scope.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cifarfw import hookimpl, runner
from cifarfw.errors import NonFiniteLossError, UsageError, WeightsError
from cifarfw.plugins import PluginHost
from cifarfw.report import REQUIRED_METRICS
from cifarfw.specs import ModelSpec, ReporterSpec

pytest.importorskip("cifarfw_keras._tf")  # imports TensorFlow the quiet way (triton first)

from cifarfw_keras import checkpoints, data, runtime
from cifarfw_keras import plugin as keras_plugin
from cifarfw_keras._tf import keras, tf
from cifarfw_keras.trainer import Evaluator, learning_rate

TRAIN, TEST, BATCH = 240, 100, 32
STEPS = math.ceil(TRAIN / BATCH)


def tiny_model(num_classes: int, options: dict[str, Any]) -> Any:
    """A small logits model (the study's CNN ends in softmax; this covers the other case)."""
    layers = keras.layers
    scale = float(options.get("scale") or 1.0)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Conv2D(8, 3, strides=2, activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(num_classes),
            layers.Rescaling(scale),  # scale=3e38 overflows the logits: the loss becomes non-finite
        ]
    )


class Recorder:
    """Every event a trainer emits, in order."""

    def __init__(self, log: list[tuple[str, dict[str, Any]]], resume: Path | None) -> None:
        self.log = log
        self.resume = resume

    @hookimpl
    def on_run_start(self, run: Any) -> None:
        run.resume_checkpoint = self.resume  # how the tests hand the trainer a checkpoint

    @hookimpl
    def on_model_built(self, params: dict[str, int], summary: str, graph: Any) -> None:
        self.log.append(("on_model_built", {"params": params, "summary": summary, "graph": graph}))

    @hookimpl
    def on_train_progress(self, epoch: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        self.log.append(("on_train_progress", {"epoch": epoch, "step": step, "steps": steps, "metrics": metrics}))

    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log.append(("on_epoch_end", {"epoch": epoch, "metrics": dict(metrics)}))

    @hookimpl
    def on_checkpoint(self, epoch: int, path: str) -> None:
        self.log.append(("on_checkpoint", {"epoch": epoch, "path": path}))

    @hookimpl
    def on_predictions(self, epoch: int, labels: np.ndarray, predictions: np.ndarray, images: np.ndarray) -> None:
        self.log.append(
            ("on_predictions", {"epoch": epoch, "labels": labels, "predictions": predictions, "images": images})
        )


class TinyPlugin:
    """The tiny model and the recording reporter, as a third party would register them."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.resume: Path | None = None

    @hookimpl
    def register_models(self, register: Any) -> None:
        from cifarfw.specs import Option

        register(
            ModelSpec(
                "tiny",
                "keras",
                tiny_model,
                options=(Option("scale", "input scale", default=None, type=float),),
                recipes={"quick": {"dataset": "synthetic", "batch_size": BATCH, "lr": 0.01}},
            )
        )

    @hookimpl
    def register_reporters(self, register: Any) -> None:
        register(ReporterSpec("recorder", lambda run: Recorder(self.log, self.resume)))


@pytest.fixture(scope="module")
def world() -> tuple[PluginHost, TinyPlugin]:
    host = PluginHost(load_entry_points=False)
    host.add(keras_plugin, "keras")
    tensorboard = pytest.importorskip("cifarfw_tensorboard.plugin")  # the event files are a plugin's now
    host.add(tensorboard, "tensorboard")
    test_plugin = TinyPlugin()
    host.add(test_plugin, "tiny")
    return host, test_plugin


def train(
    world: tuple[PluginHost, TinyPlugin], root: Path, resume: Path | None = None, **flags: Any
) -> tuple[Path, list]:
    host, test_plugin = world
    test_plugin.log.clear()
    test_plugin.resume = resume
    layer = {
        "epochs": 3,
        "runs_root": str(root),
        "dataset_options": {"train_size": TRAIN, "test_size": TEST},
        "prediction_samples": 8,
        **flags,
    }
    plugin, spec, cfg = runner.resolve(host, "tiny", None, {}, layer)
    run_dir = runner.execute(host, plugin, spec, cfg)
    return run_dir, list(test_plugin.log)


@pytest.fixture(scope="module")
def base_run(world, tmp_path_factory) -> tuple[Path, list]:
    """Three epochs, constant lr: the run the other tests inspect and resume from."""
    return train(world, tmp_path_factory.mktemp("runs"))


def events(log: list, name: str) -> list[dict[str, Any]]:
    return [payload for event, payload in log if event == name]


# --- the event bridge ------------------------------------------------------------------


def test_one_epoch_event_per_epoch_with_the_shared_metric_names(base_run):
    _, log = base_run
    epochs = events(log, "on_epoch_end")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for e in epochs:
        assert set(e["metrics"]) == {*REQUIRED_METRICS, "train_images_per_s"}  # the torch trainer's names
        m = e["metrics"]
        assert 0 <= m["train_acc"] <= 1 and 0 <= m["test_acc"] <= 1
        assert m["train_loss"] > 0 and m["test_loss"] > 0 and m["seconds"] > 0
        assert m["lr"] == pytest.approx(0.01)
    assert epochs[-1]["metrics"]["train_loss"] < epochs[0]["metrics"]["train_loss"]  # it learns


def test_model_built_reports_params_summary_and_graph(base_run):
    _, log = base_run
    (built,) = events(log, "on_model_built")
    expected = 3 * 3 * 3 * 8 + 8 + 8 * 10 + 10  # conv + dense; Rescaling has none
    assert built["params"] == {"total": expected, "trainable": expected}
    assert "Conv2D" in built["summary"] or "conv2d" in built["summary"]
    assert built["graph"] is not None and len(built["graph"].node) > 3
    assert any("Conv2D" in node.op for node in built["graph"].node)


def test_progress_events_count_batches_of_the_epoch(base_run):
    _, log = base_run
    progress = [p for p in events(log, "on_train_progress") if p["epoch"] == 1]
    assert progress, "no progress events"
    assert all(p["steps"] == STEPS and 1 <= p["step"] <= STEPS for p in progress)
    assert progress[-1]["step"] == STEPS
    assert all(np.isfinite(p["metrics"]["loss"]) for p in progress)


def test_predictions_cover_the_test_set(base_run):
    _, log = base_run
    (pred,) = events(log, "on_predictions")
    assert pred["epoch"] == 3
    assert pred["labels"].shape == pred["predictions"].shape == (TEST,)
    assert pred["images"].shape == (8, 32, 32, 3) and pred["images"].dtype == np.uint8
    accuracy = float((pred["labels"] == pred["predictions"]).mean())
    assert accuracy == pytest.approx(events(log, "on_epoch_end")[-1]["metrics"]["test_acc"])


def test_run_record_holds_resolved_settings_and_versions(base_run):
    run_dir, _ = base_run
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["resolved"]["device"] == "/CPU:0"
    assert record["resolved"]["precision"] in ("fp32", "bf16")
    assert record["resolved"]["outputs"] == "logits"
    from tensorflow.python.eager import context

    # Off unless a test before this one started TensorFlow's runtime first: the record says which.
    sleeping = context.context().config.experimental.disable_thread_spinning
    assert record["resolved"]["thread_spinning"] is (not sleeping)
    assert record["versions"]["tensorflow"] == tf.__version__
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]


def test_tensorboard_files_hold_the_shared_tags_for_every_epoch(base_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = base_run
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    for tag in ("loss/train", "loss/test", "accuracy/train", "accuracy/test", "lr", "time/epoch_s"):
        assert [s.step for s in acc.Scalars(tag)] == [1, 2, 3], tag


# --- checkpoints and resume ------------------------------------------------------------


def test_checkpoints_each_epoch_keep_the_last_two(base_run):
    run_dir, log = base_run
    assert [c["epoch"] for c in events(log, "on_checkpoint")] == [1, 2, 3]
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["epoch-0002.json", "epoch-0002.keras", "epoch-0003.json", "epoch-0003.keras"]
    state = json.loads((run_dir / "checkpoints" / "epoch-0003.json").read_text())
    assert state["epoch"] == 3 and state["model"] == "tiny" and state["seed"] == 0


def test_a_checkpoint_resumes_at_the_next_epoch_as_if_never_stopped(world, base_run, tmp_path):
    run_dir, base_log = base_run
    checkpoint = run_dir / "checkpoints" / "epoch-0002.keras"
    model, state = checkpoints.load(checkpoint, "tiny")
    assert state["epoch"] == 2
    assert int(model.optimizer.iterations.numpy()) == 2 * STEPS  # optimizer state came back

    _, log = train(world, tmp_path, resume=checkpoint)
    resumed = events(log, "on_epoch_end")
    assert [e["epoch"] for e in resumed] == [3]
    uninterrupted = events(base_log, "on_epoch_end")[2]["metrics"]
    # Same weights, optimizer state and data order as the uninterrupted run's third epoch.
    assert resumed[0]["metrics"]["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-3)
    assert resumed[0]["metrics"]["test_acc"] == pytest.approx(uninterrupted["test_acc"], abs=0.02)


def test_missing_checkpoint_is_a_one_line_weights_error(world, tmp_path):
    missing = tmp_path / "nowhere" / "epoch-0001.keras"
    with pytest.raises(WeightsError) as err:
        train(world, tmp_path, resume=missing, epochs=1)
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)


def test_corrupt_checkpoint_is_a_one_line_weights_error(world, base_run, tmp_path):
    corrupt = tmp_path / "epoch-0002.keras"
    corrupt.write_bytes((base_run[0] / "checkpoints" / "epoch-0002.keras").read_bytes()[:500])
    with pytest.raises(WeightsError) as err:
        checkpoints.load(corrupt, "tiny")
    assert "cannot be loaded" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="model 'tiny', not 'other'"):
        checkpoints.load(base_run[0] / "checkpoints" / "epoch-0002.keras", "other")


def test_non_finite_loss_stops_the_run(world, tmp_path):
    with pytest.raises(NonFiniteLossError):
        train(world, tmp_path, epochs=1, model_options={"scale": 3e38})  # logits overflow to inf
    (record,) = tmp_path.glob("*/run.json")
    assert json.loads(record.read_text())["status"] == "nan"


# --- augmentation and data order ---------------------------------------------------------


def test_crop_pads_with_zeros_and_keeps_shape_and_range():
    white = np.full((64, 32, 32, 3), 255, np.uint8)
    out = data.augment_batch(white, data.batch_seed(0, 0, 0), data.AugmentSettings(crop_padding=4)).numpy()
    assert out.shape == (64, 32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    black_rows = (out.max(axis=(2, 3)) == 0).sum(axis=1)  # zero padding shows as black rows
    assert black_rows.max() <= 4 and black_rows.max() > 0
    assert len({tuple(r) for r in (out.max(axis=3) == 0).reshape(64, -1)}) > 5  # offsets differ per image


def test_flip_mirrors_about_half_the_images():
    ramp = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, None, :, None] * 8, (200, 32, 32, 3))
    out = data.augment_batch(ramp, data.batch_seed(1, 0, 0), data.AugmentSettings(flip=True)).numpy()
    same = np.all(np.isclose(out, ramp / 255), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(out, ramp[:, :, ::-1] / 255), axis=(1, 2, 3))
    assert np.all(same | mirrored) and 60 < mirrored.sum() < 140


def test_brightness_scales_within_the_factor_range_and_clips():
    grey = np.full((200, 32, 32, 3), 230, np.uint8)
    out = data.augment_batch(grey, data.batch_seed(2, 0, 0), data.AugmentSettings(brightness=0.2)).numpy()
    factors = out[:, 0, 0, 0] / (230 / 255)
    assert factors.min() >= 0.8 - 1e-6 and out.max() <= 1.0
    assert (out[:, 0, 0, 0] == 1.0).any()  # 230/255 * 1.2 > 1 clips
    assert np.unique(np.round(factors, 4)).size > 50  # a factor per image


def test_augmentation_is_a_function_of_seed_epoch_and_step():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    settings = data.AugmentSettings(4, True, 0.2)
    a = data.augment_batch(images, data.batch_seed(0, 3, 5), settings).numpy()
    b = data.augment_batch(images, data.batch_seed(0, 3, 5), settings).numpy()
    c = data.augment_batch(images, data.batch_seed(0, 3, 6), settings).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_model_input_is_resized_and_normalised():
    x = tf.fill([2, 32, 32, 3], 0.5)
    out = data.to_model_input(x, 64, (0.5, 0.25, 0.0), (0.5, 0.25, 0.5)).numpy()
    assert out.shape == (2, 64, 64, 3)
    assert np.allclose(out[..., 0], 0.0) and np.allclose(out[..., 1], 1.0) and np.allclose(out[..., 2], 1.0)


def test_epoch_order_depends_only_on_seed_and_epoch():
    labels = np.arange(50, dtype=np.int64) % 10
    images = np.repeat(np.arange(50, dtype=np.uint8)[:, None, None, None], 32 * 32 * 3).reshape(50, 32, 32, 3)
    epoch = tf.Variable(0, dtype=tf.int64)
    ds = data.train_dataset(
        images,
        labels,
        num_classes=10,
        batch_size=16,
        seed=7,
        epoch=epoch,
        augment=data.AugmentSettings(),
        input_size=32,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )

    def order() -> list[int]:
        return [round(v * 255) for x, _ in ds for v in x.numpy()[:, 0, 0, 0]]

    first = order()
    epoch.assign(1)
    second = order()
    epoch.assign(0)
    assert sorted(first) == list(range(50)) and first != second and order() == first
    assert ds.cardinality().numpy() == 4  # the last, partial batch is kept


def test_pipelines_run_without_the_autotuner():
    """An autotuned iterator's tuning thread made destroying it wait up to seconds, once per
    epoch (data.py): both pipelines must keep the autotuner off, with fixed parallelism."""
    images = np.zeros((10, 32, 32, 3), np.uint8)
    train = data.train_dataset(
        images,
        np.zeros(10, np.int64),
        num_classes=10,
        batch_size=4,
        seed=0,
        epoch=tf.Variable(0, dtype=tf.int64),
        augment=data.AugmentSettings(crop_padding=2, flip=True),
        input_size=32,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    test = data.test_dataset(images, batch_size=4, input_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    assert train.options().autotune.enabled is False and test.options().autotune.enabled is False
    assert sum(len(x) for x, _ in train) == 10 and sum(len(x) for x in test) == 10


# --- evaluation, schedules, settings ------------------------------------------------------


def test_tta_averages_with_the_flipped_images():
    from cifarfw.config import RunConfig

    model = tiny_model(10, {})
    x = np.random.default_rng(1).random((6, 32, 32, 3), dtype=np.float32)
    labels = np.arange(6) % 10
    ds = tf.data.Dataset.from_tensor_slices(x).batch(3)
    _, _, plain = Evaluator(model, ds, labels, False, RunConfig(tta=False))()
    loss, _, averaged = Evaluator(model, ds, labels, False, RunConfig(tta=True))()
    p = (tf.nn.softmax(model(x)) + tf.nn.softmax(model(x[:, :, ::-1]))).numpy() / 2
    assert np.array_equal(averaged, p.argmax(1))
    assert loss == pytest.approx(float(-np.log(p[np.arange(6), labels]).mean()), rel=1e-4)
    assert plain.shape == (6,)


def test_learning_rate_schedules():
    from cifarfw.config import RunConfig

    steps = 10
    onecycle = learning_rate(RunConfig(lr=0.1, epochs=4, schedule="onecycle", warmup_fraction=0.25), steps)
    assert float(onecycle(0)) == pytest.approx(0.1 / 25)
    assert float(onecycle(10)) == pytest.approx(0.1, rel=1e-3)
    assert float(onecycle(40)) < 1e-5
    step = learning_rate(RunConfig(lr=0.1, schedule="step", step_epochs=2, step_gamma=0.5), steps)
    assert float(step(19)) == pytest.approx(0.1) and float(step(20)) == pytest.approx(0.05)
    cosine = learning_rate(RunConfig(lr=0.1, epochs=2, schedule="cosine"), steps)
    assert float(cosine(10)) == pytest.approx(0.05, rel=1e-3) and float(cosine(20)) == pytest.approx(0.0, abs=1e-6)
    assert learning_rate(RunConfig(lr=0.1), steps) == 0.1


def test_label_smoothing_and_sgd_reach_keras(world, tmp_path):
    run_dir, log = train(
        world,
        tmp_path,
        epochs=1,
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        label_smoothing=0.1,
        schedule="cosine",
        tta=True,
        checkpoint=False,
    )
    metrics = events(log, "on_epoch_end")[0]["metrics"]
    assert set(metrics) == {*REQUIRED_METRICS, "train_images_per_s"}
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"device": "gpu"}, "no GPU"),
        ({"device": "cuda:1"}, "no GPU"),
        ({"precision": "fp16"}, "fp16 needs a GPU"),
        ({"nesterov": True, "optimizer": "adam"}, "nesterov"),
    ],
)
def test_unsupported_settings_are_usage_errors_before_any_folder(world, tmp_path, flags, fragment):
    host, _ = world
    with pytest.raises(UsageError, match=fragment) as err:
        runner.resolve(host, "tiny", None, {}, {"runs_root": str(tmp_path), **flags})
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_idle_threads_sleep_when_switched_before_tensorflow_starts():
    """In a fresh process the switch takes; once the runtime runs, it reports the pools' state."""
    import subprocess
    import sys

    code = (
        "from cifarfw_keras import runtime; first = runtime.stop_thread_spinning()\n"
        "from cifarfw_keras._tf import tf; tf.constant(1.0) + 1.0\n"
        "from tensorflow.python.eager import context\n"
        "print(first, context.context().config.experimental.disable_thread_spinning, runtime.stop_thread_spinning())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["True", "True", "True"], result.stderr[-2000:]

    from tensorflow.python.eager import context

    tf.constant(1.0) + 1.0  # this process's runtime is running: the pools are fixed
    assert runtime.stop_thread_spinning() is context.context().config.experimental.disable_thread_spinning


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    from cifarfw.config import RunConfig

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(UsageError, match="no native bfloat16"):
        runtime.validate_config(RunConfig(device="cpu", precision="bf16"), None)
    assert runtime.resolve_precision("auto", "/CPU:0", {}) == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_precision("auto", "/CPU:0", {}) == "bf16"
    assert runtime.resolve_precision("auto", "/GPU:0", {"compute_capability": (7, 0)}) == "fp16"
    assert runtime.resolve_precision("auto", "/GPU:0", {"compute_capability": (8, 0)}) == "bf16"
