"""One run, start to end: config -> data -> run folder -> trainer -> reporters -> record."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cifarfw import __version__
from cifarfw import config as config_mod
from cifarfw.errors import (
    CifarfwError,
    DiskFullError,
    NonFiniteLossError,
    PluginError,
    RunDirError,
    RunInterrupted,
    RunStopped,
    UsageError,
    WeightsError,
)
from cifarfw.hardware import cpu_name
from cifarfw.plugins import PluginHost
from cifarfw.runs import SCHEMA_VERSION, Run, RunLock, atomic_write, find_run, make_run_dir, now_iso, read_record
from cifarfw.specs import ModelSpec
from cifarfw.suggest import did_you_mean


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def resolve(
    host: PluginHost,
    plugin: str,
    model: str | None = None,
    file_layer: Mapping[str, Any] | None = None,
    flag_layer: Mapping[str, Any] | None = None,
    *,
    file_source: str = "config file",
    recipe: str | None = None,
) -> tuple[str, ModelSpec, config_mod.RunConfig]:
    """The plugin, model spec and fully resolved, checked config of one run.

    ``recipe`` names the recipe recorded for a run whose ``file_layer`` already holds every
    value (a resume's config.toml): it is recorded, not applied again."""
    file_layer = dict(file_layer or {})
    flag_layer = dict(flag_layer or {})
    model = model or flag_layer.pop("model", None) or file_layer.pop("model", None) or None
    flag_layer.pop("model", None)
    file_layer.pop("model", None)
    plugin_name, spec = host.resolve_model(plugin, model)
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if recipe is None:
        recipe = _recipe_name(spec, flag_layer.get("recipe") or file_layer.get("recipe"))
        if recipe:
            layers.append((f"recipe {recipe!r}", spec.recipes[recipe]))
    layers += [(file_source, file_layer), ("flags", flag_layer)]
    config = config_mod.build(layers, spec)
    config.plugin = plugin_name
    config.recipe = recipe
    if spec.validate is not None:
        spec.validate(config.model_options)
    dataset = host.dataset(config.dataset)  # unknown datasets fail here, before any work
    if dataset.validate is not None:
        dataset.validate(config)
    trainer = host.trainer_for(spec.framework)
    config_mod.check_vocabulary(config, trainer)
    if trainer.validate is not None:
        trainer.validate(config, spec)
    unknown = [r for r in config.reporters if r not in host.reporters]
    if unknown:
        raise UsageError(f"unknown reporter {unknown[0]!r}; known: {', '.join(host.reporters)}")
    return plugin_name, spec, config


def _recipe_name(spec: ModelSpec, asked: str | None) -> str:
    """The recipe a run uses: the one asked for, else the model's default (its first)."""
    recipe = asked or spec.default_recipe_name
    if recipe and recipe not in spec.recipes:
        known = ", ".join(spec.recipes) or "none"
        raise UsageError(
            f"model {spec.name!r} has no recipe {recipe!r}{did_you_mean(recipe, spec.recipes)} (recipes: {known})"
        )
    return recipe


def group_id(config: config_mod.RunConfig, data: Mapping[str, Any] | None = None) -> str:
    """Runs that differ only in seed share a group (the comparison averages over it)."""
    from cifarfw import runs

    return runs.group_id(config.as_dict(), data)


# What an executor running this process tells the record (a sweep's name, index and params;
# the executor and its node), as JSON: a sweep runs each trial as an ordinary `cifarfw run`.
RECORD_EXTRA_ENV = "CIFARFW_RECORD_EXTRA"
RECORD_EXTRA_KEYS = ("sweep", "executor")


def _record_extra() -> dict[str, Any]:
    raw = os.environ.get(RECORD_EXTRA_ENV)
    if not raw:
        return {}
    try:
        extra = json.loads(raw)
    except ValueError as err:
        raise UsageError(f"{RECORD_EXTRA_ENV} is not JSON: {err}") from None
    if not isinstance(extra, dict):
        raise UsageError(f"{RECORD_EXTRA_ENV} must be a JSON object with keys {', '.join(RECORD_EXTRA_KEYS)}")
    return {k: v for k, v in extra.items() if k in RECORD_EXTRA_KEYS}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions(plugin_dist: str) -> dict[str, str]:
    import importlib.metadata as md

    versions = {"cifarfw": __version__, "python": platform.python_version()}
    for dist in (plugin_dist, "numpy", "pluggy", "tensorboard"):
        if dist:
            with contextlib.suppress(md.PackageNotFoundError):
                versions[dist] = md.version(dist)
    return versions


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment: torchrun's RANK,
    WORLD_SIZE and LOCAL_RANK, else TensorFlow's TF_CONFIG (the chief, or worker 0, is rank 0)."""
    try:
        if "WORLD_SIZE" in os.environ:
            rank = int(os.environ.get("RANK", "0"))
            world = int(os.environ["WORLD_SIZE"])
            return rank, world, int(os.environ.get("LOCAL_RANK", "0"))
        if os.environ.get("TF_CONFIG"):
            tf_config = json.loads(os.environ["TF_CONFIG"])
            cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
            order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
            order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
            if not order:
                return 0, 1, 0
            rank = order.index((task.get("type", "worker"), int(task.get("index", 0))))
            return rank, len(order), 0
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"cannot read the launcher's environment (RANK/WORLD_SIZE or TF_CONFIG): {err}") from None
    return 0, 1, 0


def execute(
    host: PluginHost,
    plugin: str,
    model: ModelSpec,
    config: config_mod.RunConfig,
    resume_dir: Path | None = None,
    force_unlock: bool = False,
) -> Path:
    """Train one resolved config; return its run folder. Raises CifarfwError on failure.

    With ``resume_dir``, continue that run in its own folder from its last checkpoint (taking
    over a live-looking lock when ``force_unlock``).
    In a distributed run only rank 0 writes the run folder; other ranks get a scratch folder.
    """
    trainer_spec = host.trainer_for(model.framework)
    rank, world_size, local_rank = world_from_env()
    dataset = host.dataset(config.dataset).loader(config).limited(config.train_limit, config.test_limit)
    verified = dataset.info.get("verified")
    if rank == 0 and verified == "unverified":
        warn(
            f"using {dataset.name} from {dataset.info.get('source')} without checking its checksums (--no-verify-data)"
        )
    elif rank == 0 and isinstance(verified, str) and verified.startswith("checksums:"):
        warn(f"{dataset.name} is not the official copy; accepted against {verified.split(':', 1)[1]}")

    config.world_size = world_size
    if rank != 0:
        import tempfile

        run_dir = Path(tempfile.mkdtemp(prefix=f"cifarfw-rank{rank}-"))
        lock = None
    elif resume_dir is not None:
        run_dir = resume_dir
        lock = RunLock(run_dir)
        lock.acquire(force=force_unlock)
        for stale in run_dir.rglob(".*.tmp"):  # temporary files of writes a crash cut short
            stale.unlink(missing_ok=True)
    else:
        run_dir = make_run_dir(config.runs_root, model.name, config.seed, config.name)
        lock = RunLock(run_dir)
        try:
            lock.acquire()
            atomic_write(run_dir / "config.toml", config_mod.to_toml(config))
        except BaseException:  # a full disk, say: no folder holding only a lock or half a start
            lock.release()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
    info = host.plugins.get(plugin)
    model = _guard_factory(model, plugin, f"{info.distribution} {info.version}".strip() if info else "")
    run = Run(
        id=resume_dir.name if resume_dir is not None else run_dir.name,
        dir=run_dir,
        config=config,
        plugin=plugin,
        model=model,
        dataset=dataset,
        trainer=trainer_spec,
        hooks=host.pm.hook,
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
    )
    record = {
        "schema_version": SCHEMA_VERSION,
        "id": run.id,
        "status": "running",
        "plugin": plugin,
        "model": model.name,
        "framework": model.framework,
        "recipe": config.recipe,
        "group": group_id(config, dataset.describe()),  # the data by what it is, not where it was read
        "seed": config.seed,
        "config": config.as_dict(),
        "dataset": dataset.describe(),
        "versions": _versions(info.distribution if info else ""),
        "hardware": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "accelerator": "cpu"},
        "git_commit": _git_commit(),
        "host": socket.gethostname(),
        **_record_extra(),
        "started_at": now_iso(),
        "params": {"total": None, "trainable": None},
        "resolved": {},
        "epochs": [],
        "final": None,
    }
    if resume_dir is not None:
        previous = read_record(resume_dir)  # checked, its paths relative to the folder
        checkpoint = previous.get("checkpoint") or {}
        run.resume_checkpoint = resume_dir / checkpoint["path"] if checkpoint else None
        run.resumed_from_epoch = checkpoint.get("epoch", 0)
        # The checkpoint stays the run's last complete one until a new one is written: a second
        # --resume, and the other ranks of a distributed resume (which read run.json after this
        # rank rewrites it), must find it. Epochs after it stay until the run logs them again.
        kept = ("started_at", "epochs", "params", "checkpoint", "previous_checkpoint", "resolved")
        record.update({k: previous[k] for k in kept if k in previous})
        record["resumed"] = [*previous.get("resumed", []), now_iso()]
    run.record = record
    names = [name for name, spec in host.reporters.items() if spec.default or name in config.reporters]
    reporters = []
    try:
        with _stop_on_signals(run):
            if rank == 0:  # only rank 0 reports: one console, one record, one event file
                for name in names:
                    reporter = host.reporters[name].factory(run)
                    host.pm.register(reporter, name=f"reporter:{name}:{run.id}")
                    reporters.append(reporter)
            status, result, error = "failed", None, None
            try:
                run.emit("on_run_start")
                try:
                    result = trainer_spec.factory().fit(run)
                except WeightsError as err:
                    if not _fall_back_to_previous_checkpoint(run, err, resume_dir):
                        raise
                    result = trainer_spec.factory().fit(run)
                status = "finished"
            except RunStopped as err:
                status = err.status  # asked for (a pruned sweep trial): no error
            except NonFiniteLossError as err:
                status, error = "nan", err
            except RunInterrupted as err:
                status, error = "interrupted", err
            except KeyboardInterrupt:
                status, error = "interrupted", RunInterrupted(f"Ctrl-C: run {run.id} {run.resume_advice()}", 2)
            except OSError as err:
                status, error = "failed", err
                if err.errno == errno.ENOSPC:
                    error = DiskFullError(
                        f"the disk filled up during the run; free space, then `cifarfw run --resume {run.id}`"
                    )
                run.record["error"] = f"{type(err).__name__}: {err}"
            except BaseException as err:
                status, error = "failed", err
                run.record["error"] = f"{type(err).__name__}: {err}"
            try:
                run.emit("on_run_end", status=status, result=result)
            except DiskFullError as err:
                error = error or err
            if error is not None:
                raise error
    finally:
        for reporter in reporters:
            host.pm.unregister(reporter)
        if lock is not None:
            lock.release()
        if rank != 0:  # the scratch folder of a non-writing rank
            shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def _guard_factory(model: ModelSpec, plugin: str, dist: str) -> ModelSpec:
    """The model spec with a factory whose own failures name the plugin that owns it: a bug
    there is for its project to fix, not an internal error of cifarfw."""
    factory = model.factory

    def build(*args: Any, **kwargs: Any) -> Any:
        try:
            return factory(*args, **kwargs)
        except CifarfwError:
            raise
        except Exception as err:
            raise PluginError(
                f"model {model.name!r} of plugin {plugin!r} ({dist or 'in-process'}) failed to build: "
                f"{type(err).__name__}: {err}; this is a bug in that plugin: report it to its project "
                "(CIFARFW_DEBUG=1 shows the traceback)"
            ) from err

    return dataclasses.replace(model, factory=build)


def _fall_back_to_previous_checkpoint(run: Run, err: WeightsError, resume_dir: Path | None) -> bool:
    """After the latest checkpoint of a resumed run failed to load, point the run at the one
    before it (the trainers keep two) and say so; False when there is none to fall back to."""
    if run.resume_checkpoint is None or resume_dir is None:
        return False
    previous = read_record(resume_dir).get("previous_checkpoint") if run.rank else run.record.get("previous_checkpoint")
    path = resume_dir / previous["path"] if previous else None
    if path is None or not path.is_file() or path == run.resume_checkpoint:
        return False
    if run.is_main:
        warn(f"{err}; falling back to the previous checkpoint {path} (epoch {previous['epoch']})")
    # The epochs after it keep their metrics until the run logs them again: a fallback that
    # fails too must not lose the last epoch's numbers.
    run.resume_checkpoint, run.resumed_from_epoch = path, int(previous["epoch"])
    run.record["checkpoint"] = previous
    run.record.pop("previous_checkpoint", None)
    return True


@contextlib.contextmanager
def _stop_on_signals(run: Run) -> Iterator[None]:
    """SIGINT/SIGTERM ask the run to stop at its next safe point (after a checkpoint); a
    second signal stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if run.stop_requested:
            raise KeyboardInterrupt
        run.stop_requested = signum
        name = signal.Signals(signum).name
        if run.is_main:
            warn(f"{name}: stopping after the next checkpoint (send it again to stop now)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def resume_target(runs_root: str, ref: str) -> tuple[Path, dict[str, Any]]:
    """The run folder ``--resume`` names and its record; refuses finished runs."""
    run_dir = find_run(runs_root, ref)
    record = read_record(run_dir)
    if record.get("status") == "finished":
        raise UsageError(f"run {run_dir.name} already finished; start a new run instead of --resume")
    if record["config"].get("checkpoint") is False:
        raise UsageError(f"run {run_dir.name} wrote no checkpoints (checkpoint=false); it cannot be resumed")
    if not (run_dir / "config.toml").is_file():
        raise RunDirError(f"{run_dir} has no config.toml; it cannot be resumed")
    return run_dir, record


def seed_configs(config: config_mod.RunConfig) -> list[config_mod.RunConfig]:
    """One config per seed when ``seeds`` > 1."""
    return [dataclasses.replace(config, seed=config.seed + i) for i in range(config.seeds)]


__all__ = ["CifarfwError", "execute", "group_id", "resolve", "seed_configs"]
