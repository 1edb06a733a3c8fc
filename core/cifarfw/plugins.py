"""The plugin host: finds plugins, isolates their failures, holds what they register.

Plugins come from the ``cifarfw`` entry-point group (one entry point a plugin; its name
is the plugin's name) plus the built-in plugin. A plugin that fails to import, to
register or to validate is recorded with its error and every other plugin keeps
working; strict mode re-raises instead. Tests build their own :class:`PluginHost` and
``add()`` fake plugins in-process.

Environment:
  CIFARFW_PLUGINS          comma-separated plugin names to load; set but empty = none
  CIFARFW_DISABLE_PLUGINS  comma-separated plugin names not to load
  CIFARFW_STRICT_PLUGINS   1 = a broken plugin raises instead of being recorded
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from cifarfw import hookspecs, registry
from cifarfw.config import validate_recipe
from cifarfw.errors import CifarfwError, PluginError, UsageError
from cifarfw.registry import RegistryEntry as RegistryEntry  # where older code imports them from
from cifarfw.registry import load_registry as load_registry
from cifarfw.specs import DatasetSpec, ExecutorSpec, ModelProviderSpec, ModelSpec, ReporterSpec, TrainerSpec
from cifarfw.suggest import did_you_mean

ENTRY_POINT_GROUP = "cifarfw"
BUILTIN = "builtin"


@dataclass
class PluginInfo:
    """One plugin as ``cifarfw plugins`` shows it."""

    name: str
    status: str  # ok | failed | blocked | not-installed
    distribution: str = ""
    version: str = ""
    error: str = ""
    registered: list[str] = field(default_factory=list)  # "model:torch-cnn", ...
    install: str = ""  # the command that installs a known, not-installed plugin

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


class PluginHost:
    """The pluggy plugin manager plus the registries of datasets, models, trainers, reporters."""

    def __init__(
        self,
        *,
        load_entry_points: bool = True,
        disabled: Iterable[str] = (),
        strict: bool | None = None,
        builtin: bool = True,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict if strict is not None else os.environ.get("CIFARFW_STRICT_PLUGINS") == "1"
        self.disabled = set(disabled) | set(_env_list("CIFARFW_DISABLE_PLUGINS") or [])
        self.only = _env_list("CIFARFW_PLUGINS")
        self.plugins: dict[str, PluginInfo] = {}
        self.datasets: dict[str, DatasetSpec] = {}
        self.models: dict[str, ModelSpec] = {}
        self.trainers: dict[str, TrainerSpec] = {}  # keyed by framework
        self.reporters: dict[str, ReporterSpec] = {}
        self.providers: dict[str, ModelProviderSpec] = {}  # keyed by namespace
        self.executors: dict[str, ExecutorSpec] = {}
        self._owner: dict[tuple[str, str], str] = {}
        self._provided_specs: dict[str, ModelSpec] = {}
        self._collected = False
        if builtin:
            from cifarfw import builtin as builtin_plugin

            self.add(builtin_plugin, BUILTIN, distribution="cifarfw", version=_dist_version("cifarfw"))
        if load_entry_points:
            self._load_entry_points()

    # --- loading ----------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        for ep in entry_points():
            dist = ep.dist.name if ep.dist else ""
            version = ep.dist.version if ep.dist else ""
            if ep.name in self.plugins:
                continue
            if ep.name in self.disabled or (self.only is not None and ep.name not in self.only):
                self.plugins[ep.name] = PluginInfo(ep.name, "blocked", dist, version)
                continue
            try:
                module = ep.load()
            except Exception as err:  # a broken plugin must not break the others
                self._fail(ep.name, dist, version, f"import failed: {type(err).__name__}: {err}", err)
                continue
            self.add(module, ep.name, distribution=dist, version=version)

    def add(self, plugin: object, name: str, *, distribution: str = "", version: str = "") -> None:
        """Register a plugin object (a module or an instance with hook implementations)."""
        if name in self.disabled:
            self.plugins[name] = PluginInfo(name, "blocked", distribution, version)
            return
        # A plugin may declare the hook API it was written for; a newer one than ours may
        # name hooks or arguments this core never passes (docs/hooks.md#versions).
        wanted = getattr(plugin, "CIFARFW_HOOK_API", None)
        if isinstance(wanted, int) and wanted > hookspecs.HOOK_API_VERSION:
            message = (
                f"written for cifarfw hook API {wanted}, this cifarfw has hook API {hookspecs.HOOK_API_VERSION}; "
                "upgrade cifarfw"
            )
            self._fail(name, distribution, version, message, PluginError(message))
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # pluggy validates hook signatures here
            self._fail(name, distribution, version, f"invalid hooks: {err}", err)
            return
        self.plugins[name] = PluginInfo(name, "ok", distribution, version)
        self._collected = False

    def _fail(self, name: str, dist: str, version: str, message: str, err: BaseException) -> None:
        if self.strict:
            raise PluginError(f"plugin {name!r} ({dist or 'in-process'}): {message}") from err
        self.plugins[name] = PluginInfo(name, "failed", dist, version, error=message)

    # --- registration ------------------------------------------------------------------

    _KINDS: tuple[tuple[str, type, str, str], ...] = (
        ("register_datasets", DatasetSpec, "dataset", "datasets"),
        ("register_models", ModelSpec, "model", "models"),
        ("register_model_providers", ModelProviderSpec, "provider", "providers"),
        ("register_trainers", TrainerSpec, "trainer", "trainers"),
        ("register_reporters", ReporterSpec, "reporter", "reporters"),
        ("register_executors", ExecutorSpec, "executor", "executors"),
    )

    def collect(self) -> None:
        """Call every registration hook, plugin by plugin, so a failure stays with its plugin.

        Names are settled after every plugin registered, so load order never decides who
        keeps a name two plugins claim: the plugin registry.toml lists as its owner keeps it
        (the built-in plugin owns its own names), and without a listed owner among the
        claimants every claimant is refused."""
        if self._collected:
            return
        self._collected = True
        claims: dict[str, list[tuple[str, str, Any]]] = {}  # plugin -> [(kind, key, spec)]
        for hook_name, cls, kind, _ in self._KINDS:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin_name = impl.plugin_name
                info = self.plugins.get(plugin_name)
                if info is None or info.status != "ok":
                    continue
                mine = claims.setdefault(plugin_name, [])

                def register(spec: Any, _cls=cls, _kind=kind, _mine=mine) -> None:
                    key = _check(spec, _cls, _kind)
                    if any(k == _kind and n == key for k, n, _ in _mine):
                        raise PluginError(f"{_kind} {key!r} is registered twice by the same plugin")
                    _mine.append((_kind, key, spec))

                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except Exception as err:
                    claims.pop(plugin_name, None)  # what it registered before failing is dropped
                    self._fail(plugin_name, info.distribution, info.version, _message(err), err)
                    self.pm.unregister(name=plugin_name)
        for loser, message in self._contested(claims):
            info = self.plugins[loser]
            claims.pop(loser, None)
            self._fail(loser, info.distribution, info.version, message, PluginError(message))
            self.pm.unregister(name=loser)
        tables = {kind: getattr(self, attr) for _, _, kind, attr in self._KINDS}
        for plugin_name, mine in claims.items():
            for kind, key, spec in mine:
                tables[kind][key] = spec
                self._owner[(kind, key)] = plugin_name
                self.plugins[plugin_name].registered.append(f"{kind}:{key}")

    def _contested(self, claims: dict[str, list[tuple[str, str, Any]]]) -> list[tuple[str, str]]:
        """The plugins that lose a name another plugin also claims, each with its error line."""
        claimants: dict[tuple[str, str], list[str]] = {}
        for plugin_name, mine in claims.items():
            for kind, key, _ in mine:
                claimants.setdefault((kind, key), []).append(plugin_name)
        listed = registry.listed_owners() if any(len(p) > 1 for p in claimants.values()) else {}
        losers: dict[str, str] = {}
        for (kind, key), plugins in sorted(claimants.items()):
            if len(plugins) < 2:
                continue
            owner = BUILTIN if BUILTIN in plugins else listed.get((kind, key))
            both = " and plugin ".join(repr(p) for p in sorted(plugins))
            for plugin_name in plugins:
                if plugin_name == owner or plugin_name in losers:
                    continue
                if owner in plugins:
                    why = f"registry.toml lists {owner!r} as its owner; rename yours"
                else:
                    why = "registry.toml lists neither as its owner, so both are refused it; rename one"
                losers[plugin_name] = f"{kind} {key!r} is registered by both plugin {both}: {why}"
        return list(losers.items())

    # --- queries ------------------------------------------------------------------------

    def models_of(self, plugin: str) -> list[ModelSpec]:
        """The models ``plugin`` registered one by one (a zoo's are listed by its provider)."""
        self.collect()
        return [spec for name, spec in self.models.items() if self._owner.get(("model", name)) == plugin]

    def providers_of(self, plugin: str) -> list[ModelProviderSpec]:
        self.collect()
        return [spec for ns, spec in self.providers.items() if self._owner.get(("provider", ns)) == plugin]

    def plugin_of_model(self, model: str) -> str:
        self.collect()
        namespace = model.split("/", 1)[0]
        if "/" in model and namespace in self.providers:
            return self._owner[("provider", namespace)]
        return self._owner[("model", model)]

    def resolve_model(self, plugin: str, model: str | None) -> tuple[str, ModelSpec]:
        """The (plugin, model spec) that ``--plugin`` and ``--model`` name."""
        self.collect()
        info = self.plugins.get(plugin)
        if info is None:
            if plugin in self.models:  # a model name is accepted where a plugin is asked for
                return self._owner[("model", plugin)], self.models[plugin]
            namespace, _, name = plugin.partition("/")
            if name and namespace in self.providers:  # so is a zoo's "timm/resnet18"
                owner = self._owner[("provider", namespace)]
                return owner, self._provided(self.providers[namespace], owner, name)
            known = [n for n, i in self.plugins.items() if i.status == "ok"]
            raise UsageError(f"unknown plugin {plugin!r}{did_you_mean(plugin, known)}; `cifarfw plugins` lists them")
        if info.status == "blocked":
            raise PluginError(f"plugin {plugin!r} is blocked (CIFARFW_PLUGINS / --disable-plugin)")
        if info.status == "failed":
            raise PluginError(f"plugin {plugin!r} failed to load: {info.error}")
        models, providers = self.models_of(plugin), self.providers_of(plugin)
        if model is None:
            if models:
                return plugin, models[0]
            if providers:
                raise UsageError(
                    f"plugin {plugin!r} offers a zoo of models; name one with --model "
                    f"(`cifarfw models --plugin {plugin}` lists them)"
                )
            raise UsageError(f"plugin {plugin!r} registers no model; `cifarfw plugins` shows what each offers")
        for spec in models:
            if spec.name == model:
                return plugin, spec
        for provider in providers:
            name = model.removeprefix(provider.namespace + "/")
            if len(providers) == 1 or name != model:
                return plugin, self._provided(provider, plugin, name)
        names = [m.name for m in models]
        raise UsageError(f"plugin {plugin!r} has no model {model!r}{did_you_mean(model, names)}")

    def _provided(self, provider: ModelProviderSpec, plugin: str, name: str) -> ModelSpec:
        """The spec a zoo's provider gives for ``name``, checked like a registered one."""
        key = f"{provider.namespace}/{name}"
        if key in self._provided_specs:
            return self._provided_specs[key]
        dist = self.plugins[plugin].distribution or "in-process"
        try:
            spec = provider.spec(name)
            if not isinstance(spec, ModelSpec) or spec.name != key:
                raise PluginError(
                    f"provider {provider.namespace!r}: spec({name!r}) must return a ModelSpec named {key!r}"
                )
            _validate_model(spec)
            own = {o.name for o in spec.options}  # every model of the zoo takes the provider's options
            spec = dataclasses.replace(
                spec, options=(*spec.options, *(o for o in provider.options if o.name not in own))
            )
        except CifarfwError:
            raise
        except Exception as err:
            raise PluginError(
                f"plugin {plugin!r} ({dist}) failed to describe model {key!r}: {_message(err)}; "
                "this is a bug in that plugin, please report it to its project"
            ) from err
        self._provided_specs[key] = spec
        return spec

    def dataset(self, name: str) -> DatasetSpec:
        self.collect()
        if name not in self.datasets:
            raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, list(self.datasets))}")
        return self.datasets[name]

    def trainer_for(self, framework: str) -> TrainerSpec:
        self.collect()
        if framework in self.trainers:
            return self.trainers[framework]
        known = sorted(set(self.trainers) | registry.frameworks())
        hint = did_you_mean(framework, known)
        if framework in known or not hint:
            how = f"install cifarfw-{framework}" if framework in known else "install a plugin with a trainer for it"
            raise PluginError(f"no trainer is installed for framework {framework!r}; {how} (see `cifarfw plugins`)")
        raise PluginError(
            f"no trainer is installed for framework {framework!r}{hint} (known: {', '.join(known)}); "
            "fix the model's framework"
        )

    def listing(self) -> list[PluginInfo]:
        """Every plugin: installed ones with their status, then known-but-not-installed ones."""
        self.collect()
        rows = list(self.plugins.values())
        installed = {p.name for p in rows} | {p.distribution for p in rows}
        try:
            entries = registry.load_registry()
        except UsageError:
            entries = []
        for entry in entries:
            if entry.name not in installed and entry.distribution not in installed:
                rows.append(
                    PluginInfo(
                        entry.name,
                        "not-installed",
                        entry.distribution,
                        error="",
                        install=registry.install_command(entry),
                    )
                )
        return rows


def _message(err: BaseException) -> str:
    return str(err) if isinstance(err, PluginError) else f"{type(err).__name__}: {err}"


def _check(spec: Any, cls: type, kind: str) -> str:
    """The name ``spec`` registers under, after checking it is a well-formed ``cls``."""
    if not isinstance(spec, cls):
        raise PluginError(f"register() for {kind}s expects a {cls.__name__}, got {type(spec).__name__}")
    name = spec.framework if cls is TrainerSpec else spec.namespace if cls is ModelProviderSpec else spec.name
    if not isinstance(name, str) or not name:
        raise PluginError(f"{kind} spec has an empty name")
    if "/" in name:
        raise PluginError(f"{kind} {name!r}: '/' is kept for zoo namespaces (timm/resnet18); choose another name")
    if cls is ModelSpec:
        _validate_model(spec)
    if cls is ModelProviderSpec:
        if not (callable(spec.names) and callable(spec.spec)):
            raise PluginError(f"provider {name!r}: names and spec must be callable")
        return name
    factory = getattr(spec, "factory", None) or getattr(spec, "loader", None)
    if not callable(factory):
        raise PluginError(f"{kind} {name!r}: factory is not callable")
    return name


def entry_points() -> list[metadata.EntryPoint]:
    """The installed plugins' entry points (group ``cifarfw``), by name: the one enumeration."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def _validate_model(spec: ModelSpec) -> None:
    if not isinstance(spec.framework, str) or not spec.framework:
        raise PluginError(f"model {spec.name!r}: framework must be a non-empty string")
    if not isinstance(spec.input_size, int) or spec.input_size < 8:
        raise PluginError(f"model {spec.name!r}: input_size must be an int >= 8")
    for label, stats in (("mean", spec.mean), ("std", spec.std)):
        if len(stats) != 3 or not all(isinstance(v, int | float) for v in stats):
            raise PluginError(f"model {spec.name!r}: {label} must be three numbers")
    # Statistics are on the 0-1 scale the trainers normalise with; 0-255 values train silently
    # on garbage (a loss in the thousands), so they are refused here.
    if not all(0 <= v <= 1 for v in spec.mean) or not all(0 < v <= 1 for v in spec.std):
        raise PluginError(
            f"model {spec.name!r}: mean must be in [0, 1] and std in (0, 1] (the 0-1 pixel scale; "
            f"got mean {tuple(spec.mean)}, std {tuple(spec.std)}): divide 0-255 values by 255"
        )
    if spec.default_recipe is not None and spec.default_recipe not in spec.recipes:
        raise PluginError(f"model {spec.name!r}: default recipe {spec.default_recipe!r} is not in its recipes")
    for recipe_name, overrides in spec.recipes.items():
        try:
            validate_recipe(overrides)
        except UsageError as err:
            raise PluginError(f"model {spec.name!r}, recipe {recipe_name!r}: {err}") from err


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""
