"""The ``sweep`` plugin: ``cifarfw sweep``, the local executor and the ``optuna-pruner`` reporter.

It registers through the same hooks a third-party plugin uses. This module imports only
the core: optuna and the sweep machinery load when a sweep runs (``cifarfw --help`` imports
every plugin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cifarfw import hookimpl
from cifarfw.specs import ExecutorSpec, ReporterSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from cifarfw.runs import Run

CIFARFW_HOOK_API = 2


@hookimpl
def register_commands(cli: click.Group) -> None:
    from cifarfw_sweep.command import SweepCommand

    cli.add_command(SweepCommand())


def _local(options: dict[str, Any]) -> Any:
    from cifarfw_sweep.executors import LocalExecutor

    return LocalExecutor(options)


@hookimpl
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    register(ExecutorSpec("local", _local, description="runs on this machine, --parallel N processes at once"))


def _pruner(run: Run) -> object:
    from cifarfw_sweep.search import pruning_reporter

    return pruning_reporter(run)


@hookimpl
def register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    register(
        ReporterSpec(
            "optuna-pruner",
            _pruner,
            description="a search trial: reports its metric to Optuna every epoch, stops it when pruned",
            default=False,
        )
    )
