"""What every check of the kit shares: its errors and report, the plugin under test, the
hook and import checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from cifarfw import hookspecs
from cifarfw.errors import CifarfwError
from cifarfw.hookspecs import HOOK_API_VERSION
from cifarfw.plugins import PluginHost, entry_points
from cifarfw.specs import ModelSpec, ReporterSpec
from cifarfw.suggest import did_you_mean

# Frameworks a plugin module must not import at import time.
HEAVY_MODULES = ("torch", "tensorflow", "keras", "jax", "torchvision")
NUM_CLASSES = 10


class ContractError(AssertionError):
    """A plugin breaks the contract; the message says which check and what to fix."""


@dataclass
class CheckResult:
    name: str  # "registration", "forward[mine]", ...
    ok: bool | None  # None = skipped
    detail: str = ""


@dataclass
class ContractReport:
    plugin: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.ok is False]

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        lines = [f"contract of plugin {self.plugin!r}:"]
        for r in self.results:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[r.ok]
            lines.append(f"  {mark} {r.name}{': ' + r.detail if r.detail else ''}")
        return "\n".join(lines)


class Checks:
    """Runs named checks into a report: a failure is recorded and the others still run."""

    def __init__(self, report: ContractReport, skip: Sequence[str]) -> None:
        self.report, self.skip = report, set(skip)

    def attempt(self, check: str, fn: Callable[[], str | None]) -> bool:
        if check.split("[")[0] in self.skip:
            self.report.results.append(CheckResult(check, None, "skipped on request"))
            return True
        try:
            detail = fn()
        except ContractError as err:
            self.report.results.append(CheckResult(check, False, str(err)))
            return False
        except Exception as err:
            self.report.results.append(CheckResult(check, False, f"{type(err).__name__}: {err}"))
            return False
        self.report.results.append(CheckResult(check, True, detail or ""))
        return True

    def skipped(self, check: str, why: str) -> None:
        self.report.results.append(CheckResult(check, None, why))


# --- the plugin under test ------------------------------------------------------------------


@dataclass
class PluginUnderTest:
    """A plugin registered into a fresh host, plus what it registered."""

    host: PluginHost
    name: str
    obj: object  # the module or object holding the hook implementations
    models: list[ModelSpec]
    reporters: list[ReporterSpec] = field(default_factory=list)

    def model(self, name: str | None) -> ModelSpec:
        if name is None:
            return self.models[0]
        for spec in self.models:
            if spec.name == name:
                return spec
        if self.host.providers_of(self.name):  # a zoo's model, looked up as `--model` would
            try:
                return self.host.resolve_model(self.name, name)[1]
            except CifarfwError as err:
                raise ContractError(f"plugin {self.name!r}: {err}") from err
        names = [m.name for m in self.models]
        raise ContractError(f"plugin {self.name!r} registers no model {name!r}{did_you_mean(name, names)}")


def module_name(obj: object) -> str:
    return obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__


def load_plugin(
    plugin: str | object,
    name: str | None = None,
    *,
    kind: str = "model",
    others: Sequence[tuple[object, str]] | None = None,
) -> PluginUnderTest:
    """Register ``plugin`` into a fresh :class:`PluginHost` with the other installed plugins.

    ``plugin`` is an entry-point name (``"mine"``), an importable module name
    (``"cifarfw_mine.plugin"``), a module, or an object with hook implementations. The
    other installed plugins are loaded too, so the model's trainer is there (a broken one
    among them is ignored); ``others``, when given, are the ``(object, name)`` plugins to
    load instead. The plugin must register at least one ``kind`` (model or reporter).
    """
    if isinstance(plugin, str):
        for ep in entry_points():
            if ep.name == plugin:
                try:
                    obj = ep.load()
                except Exception as err:
                    raise ContractError(
                        f"entry point {ep.name} = {ep.value} does not import: {type(err).__name__}: {err}"
                    ) from err
                return _register(obj, name or ep.name, kind, others)
        try:
            import importlib

            obj = importlib.import_module(plugin)
        except ImportError as err:
            installed = [ep.name for ep in entry_points()]
            raise ContractError(
                f"no installed plugin {plugin!r}{did_you_mean(plugin, installed)} and no module of that name "
                f"({err}); install the plugin (pip install -e .) or pass its module"
            ) from None
        return _register(obj, name or _entry_point_name(obj) or plugin, kind, others)
    fallback = module_name(plugin).rsplit(".", 1)[-1]
    return _register(plugin, name or _entry_point_name(plugin) or fallback, kind, others)


def _entry_point_name(obj: object) -> str | None:
    module = module_name(obj)
    return next((ep.name for ep in entry_points() if ep.value.split(":")[0] == module), None)


def _installed_others(obj: object, name: str) -> list[tuple[object, str, str]]:
    """The other installed plugins (the trainer, mostly); not the one under test again."""
    out = []
    for ep in entry_points():
        if ep.name == name or ep.value.split(":")[0] == module_name(obj):
            continue
        try:
            other = ep.load()
        except Exception:  # someone else's broken plugin is not this plugin's failure
            continue
        if other is not obj:
            out.append((other, ep.name, ep.dist.name if ep.dist else ""))
    return out


def _register(obj: object, name: str, kind: str, others: Sequence[tuple[object, str]] | None) -> PluginUnderTest:
    host = PluginHost(load_entry_points=False)
    host.add(obj, name)
    extra = _installed_others(obj, name) if others is None else [(o, n, "") for o, n in others]
    for other, other_name, dist in extra:
        if other_name not in host.plugins:
            host.add(other, other_name, distribution=dist)
    info = host.plugins[name]
    if info.status != "ok":
        raise ContractError(f"plugin {name!r} did not register: {info.error}")
    host.collect()
    info = host.plugins[name]
    if info.status != "ok":
        raise ContractError(f"plugin {name!r}: registration failed: {info.error}")
    mine = [item.split(":", 1) for item in info.registered]
    models = host.models_of(name)
    if kind == "model" and not models:  # a zoo: the first model each provider lists stands for it
        models = [host.resolve_model(name, names[0])[1] for p in host.providers_of(name) if (names := p.names())]
    put = PluginUnderTest(host, name, obj, models, [host.reporters[n] for k, n in mine if k == "reporter"])
    if not (put.models if kind == "model" else put.reporters):
        hook = "register_models" if kind == "model" else "register_reporters"
        spec = "ModelSpec" if kind == "model" else "ReporterSpec"
        raise ContractError(
            f"plugin {name!r} registers no {kind}: add a @hookimpl {hook}(register) that calls register({spec}(...))"
        )
    return put


def framework_adapter(host: PluginHost, framework: str, explicit: Any = None) -> tuple[Any, str]:
    """The kit's adapter for ``framework`` and, when there is none, why: an explicit one wins,
    else the one the framework's trainer declares (``TrainerSpec.adapter``)."""
    if explicit is not None:
        return explicit, ""
    trainer = host.trainers.get(framework)
    if trainer is None:
        return None, f"no trainer is installed for framework {framework!r}, so no adapter; pass adapter=..."
    if trainer.adapter is None:
        return None, f"the {framework} trainer declares no test-kit adapter (TrainerSpec.adapter); pass adapter=..."
    return trainer.adapter(), ""


# --- hooks and imports --------------------------------------------------------------------


def declared_hook_api(obj: object) -> int | None:
    """The hook-API version a plugin declares with ``CIFARFW_HOOK_API = N`` (or None)."""
    value = getattr(obj, "CIFARFW_HOOK_API", None)
    if value is None and not isinstance(obj, ModuleType):
        value = getattr(sys.modules.get(type(obj).__module__), "CIFARFW_HOOK_API", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def hook_problems(obj: object) -> list[str]:
    """What is wrong with a plugin's hook implementations, each with the fix (empty = fine)."""
    import inspect

    problems = []
    known = {n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT}_spec")}
    for attr in dir(obj):
        try:
            value = getattr(obj, attr)
        except Exception:
            continue
        if not hasattr(value, f"{hookspecs.PROJECT}_impl"):
            continue
        if attr not in known:
            problems.append(
                f"{attr} is marked @hookimpl but is not a cifarfw hook{did_you_mean(attr, known)} "
                "(docs/hooks.md lists them)"
            )
            continue
        spec_args = set(inspect.signature(getattr(hookspecs, attr)).parameters)
        try:
            impl_args = [p for p in inspect.signature(value).parameters if p != "self"]
        except (TypeError, ValueError):
            continue
        extra = [a for a in impl_args if a not in spec_args]
        if extra:
            problems.append(
                f"{attr}() takes {', '.join(extra)}, which this cifarfw (hook API {HOOK_API_VERSION}) does not "
                f"pass; name only arguments of {attr}({', '.join(sorted(spec_args))}) or upgrade cifarfw"
            )
    declared = declared_hook_api(obj)
    if declared is not None and declared > HOOK_API_VERSION:
        problems.append(
            f"the plugin is written for hook API {declared} (CIFARFW_HOOK_API) but this cifarfw has hook API "
            f"{HOOK_API_VERSION}: upgrade cifarfw"
        )
    return problems


def check_hooks(obj: object) -> None:
    problems = hook_problems(obj)
    if problems:
        raise ContractError("; ".join(problems))


def check_import_is_light(module: str | object) -> None:
    """Importing the plugin module in a fresh interpreter imports no deep-learning framework."""
    name = module if isinstance(module, str) else module_name(module)
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({name!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise ContractError(f"importing {name} fails in a fresh interpreter: {last}")
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    if heavy:
        raise ContractError(
            f"importing {name} imports {', '.join(heavy)}; cifarfw loads every plugin for each command, so import "
            "frameworks inside the model factory, the trainer or validate(), not at module level"
        )
