"""The ``authoring`` plugin: adds `cifarfw new-plugin` and `cifarfw plugins check`.

It registers through the same hook a third-party plugin uses. This module imports only
click; the commands import the rest when they run (``cifarfw --help`` loads every plugin).
"""

from __future__ import annotations

import click

from cifarfw import hookimpl

CIFARFW_HOOK_API = 2


@hookimpl
def register_commands(cli: click.Group) -> None:
    from cifarfw_authoring.check import plugins_check_cmd
    from cifarfw_authoring.scaffold import new_plugin_cmd

    cli.add_command(new_plugin_cmd)
    plugins = cli.commands.get("plugins")
    if isinstance(plugins, click.Group):  # the core's `cifarfw plugins` group
        plugins.add_command(plugins_check_cmd)
