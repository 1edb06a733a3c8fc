"""Temporary shims while cli.py moves to the plugins' hooks; delete this module then.

`compare` and `tensorboard` are now commands of the first-party plugins cifarfw-compare and
cifarfw-tensorboard (``register_commands``); the closing comparison of a multi-run
`cifarfw run` is the compare plugin's ``on_session_end``.
"""

from __future__ import annotations

from pathlib import Path

import click


def add_commands(cli: click.Group) -> None:
    """No commands left here: the plugins register them."""


def print_run_comparison(run_dirs: list[Path]) -> None:
    """Call ``on_session_end`` on the installed plugins (what cli.py will do itself)."""
    from cifarfw.plugins import PluginHost

    PluginHost().pm.hook.on_session_end(run_dirs=run_dirs, failures=0)
