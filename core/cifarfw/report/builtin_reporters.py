"""The reporters every run has: console progress and the run record (TensorBoard's is the
``cifarfw-tensorboard`` plugin)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarfw.hookspecs import hookimpl
from cifarfw.runs import RECORD, atomic_write, now_iso, relative_to_run, write_json

if TYPE_CHECKING:
    from cifarfw.runs import Run
    from cifarfw.specs import RunResult


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


class ConsoleReporter:
    """A tqdm bar per epoch on a terminal (rate and elapsed from the epoch's start, running
    loss and accuracy), then one for its evaluation; one plain line per epoch otherwise."""

    def __init__(self, run: Run, stream: Any = None, clock: Any = time.time) -> None:
        self.run, self.clock = run, clock
        self.stream = stream or sys.stdout
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar: Any = None
        self.ticker: threading.Event | None = None  # stops the evaluation bar's refresh thread
        self.since = clock()  # the last event before the next epoch: its start, as near as hooks tell

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _close(self) -> None:
        if self.ticker is not None:
            self.ticker.set()
            self.ticker = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.since = self.clock()

    def _bar(self, total: int | None, desc: str, **options: Any) -> Any:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, file=self.stream, leave=False, smoothing=0, **options)
        bar._time, bar.start_t = self.clock, self.since  # tqdm's clock starts with the epoch, not this event
        return bar

    @hookimpl
    def on_run_start(self, run: Run) -> None:
        cfg, done = run.config, run.resumed_from_epoch
        self._line(
            f"run {run.id}: {run.model.name} ({run.plugin}) on {run.dataset.name} "
            f"[{len(run.dataset.train)} train / {len(run.dataset.test)} test], {cfg.epochs} epochs, "
            f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}, seed {cfg.seed}"
        )
        if run.resume_checkpoint is not None:
            self._line(f"resuming from the checkpoint of epoch {done}: epochs {done + 1}-{cfg.epochs} to go")
        self.since = self.clock()

    @hookimpl
    def on_model_built(self, run: Run, params: dict[str, int]) -> None:
        words = _resolved_words(run.record.get("resolved", {}))
        self._line(
            f"model: {params['total']:,} parameters ({params['trainable']:,} trainable){'; ' + words if words else ''}"
        )
        self.since = self.clock()

    @hookimpl
    def on_train_progress(self, run: Run, epoch: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        if not self.interactive:
            return
        if self.bar is None:
            self.bar = self._bar(steps, f"epoch {epoch}/{run.config.epochs}")
        self.bar.n = step
        shown = {k: f"{metrics[k]:.3f}" if k == "loss" else _pct(metrics[k]) for k in ("loss", "acc") if k in metrics}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.refresh()
        if step >= steps:  # training's last step: the test set's evaluation follows, on a bar of its own
            self._close()
            self.bar = self._bar(
                None,
                f"epoch {epoch}/{run.config.epochs} evaluating {len(run.dataset.test):,} test images",
                bar_format="{desc}: {elapsed}",
            )
            self.ticker = threading.Event()
            threading.Thread(target=_tick, args=(self.bar, self.ticker), daemon=True).start()

    @hookimpl
    def on_epoch_end(self, run: Run, epoch: int, metrics: dict[str, float]) -> None:
        self._close()
        self._line(
            f"epoch {epoch}/{run.config.epochs}  train loss {metrics['train_loss']:.4f} acc {_pct(metrics['train_acc'])}"
            f"  test loss {metrics['test_loss']:.4f} acc {_pct(metrics['test_acc'])}"
            f"  lr {metrics['lr']:.3g}  {metrics['seconds']:.1f}s"
        )

    @hookimpl
    def on_checkpoint(self, run: Run, epoch: int, path: str) -> None:
        self.since = self.clock()  # the next epoch starts after its predecessor's checkpoint

    @hookimpl
    def on_run_end(self, run: Run, status: str, result: RunResult | None) -> None:
        self._close()
        if result is not None:
            final = result.final
            self._line(
                f"{status}: test acc {_pct(final['test_acc'])}, train acc {_pct(final['train_acc'])}, "
                f"{result.train_seconds:.1f}s of training -> {run.dir}"
            )
        else:
            self._line(f"{status}: {run.dir}")


def _tick(bar: Any, stop: threading.Event) -> None:
    """Refresh an evaluation bar (no steps to count) twice a second, so its clock runs."""
    while not stop.wait(0.5):
        bar.refresh()


# resolved (run.json) -> words: keys a person reads, never the record's own names.
_WORDS = {"device": "on {}", "precision": "{}", "threads": "threads {}", "replicas": "{} replicas",
          "steps_per_execution": "{} steps per graph call", "outputs": "model outputs {}"}  # fmt: skip
_FLAGS = {"channels_last": "channels-last", "compile": "compiled", "jit_compile": "XLA-compiled"}


def _resolved_words(resolved: dict[str, Any]) -> str:
    """``resolved`` as a phrase: ``on cpu, bf16, channels-last, 2 threads``; keys it does not
    know (``threads_because``, caches' details) stay in run.json."""
    words = []
    for key, value in resolved.items():
        if isinstance(value, dict) and key == "threads":
            value = value.get("intra_op")
        if key in _WORDS and not isinstance(value, dict | list | bool):
            words.append(_WORDS[key].format(value))
        elif key in _FLAGS and value is True:
            words.append(_FLAGS[key])
        elif key == "feature_cache" and isinstance(value, dict):
            words.append("feature cache" + (f" (drops {', '.join(value['dropped'])})" if value.get("dropped") else ""))
    return ", ".join(words)


class RecordReporter:
    """Keeps run.json current: written at the start, after every epoch and at the end."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def _save(self) -> None:
        write_json(self.run.dir / RECORD, self.run.record)

    @hookimpl
    def on_run_start(self, run: Run) -> None:
        self._save()

    @hookimpl
    def on_model_built(self, run: Run, params: dict[str, int]) -> None:
        run.record["params"] = {"total": int(params["total"]), "trainable": int(params["trainable"])}
        self._save()

    @hookimpl
    def on_epoch_end(self, run: Run, epoch: int, metrics: dict[str, float]) -> None:
        entry = {"epoch": int(epoch), **{k: float(v) for k, v in metrics.items()}}
        epochs = [e for e in run.record.setdefault("epochs", []) if e["epoch"] < epoch]
        run.record["epochs"] = [*epochs, entry]
        self._save()

    @hookimpl
    def on_predictions(self, run: Run, labels: np.ndarray, predictions: np.ndarray, images: np.ndarray) -> None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, labels=labels, predictions=predictions, images=images)
        atomic_write(run.dir / "predictions.npz", buffer.getvalue())

    @hookimpl
    def on_checkpoint(self, run: Run, epoch: int, path: str) -> None:
        last = run.record.get("checkpoint")
        if last and last.get("epoch") != epoch:  # kept for the fallback from a corrupt latest one
            run.record["previous_checkpoint"] = last
        run.record["checkpoint"] = {"epoch": int(epoch), "path": relative_to_run(run.dir, path)}
        self._save()

    @hookimpl
    def on_run_end(self, run: Run, status: str, result: RunResult | None) -> None:
        run.record["status"] = status
        run.record["ended_at"] = now_iso()
        if result is not None:
            run.record["final"] = {
                **{k: float(v) for k, v in result.final.items()},
                "train_seconds": result.train_seconds,
            }
            if result.extra:
                run.record.setdefault("extra", {}).update(result.extra)
        self._save()
