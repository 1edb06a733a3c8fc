"""The ``cifarfw`` command. Thin: parse, call the core, print.

Every user error ends as one line, ``Error: ...``, and an exit code from
docs/exit-codes.md; set CIFARFW_DEBUG=1 to see tracebacks of internal errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from cifarfw import __version__
from cifarfw.config import OPTIMIZERS, PRECISIONS, SCHEDULES
from cifarfw.errors import CifarfwError, UsageError

RUN_HELP = """Train a model plugin's model, e.g. `cifarfw run --plugin torch-cnn`.

Settings are taken, each overriding the one before: built-in defaults < the model's
recipe (--recipe, else its default) < --config FILE.toml < flags and --set KEY=VALUE.
Repeat --plugin to run several plugins in turn. Model options (e.g. --weights,
--freeze) are listed below and by `cifarfw models`.
"""


def _host(ctx: click.Context) -> Any:
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
            staging = click.Group()
            host = _host(ctx)
            for impl in host.pm.hook.register_commands.get_hookimpls():
                try:
                    impl.function(**{arg: staging for arg in impl.argnames})
                except Exception as err:  # a broken plugin must not break the CLI
                    info = host.plugins.get(impl.plugin_name)
                    if info is not None:
                        info.status, info.error = "failed", f"register_commands: {type(err).__name__}: {err}"
            root.obj["plugin_commands"] = {n: c for n, c in staging.commands.items() if n not in self.commands}
        return root.obj["plugin_commands"]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({"run", *self.commands, *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "run":
            return _run_command(_host(ctx))
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        return self._plugin_commands(ctx).get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from cifarfw.suggest import did_you_mean

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

_FLAG_KEYS = {
    "dataset": "dataset",
    "data_dir": "data_dir",
    "data_checksums": "data_checksums",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "schedule": "schedule",
    "weight_decay": "weight_decay",
    "momentum": "momentum",
    "label_smoothing": "label_smoothing",
    "seed": "seed",
    "seeds": "seeds",
    "device": "device",
    "precision": "precision",
    "recipe": "recipe",
    "runs_root": "runs_root",
    "name": "name",
    "train_limit": "train_limit",
    "test_limit": "test_limit",
    "deterministic": "deterministic",
    "compile": "compile",
    "channels_last": "channels_last",
    "tta": "tta",
    "feature_cache": "feature_cache",
}


def _run_command(host: Any) -> click.Command:
    params: list[click.Parameter] = [
        click.Option(
            ["--plugin", "-p"],
            multiple=True,
            metavar="NAME",
            help="Model plugin to run (repeat to run several in turn).",
        ),
        click.Option(["--model", "-m"], metavar="NAME", help="Model of the plugin (default: its first)."),
        click.Option(["--recipe", "-r"], metavar="NAME", help="The model's recipe (default: its default recipe)."),
        click.Option(
            ["--config", "config_file"], metavar="FILE.toml", help="TOML file of settings (keys as in config.toml)."
        ),
        click.Option(
            ["--set", "sets"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Any setting, e.g. --set augment.flip=false (repeatable).",
        ),
        click.Option(["--dataset"], metavar="NAME", help="Dataset: cifar10 (default), synthetic, or a plugin's."),
        click.Option(
            ["--data-dir"],
            metavar="DIR",
            help="Folder holding cifar-10-batches-py (else CIFARFW_DATA_DIR, the cache, a download).",
        ),
        click.Option(
            ["--data-checksums"], metavar="FILE", help="Accept a local copy whose files match this md5sum-format file."
        ),
        click.Option(
            ["--no-verify-data", "no_verify_data"],
            is_flag=True,
            default=None,
            help="Use data without checking checksums (warns).",
        ),
        click.Option(["--train-limit"], type=int, metavar="N", help="Train on a class-balanced subset of N images."),
        click.Option(["--test-limit"], type=int, metavar="N", help="Test on a class-balanced subset of N images."),
        click.Option(["--epochs", "-e"], type=int, metavar="N", help="Training epochs (> 0)."),
        click.Option(["--batch-size", "-b"], type=int, metavar="N", help="Batch size (> 0)."),
        click.Option(["--lr"], type=float, metavar="LR", help="Learning rate (peak rate for one-cycle) (> 0)."),
        click.Option(["--optimizer"], type=click.Choice(OPTIMIZERS), help="Optimizer."),
        click.Option(["--schedule"], type=click.Choice(SCHEDULES), help="Learning-rate schedule."),
        click.Option(["--weight-decay"], type=float, metavar="WD", help="Weight decay (>= 0)."),
        click.Option(["--momentum"], type=float, metavar="M", help="SGD momentum in [0, 1)."),
        click.Option(["--label-smoothing"], type=float, metavar="S", help="Label smoothing in [0, 1)."),
        click.Option(["--seed"], type=int, metavar="N", help="Random seed (>= 0)."),
        click.Option(["--seeds"], type=int, metavar="N", help="Run N seeds (seed, seed+1, ...) and group them."),
        click.Option(["--device"], metavar="auto|cpu|cuda[:N]", help="Where to train (default auto)."),
        click.Option(["--precision"], type=click.Choice(PRECISIONS), help="fp32, bf16 (autocast), fp16 (AMP) or auto."),
        click.Option(["--deterministic/--no-deterministic"], default=None, help="Deterministic algorithms (slower)."),
        click.Option(["--compile/--no-compile"], default=None, help="torch.compile the model (torch plugins)."),
        click.Option(["--channels-last/--no-channels-last"], default=None, help="Channels-last memory format (torch)."),
        click.Option(["--tta/--no-tta"], default=None, help="Test-time augmentation: average over flips."),
        click.Option(
            ["--feature-cache/--no-feature-cache"],
            default=None,
            help="Cache the outputs of a frozen model prefix (e.g. AlexNet's features).",
        ),
        click.Option(["--runs-root"], metavar="DIR", help="Where run folders go (default ./runs)."),
        click.Option(["--name"], metavar="TEXT", help="A label added to the run folder's name."),
        click.Option(["--dry-run"], is_flag=True, help="Print the resolved config and exit."),
        click.Option(
            ["--nproc-per-node"],
            type=int,
            metavar="N",
            help="Launch N processes on this machine through torchrun (torch plugins; DDP).",
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
    ]
    # Model options declared by installed model plugins, e.g. --weights, --freeze.
    taken = {opt for p in params for opt in p.opts}
    host.collect()
    for spec in host.models.values():
        for option in spec.options:
            flag = "--" + option.name.replace("_", "-")
            if flag in taken:
                continue
            taken.add(flag)
            params.append(
                click.Option(
                    [flag, f"model_option__{option.name}"],
                    metavar=option.name.upper(),
                    help=f"[{spec.name}] {option.help}",
                )
            )
    return click.Command("run", params=params, callback=_run, help=RUN_HELP, short_help="Train model plugins.")


def _run(**kwargs: Any) -> None:
    from cifarfw import config as config_mod
    from cifarfw import runner

    ctx = click.get_current_context()
    host = _host(ctx)
    launch_world = _check_launch(kwargs) if kwargs["nproc_per_node"] is not None else 0
    if launch_world and kwargs["resume"]:
        _launch_torchrun(kwargs)  # every rank checks the resumed run itself
    if kwargs["nnodes"] is not None or kwargs["rdzv_endpoint"] is not None:
        raise UsageError("--nnodes and --rdzv-endpoint go with --nproc-per-node")
    if kwargs["resume"]:
        _resume(host, kwargs)
        return
    if not kwargs["plugin"]:
        raise UsageError("cifarfw run needs --plugin NAME (or --resume RUN); `cifarfw plugins` lists them")
    flags: dict[str, Any] = {}
    for arg, key in _FLAG_KEYS.items():
        if kwargs.get(arg) is not None:
            flags[key] = kwargs[arg]
    if kwargs.get("no_verify_data"):
        flags["verify_data"] = False
    model_options = {
        k.removeprefix("model_option__"): v
        for k, v in kwargs.items()
        if k.startswith("model_option__") and v is not None
    }
    for assignment in kwargs["sets"]:
        flags = config_mod.merge(flags, config_mod.parse_set(assignment))
    if model_options:
        flags["model_options"] = {**flags.get("model_options", {}), **model_options}
    file_layer = config_mod.load_file(kwargs["config_file"]) if kwargs["config_file"] else {}

    plugins = kwargs["plugin"]
    with _as_rank_zero_of(launch_world):  # a launch is checked once, here, as its ranks will see it
        resolved = _resolve_all(host, plugins, kwargs["model"], file_layer, flags)
    if launch_world:
        for plugin, item in resolved:
            if isinstance(item, CifarfwError):
                raise item
            if item[1].framework != "torch":
                raise UsageError(
                    f"--nproc-per-node launches torch plugins through torchrun; {plugin} is a {item[1].framework} "
                    "plugin (see docs/distributed.md)"
                )
        if not kwargs["dry_run"]:
            _launch_torchrun(kwargs)

    if kwargs["dry_run"]:
        for plugin, item in resolved:
            if isinstance(item, CifarfwError):
                click.echo(f"# {plugin}: cannot run: {item}")
                continue
            for cfg in runner.seed_configs(item[2]):
                click.echo(f"# {plugin} / {item[1].name}, seed {cfg.seed}")
                click.echo(config_mod.to_toml(cfg))
        return

    failures: list[tuple[str, CifarfwError]] = []
    run_dirs = []
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
                if len(plugins) == 1 and cfg.seeds == 1:
                    raise
                click.echo(f"Error: {plugin}: {err}", err=True)
                failures.append((plugin, err))
                if err.exit_code >= 128:  # interrupted: stop the whole sequence
                    raise
    if run_dirs and (len(plugins) > 1 or len(run_dirs) > 1) and runner.world_from_env()[0] == 0:
        from cifarfw.cli_report import print_run_comparison

        print_run_comparison(run_dirs)  # several plugins or seeds: end with their comparison table
    if failures:
        first = failures[0][1]
        raise type(first)(f"{len(failures)} of the runs failed (first: {failures[0][0]}: {first})")


def _resolve_all(
    host: Any, plugins: tuple[str, ...], model: str | None, file_layer: dict[str, Any], flags: dict[str, Any]
) -> list[tuple[str, Any]]:
    """[(plugin, (plugin, spec, config) or the CifarfwError that stops it)]; with a single
    plugin the error is raised."""
    from cifarfw import runner

    resolved: list[tuple[str, Any]] = []
    for plugin in plugins:
        if len(plugins) > 1:
            # A model option only applies to the plugins whose models declare it.
            try:
                _, spec = host.resolve_model(plugin, model)
            except CifarfwError as err:
                resolved.append((plugin, err))
                continue
            own = {o.name for o in spec.options}
            plugin_flags = dict(flags)
            plugin_flags["model_options"] = {k: v for k, v in flags.get("model_options", {}).items() if k in own}
        else:
            plugin_flags = flags
        try:
            resolved.append((plugin, runner.resolve(host, plugin, model, file_layer, plugin_flags)))
        except CifarfwError as err:
            if len(plugins) == 1:
                raise
            resolved.append((plugin, err))
    return resolved


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


def _check_launch(kwargs: dict[str, Any]) -> int:
    """The world size of a --nproc-per-node launch, after checking its flags."""
    nproc, nnodes, endpoint = kwargs["nproc_per_node"], kwargs["nnodes"] or 1, kwargs["rdzv_endpoint"]
    if nproc < 1 or nnodes < 1:
        raise UsageError("--nproc-per-node and --nnodes must be positive integers")
    if nnodes > 1 and not endpoint:
        raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every machine)")
    if "WORLD_SIZE" in os.environ:
        raise UsageError("already inside a distributed launch; drop --nproc-per-node")
    return nproc * nnodes


def _launch_torchrun(kwargs: dict[str, Any]) -> None:
    """Hand this same command over to torchrun, which starts one process per device and
    sets RANK / WORLD_SIZE / LOCAL_RANK; each process runs `python -m cifarfw run ...`."""
    import shutil
    import subprocess

    nproc, nnodes, endpoint = kwargs["nproc_per_node"], kwargs["nnodes"] or 1, kwargs["rdzv_endpoint"]
    if shutil.which("torchrun") is None and not _has_module("torch.distributed.run"):
        raise UsageError("--nproc-per-node needs torch installed (torchrun); install cifarfw-torch")
    args = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("cifarfw", "__main__.py")) else None
    if args is None:
        raise UsageError("--nproc-per-node works from the cifarfw command line")
    args = _drop_options(args, {"--nproc-per-node", "--nnodes", "--rdzv-endpoint"})
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if endpoint:
        launcher += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}"]
    else:
        launcher += ["--standalone"]
    code = subprocess.call([*launcher, "-m", "cifarfw", *args])
    sys.exit(code)


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _drop_options(args: list[str], names: set[str]) -> list[str]:
    """``args`` without the named options and their values (``--x V`` and ``--x=V``)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in names:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def _resume(host: Any, kwargs: dict[str, Any]) -> None:
    """``run --resume``: the run's own config.toml, its folder, its last checkpoint."""
    from cifarfw import config as config_mod
    from cifarfw import runner

    given = [
        "--" + name.replace("_", "-")
        for name, value in kwargs.items()
        if value not in (None, (), False) and name not in ("resume", "runs_root")
    ]
    if given:
        raise UsageError(f"--resume continues a run with its own config; drop {', '.join(given)}")
    run_dir, record = runner.resume_target(kwargs["runs_root"] or "runs", kwargs["resume"])
    layer = config_mod.load_file(run_dir / "config.toml")
    layer = {k: v for k, v in layer.items() if k not in ("plugin", "model", "recipe", "world_size", "backend")}
    plugin, spec = host.resolve_model(record["plugin"], record["model"])
    config = config_mod.build([("config.toml of " + run_dir.name, layer)], spec)
    config.plugin, config.recipe = plugin, record.get("recipe", "")
    trainer = host.trainer_for(spec.framework)
    if trainer.validate is not None:
        trainer.validate(config, spec)
    runner.execute(host, plugin, spec, config, resume_dir=run_dir)


# --- plugins, models, runs ---------------------------------------------------------------


@cli.group("plugins", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins_cmd(ctx: click.Context, as_json: bool) -> None:
    """List plugins: ok, failed (with the error), blocked, or known but not installed."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _host(ctx).listing()
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
def models_cmd(ctx: click.Context, as_json: bool) -> None:
    """List registered models with their framework, input size, recipes and options."""
    host = _host(ctx)
    host.collect()
    rows = []
    for name, spec in host.models.items():
        rows.append(
            {
                "model": name,
                "plugin": host.plugin_of_model(name),
                "framework": spec.framework,
                "input_size": spec.input_size,
                "recipes": list(spec.recipes),
                "default_recipe": spec.default_recipe or next(iter(spec.recipes), None),
                "options": [
                    {"name": o.name, "default": o.default, "choices": list(o.choices or []), "help": o.help}
                    for o in spec.options
                ],
                "description": spec.description,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no models registered; `cifarfw plugins` shows what is installed")
    for row in rows:
        click.echo(
            f"{row['model']} ({row['plugin']}, {row['framework']}, {row['input_size']}x{row['input_size']}): {row['description']}"
        )
        click.echo(f"  recipes: {', '.join(row['recipes']) or '-'} (default {row['default_recipe']})")
        for o in row["options"]:
            choices = f" [{'|'.join(o['choices'])}]" if o["choices"] else ""
            click.echo(f"  --{o['name'].replace('_', '-')}{choices} (default {o['default']}): {o['help']}")


@cli.command("runs")
@click.option("--runs-root", default="runs", show_default=True, metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs_cmd(runs_root: str, as_json: bool) -> None:
    """List runs with their status and headline metrics."""
    from cifarfw.runs import iter_runs

    rows = []
    for path, rec in iter_runs(runs_root):
        final = rec.get("final") or {}
        epochs = rec.get("epochs") or []
        last = final or (epochs[-1] if epochs else {})
        rows.append(
            {
                "id": path.name,
                "status": rec.get("status", "?"),
                "model": rec.get("model", "?"),
                "recipe": rec.get("recipe", ""),
                "epochs": f"{len(epochs)}/{(rec.get('config') or {}).get('epochs', '?')}",
                "test_acc": last.get("test_acc"),
                "train_seconds": final.get("train_seconds"),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs under {runs_root}")
        return
    table = [["RUN", "STATUS", "MODEL", "RECIPE", "EPOCHS", "TEST ACC", "TRAIN S"]]
    for r in rows:
        acc = f"{100 * r['test_acc']:.2f}%" if r["test_acc"] is not None else "-"
        secs = f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "-"
        table.append([r["id"], r["status"], r["model"], r["recipe"] or "-", r["epochs"], acc, secs])
    click.echo(_table(table))


# --- data --------------------------------------------------------------------------------


@cli.group("data")
def data_cmd() -> None:
    """Inspect, verify and download CIFAR-10."""


_data_dir_option = click.option(
    "--data-dir", metavar="DIR", help="Folder holding cifar-10-batches-py (else CIFARFW_DATA_DIR, then the cache)."
)


@data_cmd.command("verify")
@_data_dir_option
@click.option("--data-checksums", metavar="FILE", help="Also check against this md5sum-format file.")
def data_verify(data_dir: str | None, data_checksums: str | None) -> None:
    """Check every file against the official MD5 sums (and a checksum file of your own)."""
    from cifarfw.data import cifar10

    folder = cifar10.find_folder(data_dir, allow_download=False)
    accepted = cifar10.read_checksum_file(data_checksums) if data_checksums else {}
    official_ok = True
    for name, digest in cifar10.check_files(folder):
        if digest is None:
            click.echo(f"{name:14} MISSING")
            official_ok = False
            continue
        official = cifar10.OFFICIAL_MD5[name] == digest
        official_ok &= official
        note = "official" if official else "NOT the official sum"
        if accepted:
            note += (
                ", matches " + data_checksums
                if accepted.get(name) == digest
                else ", does NOT match " + str(data_checksums)
            )
        click.echo(f"{name:14} {digest}  {note}")
    how = cifar10.verify(folder, data_checksums, verify_data=not accepted) if (official_ok or accepted) else None
    if how is None:
        raise cifar10.DataError(
            f"{folder} is not the official CIFAR-10; to use it anyway pass --data-checksums FILE or --no-verify-data"
        )
    click.echo(f"{folder}: verified ({how})")


@data_cmd.command("info")
@_data_dir_option
@click.option("--data-checksums", metavar="FILE", help="Accept a local copy whose files match this md5sum file.")
@click.option("--no-verify-data", is_flag=True, help="Skip the checksum check (warns).")
@click.option("--dataset", default="cifar10", show_default=True, help="Dataset name.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def data_info(
    ctx: click.Context,
    data_dir: str | None,
    data_checksums: str | None,
    no_verify_data: bool,
    dataset: str,
    as_json: bool,
) -> None:
    """Load a dataset and show its splits, classes and provenance."""
    import numpy as np

    from cifarfw.config import RunConfig

    cfg = RunConfig(
        dataset=dataset, data_dir=data_dir or "", data_checksums=data_checksums or "", verify_data=not no_verify_data
    )
    ds = _host(ctx).dataset(dataset).loader(cfg)
    info = ds.describe()
    info["class_names"] = list(ds.class_names)
    info["train_per_class"] = np.bincount(ds.train.labels, minlength=ds.num_classes).tolist()
    info["test_per_class"] = np.bincount(ds.test.labels, minlength=ds.num_classes).tolist()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(
        f"{info['name']}: {info['train_images']:,} train / {info['test_images']:,} test images, {info['classes']} classes, {'x'.join(map(str, info['image_shape']))}"
    )
    click.echo(f"classes: {', '.join(ds.class_names)}")
    click.echo(f"per class: train {info['train_per_class']}, test {info['test_per_class']}")
    click.echo(f"source: {info.get('source')}  verified: {info.get('verified')}")


@data_cmd.command("download")
@click.option("--dir", "target", metavar="DIR", help="Where to put it (default: the cache, CIFARFW_CACHE_DIR).")
def data_download(target: str | None) -> None:
    """Download the official archive (MD5 checked) and extract it."""
    from cifarfw.data import cifar10

    existing = cifar10.locate(target or cifar10.cache_dir())
    if existing is not None:
        click.echo(f"already present: {existing}")
        return
    folder = cifar10.download(target)
    click.echo(f"downloaded to {folder}")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _add_extension_commands() -> None:
    # Commands kept in their own modules (each imports only click at module level).
    from cifarfw import cli_authoring, cli_report

    cli_report.add_commands(cli)
    cli_authoring.add_commands(cli, plugins_cmd)


_add_extension_commands()


# --- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line and an exit code, never a traceback."""
    debug = os.environ.get("CIFARFW_DEBUG") == "1"
    try:
        code = cli.main(args=argv, prog_name="cifarfw", standalone_mode=False)
    except CifarfwError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        hint = ""
        if isinstance(err, click.UsageError) and err.ctx is not None:
            hint = f" (see {err.ctx.command_path} --help)"
        click.echo(f"Error: {err.format_message()}{hint}".replace("\n", " "), err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except Exception as err:
        if debug:
            raise
        click.echo(
            f"Error: internal error: {type(err).__name__}: {err} (set CIFARFW_DEBUG=1 for the traceback and report it)",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
