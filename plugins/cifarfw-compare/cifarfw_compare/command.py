"""`cifarfw compare`, and the table that ends a `cifarfw run` of several runs.

The formats are dispatched here, so the table (:mod:`cifarfw_compare.compare`) and the
HTML renderer (:mod:`cifarfw_compare.html`, which reads the table's types) import in one
direction only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cifarfw.errors import UsageError

if TYPE_CHECKING:
    from cifarfw_compare.compare import Comparison

FORMATS = ("md", "csv", "json", "html")
DEFAULT_HTML = "cifarfw-compare.html"

COMPARE_HELP = """Compare runs in one table: a column per model (seeds of one config are grouped,
metrics shown as mean ± std (n)), the study's rows plus data, augmentation, precision,
recipe and seeds, model cost (MACs, checkpoint size, inference throughput); each column's
test accuracy against the reference column's (difference, 95% CI, Welch's t-test, a
verdict); columns (the study's too) that differ in data, data copy, augmentation, epochs,
batch size or precision are flagged. Reads run records only.

\b
Examples:
  cifarfw compare                              every run under ./runs
  cifarfw compare --latest 4 --with-study      the last four runs beside the study
  cifarfw compare --plugin torch-cnn --plugin keras-cnn --format html --output report.html
  cifarfw compare --reference 3f2a9c       the others tested against group (or run) 3f2a9c...
"""


@click.command("compare", help=COMPARE_HELP, short_help="Compare runs in one table (md, csv, json, html).")
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@click.option("--runs-root", default="runs", show_default=True, metavar="DIR", help="Where the runs are.")
@click.option("--latest", type=int, metavar="N", help="Only the N most recent runs.")
@click.option("--plugin", "plugins", multiple=True, metavar="NAME", help="Only runs of this plugin (repeatable).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@click.option("--output", "-o", metavar="PATH", help=f"Write to PATH (html default: {DEFAULT_HTML}).")
@click.option("--with-study", is_flag=True, help="Add the study's published figures as reference columns.")
@click.option(
    "--reference",
    metavar="RUN|GROUP",
    help="The column the others are tested (Welch's t-test on test accuracy) and flagged against: "
    "a run id or group id (or a unique prefix). Default: the first column.",
)
@click.option("--sweep", metavar="NAME", help="The runs of sweep NAME: a column per parameter combination, best first.")
@click.option(
    "--metric", default="test_acc", show_default=True, metavar="NAME", help="With --sweep: the metric to sort by."
)
def compare_cmd(
    runs: tuple[str, ...],
    runs_root: str,
    latest: int | None,
    plugins: tuple[str, ...],
    fmt: str,
    output: str | None,
    with_study: bool,
    reference: str | None,
    sweep: str | None = None,
    metric: str = "test_acc",
) -> None:
    from cifarfw.runs import select_runs
    from cifarfw_compare import compare, sweeps

    if output is not None:
        _check_writable(output)
    if sweep is not None:  # a column per parameter combination (cifarfw_compare.sweeps)
        if runs or latest or plugins or with_study or reference:
            raise UsageError("--sweep selects the runs itself; drop RUN, --latest, --plugin, --with-study, --reference")
        table = sweeps.build(runs_root, sweep, metric)
        entries = [e for c in table.columns for e in c.runs]
        text = sweeps.to_json(table, sweep, metric) if fmt == "json" else render(table, fmt)
    else:
        entries = select_runs(runs_root, runs, latest, plugins)
        table = compare.build(entries, with_study=with_study, runs_root=runs_root, reference=reference)
        text = render(table, fmt)
    if output is None and fmt == "html":
        output = DEFAULT_HTML
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text)
    click.echo(f"wrote {output} ({len(table.columns)} columns, {len(entries)} runs)")


def render(table: Comparison, fmt: str) -> str:
    """``table`` as ``fmt``: md, csv, json or html."""
    from cifarfw_compare import compare

    if fmt == "html":
        from cifarfw_compare.html import to_html

        return to_html(table)
    return compare.FORMATS[fmt](table)


def print_comparison(run_dirs: Sequence[Path], failures: int = 0) -> None:
    """The comparison table of the runs one `cifarfw run` just made (several plugins or seeds)."""
    from cifarfw.errors import CifarfwError
    from cifarfw.runs import load_entry
    from cifarfw_compare import compare

    if not run_dirs:
        return
    try:
        table = compare.build([load_entry(Path(d)) for d in run_dirs])
    except CifarfwError as err:  # the runs are done; a table that cannot be made is only a warning
        click.echo(f"warning: no comparison table: {err}", err=True)
        return
    failed = f"; {failures} failed run{'s' * (failures > 1)} not in it" if failures else ""
    click.echo(f"\nComparison of these runs (`cifarfw compare` makes it again, also as csv, json or html{failed}):\n")
    click.echo(compare.to_markdown(table), nl=False)


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


def _check_writable(output: str) -> None:
    """Fail before any work when the report's folder is missing or read-only."""
    parent = Path(output).parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {output}: folder {parent} does not exist; choose another --output")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {output}: folder {parent} is not writable; choose another --output")
