"""The ``compare`` plugin: `cifarfw compare`, and the comparison that ends a `cifarfw run`
of several runs (``on_session_end``).

It registers through the same hooks a third-party plugin uses. This module imports only
click (``cifarfw --help`` loads every plugin); the table and its renderers load when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cifarfw import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def register_commands(cli: click.Group) -> None:
    from cifarfw_compare.command import compare_cmd

    cli.add_command(compare_cmd)


@hookimpl
def on_session_end(run_dirs: list[Path], failures: int) -> None:
    """Several runs ended (plugins x seeds): print their comparison table."""
    from cifarfw_compare.command import print_comparison

    print_comparison(run_dirs, failures)
