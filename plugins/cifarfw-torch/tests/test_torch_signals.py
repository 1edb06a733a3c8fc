"""SIGTERM and SIGINT to a real `cifarfw run` of the torch trainer: it stops after a checkpoint
with exit 128+signal and one error line, and `--resume` finishes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarfw.plugins import PluginHost
from cifarfw.testing import assert_one_line_error

ARGS = [
    "--plugin", "torch-cnn", "--dataset", "synthetic", "--set", "dataset_options.train_size=200",
    "--set", "dataset_options.test_size=50", "--epochs", "5", "--batch-size", "50", "--seed", "2",
    "--precision", "fp32", "--set", "prediction_samples=0",
]  # fmt: skip


def cifarfw(runs_root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cifarfw", "run", *args, "--runs-root", str(runs_root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip


def wait_for_first_checkpoint(runs_root: Path, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(runs_root.glob("*/checkpoints/epoch-0001.pt")):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGTERM, 128 + 15), (signal.SIGINT, 128 + 2)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_stops_the_run_after_a_checkpoint_and_resume_finishes_it(tmp_path, signum, exit_code):
    host = PluginHost()
    host.collect()
    if host.plugins.get("torch-cnn") is None or host.plugins["torch-cnn"].status != "ok":
        pytest.skip("torch-cnn is not installed")
    runs = tmp_path / "runs"
    process = cifarfw(runs, *ARGS)
    try:
        wait_for_first_checkpoint(runs, process)
        process.send_signal(signum)  # mid-run: in epoch 2, or between epochs 1 and 2
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == exit_code, err[-2000:]
    assert_one_line_error(exit_code, err, signal.Signals(signum).name, "stopped after its last checkpoint", "--resume")
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted"
    done = record["checkpoint"]["epoch"]
    assert 1 <= done < 5 and [e["epoch"] for e in record["epochs"]] == list(range(1, done + 1))
    assert Path(record["checkpoint"]["path"]).name == f"epoch-{done:04d}.pt"
    assert (run_dir / "checkpoints" / f"epoch-{done:04d}.pt").exists()  # the checkpoint is kept

    resumed = cifarfw(runs, "--resume", "last")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and len(record["resumed"]) == 1
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4, 5]
