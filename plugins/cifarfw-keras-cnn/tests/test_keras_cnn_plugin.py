"""The keras-cnn plugin: the study's model exactly, its recipes, and the command line end to end
(quiet start-up, resume, one-line errors for bad input)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifarfw import runner
from cifarfw.plugins import PluginHost

pytest.importorskip("cifarfw_keras._tf")  # imports TensorFlow the quiet way (triton first)

from cifarfw_keras_cnn import model as cnn
from cifarfw_keras_cnn.plugin import RECIPES

BIN = Path(sys.executable).parent
SYNTHETIC = [
    "--dataset",
    "synthetic",
    "--set",
    "dataset_options.train_size=200",
    "--set",
    "dataset_options.test_size=100",
]
TF_NOISE = ("oneDNN", "I0000", "W0000", "absl::InitializeLog", "cpu_feature_guard", "Traceback")


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """The CLI in-process: ``code, out, err = cli("run", ...)``, in tmp_path, plugin variables cleared."""
    from cifarfw.cli import main

    for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS", "CIFARFW_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def one_line_error(code: int, err: str, expected_code: int, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == expected_code, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], err


# --- the model and its recipes ------------------------------------------------------------


def test_the_study_cnn_has_exactly_126730_parameters():
    model = cnn.build(10, {})
    assert model.count_params() == cnn.PARAMETERS == 126_730
    assert sum(int(w.numpy().size) for w in model.trainable_weights) == 126_730
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D"] * 3 + ["Flatten", "Dense", "Dense"]
    assert [layer.padding for layer in model.layers if hasattr(layer, "padding")][::2] == ["valid"] * 3
    assert model.output_shape == (None, 10)


def test_recipes_resolve_to_the_study_and_the_fair_settings():
    host = PluginHost()
    _, spec, study = runner.resolve(host, "keras-cnn", None, {}, {})
    assert spec.framework == "keras" and study.recipe == "study"
    assert (study.epochs, study.batch_size, study.optimizer, study.lr, study.schedule) == (
        20,
        32,
        "adam",
        0.001,
        "constant",
    )
    assert (study.augment.crop_padding, study.augment.flip, study.augment.brightness) == (0, False, 0.0)
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)  # x/255, as the study
    _, _, fair = runner.resolve(host, "keras-cnn", None, {}, {"recipe": "fair"})
    assert (fair.epochs, fair.batch_size, fair.lr) == (20, 64, 0.001)
    assert (fair.augment.crop_padding, fair.augment.flip, fair.augment.brightness) == (4, True, 0.2)
    assert set(RECIPES) >= {"study", "fair", "fast"}


def test_plugin_modules_import_no_tensorflow():
    code = "import sys, cifarfw_keras.plugin, cifarfw_keras_cnn.plugin; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


# --- the command line -----------------------------------------------------------------------


def test_a_run_from_the_command_line_is_quiet_and_records_the_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "CIFARFW_"))}
    cmd = [
        str(BIN / "cifarfw"),
        "run",
        "--plugin",
        "keras-cnn",
        *SYNTHETIC,
        "--epochs",
        "1",
        "--runs-root",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert not any(noise in out.stderr + out.stdout for noise in TF_NOISE), out.stderr
    assert out.stderr.strip() == "", out.stderr
    assert "epoch 1/1" in out.stdout and "126,730 parameters" in out.stdout
    (record,) = tmp_path.glob("*/run.json")
    data = json.loads(record.read_text())
    assert data["params"] == {"total": 126_730, "trainable": 126_730}
    assert data["resolved"]["outputs"] == "probabilities"


def test_resume_continues_and_bad_checkpoints_are_one_line_errors(cli, tmp_path):
    code, out, err = cli("run", "--plugin", "keras-cnn", *SYNTHETIC, "--epochs", "2", "--runs-root", "runs")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").glob("*-keras-cnn-*")
    record_path = run_dir / "run.json"
    first = run_dir / "checkpoints" / "epoch-0001.keras"
    good = first.read_bytes()

    def resume_from_epoch_1() -> tuple[int, str, str]:
        # Pretend the run stopped after epoch 1: its record points at the epoch-1 checkpoint.
        record = json.loads(record_path.read_text())
        record.update(status="interrupted", checkpoint={"epoch": 1, "path": str(first)})
        record["epochs"] = record["epochs"][:1]
        record_path.write_text(json.dumps(record))
        return cli("run", "--resume", run_dir.name, "--runs-root", "runs")

    first.unlink()
    code, _, err = resume_from_epoch_1()
    one_line_error(code, err, 4, "does not exist")

    first.write_bytes(good[: len(good) // 3])
    code, _, err = resume_from_epoch_1()
    one_line_error(code, err, 4, "cannot be loaded")

    first.write_bytes(good)
    code, out, err = resume_from_epoch_1()
    assert code == 0, err
    assert "epoch 2/2" in out and "epoch 1/2" not in out
    resumed = json.loads(record_path.read_text())
    assert resumed["status"] == "finished" and [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    assert resumed["resolved"]["resumed_from_epoch"] == 1


@pytest.mark.parametrize(
    ("flags", "exit_code", "fragment"),
    [
        (["--device", "gpu"], 2, "no GPU"),
        (["--device", "cuda:0"], 2, "no GPU"),
        (["--precision", "fp16"], 2, "fp16 needs a GPU"),
        (["--recipe", "fastest"], 2, "no recipe 'fastest'"),
    ],
)
def test_unsupported_options_are_one_line_errors(cli, flags, exit_code, fragment):
    code, _, err = cli("run", "--plugin", "keras-cnn", *SYNTHETIC, *flags, "--runs-root", "runs")
    one_line_error(code, err, exit_code, fragment)
    assert not Path("runs").exists() or not any(Path("runs").glob("*-keras-cnn-*"))
