"""The ``cifarfw`` command. Thin: parse, call the core, print.

Every user error ends as one line, ``Error: ...``, and an exit code from
docs/exit-codes.md; set CIFARFW_DEBUG=1 to see tracebacks of internal errors.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from typing import Any

import click

from cifarfw import __version__, session
from cifarfw import config as config_mod
from cifarfw.config import RunConfig
from cifarfw.errors import CifarfwError, UsageError
from cifarfw.metrics import BY_NAME
from cifarfw.suggest import did_you_mean

RUN_HELP = """Train a model plugin's model, e.g. `cifarfw run --plugin torch-cnn`.

Settings are taken, each overriding the one before: built-in defaults < the model's
recipe (--recipe, else its default) < --config FILE.toml < flags and --set KEY=VALUE.
Repeat --plugin to run several plugins in turn. Model options (e.g. --weights,
--freeze) are listed below and by `cifarfw models`.
"""


def host_of(ctx: click.Context) -> Any:
    """The plugin host of this invocation, built once, honouring --disable-plugin."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "host" not in root.obj:
        from cifarfw.plugins import PluginHost

        params = root.params
        root.obj["host"] = PluginHost(
            disabled=params.get("disable_plugin") or (),
            strict=True if params.get("strict_plugins") else None,
        )
    return root.obj["host"]


class CifarfwGroup(click.Group):
    """Adds the commands plugins register, and the model options to `run`."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        root = ctx.find_root()
        root.ensure_object(dict)
        if "plugin_commands" not in root.obj:
            # Plugins get this invocation's own copies of the core's groups, so they may add
            # subcommands (`plugins check`) without changing the CLI for the next invocation.
            core = {n: _copy_group(c) for n, c in self.commands.items()}
            staging = click.Group(commands=dict(core))
            host = host_of(ctx)
            for impl in host.pm.hook.register_commands.get_hookimpls():
                try:
                    impl.function(**{arg: staging for arg in impl.argnames})
                except Exception as err:  # a broken plugin must not break the CLI
                    info = host.plugins.get(impl.plugin_name)
                    if info is not None:
                        info.status, info.error = "failed", f"register_commands: {type(err).__name__}: {err}"
            root.obj["plugin_commands"] = {**staging.commands, **core}  # a plugin never replaces a core command
        return root.obj["plugin_commands"]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({"run", *self.commands, *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "run":
            return click.Command(
                "run", params=run_options(host_of(ctx)), callback=_run, help=RUN_HELP, short_help="Train model plugins."
            )
        return self._plugin_commands(ctx).get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise UsageError(f"no command {name!r}{did_you_mean(name, self.list_commands(ctx))}; see cifarfw --help")
        return super().resolve_command(ctx, args)


@click.group(cls=CifarfwGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cifarfw")
@click.option("--disable-plugin", multiple=True, metavar="NAME", help="Do not load this plugin (repeatable).")
@click.option(
    "--strict-plugins", is_flag=True, help="A plugin that fails to load is an error (CIFARFW_STRICT_PLUGINS=1)."
)
def cli(disable_plugin: tuple[str, ...], strict_plugins: bool) -> None:
    """cifarfw: train CIFAR-10 classifiers in PyTorch and Keras through plugins, log every
    run to TensorBoard and compare runs in one table.

    \b
    Quick start:
      cifarfw plugins                        what is installed
      cifarfw run --plugin torch-cnn         train the study's PyTorch CNN
      cifarfw run --plugin torch-cnn --dataset synthetic --epochs 2
      cifarfw runs                           list runs and their results
    """


# --- run -------------------------------------------------------------------------------


def _config_options(host: Any) -> list[click.Option]:
    """One flag per RunConfig field that has help in its metadata (cifarfw.config.setting)."""
    options = []
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata
        if not meta.get("help"):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        names = [flag, *([meta["short"]] if meta.get("short") else []), f.name]
        help_text = meta["help"]
        if meta.get("vocabulary"):
            offered = {fw: getattr(t, meta["vocabulary"]) for fw, t in host.trainers.items()}
            help_text += " " + "; ".join(f"{', '.join(v)} ({fw})" for fw, v in sorted(offered.items()) if v)
        if f.type == "bool" and meta.get("flag"):  # a lone --no-X flag
            options.append(click.Option(names, is_flag=True, flag_value=not f.default, default=None, help=help_text))
        elif f.type == "bool":
            options.append(click.Option([f"{flag}/--no-{flag[2:]}", f.name], default=None, help=help_text))
        else:
            kind = click.Choice(meta["choices"]) if meta.get("choices") else {"int": int, "float": float}.get(f.type)
            options.append(click.Option(names, type=kind, metavar=meta.get("metavar") or None, help=help_text))
    return options


def _model_options(host: Any, taken: set[str]) -> list[click.Option]:
    """The options model plugins declare (--weights, --freeze, ...); models that share a
    flag share one option whose help gives each model's meaning and choices."""
    declared: dict[str, list[tuple[str, Any]]] = {}
    owners = [(spec.name, spec.options) for spec in host.models.values()]
    owners += [(f"{ns}/*", provider.options) for ns, provider in host.providers.items()]
    for owner, options in owners:
        for option in options:
            declared.setdefault(option.name, []).append((owner, option))
    params = []
    for name, uses in declared.items():
        flag = "--" + name.replace("_", "-")
        if flag in taken:
            continue
        helps = []
        for owner, option in uses:
            choices = f" ({'|'.join(map(str, option.choices))})" if option.choices else ""
            helps.append(f"[{owner}] {option.help}{choices}")
        params.append(click.Option([flag, f"model_option__{name}"], metavar=name.upper(), help=" / ".join(helps)))
    return params


def run_options(host: Any) -> list[click.Parameter]:
    """Every flag of `cifarfw run`, model options included (`cifarfw sweep` takes them too)."""
    host.collect()
    params: list[click.Parameter] = [
        click.Option(
            ["--plugin", "-p"],
            multiple=True,
            metavar="NAME",
            help="Model plugin to run (repeat to run several in turn).",
        ),
        click.Option(["--model", "-m"], metavar="NAME", help="Model of the plugin (default: its first)."),
        click.Option(
            ["--config", "config_file"], metavar="FILE.toml", help="TOML file of settings (keys as in config.toml)."
        ),
        click.Option(
            ["--set", "sets"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Any setting, e.g. --set augment.flip=false (repeatable).",
        ),
        *_config_options(host),
        click.Option(["--dry-run"], is_flag=True, help="Check everything, print the resolved config and exit."),
        click.Option(
            ["--nproc-per-node"],
            type=int,
            metavar="N",
            help="Launch N processes on this machine through the trainer's launcher (torch: torchrun, DDP).",
        ),
        click.Option(["--nnodes"], type=int, metavar="M", help="With --nproc-per-node: number of machines."),
        click.Option(
            ["--rdzv-endpoint"], metavar="HOST:PORT", help="With --nnodes > 1: torchrun's rendezvous endpoint."
        ),
        click.Option(
            ["--resume"],
            metavar="RUN|last",
            help="Continue an unfinished run (id, id prefix, folder or 'last') from its last checkpoint.",
        ),
        click.Option(["--force-unlock"], is_flag=True, help="With --resume: take over its lock (another host's)."),
    ]
    return params + _model_options(host, {opt for p in params for opt in p.opts})


def _run(**kwargs: Any) -> None:
    host = host_of(click.get_current_context())
    launch = None
    if kwargs["nproc_per_node"] is not None:
        argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("cifarfw", "__main__.py")) else []
        launch = session.Launch(kwargs["nproc_per_node"], kwargs["nnodes"] or 1, kwargs["rdzv_endpoint"], argv)
    elif kwargs["nnodes"] is not None or kwargs["rdzv_endpoint"] is not None:
        raise UsageError("--nnodes and --rdzv-endpoint go with --nproc-per-node")
    if kwargs["resume"]:
        launch_flags = ("resume", "runs_root", "nproc_per_node", "nnodes", "rdzv_endpoint", "force_unlock")
        given = [
            "--" + name.replace("_", "-")
            for name, value in kwargs.items()
            if value not in (None, (), False) and name not in launch_flags
        ]
        if given:
            raise UsageError(f"--resume continues a run with its own config; drop {', '.join(given)}")
        session.resume(host, kwargs["runs_root"] or "runs", kwargs["resume"], launch, kwargs["force_unlock"])
        return
    if kwargs["force_unlock"]:
        raise UsageError("--force-unlock goes with --resume RUN")
    flags = config_mod.flag_layer(kwargs, kwargs["sets"])
    file_layer = config_mod.load_file(kwargs["config_file"]) if kwargs["config_file"] else {}
    request = session.Request(kwargs["plugin"], kwargs["model"], file_layer, flags, kwargs["dry_run"], launch)
    session.run(host, request)


# --- plugins, models, runs ---------------------------------------------------------------


@cli.group("plugins", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins_cmd(ctx: click.Context, as_json: bool) -> None:
    """List plugins: ok, failed (with the error), blocked, or known but not installed."""
    if ctx.invoked_subcommand is not None:
        return
    rows = host_of(ctx).listing()
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    table = [["NAME", "STATUS", "DISTRIBUTION", "VERSION", "PROVIDES / NOTE"]]
    for r in rows:
        note = ", ".join(r.registered) or r.error or (f"install: {r.install}" if r.install else "")
        if r.status == "failed":
            note = r.error
        table.append([r.name, r.status, r.distribution, r.version, note])
    click.echo(_table(table))


@cli.command("models")
@click.option("--plugin", "-p", "plugin", metavar="NAME", help="Only this plugin's models.")
@click.option("--filter", "pattern", metavar="GLOB", help="Only models whose name matches, e.g. 'convnext*'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
def models_cmd(ctx: click.Context, plugin: str | None, pattern: str | None, as_json: bool) -> None:
    """List models, grouped by plugin: framework, input size, recipes and options.

    A zoo plugin's models (timm, keras-apps) are listed by name; `--plugin` and `--filter`
    narrow the list and `cifarfw models --plugin P --filter NAME` shows one in full."""
    import fnmatch

    host = host_of(ctx)
    host.collect()
    if plugin is not None and (plugin not in host.plugins or host.plugins[plugin].status != "ok"):
        host.resolve_model(plugin, None)  # an unknown, blocked or failed plugin: its one-line error
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, spec in host.models.items():
        owner = host.plugin_of_model(name)
        if plugin in (None, owner) and (not pattern or fnmatch.fnmatch(name, pattern)):
            rows.setdefault(owner, []).append(spec.describe())
    for namespace, provider in host.providers.items():
        owner = host.plugin_of_model(f"{namespace}/")
        if plugin not in (None, owner):
            continue
        names = [n for n in provider.names() if not pattern or fnmatch.fnmatch(n, pattern)]
        detailed = len(names) <= 3  # a few: build their specs and show them in full
        for n in names:
            row = host.resolve_model(owner, n)[1].describe() if detailed else {"model": f"{namespace}/{n}"}
            rows.setdefault(owner, []).append({**row, "framework": provider.framework})
    if as_json:
        click.echo(json.dumps([{"plugin": p, **row} for p, group in rows.items() for row in group], indent=2))
        return
    if not rows:
        click.echo("no models match; `cifarfw plugins` shows what is installed")
    for owner, group in rows.items():
        click.echo(f"{owner} ({len(group)} model{'s' * (len(group) != 1)}):")
        for row in group:
            if "recipes" not in row:
                click.echo(f"  {row['model']}")
                continue
            size = f"{row['input_size']}x{row['input_size']}"
            click.echo(f"  {row['model']} ({row['framework']}, {size}): {row['description']}")
            click.echo(f"    recipes: {', '.join(row['recipes']) or '-'} (default {row['default_recipe']})")
            for o in row["options"]:
                choices = f" [{'|'.join(map(str, o['choices']))}]" if o["choices"] else ""
                click.echo(f"    --{o['name'].replace('_', '-')}{choices} (default {o['default']}): {o['help']}")


@cli.command("runs")
@click.option("--runs-root", default="runs", show_default=True, metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--sweep", metavar="NAME", help="Only the runs of sweep NAME (`cifarfw sweep --name`).")
def runs_cmd(runs_root: str, as_json: bool, sweep: str | None) -> None:
    """List runs with their status and headline metrics."""
    from cifarfw import runs

    rows = []
    for path, rec in (r for r in runs.iter_runs(runs_root) if sweep in (None, (r[1].get("sweep") or {}).get("name"))):
        final, epochs, data = runs.final_metrics(rec), rec.get("epochs") or [], rec.get("dataset") or {}
        rows.append(
            {
                "id": path.name,
                "status": rec.get("status", "?"),
                "model": rec.get("model", "?"),
                "recipe": rec.get("recipe", ""),
                "data": f"{data.get('name', '?')} {data.get('train_images', '?')}/{data.get('test_images', '?')}",
                "epochs": f"{len(epochs)}/{(rec.get('config') or {}).get('epochs', '?')}",
                "test_acc": final.get("test_acc"),
                "train_seconds": (rec.get("final") or {}).get("train_seconds"),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs under {runs_root}")
        return
    table = [["RUN", "STATUS", "MODEL", "RECIPE", "DATA (TRAIN/TEST)", "EPOCHS", "TEST ACC", "TRAIN S"]]
    for r in rows:
        acc, secs = BY_NAME["test_acc"].format(r["test_acc"]), BY_NAME["train_seconds"].format(r["train_seconds"])
        table.append([r["id"], r["status"], r["model"], r["recipe"] or "-", r["data"], r["epochs"], acc, secs])
    click.echo(_table(table))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# --- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line and an exit code, never a traceback."""
    debug = os.environ.get("CIFARFW_DEBUG") == "1"
    try:
        code = cli.main(args=argv, prog_name="cifarfw", standalone_mode=False)
    except CifarfwError as err:
        if debug and err.__cause__ is not None:  # a plugin's bug wrapped in a one-line error
            raise
        click.echo(_one_line(f"Error: {err}"), err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        hint = ""
        if isinstance(err, click.UsageError) and err.ctx is not None:
            hint = f" (see {err.ctx.command_path} --help)"
        click.echo(_one_line(f"Error: {err.format_message()}{hint}"), err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except Exception as err:
        if debug:
            raise
        click.echo(
            _one_line(
                f"Error: internal error: {type(err).__name__}: {err} (set CIFARFW_DEBUG=1 for the traceback and report it)"
            ),
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _copy_group(command: click.Command) -> click.Command:
    if not isinstance(command, click.Group):
        return command
    group = copy.copy(command)
    group.commands = dict(command.commands)
    return group


def _one_line(message: str) -> str:
    """Errors are one line, whatever a plugin's exception message holds."""
    return " ".join(message.split())
