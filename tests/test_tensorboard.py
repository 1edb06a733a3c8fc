"""TensorBoard: one HParams experiment over every run under a runs root, read back with
TensorBoard's own readers; the writer path never imports TensorFlow; `cifarfw tensorboard`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from test_compare_support import make_failed_run, make_host, make_run

from cifarfw.testing import assert_one_line_error
from cifarfw_tensorboard import hparams

# Reads a logdir the way TensorBoard's HParams dashboard does: the multiplexer, its data
# provider, the HParams plugin's backend context and its GetExperiment / ListSessionGroups
# handlers. A subprocess, with TensorBoard's "no TensorFlow" switch, so the test neither
# pays for importing TensorFlow nor depends on whether another test already did.
READER = textwrap.dedent(
    """
    import json, sys, types
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    from google.protobuf import json_format
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    root = sys.argv[1]
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(root)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, root)
    ctx = backend_context.Context(base_plugin.TBContext(data_provider=provider, logdir=root, multiplexer=mux))
    request_context = context.RequestContext()
    experiment = get_experiment.Handler(request_context, ctx, "", api_pb2.GetExperimentRequest()).run()
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING],
    )
    groups = list_session_groups.Handler(request_context, ctx, "", request).run()
    images = provider.list_blob_sequences(request_context, experiment_id="", plugin_name="images")
    texts = provider.list_tensors(request_context, experiment_id="", plugin_name="text")
    print(json.dumps({
        "experiment": json_format.MessageToDict(experiment),
        "groups": json_format.MessageToDict(groups),
        "images": {run: sorted(tags) for run, tags in images.items()},
        "texts": {run: sorted(tags) for run, tags in texts.items()},
        "tensorflow_imported": "tensorflow" in sys.modules,
        "runs": sorted(mux.Runs()),
        "scalars": {run: sorted(tags.get("scalars", [])) for run, tags in mux.Runs().items()},
    }))
    """
)


def read_with_tensorboard(root) -> dict:
    done = subprocess.run([sys.executable, "-c", READER, str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """A torch-cnn and a keras-cnn stand-in run (different frameworks and hparams) and a failed run."""
    root = tmp_path_factory.mktemp("tb-runs")
    host = make_host()
    torch_run = make_run(host, root, "torch-cnn", seed=0)
    keras_run = make_run(host, root, "keras-cnn", seed=3)
    failed = make_failed_run(host, root)
    return {"root": root, "torch": torch_run, "keras": keras_run, "failed": failed, "read": read_with_tensorboard(root)}


def test_one_hparams_experiment_lists_both_frameworks_with_the_same_metrics(logdir):
    data = logdir["read"]
    experiment = data["experiment"]
    metric_tags = sorted(m["name"]["tag"] for m in experiment["metricInfos"])
    assert metric_tags == ["accuracy/test", "accuracy/train", "loss/test", "loss/train"]
    names = {h["name"] for h in experiment["hparamInfos"]}
    expected = {"Plugin", "Model", "framework", "recipe", "optimizer", "lr", "batch_size", "epochs"}
    assert expected | {"precision", "augmentation", "Seed", "dataset"} <= names
    differs = {h["name"] for h in experiment["hparamInfos"] if h.get("differs")}
    assert {"framework", "augmentation", "lr", "Seed"} <= differs and "dataset" not in differs
    sessions = {s["name"]: (g, s) for g in data["groups"]["sessionGroups"] for s in g["sessions"]}
    assert set(sessions) == {logdir["torch"].name, logdir["keras"].name, logdir["failed"].name}
    frameworks = {}
    for run in ("torch", "keras"):
        group, session = sessions[logdir[run].name]
        frameworks[group["hparams"]["framework"]] = group["hparams"]
        assert session["status"] == "STATUS_SUCCESS"
        # Every session reports the same four metrics, with the run's final values.
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert sorted(values) == metric_tags
        final = json.loads((logdir[run] / "run.json").read_text())["final"]
        assert values["accuracy/test"] == pytest.approx(final["test_acc"])
        assert values["loss/train"] == pytest.approx(final["train_loss"])
    assert set(frameworks) == {"torch", "keras"}
    assert frameworks["torch"]["augmentation"] == "crop (pad 4), flip, brightness 20%"
    assert frameworks["keras"]["augmentation"] == "none"
    assert frameworks["keras"]["Seed"] == 3 and frameworks["keras"]["lr"] == pytest.approx(0.02)
    assert frameworks["torch"]["precision"] == "fp64"  # resolved by the trainer, not the config's "auto"
    _, failed = sessions[logdir["failed"].name]
    assert failed["status"] == "STATUS_FAILURE"


def test_no_fake_run_and_the_hparams_layout_tensorboard_shows(logdir):
    """No run named "." in TensorBoard's selectors; trials are named by their run ids; model,
    plugin and seed come first (the dashboard shows the first five, differing ones first);
    the data subset is an hparam."""
    data = logdir["read"]
    ids = sorted(logdir[k].name for k in ("torch", "keras", "failed"))
    assert data["runs"] == ids  # every run TensorBoard lists is a real run, "." is not among them
    assert not list(logdir["root"].glob("events.out.tfevents.*"))  # nothing at the top of the root
    holders = [p.parent.name for p in logdir["root"].glob("*/events.out.tfevents.0000000000.cifarfw-hparams.*")]
    assert len(holders) == 1  # one experiment, in one run's folder
    infos = data["experiment"]["hparamInfos"]
    assert [h["name"] for h in infos[:3]] == ["Model", "Plugin", "Seed"]
    assert all(h.get("differs") for h in infos[:3])
    assert {"train_limit", "test_limit"} <= {h["name"] for h in infos}
    assert sorted(g["name"] for g in data["groups"]["sessionGroups"]) == ids  # trial name = run id, whole


def test_loss_and_lr_every_50_steps_beside_the_epoch_values(tmp_path):
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cifarfw_tensorboard.reporter import TensorBoardReporter

    reporter = TensorBoardReporter(SimpleNamespace(dir=tmp_path))
    for epoch in (1, 2):
        for step in range(10, 71, 10):  # 70 steps an epoch, reported every 10 as the torch trainer does
            reporter.on_train_progress(
                run=None, epoch=epoch, step=step, steps=70, metrics={"loss": 1 / step, "lr": 0.1}
            )
    reporter.writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train_step")] == [50, 100]
    assert [e.value for e in events.Scalars("lr/step")] == pytest.approx([0.1] * 2)


def test_prediction_captions_are_readable_at_tensorboard_s_size():
    import numpy as np

    from cifarfw_tensorboard import figures

    fig = figures.prediction_grid(np.zeros((32, 32, 32, 3), np.uint8), [0] * 32, [1] * 32, ["cat", "dog"])
    _, _, width = figures.png_bytes(fig)
    title = fig.axes[0].title
    # A card about 500 px wide shows the image at width <= 520 px: captions stay >= 11 px.
    assert width <= 520 and title.get_fontsize() * fig.dpi / 72 * min(1, 500 / width) >= 11
    figures.pyplot().close(fig)


def test_each_run_has_prediction_images_confusion_matrix_and_config_text(logdir):
    data = logdir["read"]
    for run in ("torch", "keras"):
        name = logdir[run].name
        assert data["images"][name] == ["confusion_matrix", "predictions"]
        assert "config" in data["texts"][name]
    assert not data["tensorflow_imported"]


WRITER_CHECK = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_compare_support import make_host, make_run
    from cifarfw_tensorboard import hparams
    make_run(make_host(), sys.argv[1], "keras-cnn")
    hparams.write_experiment(sys.argv[1])
    print("tensorflow" in sys.modules, "tensorboard.plugins.hparams.summary" in sys.modules)
    """
)


def test_the_writer_path_never_imports_tensorflow(tmp_path):
    from pathlib import Path

    tests = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", WRITER_CHECK, str(tmp_path / "runs"), str(tests)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["False", "False"]
    assert list((tmp_path / "runs").glob(f"*/{hparams.EXPERIMENT_PREFIX}.*"))


def test_tensorboard_command_starts_tensorboard_on_the_runs_root_on_loopback(logdir, cli, monkeypatch):
    calls = []
    monkeypatch.setattr("cifarfw_tensorboard.command.os.execv", lambda path, argv: calls.append(argv))
    code, _, err = cli("tensorboard", "--runs-root", str(logdir["root"]), "--port", "6123")
    assert code == 0, err
    (argv,) = calls
    assert argv[1:4] == ["-m", "tensorboard.main", "--logdir"]
    assert argv[4] == str(logdir["root"])
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "6123"
    assert "http://127.0.0.1:6123/" in err


def test_tensorboard_command_on_a_missing_runs_root_is_one_line(cli, tmp_path):
    code, _, err = cli("tensorboard", "--runs-root", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "does not exist")
