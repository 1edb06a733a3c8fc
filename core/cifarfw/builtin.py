"""The built-in plugin: the synthetic dataset, the console and record reporters.

CIFAR-10, TensorBoard and the comparison are default first-party plugins
(plugins/cifarfw-cifar10, -tensorboard, -compare) that register through the same hooks.
"""

from __future__ import annotations

from collections.abc import Callable

from cifarfw.hookspecs import hookimpl
from cifarfw.specs import DatasetSpec, ReporterSpec


def _load_synthetic(config):  # type: ignore[no-untyped-def]
    from cifarfw.data import synthetic

    return synthetic.load(config.dataset_options)


def _check_synthetic(config):  # type: ignore[no-untyped-def]
    from cifarfw.data import synthetic

    synthetic.check_options(config.dataset_options)


def _console(run):  # type: ignore[no-untyped-def]
    from cifarfw.report.builtin_reporters import ConsoleReporter

    return ConsoleReporter(run)


def _record(run):  # type: ignore[no-untyped-def]
    from cifarfw.report.builtin_reporters import RecordReporter

    return RecordReporter(run)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(
        DatasetSpec("synthetic", _load_synthetic, "generated 10-class 32x32 patterns, for tests", _check_synthetic)
    )


@hookimpl
def register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    register(ReporterSpec("console", _console, "progress bar or one line per epoch"))
    register(ReporterSpec("record", _record, "run.json and predictions.npz in the run folder"))
