"""`cifarfw tensorboard`: refresh the runs root's HParams experiment, then start TensorBoard."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cifarfw.errors import RunDirError


@click.command("tensorboard", short_help="Start TensorBoard on the runs root.")
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


def tensorboard_argv(runs_root: str, port: int, host: str) -> list[str]:
    """The TensorBoard command line for ``runs_root``, after refreshing its HParams experiment."""
    from cifarfw.errors import CifarfwError
    from cifarfw_tensorboard import hparams

    root = Path(runs_root)
    if not root.is_dir():
        raise RunDirError(f"runs root {runs_root} does not exist; pass --runs-root DIR or make runs with `cifarfw run`")
    try:
        hparams.write_experiment(root)
    except (OSError, CifarfwError) as err:  # a read-only runs root can still be viewed
        click.echo(f"warning: could not update the HParams experiment in {root}: {err}", err=True)
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host", host, "--port", str(port)]
