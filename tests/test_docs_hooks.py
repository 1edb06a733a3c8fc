"""Every hook of hookspecs.py, exercised through a PluginHost with fake plugins.

tests/test_docs.py requires a ``test_hook_<name>`` test for each hook; they are here
(unless a plugin's tests hold one). Also the stability rules of docs/hooks.md: old
plugins keep working as hooks gain arguments; a plugin written for a newer hook API is
refused with a message.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pluggy
import pytest
from fakes import FAKE_PLUGIN, NumpyTrainer, _factory

import cifarfw_cifar10.plugin as cifar10_plugin
from cifarfw import hookimpl, hookspecs, runner, session
from cifarfw.data import Dataset, synthetic
from cifarfw.errors import UsageError
from cifarfw.plugins import PluginHost
from cifarfw.specs import DatasetSpec, ExecutorSpec, ModelProviderSpec, ModelSpec, Option, ReporterSpec, TrainerSpec

SMALL = {
    "dataset": "synthetic",
    "dataset_options": {"train_size": 100, "test_size": 50},
    "epochs": 2,
    "prediction_samples": 4,
}


class Listener:
    """A plugin that records every event hook it receives, with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def of(self, name: str) -> list[dict]:
        return [kw for event, kw in self.calls if event == name]

    @hookimpl
    def on_run_start(self, run):
        self.calls.append(("on_run_start", {"run": run, "status": run.record["status"]}))

    @hookimpl
    def on_model_built(self, run, params, summary, graph):
        self.calls.append(("on_model_built", {"params": params, "summary": summary, "graph": graph}))

    @hookimpl
    def on_train_progress(self, run, epoch, step, steps, metrics):
        self.calls.append(("on_train_progress", {"epoch": epoch, "step": step, "steps": steps, "metrics": metrics}))

    @hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        self.calls.append(("on_epoch_end", {"epoch": epoch, "metrics": dict(metrics)}))

    @hookimpl
    def on_predictions(self, run, epoch, labels, predictions, images):
        self.calls.append(("on_predictions", {"epoch": epoch, "labels": labels, "predictions": predictions,
                                              "images": images}))  # fmt: skip

    @hookimpl
    def on_checkpoint(self, run, epoch, path):
        self.calls.append(("on_checkpoint", {"epoch": epoch, "path": path}))

    @hookimpl
    def on_run_end(self, run, status, result):
        self.calls.append(("on_run_end", {"status": status, "result": result}))


@pytest.fixture
def host(clean_env):
    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    host.add(cifar10_plugin, "cifar10")  # the default dataset's plugin
    return host


def run(host, tmp_path, plugin="fake", model=None, **flags):
    flags = {"runs_root": str(tmp_path / "runs"), **SMALL, **flags}
    name, spec, config = runner.resolve(host, plugin, model, {}, flags)
    return runner.execute(host, name, spec, config)


def record_of(run_dir):
    return json.loads((run_dir / "run.json").read_text())


# --- registration hooks -----------------------------------------------------------------


def test_hook_register_datasets(host, tmp_path):
    loaded = []

    def load_tiny(config):
        loaded.append(config.dataset_options)
        return Dataset(
            "tiny", synthetic.generate(40, 1), synthetic.generate(20, 2), synthetic.CLASS_NAMES, {"source": "test"}
        )

    class DatasetPlugin:
        @hookimpl
        def register_datasets(self, register):
            register(DatasetSpec("tiny", load_tiny, "forty images"))

    host.add(DatasetPlugin(), "tiny-data")
    assert host.dataset("tiny").description == "forty images"
    assert "dataset:tiny" in host.plugins["tiny-data"].registered
    run_dir = run(host, tmp_path, dataset="tiny", dataset_options={"k": 1})
    assert loaded == [{"k": 1}]
    described = record_of(run_dir)["dataset"]
    assert {k: described[k] for k in ("name", "train_images", "test_images", "classes", "source")} == {
        "name": "tiny", "train_images": 40, "test_images": 20, "classes": 10, "source": "test",
    }  # fmt: skip


def test_hook_register_models(host):
    def factory(num_classes, options):
        return ("model", num_classes, options)

    class ModelPlugin:
        @hookimpl
        def register_models(self, register):
            register(ModelSpec("tiny-net", "numpy", factory, input_size=16, recipes={"r": {"epochs": 1}}))
            register(ModelSpec("tiny-net-2", "numpy", factory))

    host.add(ModelPlugin(), "tiny-models")
    assert [m.name for m in host.models_of("tiny-models")] == ["tiny-net", "tiny-net-2"]
    plugin, spec = host.resolve_model("tiny-models", "tiny-net-2")
    assert plugin == "tiny-models" and spec.name == "tiny-net-2"
    _, spec, config = runner.resolve(host, "tiny-models", None, {}, {})
    assert (spec.name, config.recipe, config.epochs) == ("tiny-net", "r", 1)


def test_hook_register_model_providers(host, tmp_path):
    asked = []

    def names():
        asked.append("names")
        return ["tiny", "wide"]

    def spec(name):
        if name not in ("tiny", "wide"):
            raise UsageError(f"the zoo has no model {name!r}")
        return ModelSpec(f"zoo/{name}", "numpy", _factory, recipes={"zoo": {"epochs": 1}})

    class Zoo:
        CIFARFW_HOOK_API = 2

        @hookimpl
        def register_model_providers(self, register):
            register(ModelProviderSpec("zoo", names, spec, "numpy", options=(Option("depth", "layers"),)))

    host.add(Zoo(), "zoo-plugin")
    host.collect()
    assert asked == [] and "provider:zoo" in host.plugins["zoo-plugin"].registered  # registered lazily
    assert host.resolve_model("zoo-plugin", "wide")[1].name == "zoo/wide"
    assert host.resolve_model("zoo/tiny", None) == ("zoo-plugin", host.resolve_model("zoo-plugin", "tiny")[1])
    assert host.plugin_of_model("zoo/tiny") == "zoo-plugin"
    with pytest.raises(UsageError, match="no model 'deep'"):
        host.resolve_model("zoo-plugin", "deep")
    with pytest.raises(UsageError, match="name one with --model"):
        host.resolve_model("zoo-plugin", None)
    run_dir = run(host, tmp_path, plugin="zoo-plugin", model_options={"depth": "3"}, model="tiny")
    assert (record_of(run_dir)["model"], record_of(run_dir)["recipe"]) == ("zoo/tiny", "zoo")
    assert asked == []  # nothing listed the zoo: a run looks up one model


def test_hook_register_executors(host, tmp_path, monkeypatch):
    class Executor:
        @hookimpl
        def register_executors(self, register):
            register(ExecutorSpec("inline", lambda options: ("executor", options), (Option("slots", "runs at once"),)))

    host.add(Executor(), "inline-executor")
    host.collect()
    assert host.executors["inline"].factory({"slots": 2}) == ("executor", {"slots": 2})
    assert "executor:inline" in host.plugins["inline-executor"].registered
    # What an executor tells the record of each run it starts, through the environment.
    extra = {"sweep": {"name": "s1", "index": 3, "params": {"lr": 0.1}}, "executor": {"name": "inline", "node_id": "n"}}
    monkeypatch.setenv("CIFARFW_RECORD_EXTRA", json.dumps({**extra, "status": "forged"}))
    record = record_of(run(host, tmp_path, epochs=1))
    assert {k: record[k] for k in extra} == extra and record["status"] == "finished" and record["host"]


def test_a_reporter_can_stop_a_run_with_a_status(host, tmp_path):
    class Pruner:
        @hookimpl
        def on_epoch_end(self, run, epoch):
            if epoch == 1:
                run.request_stop("pruned")

    host.add(Pruner(), "pruner")
    record = record_of(run(host, tmp_path, epochs=3))  # no error: stopping was asked for
    assert record["status"] == "pruned" and [e["epoch"] for e in record["epochs"]] == [1]
    assert record["checkpoint"]["epoch"] == 1


def test_hook_on_session_end(host, tmp_path):
    ended = []

    class Summary:
        @hookimpl
        def on_session_end(self, run_dirs, failures):
            ended.append((run_dirs, failures))

    host.add(Summary(), "summary")
    request = session.Request(("fake",), flags={"runs_root": str(tmp_path / "runs"), **SMALL, "seeds": 2})
    run_dirs = session.run(host, request)
    assert ended == [(run_dirs, 0)] and len(run_dirs) == 2
    session.run(host, session.Request(("fake",), flags={"runs_root": str(tmp_path / "runs"), **SMALL}))
    assert len(ended) == 1  # a single run is no session to sum up


def test_hook_register_trainers(host, tmp_path):
    fitted = []

    class CountingTrainer(NumpyTrainer):
        def fit(self, run):
            fitted.append(run.model.name)
            return super().fit(run)

    class TrainerPlugin:
        @hookimpl
        def register_trainers(self, register):
            register(TrainerSpec("counting", "numpy2", CountingTrainer, validate=self.validate))

        @staticmethod
        def validate(config, model):
            from cifarfw.errors import UsageError

            if config.precision == "fp16":
                raise UsageError("the counting trainer cannot do fp16")

        @hookimpl
        def register_models(self, register):
            register(ModelSpec("softmax2", "numpy2", _factory, recipes={"q": {"lr": 0.05}}))

    host.add(TrainerPlugin(), "counting")
    assert host.trainer_for("numpy2").name == "counting"
    run_dir = run(host, tmp_path, plugin="counting", epochs=1)
    assert fitted == ["softmax2"] and record_of(run_dir)["framework"] == "numpy2"
    from cifarfw.errors import UsageError

    with pytest.raises(UsageError, match="cannot do fp16"):
        runner.resolve(host, "counting", None, {}, {"precision": "fp16"})


def test_hook_register_reporters(host, tmp_path):
    seen = []

    class Reporter:
        def __init__(self, run):
            self.run = run

        @hookimpl
        def on_run_end(self, run, status):
            seen.append((self.name, status))

    class Always(Reporter):
        name = "always"

    class OnRequest(Reporter):
        name = "on-request"

    class ReporterPlugin:
        @hookimpl
        def register_reporters(self, register):
            register(ReporterSpec("always", Always))
            register(ReporterSpec("on-request", OnRequest, default=False))

    host.add(ReporterPlugin(), "reporters")
    run(host, tmp_path, epochs=1)
    assert seen == [("always", "finished")]
    seen.clear()
    run(host, tmp_path, epochs=1, reporters=["on-request"])
    assert sorted(seen) == [("always", "finished"), ("on-request", "finished")]


def test_hook_register_commands(cli, entry_points):
    entry_points(("hello", "fixtures.hook_plugins:COMMANDS"))
    code, out, err = cli("--help")
    assert code == 0 and "hello" in out
    code, out, err = cli("hello", "--who", "cifar")
    assert (code, out.strip()) == (0, "hello, cifar"), err


# --- event hooks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listened(tmp_path_factory):
    """One two-epoch run of the fake trainer (it checkpoints every epoch), seen by a Listener
    plugin; shared by the tests below."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS"):
            mp.delenv(var, raising=False)
        host = PluginHost(load_entry_points=False)
        listener = Listener()
        host.add(FAKE_PLUGIN, "fake")
        host.add(listener, "listener")
        run_dir = run(host, tmp_path_factory.mktemp("listened"), batch_size=25)
    return listener, run_dir


def test_hook_on_run_start(listened):
    listener, run_dir = listened
    (call,) = listener.of("on_run_start")
    assert listener.calls[0][0] == "on_run_start"
    assert call["run"].dir == run_dir and call["status"] == "running"
    assert call["run"].config.epochs == 2


def test_hook_on_model_built(listened):
    listener, run_dir = listened
    (call,) = listener.of("on_model_built")
    assert call["params"] == {"total": 1930, "trainable": 1930}
    assert call["summary"] == "softmax regression" and call["graph"] is None
    assert record_of(run_dir)["params"] == {"total": 1930, "trainable": 1930}


def test_hook_on_train_progress(listened):
    listener, _ = listened
    calls = listener.of("on_train_progress")
    assert [(c["epoch"], c["step"], c["steps"]) for c in calls] == [
        (epoch, step, 4) for epoch in (1, 2) for step in (1, 2, 3, 4)
    ]


def test_hook_on_epoch_end(listened):
    listener, run_dir = listened
    calls = listener.of("on_epoch_end")
    assert [c["epoch"] for c in calls] == [1, 2]
    for call in calls:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"} <= set(call["metrics"])
    assert [e["test_acc"] for e in record_of(run_dir)["epochs"]] == [c["metrics"]["test_acc"] for c in calls]


def test_hook_on_predictions(listened):
    listener, run_dir = listened
    (call,) = listener.of("on_predictions")
    assert call["epoch"] == 2
    assert call["labels"].shape == call["predictions"].shape == (50,)
    assert call["images"].dtype == np.uint8 and call["images"].shape == (4, 32, 32, 3)
    saved = np.load(run_dir / "predictions.npz")
    assert np.array_equal(saved["predictions"], call["predictions"])


def test_hook_on_checkpoint(listened):
    listener, run_dir = listened
    calls = listener.of("on_checkpoint")
    assert [c["epoch"] for c in calls] == [1, 2]
    assert all((run_dir / "checkpoints" / f"epoch{c['epoch']}.npz").is_file() for c in calls)
    relative = Path(calls[-1]["path"]).resolve().relative_to(run_dir.resolve()).as_posix()  # run.json: relative
    assert record_of(run_dir)["checkpoint"] == {"epoch": 2, "path": relative}


def test_hook_on_run_end(listened, host, tmp_path, monkeypatch):
    listener, run_dir = listened
    assert listener.calls[-1][0] == "on_run_end"
    (call,) = listener.of("on_run_end")
    assert call["status"] == "finished" and call["result"].final["test_acc"] == record_of(run_dir)["final"]["test_acc"]
    # A failing trainer: status "failed" and no result.
    failing = Listener()
    host.add(failing, "failing-listener")
    monkeypatch.setattr(NumpyTrainer, "fit", lambda self, run: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run(host, tmp_path)
    assert failing.of("on_run_end") == [{"status": "failed", "result": None}]


# --- stability: docs/hooks.md#versions ----------------------------------------------------------


def old_plugin_module(version):
    """A plugin module as written for hook API ``version``: its hooks name fewer arguments."""
    module = types.ModuleType(f"old_plugin_v{version}")
    module.CIFARFW_HOOK_API = version
    module.seen = []

    @hookimpl
    def on_epoch_end(metrics):  # no run, no epoch: pluggy passes only what is named
        module.seen.append(round(metrics["test_acc"], 6))

    @hookimpl
    def on_run_end(status):
        module.seen.append(status)

    module.on_epoch_end = on_epoch_end
    module.on_run_end = on_run_end
    return module


def test_plugin_for_an_older_hook_api_keeps_working(host, tmp_path):
    old = old_plugin_module(1)
    host.add(old, "old")
    assert host.plugins["old"].status == "ok"
    run_dir = run(host, tmp_path)
    accs = [round(e["test_acc"], 6) for e in record_of(run_dir)["epochs"]]
    assert old.seen == [*accs, "finished"]


def test_hooks_gain_arguments_without_breaking_old_plugins():
    """A future core whose on_epoch_end gains an argument still calls the old implementation."""

    class FutureSpecs:
        @hookspecs.hookspec
        def on_epoch_end(self, run, epoch, metrics, new_argument):
            """on_epoch_end as a later hook API might have it."""

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(FutureSpecs)
    old = old_plugin_module(1)
    pm.register(old)
    pm.hook.on_epoch_end(run=None, epoch=1, metrics={"test_acc": 0.5}, new_argument="x")
    assert old.seen == [0.5]


def test_plugin_for_a_newer_hook_api_is_refused_with_a_fix(host, tmp_path):
    newer = old_plugin_module(hookspecs.HOOK_API_VERSION + 1)
    host.add(newer, "newer")
    info = host.plugins["newer"]
    assert info.status == "failed"
    assert f"hook API {hookspecs.HOOK_API_VERSION + 1}" in info.error and "upgrade cifarfw" in info.error
    run(host, tmp_path, epochs=1)  # the others keep working
    assert newer.seen == []


def test_implementation_naming_an_unknown_argument_fails_only_its_plugin(host, tmp_path):
    module = types.ModuleType("wants_more")

    @hookimpl
    def on_epoch_end(metrics, argument_of_the_future):
        raise AssertionError("never called")

    module.on_epoch_end = on_epoch_end
    host.add(module, "wants-more")
    assert host.plugins["wants-more"].status == "failed"
    assert "argument_of_the_future" in host.plugins["wants-more"].error
    run(host, tmp_path, epochs=1)
