"""A whole run with a fake model plugin: the run folder, run.json and TensorBoard files."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
from fakes import FAKE_PLUGIN

import cifarfw_tensorboard.plugin
from cifarfw import runner
from cifarfw.hookspecs import hookimpl
from cifarfw.metrics import TAGS
from cifarfw.plugins import PluginHost

RECORD_FIELDS = {
    "schema_version", "status", "plugin", "model", "config", "seed", "versions", "hardware",
    "git_commit", "params", "epochs", "final",
}  # fmt: skip
EPOCH_FIELDS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}


@pytest.fixture
def host(clean_env):
    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    host.add(cifarfw_tensorboard.plugin, "tensorboard")  # the default reporter plugin, as installed
    return host


def run_fake(host, tmp_path, **flags):
    flags = {"runs_root": str(tmp_path / "runs"), "epochs": 3, **flags}
    plugin, spec, config = runner.resolve(host, "fake", None, {}, flags)
    return runner.execute(host, plugin, spec, config)


def test_run_folder_and_record(host, tmp_path):
    run_dir = run_fake(host, tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    assert set(record) >= RECORD_FIELDS
    assert record["schema_version"] == 2
    assert record["checkpoint"] == {"epoch": 3, "path": "checkpoints/epoch3.npz"}  # relative: survives moves
    assert record["status"] == "finished"
    assert (record["plugin"], record["model"], record["seed"]) == ("fake", "softmax", 0)
    assert record["params"] == {"total": 1930, "trainable": 1930}
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    for entry in record["epochs"]:
        assert set(entry) >= EPOCH_FIELDS
        assert 0 <= entry["train_acc"] <= 1 and 0 <= entry["test_acc"] <= 1
    assert set(record["final"]) >= {"train_loss", "train_acc", "test_loss", "test_acc", "train_seconds"}
    assert record["final"]["test_acc"] == record["epochs"][-1]["test_acc"]
    assert record["final"]["test_acc"] > 0.5  # the synthetic data is learnable
    assert record["versions"]["cifarfw"] and record["versions"]["numpy"] == np.__version__
    assert record["hardware"]["cpu_count"] >= 1 and record["hardware"]["cpu"]
    assert record["config"]["epochs"] == 3 and record["config"]["recipe"] == "quick"
    assert record["dataset"]["name"] == "synthetic" and record["dataset"]["train_images"] == 2000
    # config.toml holds the same resolved config
    assert tomllib.loads((run_dir / "config.toml").read_text())["lr"] == record["config"]["lr"]
    predictions = np.load(run_dir / "predictions.npz")
    assert len(predictions["labels"]) == 500 and predictions["images"].shape == (32, 32, 32, 3)
    assert not (run_dir / ".lock").exists()


def test_tensorboard_tags_every_epoch(host, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run_fake(host, tmp_path, epochs=4)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in TAGS.values():
        assert tag in tags["scalars"], tag
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4], tag
    record = json.loads((run_dir / "run.json").read_text())
    last = events.Scalars("accuracy/test")[-1].value
    assert last == pytest.approx(record["final"]["test_acc"], rel=1e-6)
    assert {"predictions", "confusion_matrix"} <= set(tags["images"])
    assert "config/text_summary" in tags["tensors"] or "config" in tags["tensors"]


def test_seeds_make_distinct_runs_in_one_group(host, tmp_path):
    plugin, spec, config = runner.resolve(host, "fake", None, {}, {"runs_root": str(tmp_path), "seeds": 2, "epochs": 1})
    dirs = [runner.execute(host, plugin, spec, c) for c in runner.seed_configs(config)]
    records = [json.loads((d / "run.json").read_text()) for d in dirs]
    assert [r["seed"] for r in records] == [0, 1]
    assert records[0]["group"] == records[1]["group"]
    assert records[0]["final"]["train_loss"] != records[1]["final"]["train_loss"]


def test_runs_started_in_one_second_keep_their_start_order(host, tmp_path):
    """Folder names carry only the second and sort by plugin name within it; listing, ``last``
    and compare's reference column must follow the recorded start instead."""
    from datetime import datetime

    from cifarfw.runs import find_run, iter_runs, select_runs

    first = run_fake(host, tmp_path, epochs=1)
    second = run_fake(host, tmp_path, epochs=1)
    starts = [datetime.fromisoformat(json.loads((d / "run.json").read_text())["started_at"]) for d in (first, second)]
    assert starts[0] < starts[1]  # milliseconds tell them apart
    assert starts[0].utcoffset() is not None
    # The same second in both folder names, and names that sort against the start order.
    runs = tmp_path / "runs"
    a = first.rename(runs / "20260101-120000-zz-s0-0000")
    b = second.rename(runs / "20260101-120000-aa-s0-0000")
    assert [p for p, _ in iter_runs(runs)] == [a, b]
    assert find_run(runs, "last") == b
    assert [e.dir for e in select_runs(runs)] == [a, b]
    assert [e.dir for e in select_runs(runs, latest=1)] == [b]


def test_failing_trainer_marks_run_failed(host, tmp_path, monkeypatch):
    import fakes

    def explode(self, run):
        raise RuntimeError("trainer bug")

    monkeypatch.setattr(fakes.NumpyTrainer, "fit", explode)
    with pytest.raises(RuntimeError, match="trainer bug"):
        run_fake(host, tmp_path)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and "trainer bug" in record["error"]
    assert not (run_dir / ".lock").exists()


def test_nan_loss_marks_run_nan(host, tmp_path):
    from cifarfw.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):
        run_fake(host, tmp_path, lr=1e307)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "nan"


def test_event_hooks_reach_plugins_and_extra_reporters(host, tmp_path):
    from cifarfw.specs import ReporterSpec

    seen = []

    class Listener:
        @hookimpl
        def on_epoch_end(self, epoch, metrics):  # names only what it needs
            seen.append(("epoch", epoch, round(metrics["test_acc"], 6)))

        @hookimpl
        def on_run_end(self, status):
            seen.append(("end", status))

    class ExtraReporter:
        def __init__(self, run):
            self.run = run

        @hookimpl
        def on_run_start(self, run):
            seen.append(("extra-start", run.id == self.run.id))

    class Plugin:
        @hookimpl
        def register_reporters(self, register):
            register(ReporterSpec("extra", ExtraReporter, default=False))

    host.add(Listener(), "listener")
    host.add(Plugin(), "extra-plugin")
    run_fake(host, tmp_path, epochs=2)
    assert [s[0] for s in seen] == ["epoch", "epoch", "end"]  # extra reporter not requested
    seen.clear()
    run_fake(host, tmp_path, epochs=1, reporters=["extra"])
    assert seen[0] == ("extra-start", True)
