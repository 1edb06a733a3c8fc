"""Commands for comparing runs and inspecting them in TensorBoard (`compare`, `tensorboard`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cifarfw.errors import RunDirError, UsageError

FORMATS = ("md", "csv", "json", "html")
DEFAULT_HTML = "cifarfw-compare.html"

COMPARE_HELP = """Compare runs in one table: a column per model (seeds of one config are grouped,
metrics shown as mean ± std (n)), the study's rows plus data, augmentation, precision,
recipe and seeds; columns that differ in data, augmentation, epochs, batch size or
precision are flagged. Reads run records only.

\b
Examples:
  cifarfw compare                              every run under ./runs
  cifarfw compare --latest 4 --with-study      the last four runs beside the study
  cifarfw compare --plugin torch-cnn --plugin keras-cnn --format html --output report.html
"""


def write_output(path: str, text: str) -> None:
    """Write a report; an unwritable path is a one-line UsageError."""
    from cifarfw.runs import atomic_write

    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--output {path} is a folder; give a file name")
    try:
        atomic_write(target, text)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}; choose another --output") from None


def print_run_comparison(run_dirs: list[Path]) -> None:
    """The comparison table of the runs one `cifarfw run` just made (several plugins or seeds)."""
    from cifarfw.errors import CifarfwError
    from cifarfw.report import compare

    try:
        entries = [compare.load_entry(d) for d in run_dirs]
        table = compare.build(entries)
    except CifarfwError as err:  # the runs are done; a table that cannot be made is only a warning
        click.echo(f"warning: no comparison table: {err}", err=True)
        return
    click.echo("\nComparison of these runs (`cifarfw compare` makes it again, also as csv, json or html):\n")
    click.echo(compare.to_markdown(table), nl=False)


def add_commands(cli: click.Group) -> None:
    """Attach this module's commands to the ``cifarfw`` group."""

    @cli.command("compare", help=COMPARE_HELP, short_help="Compare runs in one table (md, csv, json, html).")
    @click.argument("runs", nargs=-1, metavar="[RUN]...")
    @click.option("--runs-root", default="runs", show_default=True, metavar="DIR", help="Where the runs are.")
    @click.option("--latest", type=int, metavar="N", help="Only the N most recent runs.")
    @click.option("--plugin", "plugins", multiple=True, metavar="NAME", help="Only runs of this plugin (repeatable).")
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
    @click.option("--output", "-o", metavar="PATH", help=f"Write to PATH (html default: {DEFAULT_HTML}).")
    @click.option("--with-study", is_flag=True, help="Add the study's published figures as reference columns.")
    def compare_cmd(
        runs: tuple[str, ...],
        runs_root: str,
        latest: int | None,
        plugins: tuple[str, ...],
        fmt: str,
        output: str | None,
        with_study: bool,
    ) -> None:
        from cifarfw.report import compare

        if output is not None:
            _check_writable(output)
        entries = compare.select_runs(runs_root, runs, latest, plugins)
        table = compare.build(entries, with_study=with_study, runs_root=runs_root)
        text = compare.render(table, fmt)
        if output is None and fmt == "html":
            output = DEFAULT_HTML
        if output is None:
            click.echo(text, nl=False)
            return
        write_output(output, text)
        click.echo(f"wrote {output} ({len(table.columns)} columns, {len(entries)} runs)")

    @cli.command("tensorboard", short_help="Start TensorBoard on the runs root.")
    @click.option("--runs-root", default="runs", show_default=True, metavar="DIR", help="Where the runs are.")
    @click.option("--port", type=click.IntRange(0, 65535), default=6006, show_default=True)
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
    def tensorboard_cmd(runs_root: str, port: int, host: str) -> None:
        """Start TensorBoard on the runs root: scalars under the same tags for every
        framework, one HParams table over all runs, sample predictions, confusion
        matrices, configs and model graphs. Ctrl-C stops it."""
        argv = tensorboard_argv(runs_root, port, host)
        click.echo(f"TensorBoard on http://{host}:{port}/ for {runs_root} (Ctrl-C stops it)", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)


def _check_writable(output: str) -> None:
    """Fail before any work when the report's folder is missing or read-only."""
    parent = Path(output).parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {output}: folder {parent} does not exist; choose another --output")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {output}: folder {parent} is not writable; choose another --output")


def tensorboard_argv(runs_root: str, port: int, host: str) -> list[str]:
    """The TensorBoard command line for ``runs_root``, after refreshing its HParams experiment."""
    from cifarfw.errors import CifarfwError
    from cifarfw.report import hparams

    root = Path(runs_root)
    if not root.is_dir():
        raise RunDirError(f"runs root {runs_root} does not exist; pass --runs-root DIR or make runs with `cifarfw run`")
    try:
        hparams.write_experiment(root)
    except (OSError, CifarfwError) as err:  # a read-only runs root can still be viewed
        click.echo(f"warning: could not update the HParams experiment in {root}: {err}", err=True)
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host", host, "--port", str(port)]
