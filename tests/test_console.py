"""The console a person watches (issue 17): the progress bar's first reading, running
accuracy, the evaluation's own bar, no internal keys, the resume and interrupt hints,
`cifarfw runs` showing the data."""

from __future__ import annotations

import io
import re
import signal
from pathlib import Path
from types import SimpleNamespace

from cifarfw import runs
from cifarfw.report.builtin_reporters import ConsoleReporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _run(**over: object) -> SimpleNamespace:
    config = SimpleNamespace(
        epochs=2, batch_size=50, optimizer="adam", lr=0.01, seed=0, runs_root="runs", checkpoint=True
    )
    dataset = SimpleNamespace(name="synthetic", train=[0] * 2000, test=[0] * 500)
    values = dict(id="r1", config=config, model=SimpleNamespace(name="m"), plugin="p", dataset=dataset, record={},
                  resumed_from_epoch=0, resume_checkpoint=None, dir=Path("runs/r1"), stop_requested=0)  # fmt: skip
    values.update(over)
    return SimpleNamespace(**values)


def test_the_first_reading_counts_from_the_epoch_s_start(monkeypatch):
    clock, out, run = Clock(1000.0), Terminal(), _run()
    run.record["resolved"] = {"device": "cpu", "precision": "bf16", "threads": 1, "threads_because": "busy",
                              "channels_last": True, "feature_cache": {"kept": ["flip"], "dropped": ["crop"]}}  # fmt: skip
    console = ConsoleReporter(run, stream=out, clock=clock)
    console.on_run_start(run=run)
    console.on_model_built(run=run, params={"total": 10, "trainable": 10})
    clock.now += 4.0  # four seconds of training before the first progress event (steps 1-10)
    console.on_train_progress(run=run, epoch=1, step=10, steps=40, metrics={"loss": 1.25, "acc": 0.5, "lr": 0.01})
    first = out.getvalue().split("\r")[-1]
    assert "10/40" in first and "00:04" in first, first  # elapsed from the epoch's start, not 00:00
    assert "2.50it/s" in first, first  # 10 steps in 4 s, not 10 steps in ~0 s
    assert "loss=1.250" in first and "acc=50.00%" in first
    clock.now += 12.0
    console.on_train_progress(run=run, epoch=1, step=40, steps=40, metrics={"loss": 1.0, "acc": 0.6})
    clock.now += 3.0
    console.bar.refresh()
    assert re.search(r"epoch 1/2 evaluating 500 test images: 00:03", out.getvalue().split("\r")[-1])
    metrics = {"train_loss": 1.0, "train_acc": 0.6, "test_loss": 1.1, "test_acc": 0.55, "lr": 0.01, "seconds": 19.0}
    console.on_epoch_end(run=run, epoch=1, metrics=metrics)
    assert console.bar is None and console.ticker is None
    text = out.getvalue()
    assert (
        "model: 10 parameters (10 trainable); on cpu, bf16, threads 1, channels-last, feature cache (drops crop)"
        in text
    )
    assert "threads_because" not in text and "{" not in text


def test_a_resume_says_which_epoch_it_continues_from():
    out, run = io.StringIO(), _run(resumed_from_epoch=3, resume_checkpoint=Path("c.pt"))
    run.config.epochs = 8
    ConsoleReporter(run, stream=out).on_run_start(run=run)
    assert "resuming from the checkpoint of epoch 3: epochs 4-8 to go" in out.getvalue()


def test_the_interrupt_hint_names_a_runs_root_that_is_not_the_default():
    def interrupted(root: str) -> str:
        run = _run(stop_requested=signal.SIGINT)
        run.config.runs_root = root
        run.resume_advice = lambda: runs.Run.resume_advice(run)
        return str(runs.Run.interrupted(run))

    assert interrupted("runs").endswith("`cifarfw run --resume r1`")
    assert interrupted("/tmp/elsewhere").endswith("`cifarfw run --resume r1 --runs-root /tmp/elsewhere`")


def test_runs_lists_the_data_and_its_subset(cli, tmp_path):
    from test_compare_support import make_host, make_run

    make_run(make_host(), tmp_path / "r", "keras-cnn")
    code, out, err = cli("runs", "--runs-root", str(tmp_path / "r"))
    assert code == 0, err
    assert "DATA (TRAIN/TEST)" in out and "synthetic 200/100" in out
