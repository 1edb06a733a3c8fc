"""The built-in plugin: the cifar10 and synthetic datasets, the console and record reporters.

TensorBoard and the comparison are first-party plugins (plugins/cifarfw-tensorboard,
plugins/cifarfw-compare) that register through the same hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from cifarfw.hookspecs import hookimpl
from cifarfw.specs import DatasetSpec, ReporterSpec


def _load_cifar10(config):  # type: ignore[no-untyped-def]
    import os

    from cifarfw.data import cifar10

    checksums = config.data_checksums or os.environ.get("CIFARFW_DATA_CHECKSUMS") or None
    return cifar10.load(config.data_dir or None, checksums, config.verify_data)


def _load_synthetic(config):  # type: ignore[no-untyped-def]
    from cifarfw.data import synthetic

    return synthetic.load(config.dataset_options)


def _check_cifar10(config):  # type: ignore[no-untyped-def]
    from cifarfw.data import cifar10

    cifar10.check(config.dataset_options, config.data_dir, config.data_checksums)


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
    register(DatasetSpec("cifar10", _load_cifar10, "CIFAR-10, official python layout", _check_cifar10))
    register(
        DatasetSpec("synthetic", _load_synthetic, "generated 10-class 32x32 patterns, for tests", _check_synthetic)
    )


@hookimpl
def register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    register(ReporterSpec("console", _console, "progress bar or one line per epoch"))
    register(ReporterSpec("record", _record, "run.json and predictions.npz in the run folder"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from cifarfw.data.commands import data_cmd

    cli.add_command(data_cmd)
