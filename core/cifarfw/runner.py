"""One run, start to end: config -> data -> run folder -> trainer -> reporters -> record."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cifarfw import __version__
from cifarfw import config as config_mod
from cifarfw.errors import CifarfwError, NonFiniteLossError, RunInterrupted, UsageError
from cifarfw.plugins import PluginHost
from cifarfw.runs import SCHEMA_VERSION, Run, RunLock, atomic_write, make_run_dir
from cifarfw.specs import ModelSpec


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def resolve(
    host: PluginHost,
    plugin: str,
    model: str | None = None,
    file_layer: Mapping[str, Any] | None = None,
    flag_layer: Mapping[str, Any] | None = None,
) -> tuple[str, ModelSpec, config_mod.RunConfig]:
    """The plugin, model spec and fully resolved, checked config of one run."""
    file_layer = dict(file_layer or {})
    flag_layer = dict(flag_layer or {})
    model = model or flag_layer.pop("model", None) or file_layer.pop("model", None) or None
    flag_layer.pop("model", None)
    file_layer.pop("model", None)
    plugin_name, spec = host.resolve_model(plugin, model)
    recipe = flag_layer.get("recipe") or file_layer.get("recipe") or spec.default_recipe or next(iter(spec.recipes), "")
    if recipe and recipe not in spec.recipes:
        from cifarfw.suggest import did_you_mean

        known = ", ".join(spec.recipes) or "none"
        raise UsageError(
            f"model {spec.name!r} has no recipe {recipe!r}{did_you_mean(recipe, spec.recipes)} (recipes: {known})"
        )
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if recipe:
        layers.append((f"recipe {recipe!r}", spec.recipes[recipe]))
    layers += [("config file", file_layer), ("flags", flag_layer)]
    config = config_mod.build(layers, spec)
    config.plugin = plugin_name
    config.recipe = recipe
    host.dataset(config.dataset)  # unknown datasets fail here, before any work
    trainer = host.trainer_for(spec.framework)
    if trainer.validate is not None:
        trainer.validate(config, spec)
    unknown = [r for r in config.reporters if r not in host.reporters]
    if unknown:
        raise UsageError(f"unknown reporter {unknown[0]!r}; known: {', '.join(host.reporters)}")
    return plugin_name, spec, config


def group_id(config: config_mod.RunConfig) -> str:
    """Runs that differ only in seed share a group (the comparison averages over it)."""
    values = config.as_dict()
    for key in ("seed", "seeds", "name", "runs_root", "device"):
        values.pop(key, None)
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions(plugin_dist: str) -> dict[str, str]:
    import importlib.metadata as md

    versions = {"cifarfw": __version__, "python": platform.python_version()}
    for dist in (plugin_dist, "numpy", "pluggy", "tensorboard"):
        if dist:
            with contextlib.suppress(md.PackageNotFoundError):
                versions[dist] = md.version(dist)
    return versions


def execute(host: PluginHost, plugin: str, model: ModelSpec, config: config_mod.RunConfig) -> Path:
    """Train one resolved config; return its run folder. Raises CifarfwError on failure."""
    trainer_spec = host.trainer_for(model.framework)
    dataset = host.dataset(config.dataset).loader(config).limited(config.train_limit, config.test_limit)
    verified = dataset.info.get("verified")
    if verified == "unverified":
        warn(
            f"using {dataset.name} from {dataset.info.get('source')} without checking its checksums (--no-verify-data)"
        )
    elif isinstance(verified, str) and verified.startswith("checksums:"):
        warn(f"{dataset.name} is not the official copy; accepted against {verified.split(':', 1)[1]}")

    run_dir = make_run_dir(config.runs_root, model.name, config.seed, config.name)
    lock = RunLock(run_dir)
    lock.acquire()
    atomic_write(run_dir / "config.toml", config_mod.to_toml(config))
    info = host.plugins.get(plugin)
    run = Run(
        id=run_dir.name,
        dir=run_dir,
        config=config,
        plugin=plugin,
        model=model,
        dataset=dataset,
        trainer=trainer_spec,
        hooks=host.pm.hook,
    )
    run.record = {
        "schema_version": SCHEMA_VERSION,
        "id": run.id,
        "status": "running",
        "plugin": plugin,
        "model": model.name,
        "framework": model.framework,
        "recipe": config.recipe,
        "group": group_id(config),
        "seed": config.seed,
        "config": config.as_dict(),
        "dataset": dataset.describe(),
        "versions": _versions(info.distribution if info else ""),
        "hardware": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "accelerator": "cpu"},
        "git_commit": _git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {"total": None, "trainable": None},
        "resolved": {},
        "epochs": [],
        "final": None,
    }
    names = [name for name, spec in host.reporters.items() if spec.default or name in config.reporters]
    reporters = []
    try:
        for name in names:
            reporter = host.reporters[name].factory(run)
            host.pm.register(reporter, name=f"reporter:{name}:{run.id}")
            reporters.append(reporter)
        status, result, error = "failed", None, None
        try:
            run.emit("on_run_start")
            trainer = trainer_spec.factory()
            result = trainer.fit(run)
            status = "finished"
        except NonFiniteLossError as err:
            status, error = "nan", err
        except RunInterrupted as err:
            status, error = "interrupted", err
        except KeyboardInterrupt:
            status, error = "interrupted", RunInterrupted("interrupted (Ctrl-C); the last checkpoint is kept", 2)
        except BaseException as err:
            status, error = "failed", err
            run.record["error"] = f"{type(err).__name__}: {err}"
        run.emit("on_run_end", status=status, result=result)
        if error is not None:
            raise error
    finally:
        for reporter in reporters:
            host.pm.unregister(reporter)
        lock.release()
    return run_dir


def seed_configs(config: config_mod.RunConfig) -> list[config_mod.RunConfig]:
    """One config per seed when ``seeds`` > 1."""
    return [dataclasses.replace(config, seed=config.seed + i) for i in range(config.seeds)]


__all__ = ["CifarfwError", "execute", "group_id", "resolve", "seed_configs"]
