"""The ``cifarfw sweep`` command: every ``cifarfw run`` flag, plus the sweep's own.

Its flags are built when the command is used (not when ``cifarfw --help`` lists it): the run
flags come from the core's generated ``run`` command, the executor flags from the installed
executors (``register_executors``), so a new config key or executor needs no change here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

SWEEP_HELP = """Run many ordinary runs at once: a grid (configurations x plugins x seeds) or an
Optuna search, on this machine (--parallel N processes) or on another executor (--executor ray).

\b
Examples:
  cifarfw sweep --plugin torch-cnn --plugin keras-cnn --grid lr=0.01,0.001 --seeds 2 --parallel 2
  cifarfw sweep --plugin torch-cnn --search optuna --trials 20 --range lr=1e-4:1e-1:log --prune median
  cifarfw sweep --resume NAME                  run what a killed or failed sweep left
  cifarfw compare --sweep NAME                 one column per combination, mean ± std over seeds

Every run flag below applies to every run; --grid and --range vary settings (any config key,
e.g. lr, augment.flip, model_options.freeze). See docs/sweeps.md.
"""
# Run flags a sweep does not take: launches are per run, and --resume/--name are the sweep's own.
DROPPED = ("nproc_per_node", "nnodes", "rdzv_endpoint", "resume", "force_unlock", "name")


def _sweep_params(ctx: click.Context) -> list[click.Parameter]:
    from cifarfw import cli as core_cli

    host = core_cli.host_of(ctx)
    params: list[click.Parameter] = [p for p in core_cli.run_options(host) if p.name not in DROPPED]
    params += [
        click.Option(["--grid"], multiple=True, metavar="KEY=V1,V2,...", help="Values to run for a setting, as --set parses them (repeatable; any config key, plugin, model)."),
        click.Option(["--range"], multiple=True, metavar="KEY=LOW:HIGH[:log]", help="With --search: a numeric range (ints when both bounds are ints; log scale with :log)."),
        click.Option(["--name"], metavar="NAME", help="The sweep's id (default: generated); also each run's label."),
        click.Option(["--parallel"], type=int, metavar="N", help="Runs at once (local: N processes sharing the cores; default 1)."),
        click.Option(["--sweep-file"], metavar="FILE.toml", help="The sweep's flags as TOML keys ([grid], [range], [set], plugin, seeds, ...)."),
        click.Option(["--resume"], metavar="NAME", help="Run what sweep NAME has not finished (finished runs kept, interrupted ones resumed)."),
        click.Option(["--executor"], metavar="NAME", help=f"Where runs execute: {', '.join(sorted(host.executors))} (default local)."),
        click.Option(["--search"], type=click.Choice(["optuna"]), help="Search the --grid/--range space with Optuna instead of running the grid."),
        click.Option(["--trials"], type=int, metavar="N", help="With --search: trials in the study, all workers together (default 20)."),
        click.Option(["--metric"], metavar="NAME", help="With --search: the metric to optimise (default test_acc)."),
        click.Option(["--direction"], type=click.Choice(["maximize", "minimize"]), help="With --search: default from the metric."),
        click.Option(["--sampler"], type=click.Choice(["tpe", "random"]), help="With --search: Optuna's sampler (default tpe)."),
        click.Option(["--prune"], type=click.Choice(["none", "median"]), help="With --search: stop poor trials at an epoch (median: Optuna's MedianPruner)."),
        click.Option(["--storage"], metavar="URL", help="With --search: an Optuna RDB URL (default: SQLite in the runs root); workers sharing it share the study."),
    ]  # fmt: skip
    for name, spec in sorted(host.executors.items()):
        for option in spec.options:
            kind = option.type if option.type in (int, float) else None
            flag = "--" + option.name.replace("_", "-")
            params.append(
                click.Option(
                    [flag, f"executor__{name}__{option.name}"],
                    type=kind,
                    metavar=option.name.upper(),
                    help=f"[{name}] {option.help}",
                )
            )
    return params


class SweepCommand(click.Command):
    """``cifarfw sweep``, whose flags are made on first use (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__(
            "sweep", callback=self._invoke, help=SWEEP_HELP, short_help="Run a grid or an Optuna search of many runs."
        )
        self._built = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._built:
            self.params = _sweep_params(ctx)
            self._built = True
        return super().get_params(ctx)

    def _invoke(self, **kwargs: Any) -> None:
        from cifarfw import cli as core_cli
        from cifarfw import config as config_mod
        from cifarfw_sweep import sweep

        ctx = click.get_current_context()
        host = core_cli.host_of(ctx)
        # The run flags as `cifarfw run` turns them into its flag layer; the rest are the sweep's.
        flags = config_mod.flag_layer(kwargs, kwargs.pop("sets", ()) or (), exclude=DROPPED)
        config_names = {f.name for f in dataclasses.fields(config_mod.RunConfig) if f.metadata.get("help")} - set(
            DROPPED
        )
        sweep_kw = {k: v for k, v in kwargs.items() if k not in config_names and not k.startswith("model_option__")}
        sweep_kw["config"] = sweep_kw.pop("config_file", None)
        sweep.main(host, sweep_kw, config_mod.validate_layer(flags, "flags") if flags else {})
