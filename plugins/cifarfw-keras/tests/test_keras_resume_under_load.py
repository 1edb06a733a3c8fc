"""keras-cnn under load (issue 16): a run SIGKILLed and resumed while another process keeps a
core busy ends with the metrics and weights of an uninterrupted run on an idle machine; the
thread pools are recorded and reused; a killed checkpoint write leaves no temporary file
behind after the resume. And `--compile` (XLA jit_compile) trains."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("cifarfw_keras._tf")

ROOT = Path(__file__).resolve().parents[3]
KILLER = ROOT / "tests" / "killer" / "cifarfw_test_killer.py"
ARGS = [
    "--plugin", "keras-cnn", "--dataset", "synthetic", "--set", "dataset_options.train_size=300",
    "--set", "dataset_options.test_size=100", "--epochs", "3", "--batch-size", "50", "--seed", "1",
    "--deterministic", "--precision", "fp32", "--set", "prediction_samples=0",
]  # fmt: skip


@contextlib.contextmanager
def cpu_burner() -> Iterator[None]:
    """Another process spinning on a core for the block."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


@pytest.fixture(scope="module")
def killer_site(tmp_path_factory) -> Path:
    """A site folder holding the test killer plugin and a dist-info declaring its entry point."""
    if not KILLER.is_file():
        pytest.skip("the killer plugin (tests/killer) is not in this checkout")
    site = tmp_path_factory.mktemp("killer-site")
    shutil.copy(KILLER, site / KILLER.name)
    info = site / "cifarfw_test_killer-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cifarfw-test-killer\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[cifarfw]\ntest-killer = cifarfw_test_killer\n")
    return site


def cifarfw(runs_root: Path, *args: str, kill: str = "", site: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CIFARFW_TEST_KILL": kill, "CUDA_VISIBLE_DEVICES": ""}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "cifarfw", "run", *args, "--runs-root", str(runs_root)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def only_run(runs_root: Path) -> Path:
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return run_dir


def weights(run_dir: Path) -> dict:
    from cifarfw_keras._tf import keras

    record = json.loads((run_dir / "run.json").read_text())
    path = run_dir / record["checkpoint"]["path"]  # relative to the run folder (an absolute one stays whole)
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return {w.path: w.numpy() for w in model.weights}


@pytest.mark.slow
def test_sigkill_resume_under_load_equals_an_idle_uninterrupted_run(tmp_path, killer_site):
    straight = cifarfw(tmp_path / "straight", *ARGS)  # no burner: the idle reference
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = json.loads((only_run(tmp_path / "straight") / "run.json").read_text())
    expected_weights = weights(only_run(tmp_path / "straight"))
    assert expected["resolved"]["threads"]["intra_op"] >= 1
    # checkpoint_write:3 dies at the third rename into checkpoints/: epoch 2's model file
    # (epoch 1's model and sidecar were the first two), its temporary file complete.
    for point in ("checkpoint_write:3", "epoch_progress:2"):
        root = tmp_path / point.replace(":", "-")
        with cpu_burner():
            killed = cifarfw(root, *ARGS, kill=point, site=killer_site)
            assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-2000:])
            run_dir = only_run(root)
            if point.startswith("checkpoint_write"):  # the kill left the write's temporary file
                assert list((run_dir / "checkpoints").glob(".epoch-*.tmp.keras")), point
            resumed = cifarfw(root, "--resume", "last")
        assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
        got = json.loads((run_dir / "run.json").read_text())
        assert got["status"] == "finished" and got["resumed"], point
        assert got["resolved"]["threads"] == expected["resolved"]["threads"], point
        for want, have in zip(expected["epochs"], got["epochs"], strict=True):
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert want[key] == have[key], (point, want["epoch"], key)
        have_weights = weights(run_dir)
        assert have_weights.keys() == expected_weights.keys()
        for name, value in expected_weights.items():
            assert (have_weights[name] == value).all(), (point, name)
        assert not list(run_dir.rglob("*.tmp.keras")) and not list(run_dir.rglob("*.tmp")), point  # cleaned


def test_resume_reuses_the_recorded_thread_pools(monkeypatch):
    """set_threads keeps a recorded choice over what this process would pick."""
    from cifarfw_keras import runtime
    from cifarfw_keras._tf import tf

    threading = tf.config.threading
    current = {
        "intra_op": threading.get_intra_op_parallelism_threads() or runtime.allowed_cpus(),
        "inter_op": threading.get_inter_op_parallelism_threads() or runtime.allowed_cpus(),
    }
    assert runtime.set_threads(None) == (current, True)
    assert runtime.set_threads(dict(current)) == (current, True)
    calls = []
    monkeypatch.setattr(threading, "set_intra_op_parallelism_threads", lambda n: calls.append(("intra", n)))
    monkeypatch.setattr(threading, "set_inter_op_parallelism_threads", lambda n: calls.append(("inter", n)))
    wanted = {"intra_op": current["intra_op"] + 1, "inter_op": 1}
    assert runtime.set_threads(wanted) == (wanted, True)
    assert calls == [("intra", wanted["intra_op"]), ("inter", 1)]

    def started(n: int) -> None:
        raise RuntimeError("Intra op parallelism cannot be modified after initialization.")

    monkeypatch.setattr(threading, "set_intra_op_parallelism_threads", started)
    assert runtime.set_threads(wanted) == (current, False)  # reported, so the trainer can warn


def test_leftover_checkpoint_writes_are_removed(tmp_path):
    from cifarfw_keras import checkpoints

    leftovers = [tmp_path / ".epoch-0002.1a2b3c4d.tmp.keras", tmp_path / ".epoch-0001.json.catr336g.tmp"]
    kept = [tmp_path / "epoch-0001.keras", tmp_path / "epoch-0001.json"]
    for path in leftovers + kept:
        path.write_bytes(b"x")
    assert checkpoints.remove_leftovers(tmp_path) == leftovers
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)


@pytest.mark.slow
def test_compile_trains_a_few_steps_with_jit_compile(tmp_path):
    """--compile: Keras's jit_compile (XLA) trains keras-cnn and says so in the record."""
    done = cifarfw(
        tmp_path, "--plugin", "keras-cnn", "--dataset", "synthetic", "--set", "dataset_options.train_size=128",
        "--set", "dataset_options.test_size=64", "--epochs", "2", "--batch-size", "32", "--compile",
        "--precision", "fp32", "--set", "prediction_samples=0", "--set", "checkpoint=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((only_run(tmp_path) / "run.json").read_text())
    assert record["status"] == "finished" and record["resolved"]["jit_compile"] is True
    losses = [e["train_loss"] for e in record["epochs"]]
    assert len(losses) == 2 and all(l == l and l < 10 for l in losses)  # noqa: E741 - finite, sane
