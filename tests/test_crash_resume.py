"""Real `cifarfw run` processes SIGKILLed at several points, then resumed: the final metrics and
weights equal an uninterrupted run's, for torch-cnn and keras-cnn (CPU, --deterministic), and for
torch-cnn also when another process keeps a core busy while the killed run starts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cifarfw.plugins import PluginHost

KILLER = Path(__file__).parent / "killer" / "cifarfw_test_killer.py"
ARGS = [
    "--dataset", "synthetic", "--set", "dataset_options.train_size=300", "--set", "dataset_options.test_size=100",
    "--epochs", "3", "--batch-size", "50", "--seed", "1", "--deterministic", "--precision", "fp32",
    "--set", "prediction_samples=0",
]  # fmt: skip
POINTS = ["epoch_progress:2", "checkpoint:2", "checkpoint_write:2"]


def installed(plugin: str) -> bool:
    host = PluginHost()
    host.collect()
    return host.plugins.get(plugin) is not None and host.plugins[plugin].status == "ok"


@pytest.fixture(scope="module")
def killer_path(tmp_path_factory):
    """A site folder holding the killer plugin and a dist-info that declares its entry point."""
    site = tmp_path_factory.mktemp("killer-site")
    shutil.copy(KILLER, site / KILLER.name)
    info = site / "cifarfw_test_killer-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cifarfw-test-killer\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[cifarfw]\ntest-killer = cifarfw_test_killer\n")
    return site


def cifarfw(
    runs_root: Path, *args: str, kill: str = "", site: Path | None = None, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "CIFARFW_TEST_KILL": kill, "CUDA_VISIBLE_DEVICES": "", **(env_extra or {})}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "cifarfw", "run", *args, "--runs-root", str(runs_root)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def only_run(runs_root: Path) -> Path:
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return run_dir


def final_weights(run_dir: Path, framework: str) -> dict:
    record = json.loads((run_dir / "run.json").read_text())
    path = run_dir / record["checkpoint"]["path"]  # relative to the run folder (an absolute one stays as is)
    if framework == "torch":
        import torch

        state = torch.load(path, weights_only=True, map_location="cpu")
        model = state.get("model", state)
        return {k: v.numpy().copy() for k, v in model.items()}
    from cifarfw_keras._tf import keras

    model = keras.saving.load_model(str(path), safe_mode=True, compile=False)
    return {w.path: w.numpy() for w in model.weights}


@pytest.mark.slow
@pytest.mark.parametrize(("plugin", "framework"), [("torch-cnn", "torch"), ("keras-cnn", "keras")])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, killer_path, plugin, framework):
    if not installed(plugin):
        pytest.skip(f"{plugin} is not installed")
    straight = cifarfw(tmp_path / "straight", "--plugin", plugin, *ARGS)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = json.loads((only_run(tmp_path / "straight") / "run.json").read_text())
    expected_weights = final_weights(only_run(tmp_path / "straight"), framework)
    for point in POINTS:
        root = tmp_path / point.replace(":", "-")
        killed = cifarfw(root, "--plugin", plugin, *ARGS, kill=point, site=killer_path)
        assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-2000:])
        record = json.loads((only_run(root) / "run.json").read_text())
        assert record["status"] == "running"  # SIGKILL: nothing could mark it
        resumed = cifarfw(root, "--resume", "last")
        assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
        got = json.loads((only_run(root) / "run.json").read_text())
        assert got["status"] == "finished" and got["resumed"], point
        assert [e["epoch"] for e in got["epochs"]] == [1, 2, 3], point
        for want, have in zip(expected["epochs"], got["epochs"], strict=True):
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert want[key] == have[key], (point, want["epoch"], key)
        weights = final_weights(only_run(root), framework)
        assert weights.keys() == expected_weights.keys()
        for name, value in expected_weights.items():
            assert (weights[name] == value).all(), (point, name)
        assert not list(only_run(root).rglob("*.tmp")), point


@contextlib.contextmanager
def cpu_burner():
    """Another process keeping a core busy for the block's duration."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


@pytest.mark.slow
@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "plain"])
def test_sigkill_under_load_then_resume_on_a_quiet_machine_equals_uninterrupted(tmp_path, killer_path, deterministic):
    """The killed run starts while a core is busy, the resume runs without that load. The
    resume continues with the thread count the run started with; a --deterministic run
    uses the same count whatever the load, a plain one is compared with an uninterrupted
    run pinned to the count the killed run recorded."""
    if not installed("torch-cnn"):
        pytest.skip("torch-cnn is not installed")
    args = ARGS if deterministic else [a for a in ARGS if a != "--deterministic"]
    root = tmp_path / "killed"
    with cpu_burner():
        killed = cifarfw(root, "--plugin", "torch-cnn", *args, kill="epoch_progress:2", site=killer_path)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    threads = json.loads((only_run(root) / "run.json").read_text())["resolved"]["threads"]
    resumed = cifarfw(root, "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming with {threads} thread" in resumed.stdout
    pin = {} if deterministic else {"CIFARFW_TORCH_THREADS": str(threads)}
    straight = cifarfw(tmp_path / "straight", "--plugin", "torch-cnn", *args, env_extra=pin)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = json.loads((only_run(tmp_path / "straight") / "run.json").read_text())
    got = json.loads((only_run(root) / "run.json").read_text())
    assert got["resolved"]["threads"] == expected["resolved"]["threads"] == threads
    for want, have in zip(expected["epochs"], got["epochs"], strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert want[key] == have[key], (want["epoch"], key)
    weights = final_weights(only_run(root), "torch")
    for name, value in final_weights(only_run(tmp_path / "straight"), "torch").items():
        assert (weights[name] == value).all(), name
