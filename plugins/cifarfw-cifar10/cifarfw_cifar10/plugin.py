"""The ``cifar10`` plugin: registers the dataset ``cifar10`` and the ``cifarfw data`` commands.

A default first-party plugin, installed with cifarfw, registering through the same hooks a
third-party dataset uses. This module imports neither numpy's loaders nor pooch: the
loader, the check and the commands import them when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from cifarfw import hookimpl
from cifarfw.specs import DatasetSpec

if TYPE_CHECKING:
    from cifarfw.config import RunConfig
    from cifarfw.data import Dataset

CIFARFW_HOOK_API = 2


def load(config: RunConfig) -> Dataset:
    from cifarfw_cifar10 import cifar10

    checksums = config.data_checksums or os.environ.get("CIFARFW_DATA_CHECKSUMS") or None
    return cifar10.load(config.data_dir or None, checksums, config.verify_data)


def check(config: RunConfig) -> Any:
    from cifarfw_cifar10 import cifar10

    cifar10.check(config.dataset_options, config.data_dir, config.data_checksums)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec("cifar10", load, "CIFAR-10, official python layout", check))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from cifarfw_cifar10.commands import data_cmd

    cli.add_command(data_cmd)
