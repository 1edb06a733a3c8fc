"""Stopping and resuming runs: signals, --resume, locks, TensorBoard without duplicate steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cifarfw.errors import RunDirError
from cifarfw.runs import RunLock
from cifarfw.testing import assert_one_line_error

FAKE = ("fake", "fakes:FAKE_PLUGIN")
SIGNALLER_EP = ("signaller", "test_resume:SIGNALLER")


class Signaller:
    """Sends this process a signal at the end of a chosen epoch, as a user or a scheduler would."""

    signum = 0
    at_epoch = 0

    from cifarfw import hookimpl

    @hookimpl
    def on_epoch_end(self, epoch):
        if epoch == self.at_epoch and self.signum:
            os.kill(os.getpid(), self.signum)


SIGNALLER = Signaller()


@pytest.fixture
def world(cli, entry_points, tmp_path):
    entry_points(FAKE, SIGNALLER_EP, ("tensorboard", "cifarfw_tensorboard.plugin"))
    yield cli, tmp_path / "runs"
    SIGNALLER.signum = 0


def records(runs_root):
    return [json.loads((p / "run.json").read_text()) for p in sorted(runs_root.iterdir()) if p.is_dir()]


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_after_checkpoint_and_resume_matches_uninterrupted(world, signum, exit_code):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli, runs = world
    args = ("run", "--plugin", "fake", "--epochs", "5", "--seed", "3")
    code, _, err = cli(*args, "--runs-root", str(runs / "straight"))
    assert code == 0, err
    SIGNALLER.signum, SIGNALLER.at_epoch = signum, 2
    code, _, err = cli(*args, "--runs-root", str(runs / "stopped"))
    assert code == exit_code
    assert_one_line_error(code, err.replace("warning:", "warning:"), "stopped after its last checkpoint", "--resume")
    (stopped,) = records(runs / "stopped")
    assert stopped["status"] == "interrupted"
    assert stopped["checkpoint"]["epoch"] == 2 and [e["epoch"] for e in stopped["epochs"]] == [1, 2]
    SIGNALLER.signum = 0
    code, _out, err = cli("run", "--resume", "last", "--runs-root", str(runs / "stopped"))
    assert code == 0, err
    (straight,) = records(runs / "straight")
    (resumed,) = records(runs / "stopped")
    assert resumed["status"] == "finished" and len(resumed["resumed"]) == 1
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4, 5]
    for a, b in zip(straight["epochs"], resumed["epochs"], strict=True):
        assert (a["train_loss"], a["test_acc"]) == (b["train_loss"], b["test_acc"])  # bit-identical
    assert straight["extra"]["weights"] == resumed["extra"]["weights"]
    run_dir = next(p for p in (runs / "stopped").iterdir() if p.is_dir())
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3, 4, 5]


def test_tensorboard_steps_after_a_crash_between_epoch_and_checkpoint(world):
    """Epoch 3 was logged but its checkpoint never written: the resumed run logs epoch 3 again,
    and TensorBoard keeps only the new values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli, runs = world
    code, _, _ = cli("run", "--plugin", "fake", "--epochs", "4", "--runs-root", str(runs))
    run_dir = next(p for p in runs.iterdir() if p.is_dir())
    record = json.loads((run_dir / "run.json").read_text())
    # Rewind the record to "checkpoint 2 written, epochs 3-4 lost" as a SIGKILL would leave it.
    record.update(status="running", checkpoint={"epoch": 2, "path": str(run_dir / "checkpoints" / "epoch2.npz")})
    (run_dir / "run.json").write_text(json.dumps(record))
    code, _, err = cli("run", "--resume", run_dir.name[:15], "--runs-root", str(runs))
    assert code == 0, err
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3, 4]


def test_resume_refuses_finished_runs_and_extra_flags(world):
    cli, runs = world
    cli("run", "--plugin", "fake", "--epochs", "1", "--runs-root", str(runs))
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))
    assert_one_line_error(code, err, "already finished")
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs), "--lr", "0.1")
    assert_one_line_error(code, err, "--resume continues a run with its own config; drop --lr")
    code, _, err = cli("run", "--resume", "nope", "--runs-root", str(runs))
    assert_one_line_error(code, err, "no run 'nope'")
    assert code == RunDirError.exit_code
    code, _, err = cli("run", "--runs-root", str(runs))
    assert_one_line_error(code, err, "needs --plugin")


def test_lock_fails_fast_and_stale_lock_is_taken_over(tmp_path):
    held = RunLock(tmp_path)
    held.acquire()
    with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    held.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout)  # a lock left by a process that is gone
    lock = RunLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_resume_of_a_locked_run_fails_fast(world):
    cli, runs = world
    SIGNALLER.signum, SIGNALLER.at_epoch = signal.SIGTERM, 1
    cli("run", "--plugin", "fake", "--epochs", "3", "--runs-root", str(runs))
    SIGNALLER.signum = 0
    run_dir = next(p for p in runs.iterdir() if p.is_dir())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run_dir / ".lock").write_text(f"{sleeper.pid}\n")
        code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))
        assert_one_line_error(code, err, "is in use by process", str(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))  # stale now
    assert code == 0, err


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(world):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli, runs = world
    args = ("run", "--plugin", "fake", "--epochs", "5", "--seed", "4")
    cli(*args, "--runs-root", str(runs / "straight"))
    SIGNALLER.signum, SIGNALLER.at_epoch = signal.SIGTERM, 3
    cli(*args, "--runs-root", str(runs / "stopped"))
    SIGNALLER.signum = 0
    run_dir = next(p for p in (runs / "stopped").iterdir() if p.is_dir())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["checkpoint"]["epoch"] == 3 and record["previous_checkpoint"]["epoch"] == 2
    latest = run_dir / "checkpoints" / "epoch3.npz"
    latest.write_bytes(latest.read_bytes()[:200])  # corrupt the latest checkpoint
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs / "stopped"))
    assert code == 0, err
    assert "warning:" in err and "falling back to the previous checkpoint" in err and "(epoch 2)" in err
    (straight,) = records(runs / "straight")
    (resumed,) = records(runs / "stopped")
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4, 5]
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in straight["epochs"]]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3, 4, 5]


def test_corrupt_checkpoint_without_a_previous_one_is_refused(world):
    cli, runs = world
    SIGNALLER.signum, SIGNALLER.at_epoch = signal.SIGTERM, 1
    cli("run", "--plugin", "fake", "--epochs", "3", "--runs-root", str(runs))
    SIGNALLER.signum = 0
    run_dir = next(p for p in runs.iterdir() if p.is_dir())
    (run_dir / "checkpoints" / "epoch1.npz").write_bytes(b"garbage")
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))
    assert_one_line_error(code, err, "epoch1.npz cannot be read")
    assert code == 4
