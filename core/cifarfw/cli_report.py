"""Commands for comparing runs and inspecting them in TensorBoard (`compare`, `tensorboard`)."""

from __future__ import annotations

import click


def add_commands(cli: click.Group) -> None:
    """Attach this module's commands to the ``cifarfw`` group."""
