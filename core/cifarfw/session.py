"""One ``cifarfw run`` command: its plugins x seeds, a resume, or a multi-process launch.

The CLI parses flags into a :class:`Request`; this module resolves every run before the
first one starts (so a bad value fails before any work), runs them in turn, and ends
with the ``on_session_end`` hook (the comparison plugin prints its table there).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from cifarfw import config as config_mod
from cifarfw import runner
from cifarfw.errors import CifarfwError, UsageError
from cifarfw.plugins import PluginHost
from cifarfw.specs import TrainerSpec


@dataclass
class Launch:
    """``--nproc-per-node`` and friends: hand the command to the trainer's launcher."""

    nproc_per_node: int
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    argv: list[str] = field(default_factory=list)  # the user's cifarfw arguments

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes

    def check(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise UsageError("--nproc-per-node and --nnodes must be positive integers")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every machine)")
        if "WORLD_SIZE" in os.environ:
            raise UsageError("already inside a distributed launch; drop --nproc-per-node")

    def hand_over(self, trainer: TrainerSpec) -> None:
        """Run the command under the trainer's launcher and exit with its code."""
        if not self.argv:
            raise UsageError("--nproc-per-node works from the cifarfw command line")
        assert trainer.launch is not None
        raise SystemExit(trainer.launch(self.argv, self.nproc_per_node, self.nnodes, self.rdzv_endpoint))


@dataclass
class Request:
    """What one ``cifarfw run`` asks for, as parsed from its flags."""

    plugins: tuple[str, ...]
    model: str | None = None
    file_layer: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    launch: Launch | None = None


def run(host: PluginHost, request: Request) -> list[Path]:
    """Train every plugin x seed of ``request``; the run folders of those that finished."""
    if not request.plugins:
        raise UsageError("cifarfw run needs --plugin NAME (or --resume RUN); `cifarfw plugins` lists them")
    launch = request.launch
    if launch is not None:
        launch.check()
    with _as_rank_zero_of(launch.world if launch else 0):  # a launch is checked once, as rank 0 will see it
        resolved = _resolve_all(host, request)
    if launch is not None:
        trainer = _launcher(host, resolved)  # checked for a dry run too, launched only for a real one
        if not request.dry_run:
            launch.hand_over(trainer)
    if request.dry_run:
        for plugin, item in resolved:
            if isinstance(item, CifarfwError):
                click.echo(f"# {plugin}: cannot run: {item}")
                continue
            for cfg in runner.seed_configs(item[2]):
                click.echo(f"# {plugin} / {item[1].name}, seed {cfg.seed}")
                click.echo(config_mod.to_toml(cfg))
        return []
    several = len(request.plugins) > 1 or any(not isinstance(i, CifarfwError) and i[2].seeds > 1 for _, i in resolved)
    failures: list[tuple[str, CifarfwError]] = []
    run_dirs: list[Path] = []
    for plugin, item in resolved:
        if isinstance(item, CifarfwError):
            click.echo(f"Error: {plugin}: {item}", err=True)
            failures.append((plugin, item))
            continue
        plugin_name, spec, cfg = item
        for seed_cfg in runner.seed_configs(cfg):
            try:
                run_dirs.append(runner.execute(host, plugin_name, spec, seed_cfg))
            except CifarfwError as err:
                if not several:
                    raise
                if err.exit_code >= 128:  # interrupted: stop the whole sequence (the run said so)
                    raise
                click.echo(f"Error: {plugin}: {err}", err=True)
                failures.append((plugin, err))
    if several and runner.world_from_env()[0] == 0:
        host.pm.hook.on_session_end(run_dirs=run_dirs, failures=len(failures))
    if failures:
        first = failures[0][1]
        raise type(first)(f"{len(failures)} of the runs failed (first: {failures[0][0]}: {first})")
    return run_dirs


def _resolve_all(host: PluginHost, request: Request) -> list[tuple[str, Any]]:
    """[(plugin, (plugin, spec, config) or the CifarfwError that stops it)]; with a single
    plugin the error is raised."""
    single = len(request.plugins) == 1
    resolved: list[tuple[str, Any]] = []
    for plugin in request.plugins:
        flags = request.flags
        try:
            if not single:
                # A model option only applies to the plugins whose models declare it.
                _, spec = host.resolve_model(plugin, request.model)
                own = {o.name for o in spec.options}
                flags = {
                    **flags,
                    "model_options": {k: v for k, v in flags.get("model_options", {}).items() if k in own},
                }
            resolved.append((plugin, runner.resolve(host, plugin, request.model, request.file_layer, flags)))
        except CifarfwError as err:
            if single:
                raise
            resolved.append((plugin, err))
    return resolved


def _launcher(host: PluginHost, resolved: list[tuple[str, Any]]) -> TrainerSpec:
    """The one trainer whose launcher runs every plugin of a ``--nproc-per-node`` command."""
    trainers = []
    for plugin, item in resolved:
        if isinstance(item, CifarfwError):
            raise item
        trainer = host.trainer_for(item[1].framework)
        if trainer.launch is None:
            raise UsageError(
                f"--nproc-per-node launches torch plugins through torchrun (a trainer's launcher); {plugin} is a "
                f"{item[1].framework} plugin, whose trainer has none (see docs/distributed.md)"
            )
        trainers.append(trainer)
    if len({t.framework for t in trainers}) > 1:
        raise UsageError("--nproc-per-node launches plugins of one framework at a time")
    return trainers[0]


def resume(
    host: PluginHost, runs_root: str, ref: str, launch: Launch | None = None, force_unlock: bool = False
) -> Path:
    """``run --resume``: the run's own config.toml, its folder, its last checkpoint (``force_unlock``:
    taking over a lock that looks live, e.g. another host's)."""
    run_dir, record = runner.resume_target(runs_root, ref)
    layer = config_mod.load_file(run_dir / "config.toml")
    layer = {k: v for k, v in layer.items() if k not in ("plugin", "model", "recipe", "world_size", "backend")}
    plugin, spec, config = runner.resolve(
        host,
        record["plugin"],
        record["model"],
        layer,
        file_source=f"config.toml of {run_dir.name}",
        recipe=record.get("recipe", ""),
    )
    if launch is not None:  # every rank resumes the run itself
        launch.check()
        launch.hand_over(_launcher(host, [(plugin, (plugin, spec, config))]))
    return runner.execute(host, plugin, spec, config, resume_dir=run_dir, force_unlock=force_unlock)


@contextlib.contextmanager
def _as_rank_zero_of(world: int) -> Iterator[None]:
    """Resolve as rank 0 of a ``world``-process launch would (0: leave the environment alone)."""
    if not world:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    os.environ.update(RANK="0", WORLD_SIZE=str(world), LOCAL_RANK="0")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
