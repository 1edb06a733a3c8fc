"""Commands for plugin authors (`new-plugin`, `plugins check`)."""

from __future__ import annotations

import click


def add_commands(cli: click.Group, plugins_group: click.Group) -> None:
    """Attach this module's commands to the ``cifarfw`` group and its ``plugins`` group."""
