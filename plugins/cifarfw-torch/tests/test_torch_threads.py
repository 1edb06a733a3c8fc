"""CPU threads: numbers that do not depend on the machine's load.

The thread count changes a run's numbers (conv and batch-norm reductions split over
threads add in another order: TinyNet's train loss after 2 epochs is 1.8798308 with one
thread, 1.8798238 with two), so bit-identity holds for one count, not across counts. A run
records its count (``resolved.threads``); a resume reuses it; ``--deterministic`` fixes it
whatever the load.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from torch_trainer_helpers import settings

from cifarfw import runner
from cifarfw.plugins import PluginHost
from cifarfw_torch import runtime


@pytest.fixture
def no_thread_settings(monkeypatch):
    for var in ("OMP_NUM_THREADS", runtime.THREADS_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def busy(monkeypatch):
    """Every core busy with other work, as busy_cores would measure it."""
    monkeypatch.setattr(runtime, "busy_cores", lambda window_s=0.5: float(os.cpu_count() or 1))


@pytest.fixture
def idle(monkeypatch):
    monkeypatch.setattr(runtime, "busy_cores", lambda window_s=0.5: 0.0)


def test_a_plain_run_on_a_busy_machine_takes_fewer_threads_and_says_why(no_thread_settings, busy):
    count, why = runtime.plan_threads(deterministic=False)
    assert count == 1
    assert "busy with other work" in why and "--deterministic" in why and "_" not in why.split(";")[0]


def test_deterministic_fixes_the_count_whatever_the_load(no_thread_settings, busy, monkeypatch):
    count, why = runtime.plan_threads(deterministic=True)
    assert count == torch.get_num_threads() and "whatever the load" in why
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.plan_threads(deterministic=True)[0] == 3


def test_a_resume_reuses_the_recorded_count_whatever_the_load_or_the_setting(no_thread_settings, idle, monkeypatch):
    assert runtime.plan_threads(False, recorded=1) == (1, "resuming with 1 thread as the run started")
    monkeypatch.setenv(runtime.THREADS_ENV, "2")
    count, why = runtime.plan_threads(True, recorded=3)
    assert count == 3 and why.startswith("resuming with 3 threads as the run started") and "is not applied" in why
    assert runtime.plan_threads(False, recorded="two")[0] == 2  # not a count: planned afresh


def test_a_malformed_thread_setting_is_refused_before_the_run_folder(host, tmp_path, monkeypatch):
    from cifarfw.errors import UsageError

    monkeypatch.setenv(runtime.THREADS_ENV, "0")
    with pytest.raises(UsageError, match=runtime.THREADS_ENV):
        runner.resolve(host, "tiny", None, {}, settings(tmp_path))
    assert not (tmp_path / "runs").exists()


def test_the_count_and_its_reason_are_recorded(train, no_thread_settings, busy, capsys):
    _, record = train("tiny")
    assert record["resolved"]["threads"] == 1 and "threads_because" not in record["resolved"]
    (note,) = [n for n in record["notes"] if n.startswith("CPU threads:")]
    assert "busy with other work" in note
    assert "busy with other work" in capsys.readouterr().out  # and printed: not the default


def test_a_resume_runs_with_the_count_the_run_started_with(host, tmp_path, monkeypatch, no_thread_settings, capsys):
    """Started at 1 thread (as on a busy machine), resumed on an idle one: still 1 thread,
    and the resumed epoch equals the uninterrupted run's bit for bit."""
    counts = []
    monkeypatch.setattr(runtime, "busy_cores", lambda window_s=0.5: float(os.cpu_count() or 1))
    plugin, spec, config = runner.resolve(host, "tiny", None, {}, settings(tmp_path, epochs=2))
    run_dir = runner.execute(host, plugin, spec, config)
    straight = json.loads((run_dir / "run.json").read_text())
    assert straight["resolved"]["threads"] == 1
    # Rewind the record to "checkpoint 1 written, epoch 2 lost", as a SIGKILL would leave it.
    rewound = {**straight, "status": "running", "final": None, "epochs": straight["epochs"][:1]}
    rewound["checkpoint"] = {"epoch": 1, "path": str(run_dir / "checkpoints" / "epoch-0001.pt")}
    (run_dir / "run.json").write_text(json.dumps(rewound))
    monkeypatch.setattr(runtime, "busy_cores", lambda window_s=0.5: 0.0)  # idle now: would choose every core
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: counts.append(n) or real_set(n))
    capsys.readouterr()
    runner.execute(host, plugin, spec, config, resume_dir=run_dir)
    resumed = json.loads((run_dir / "run.json").read_text())
    assert counts[0] == 1 and resumed["resolved"]["threads"] == 1
    assert "resuming with 1 thread as the run started" in capsys.readouterr().out
    assert any("resuming with 1 thread" in n for n in resumed["notes"])
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed["epochs"][1][key] == straight["epochs"][1][key], key


@contextlib.contextmanager
def cpu_burner() -> Iterator[subprocess.Popen]:
    """Another process keeping a core busy for the block's duration."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield burner
    finally:
        burner.kill()
        burner.wait()


def cli_run(runs_root, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", runtime.THREADS_ENV)}
    done = subprocess.run(
        [sys.executable, "-m", "cifarfw", "run", *args, "--runs-root", str(runs_root)],
        capture_output=True, text=True, env={**env, "CUDA_VISIBLE_DEVICES": ""}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return json.loads((run_dir / "run.json").read_text())


def test_deterministic_runs_give_the_same_numbers_with_or_without_load(tmp_path):
    host = PluginHost()
    host.collect()
    if host.plugins.get("torch-cnn") is None or host.plugins["torch-cnn"].status != "ok":
        pytest.skip("torch-cnn is not installed")
    args = [
        "--plugin", "torch-cnn", "--dataset", "synthetic", "--set", "dataset_options.train_size=100",
        "--set", "dataset_options.test_size=50", "--epochs", "2", "--batch-size", "50", "--seed", "4",
        "--precision", "fp32", "--deterministic", "--set", "prediction_samples=0", "--set", "checkpoint=false",
    ]  # fmt: skip
    quiet = cli_run(tmp_path / "quiet", *args)
    with cpu_burner():
        loaded = cli_run(tmp_path / "loaded", *args)
    assert quiet["resolved"]["threads"] == loaded["resolved"]["threads"]
    if not os.environ.get("OMP_NUM_THREADS"):  # then the children's default is this process's
        assert loaded["resolved"]["threads"] == torch.get_num_threads()  # one per core, however busy
    for a, b in zip(quiet["epochs"], loaded["epochs"], strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[key] == b[key], (a["epoch"], key)
