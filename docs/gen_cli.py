"""Regenerate the command reference in docs/cli.md from the CLI itself.

    .venv/bin/python docs/gen_cli.py           # rewrite the generated part of docs/cli.md
    .venv/bin/python docs/gen_cli.py --check   # exit 1 when docs/cli.md is out of date

Only the text between the BEGIN/END markers is replaced. Plugins are not loaded
(CIFARFW_PLUGINS names the first-party plugins that are not models: cifar10, authoring, compare, tensorboard,
sweep, ray), so the
reference shows the commands and flags of a plain install; commands and
model options that plugins add are described in prose above the markers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

CLI_MD = Path(__file__).with_name("cli.md")
BEGIN = "<!-- BEGIN GENERATED: docs/gen_cli.py -->"
END = "<!-- END GENERATED -->"


def commands(group: click.Group, ctx: click.Context) -> list[tuple[click.Context, click.Command]]:
    """Every command below ``group``, depth first, in the order --help lists them."""
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx, max_content_width=100, terminal_width=100)
        out.append((sub, command))
        if isinstance(command, click.Group):
            out += commands(command, sub)
    return out


def reference() -> str:
    os.environ["CIFARFW_PLUGINS"] = "cifar10,authoring,compare,tensorboard,sweep,ray"  # first-party, no model plugin
    from cifarfw.cli import cli

    settings = {**cli.context_settings, "max_content_width": 100, "terminal_width": 100}
    root = click.Context(cli, info_name="cifarfw", obj={}, **settings)
    parts = ["## `cifarfw`\n", "```", cli.get_help(root), "```\n"]
    for ctx, command in commands(cli, root):
        parts += [f"## `{ctx.command_path}`\n", "```", command.get_help(ctx), "```\n"]
    return "\n".join(parts)


def render(current: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    current = CLI_MD.read_text(encoding="utf-8")
    if BEGIN not in current or END not in current:
        print(f"{CLI_MD} lacks the markers {BEGIN} / {END}", file=sys.stderr)
        return 2
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print(f"{CLI_MD} is out of date: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    CLI_MD.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
