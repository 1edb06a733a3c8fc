"""The reporters every run has: console progress, the run record, TensorBoard."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarfw.hookspecs import hookimpl
from cifarfw.report import METRIC_TAGS
from cifarfw.runs import RECORD, now_iso, write_json

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

        from cifarfw.runs import atomic_write

        buffer = io.BytesIO()
        np.savez_compressed(buffer, labels=labels, predictions=predictions, images=images)
        atomic_write(run.dir / "predictions.npz", buffer.getvalue())

    @hookimpl
    def on_checkpoint(self, run: Run, epoch: int, path: str) -> None:
        last = run.record.get("checkpoint")
        if last and last.get("epoch") != epoch:  # kept for the fallback from a corrupt latest one
            run.record["previous_checkpoint"] = last
        run.record["checkpoint"] = {"epoch": int(epoch), "path": str(path)}
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


class TensorBoardReporter:
    """Writes the shared tags (``loss/train``, ``accuracy/test``, ...), the config as text,
    the model summary and graph, sample predictions and the confusion matrix, and the
    HParams plugin's session start/end; keeps the runs root's HParams experiment current."""

    def __init__(self, run: Run) -> None:
        from cifarfw.report.tbwriter import EventWriter

        self.run = run
        self.writer = EventWriter(run.dir)
        self.session_started = False
        self.restart_marked = False

    def _start_session(self, run: Run) -> None:
        """The session's hparams, once: after the model is built, when the trainer has
        resolved the precision (else at the end, for a run that failed before)."""
        if self.session_started:
            return
        from cifarfw.report import hparams

        self.writer.summary_value(hparams.session_start(run.record))
        self.session_started = True

    @hookimpl
    def on_run_start(self, run: Run) -> None:
        from cifarfw.config import to_toml

        self.writer.text("config", "```\n" + to_toml(run.config) + "\n```")
        self.writer.flush()
        if run.is_main:
            self._refresh_experiment(run)

    def _refresh_experiment(self, run: Run) -> None:
        from cifarfw.errors import CifarfwError
        from cifarfw.report import hparams

        try:
            hparams.write_experiment(run.dir.parent, extra=[hparams.hparams_of(run.record)])
        except (OSError, CifarfwError) as err:  # the HParams table is a convenience: never fail the run for it
            print(f"warning: could not update the HParams experiment in {run.dir.parent}: {err}", file=sys.stderr)

    @hookimpl
    def on_model_built(self, run: Run, summary: str, graph: Any) -> None:
        if summary:
            self.writer.text("model", "```\n" + summary + "\n```")
        if graph is not None:
            self.writer.graph(graph)
        self._start_session(run)
        self.writer.flush()

    @hookimpl
    def on_epoch_end(self, run: Run, epoch: int, metrics: dict[str, float]) -> None:
        if not self.restart_marked and (run.resumed_from_epoch or run.resume_checkpoint is not None):
            # A resumed run: TensorBoard drops the earlier files' events from this step on, so
            # epochs trained again after a crash (or a checkpoint fallback) have no duplicates.
            self.writer.restart(epoch)
            self.restart_marked = True
        for name, value in metrics.items():
            self.writer.scalar(METRIC_TAGS.get(name, f"extra/{name}"), value, epoch)
        self.writer.flush()

    @hookimpl
    def on_predictions(
        self, run: Run, epoch: int, labels: np.ndarray, predictions: np.ndarray, images: np.ndarray
    ) -> None:
        from cifarfw.report import figures
        from cifarfw.report.tbwriter import png_bytes

        names = run.dataset.class_names
        plt = figures._pyplot()
        if len(images):
            fig = figures.prediction_grid(images, labels[: len(images)], predictions[: len(images)], names)
            self.writer.image("predictions", *png_bytes(fig), step=epoch)
            plt.close(fig)
        matrix = figures.confusion_matrix(labels, predictions, len(names))
        fig = figures.confusion_figure(matrix, names, f"{run.model.name}, epoch {epoch}")
        self.writer.image("confusion_matrix", *png_bytes(fig), step=epoch)
        plt.close(fig)
        self.writer.flush()

    @hookimpl
    def on_run_end(self, run: Run, status: str) -> None:
        from cifarfw.report import hparams

        self._start_session(run)
        end = hparams.session_end(status)
        if end is not None:
            self.writer.summary_value(end)
        self.writer.close()
