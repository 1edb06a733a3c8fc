"""The ``tensorboard`` plugin: the default ``tensorboard`` reporter and `cifarfw tensorboard`.

It registers through the same hooks a third-party reporter plugin uses. This module
imports neither tensorboard nor matplotlib (``cifarfw --help`` loads every plugin): the
reporter and the command import them when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cifarfw import hookimpl
from cifarfw.specs import ReporterSpec

if TYPE_CHECKING:
    import click


def _reporter(run: Any) -> Any:
    from cifarfw_tensorboard.reporter import TensorBoardReporter

    return TensorBoardReporter(run)


@hookimpl
def register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    register(ReporterSpec("tensorboard", _reporter, "TensorBoard event files in the run folder"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from cifarfw_tensorboard.command import tensorboard_cmd

    cli.add_command(tensorboard_cmd)
