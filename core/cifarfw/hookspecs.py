"""The plugin contract: every hook cifarfw calls, in one file.

Plugins are found through the ``cifarfw`` entry-point group (see docs/plugin-guide.md).
Two kinds of hooks:

* Registration hooks run once per process on every plugin. Each receives a
  ``register`` callback; call it with a spec (see :mod:`cifarfw.specs`). A name
  registered twice is an error that names both plugins.
* Event hooks run during a run. Trainers emit them with ``run.emit(...)``; every
  reporter (console, run record, TensorBoard, your own) receives them.

pluggy calls hooks with keyword arguments and passes each implementation only the
arguments it names, so a hook can gain arguments without breaking older plugins.
``HOOK_API_VERSION`` counts such additions; a plugin may declare the version it was
written for (see docs/hooks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click
    import numpy as np

    from cifarfw.runs import Run
    from cifarfw.specs import (
        DatasetSpec,
        ExecutorSpec,
        ModelProviderSpec,
        ModelSpec,
        ReporterSpec,
        RunResult,
        TrainerSpec,
    )

PROJECT = "cifarfw"
# 1: the first contract. 2: register_model_providers, register_executors, on_session_end.
HOOK_API_VERSION = 2

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks ---------------------------------------------------------------


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register datasets: ``register(DatasetSpec(name, loader))``."""


@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register models: ``register(ModelSpec(name, framework, factory, ...))``."""


@hookspec
def register_model_providers(register: Callable[[ModelProviderSpec], None]) -> None:
    """Register lazily listed model families (zoos): ``register(ModelProviderSpec(namespace, names,
    spec, framework))``. Their models are named ``<namespace>/<name>``. (Hook API 2.)"""


@hookspec
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    """Register sweep executors: ``register(ExecutorSpec(name, factory, options))``. (Hook API 2.)"""


@hookspec
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    """Register a trainer for a framework: ``register(TrainerSpec(name, framework, factory))``."""


@hookspec
def register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    """Register reporters: ``register(ReporterSpec(name, factory))``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``cifarfw`` command group."""


# --- event hooks (emitted by trainers and the core during a run) ----------------------


@hookspec
def on_run_start(run: Run) -> None:
    """The run folder exists and the config is resolved; training is about to start."""


@hookspec
def on_model_built(run: Run, params: dict[str, int], summary: str, graph: Any) -> None:
    """The model exists. ``params`` = ``{"total": n, "trainable": m}``; ``summary`` is a
    text description; ``graph`` is a TensorBoard ``GraphDef`` proto or ``None``."""


@hookspec
def on_train_progress(run: Run, epoch: int, step: int, steps: int, metrics: dict[str, float]) -> None:
    """Training reached ``step`` of ``steps`` in ``epoch`` (1-based); for progress bars."""


@hookspec
def on_epoch_end(run: Run, epoch: int, metrics: dict[str, float]) -> None:
    """An epoch ended. ``metrics`` holds at least ``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc`` (fractions 0-1), ``lr`` and ``seconds``."""


@hookspec
def on_predictions(
    run: Run,
    epoch: int,
    labels: np.ndarray,
    predictions: np.ndarray,
    images: np.ndarray,
) -> None:
    """Test-set predictions: ``labels`` and ``predictions`` for the whole test set (int
    arrays), ``images`` the first ``len(images)`` test images (uint8, N,H,W,C)."""


@hookspec
def on_checkpoint(run: Run, epoch: int, path: str) -> None:
    """A checkpoint of ``epoch`` was written completely to ``path``."""


@hookspec
def on_run_end(run: Run, status: str, result: RunResult | None) -> None:
    """The run ended with ``status`` (finished, failed, interrupted, nan); ``result`` is
    ``None`` unless it finished."""


# --- session hooks (called on plugin modules, once per command) -------------------------


@hookspec
def on_session_end(run_dirs: list[Path], failures: int) -> None:
    """One ``cifarfw run`` command trained several runs (plugins x seeds) and they all ended:
    ``run_dirs`` are the folders of the runs that finished, ``failures`` the count of the
    others. Called on rank 0 only, when more than one run was asked for. (Hook API 2.)"""
