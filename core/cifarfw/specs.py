"""What plugins register: plain dataclasses, no framework imports.

A model plugin registers a :class:`ModelSpec`; the trainer registered for the model's
``framework`` trains it. Factories are called only when a run needs them, so plugin
modules stay cheap to import (``cifarfw --help`` loads every plugin).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cifarfw.config import RunConfig
    from cifarfw.data import Dataset
    from cifarfw.runs import Run

# Per-channel statistics of the CIFAR-10 training set (RGB, 0-1 scale).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# ImageNet statistics, for models pretrained there (e.g. AlexNet).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Option:
    """A model-specific option, e.g. AlexNet's ``weights`` or ``freeze``.

    It becomes the flag ``--<name>`` of ``cifarfw run`` (dashes for underscores), the
    config key ``model_options.<name>``, and ``--set model_options.<name>=VALUE``.
    """

    name: str
    help: str
    default: Any = None
    choices: Sequence[str] | None = None
    type: type = str


@dataclass(frozen=True)
class ModelSpec:
    """A model a plugin offers.

    ``factory(num_classes=..., options=...)`` builds the framework model (a
    ``torch.nn.Module`` or a ``keras.Model``); ``options`` holds the resolved values of
    ``options`` below. ``validate(options)``, when given, raises a cifarfw error for option
    values that cannot work (a weights file that does not exist, say) before any run folder
    is written; keep it cheap and offline. ``recipes`` maps a recipe name to config overrides
    (``{"epochs": 20, "lr": 0.01, "augment": {"flip": True}}``); the recipe named
    ``default_recipe`` (else the first) applies when the user names none.
    """

    name: str
    framework: str
    factory: Callable[..., Any]
    input_size: int = 32
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_recipe: str | None = None
    options: Sequence[Option] = ()
    description: str = ""
    validate: Callable[[Mapping[str, Any]], None] | None = None

    @property
    def default_recipe_name(self) -> str:
        """The recipe a run gets when it names none: ``default_recipe``, else the first ("" if none)."""
        return self.default_recipe or next(iter(self.recipes), "")

    def describe(self) -> dict[str, Any]:
        """What ``cifarfw models`` shows of this model (its ``--json`` rows)."""
        options = [
            {"name": o.name, "default": o.default, "choices": list(o.choices or []), "help": o.help}
            for o in self.options
        ]
        return {
            "model": self.name,
            "framework": self.framework,
            "input_size": self.input_size,
            "recipes": list(self.recipes),
            "default_recipe": self.default_recipe_name,
            "options": options,
            "description": self.description,
        }

    def recipe(self, name: str | None) -> Mapping[str, Any]:
        """The overrides of recipe ``name`` (or of the default recipe when ``None``)."""
        name = self.default_recipe_name if name is None else name
        return self.recipes[name] if name else {}


class Trainer(Protocol):
    """What a trainer factory returns."""

    def fit(self, run: Run) -> RunResult:
        """Train ``run.model`` on ``run.dataset`` as ``run.config`` says, emitting events."""
        ...


@dataclass(frozen=True)
class TrainerSpec:
    """A trainer for every model of one framework.

    ``factory()`` returns a :class:`Trainer`; import the framework inside it.
    ``validate(config, model)``, when given, raises :class:`cifarfw.errors.UsageError`
    for option values the trainer cannot honour (``--precision fp16`` on a CPU, say);
    it runs before any run folder is written.

    The trainer owns its vocabulary: ``optimizers`` and ``schedules`` name the values of
    ``--optimizer`` and ``--schedule`` it implements (config validation asks the trainer of
    the model's framework; empty means the trainer checks them itself in ``validate``).
    ``adapter()``, when given, returns the test kit's :class:`cifarfw.testing.FrameworkAdapter`
    for this framework (build, forward, count parameters, a few optimizer steps).
    ``launch(argv, nproc_per_node, nnodes, rdzv_endpoint)``, when given, runs ``cifarfw
    argv`` as a multi-process launch (torchrun for torch) and returns its exit code; it is
    what ``--nproc-per-node`` calls.
    """

    name: str
    framework: str
    factory: Callable[[], Trainer]
    validate: Callable[[RunConfig, ModelSpec], None] | None = None
    description: str = ""
    optimizers: Sequence[str] = ()
    schedules: Sequence[str] = ()
    adapter: Callable[[], Any] | None = None
    launch: Callable[[list[str], int, int, str | None], int] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: ``loader(config)`` returns a :class:`cifarfw.data.Dataset`. ``validate(config)``,
    when given, raises a cifarfw error for settings the loader would refuse (``dataset_options``),
    before any run folder is written and in ``--dry-run``; keep it cheap and offline."""

    name: str
    loader: Callable[[RunConfig], Dataset]
    description: str = ""
    validate: Callable[[RunConfig], None] | None = None


@dataclass(frozen=True)
class ReporterSpec:
    """A reporter: ``factory(run)`` returns an object whose methods are event hooks.

    Decorate the methods with :data:`cifarfw.hookimpl` (``on_run_start``,
    ``on_epoch_end``, ...); the object is registered for the run's duration. Reporters
    with ``default=False`` only run when named in the config's ``reporters`` list.
    """

    name: str
    factory: Callable[[Run], object]
    description: str = ""
    default: bool = True


@dataclass(frozen=True)
class ModelProviderSpec:
    """A lazily listed family of models under one namespace: a model zoo (timm, Keras).

    Registering hundreds of :class:`ModelSpec` objects would make every ``cifarfw`` start
    import the zoo's library. A provider instead names its ``namespace`` (``"timm"``) and
    two callables asked only when a model of it is looked up or listed:
    ``names()`` returns the model names without the namespace (``["resnet18", ...]``),
    ``spec(name)`` returns the :class:`ModelSpec` of one (its ``name`` is
    ``"<namespace>/<name>"``) or raises :class:`cifarfw.errors.UsageError` for an unknown one.
    ``options`` are the options every model of the provider takes; they appear in
    ``cifarfw run --help`` without calling ``names()``.
    """

    namespace: str
    names: Callable[[], Sequence[str]]
    spec: Callable[[str], ModelSpec]
    framework: str
    options: Sequence[Option] = ()
    description: str = ""


@dataclass(frozen=True)
class ExecutorSpec:
    """Where a sweep's runs execute: ``factory(options)`` returns the executor (see
    docs/sweeps.md for its interface); ``options`` are the flags it adds to ``cifarfw sweep``
    (``--ray-address``, ...). The local executor is built in; Ray's is a plugin."""

    name: str
    factory: Callable[..., Any]
    options: Sequence[Option] = ()
    description: str = ""


@dataclass
class RunResult:
    """What a trainer returns: final metrics (same names as epoch metrics) and timing."""

    final: dict[str, float]
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
