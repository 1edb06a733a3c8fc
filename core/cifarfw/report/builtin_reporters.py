"""The reporters every run has: console progress and the run record (TensorBoard's is the
``cifarfw-tensorboard`` plugin)."""

from __future__ import annotations

import sys
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
    """A tqdm progress bar per epoch on a terminal; one plain line per epoch otherwise."""

    def __init__(self, run: Run, stream: Any = None) -> None:
        self.run = run
        self.stream = stream or sys.stdout
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar: Any = None

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    @hookimpl
    def on_run_start(self, run: Run) -> None:
        cfg = run.config
        self._line(
            f"run {run.id}: {run.model.name} ({run.plugin}) on {run.dataset.name} "
            f"[{len(run.dataset.train)} train / {len(run.dataset.test)} test], {cfg.epochs} epochs, "
            f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}, seed {cfg.seed}"
        )

    @hookimpl
    def on_model_built(self, run: Run, params: dict[str, int]) -> None:
        resolved = run.record.get("resolved", {})
        extra = ", ".join(f"{k} {v}" for k, v in resolved.items())
        self._line(
            f"model: {params['total']:,} parameters ({params['trainable']:,} trainable){'; ' + extra if extra else ''}"
        )

    @hookimpl
    def on_train_progress(self, run: Run, epoch: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        if not self.interactive:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{run.config.epochs}", file=self.stream, leave=False)
        self.bar.n = step
        if "loss" in metrics:
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", refresh=False)
        self.bar.refresh()

    @hookimpl
    def on_epoch_end(self, run: Run, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._line(
            f"epoch {epoch}/{run.config.epochs}  train loss {metrics['train_loss']:.4f} acc {_pct(metrics['train_acc'])}"
            f"  test loss {metrics['test_loss']:.4f} acc {_pct(metrics['test_acc'])}"
            f"  lr {metrics['lr']:.3g}  {metrics['seconds']:.1f}s"
        )

    @hookimpl
    def on_run_end(self, run: Run, status: str, result: RunResult | None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if result is not None:
            final = result.final
            self._line(
                f"{status}: test acc {_pct(final['test_acc'])}, train acc {_pct(final['train_acc'])}, "
                f"{result.train_seconds:.1f}s of training -> {run.dir}"
            )
        else:
            self._line(f"{status}: {run.dir}")


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
