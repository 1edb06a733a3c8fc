"""The TensorBoard reporter: one event file per run, the runs root's HParams experiment."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarfw.config import to_toml
from cifarfw.errors import CifarfwError
from cifarfw.hookspecs import hookimpl
from cifarfw.metrics import tag_of
from cifarfw_tensorboard import figures, hparams
from cifarfw_tensorboard.tbwriter import EventWriter

if TYPE_CHECKING:
    from cifarfw.runs import Run

# Training loss and learning rate are also logged every this many steps (Lightning's default,
# log_every_n_steps=50), under tags of their own: their x-axis is the global step.
STEP_EVERY = int(os.environ.get("CIFARFW_TB_STEP_EVERY", "50"))
STEP_TAGS = {"loss": "loss/train_step", "lr": "lr/step"}


class TensorBoardReporter:
    """Writes the shared tags (``loss/train``, ``accuracy/test``, ...), the config as text,
    the model summary and graph, sample predictions and the confusion matrix, and the
    HParams plugin's session start/end; keeps the runs root's HParams experiment current."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.writer = EventWriter(run.dir)
        self.session_started = False
        self.restart_marked = False
        self.last_step = 0  # the global step last logged by on_train_progress

    def _start_session(self, run: Run) -> None:
        """The session's hparams, once: after the model is built, when the trainer has
        resolved the precision (else at the end, for a run that failed before)."""
        if self.session_started:
            return
        self.writer.summary_value(hparams.session_start(run.record))
        self.session_started = True

    @hookimpl
    def on_run_start(self, run: Run) -> None:
        self.writer.text("config", "```\n" + to_toml(run.config) + "\n```")
        self.writer.flush()
        if run.is_main:
            self._refresh_experiment(run)

    def _refresh_experiment(self, run: Run) -> None:
        try:
            hparams.write_experiment(run.dir.parent, extra=[hparams.hparams_of(run.record)], holder=run.dir)
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
    def on_train_progress(self, run: Run, epoch: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        """``loss`` and ``lr`` of the trainers' progress events, once per ``STEP_EVERY`` global
        steps (the first event past each multiple: trainers report every few steps)."""
        global_step = (epoch - 1) * steps + step
        if STEP_EVERY <= 0 or global_step // STEP_EVERY <= self.last_step // STEP_EVERY:
            return
        self.last_step = global_step
        for name, tag in STEP_TAGS.items():
            if isinstance(metrics.get(name), int | float):
                self.writer.scalar(tag, metrics[name], global_step)
        self.writer.flush()

    @hookimpl
    def on_epoch_end(self, run: Run, epoch: int, metrics: dict[str, float]) -> None:
        if not self.restart_marked and (run.resumed_from_epoch or run.resume_checkpoint is not None):
            # A resumed run: TensorBoard drops the earlier files' events from this step on, so
            # epochs trained again after a crash (or a checkpoint fallback) have no duplicates.
            self.writer.restart(epoch)
            self.restart_marked = True
        for name, value in metrics.items():
            self.writer.scalar(tag_of(name), value, epoch)
        self.writer.flush()

    @hookimpl
    def on_predictions(
        self, run: Run, epoch: int, labels: np.ndarray, predictions: np.ndarray, images: np.ndarray
    ) -> None:
        names = run.dataset.class_names
        plt = figures.pyplot()
        if len(images):
            fig = figures.prediction_grid(images, labels[: len(images)], predictions[: len(images)], names)
            self.writer.image("predictions", *figures.png_bytes(fig), step=epoch)
            plt.close(fig)
        matrix = figures.confusion_matrix(labels, predictions, len(names))
        fig = figures.confusion_figure(matrix, names, f"{run.model.name}, epoch {epoch}")
        self.writer.image("confusion_matrix", *figures.png_bytes(fig), step=epoch)
        plt.close(fig)
        self.writer.flush()

    @hookimpl
    def on_run_end(self, run: Run, status: str) -> None:
        self._start_session(run)
        end = hparams.session_end(status)
        if end is not None:
            self.writer.summary_value(end)
        self.writer.close()
