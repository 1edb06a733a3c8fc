"""Run configuration: defaults < the model's recipe < config file < command-line flags.

Every value is checked here, before any data is read or any folder written; an error
names the key, the value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarfw.errors import UsageError
from cifarfw.specs import ModelSpec, TrainerSpec
from cifarfw.suggest import did_you_mean

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DEVICE_RE = re.compile(r"^(auto|cpu|(cuda|gpu)(:\d+)?)$")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_SEEDS = 1000


def setting(default: Any = None, *, help: str = "", metavar: str = "", short: str = "", **more: Any) -> Any:
    """A RunConfig field; with ``help`` it is also a ``cifarfw run`` flag (``--<name>``),
    generated from this metadata. ``more``: ``flag`` (another flag name), ``vocabulary``
    (the TrainerSpec attribute listing the accepted values), ``choices``, ``default_factory``."""
    factory = more.pop("default_factory", None)
    meta = {"help": help, "metavar": metavar, "short": short, **more}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Augment:
    """Training-time augmentation, applied to whole batches by the trainer."""

    crop_padding: int = 4  # random crop after zero-padding by this many pixels; 0 = off
    flip: bool = True  # random horizontal flip
    brightness: float = 0.2  # brightness scaled by a factor in [1-b, 1+b]; 0 = off


@dataclass
class RunConfig:
    """Everything a run needs; written to each run folder as config.toml and in run.json.

    Fields with ``help`` are also flags of ``cifarfw run`` (the CLI generates them from here)."""

    plugin: str = ""
    model: str = ""
    recipe: str = setting("", help="The model's recipe (default: its default recipe).", metavar="NAME", short="-r")
    dataset: str = setting("cifar10", help="Dataset: cifar10 (default), synthetic, or a plugin's.", metavar="NAME")
    data_dir: str = setting(
        "", help="Folder holding cifar-10-batches-py (else CIFARFW_DATA_DIR, the cache, a download).", metavar="DIR"
    )
    data_checksums: str = setting(
        "", help="Accept a local copy whose files match this md5sum-format file.", metavar="FILE"
    )
    verify_data: bool = setting(True, help="Use data without checking checksums (warns).", flag="--no-verify-data")
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_limit: int = setting(0, help="Train on a class-balanced subset of N images.", metavar="N")  # 0 = all
    test_limit: int = setting(0, help="Test on a class-balanced subset of N images.", metavar="N")
    epochs: int = setting(10, help="Training epochs (> 0).", metavar="N", short="-e")
    batch_size: int = setting(64, help="Batch size (> 0).", metavar="N", short="-b")
    lr: float = setting(0.001, help="Learning rate (peak rate for one-cycle) (> 0).", metavar="LR")
    optimizer: str = setting(
        "adam", help="Optimizer, one the model's trainer offers:", metavar="NAME", vocabulary="optimizers"
    )
    momentum: float = setting(0.9, help="SGD momentum in [0, 1).", metavar="M")
    nesterov: bool = False
    weight_decay: float = setting(0.0, help="Weight decay (>= 0).", metavar="WD")
    schedule: str = setting(
        "constant",
        help="Learning-rate schedule, one the model's trainer offers:",
        metavar="NAME",
        vocabulary="schedules",
    )
    step_epochs: int = 10  # "step" schedule: multiply lr by step_gamma every step_epochs
    step_gamma: float = 0.1
    warmup_fraction: float = 0.25  # "onecycle": share of training spent warming up
    label_smoothing: float = setting(0.0, help="Label smoothing in [0, 1).", metavar="S")
    augment: Augment = field(default_factory=Augment)
    tta: bool = setting(False, help="Test-time augmentation: average over flips.")
    seed: int = setting(0, help="Random seed (>= 0).", metavar="N")
    seeds: int = setting(1, help="Run N seeds (seed, seed+1, ...) and group them.", metavar="N")
    device: str = setting("auto", help="Where to train (default auto).", metavar="auto|cpu|cuda[:N]")
    precision: str = setting("auto", help="fp32, bf16 (autocast), fp16 (AMP) or auto.", choices=PRECISIONS)
    channels_last: bool = setting(True, help="Channels-last memory format (torch).")
    compile: bool = setting(False, help="Compile the model (torch.compile, Keras jit_compile).")
    deterministic: bool = setting(False, help="Deterministic algorithms and a fixed thread count (slower).")
    checkpoint: bool = True
    # Compute a frozen, deterministic model prefix once and cache it.
    feature_cache: bool = setting(True, help="Cache the outputs of a frozen model prefix (e.g. AlexNet's features).")
    prediction_samples: int = 32
    model_options: dict[str, Any] = field(default_factory=dict)
    reporters: list[str] = field(default_factory=list)
    runs_root: str = setting("runs", help="Where run folders go (default ./runs).", metavar="DIR")
    name: str = setting("", help="A label added to the run folder's name.", metavar="TEXT")
    world_size: int = 1  # set by the launcher (torchrun / TF_CONFIG), not by the user
    backend: str = ""  # the distributed backend the trainer used (gloo, nccl, ...)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_AUGMENT_FIELDS = {f.name: f for f in dataclasses.fields(Augment)}
_TABLES = ("dataset_options", "model_options")


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _fraction(v: Any) -> bool:
    return 0 <= v < 1


# key -> (check, what is accepted)
_CHECKS: dict[str, tuple[Any, str]] = {
    "epochs": (_positive, "a positive integer"),
    "batch_size": (_positive, "a positive integer"),
    "lr": (_positive, "a positive number"),
    "momentum": (_fraction, "a number in [0, 1)"),
    "weight_decay": (_non_negative, "a number >= 0"),
    "step_epochs": (_positive, "a positive integer"),
    "step_gamma": (_positive, "a positive number"),
    "warmup_fraction": (_fraction, "a number in [0, 1)"),
    "label_smoothing": (_fraction, "a number in [0, 1)"),
    "train_limit": (_non_negative, "a positive integer (0 = all)"),
    "test_limit": (_non_negative, "a positive integer (0 = all)"),
    "seed": (lambda v: 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}"),
    "seeds": (lambda v: 0 < v <= MAX_SEEDS, f"an integer from 1 to {MAX_SEEDS}"),
    "prediction_samples": (_non_negative, "an integer >= 0"),
    "precision": (lambda v: v in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
    "device": (lambda v: bool(_DEVICE_RE.match(v)), "auto, cpu, cuda, cuda:N, gpu or gpu:N"),
    "augment.crop_padding": (_non_negative, "an integer >= 0"),
    "augment.brightness": (_fraction, "a number in [0, 1)"),
}


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the field type; ints are accepted where floats are."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{key} must be a finite number, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise UsageError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if tp in (int, float, bool, str) and not isinstance(value, tp):
        raise UsageError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if tp == list[str] and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise UsageError(f"{key} must be a list of strings, got {value!r}")
    return value


def _field_type(f: dataclasses.Field) -> Any:
    return {"int": int, "float": float, "bool": bool, "str": str, "list[str]": list[str]}.get(str(f.type), f.type)


def validate_layer(layer: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check the keys and value types of one layer (recipe, file or flags); return a copy."""
    checked: dict[str, Any] = {}
    for key, value in layer.items():
        if key in _TABLES:
            if not isinstance(value, Mapping):
                raise UsageError(f"{source}: {key} must be a table of key = value")
            checked[key] = dict(value)
            continue
        if key == "augment":
            if not isinstance(value, Mapping):
                raise UsageError(f"{source}: augment must be a table (crop_padding, flip, brightness)")
            aug = {}
            for sub, sub_value in value.items():
                if sub not in _AUGMENT_FIELDS:
                    hint = did_you_mean(sub, _AUGMENT_FIELDS)
                    raise UsageError(f"{source}: unknown key augment.{sub}{hint}")
                aug[sub] = _check_value(f"augment.{sub}", sub_value, _field_type(_AUGMENT_FIELDS[sub]), source)
            checked["augment"] = aug
            continue
        if key not in _FIELDS:
            raise UsageError(f"{source}: unknown key {key!r}{did_you_mean(key, _FIELDS)}")
        checked[key] = _check_value(key, value, _field_type(_FIELDS[key]), source)
    return checked


def _check_value(key: str, value: Any, tp: Any, source: str) -> Any:
    try:
        value = _coerce(key, value, tp)
    except UsageError as err:
        raise UsageError(f"{source}: {err}") from None
    check = _CHECKS.get(key)
    if check is not None and not check[0](value):
        raise UsageError(f"{source}: {key} must be {check[1]}, got {value!r}")
    return value


def check_vocabulary(config: RunConfig, trainer: TrainerSpec) -> None:
    """Refuse an optimizer or schedule the model's trainer does not offer (it owns the list)."""
    for key, offered in (("optimizer", trainer.optimizers), ("schedule", trainer.schedules)):
        value = getattr(config, key)
        if offered and value not in offered:
            raise UsageError(
                f"the {trainer.name} trainer has no {key} {value!r}{did_you_mean(value, offered)} "
                f"(it offers: {', '.join(offered)})"
            )


def validate_recipe(overrides: Mapping[str, Any]) -> None:
    """Raise UsageError when a recipe sets an unknown key or a bad value."""
    validate_layer(overrides, "recipe")


def flag_layer(values: Mapping[str, Any], sets: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The flags layer of a command taking `cifarfw run`'s flags (``run``, ``sweep``): the
    RunConfig fields given, then each ``--set``, then model options (``model_option__NAME``)."""
    skip = {"plugin", "model", *exclude}  # run takes several plugins, and the model apart
    flags = {k: v for k, v in values.items() if k in _FIELDS and k not in skip and v is not None}
    for assignment in sets:
        flags = merge(flags, parse_set(assignment))
    prefix = "model_option__"
    options = {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix) and v is not None}
    if options:
        flags["model_options"] = {**flags.get("model_options", {}), **options}
    return flags


def split_values(raw: str) -> list[str]:
    """``"0.1,0.01"`` -> two values, stripped; commas inside brackets or quotes do not split
    (``a=[1,2],b="x,y"`` is two items). Empty items are kept, for the caller to refuse."""
    out, depth, quote, current = [], 0, "", ""
    for char in raw:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            out.append(current)
            current = ""
            continue
        current += char
    out.append(current)
    return [v.strip() for v in out]


def parse_set(assignment: str) -> dict[str, Any]:
    """``"augment.flip=false"`` -> ``{"augment": {"flip": False}}``; values are TOML literals,
    else plain strings."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)?", key):
        raise UsageError(f"--set expects KEY=VALUE (e.g. --set lr=0.01), got {assignment!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.replace("-", "_").split(".")
    return {parts[0]: {parts[1]: value}} if len(parts) == 2 else {parts[0]: value}


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; unknown keys and bad values are reported with the file name."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read config file {p}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {p} is not valid TOML: {err}") from None
    return validate_layer(data, f"config file {p}")


def merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """Merge one layer onto ``base``; tables merge key by key."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def build(layers: list[tuple[str, Mapping[str, Any]]], model: ModelSpec) -> RunConfig:
    """Stack ``layers`` (lowest precedence first) onto the defaults and check the whole."""
    values = RunConfig().as_dict()
    for source, layer in layers:
        values = merge(values, validate_layer(layer, source))
    values["augment"] = Augment(**values["augment"])
    values["model_options"] = resolve_model_options(model, values["model_options"])
    config = RunConfig(**values)
    config.model = model.name
    return config


def resolve_model_options(model: ModelSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in the model's option defaults and check names, types and choices."""
    declared = {opt.name: opt for opt in model.options}
    for key in given:
        if key not in declared:
            valid = ", ".join(declared) or "none"
            raise UsageError(
                f"model {model.name!r} has no option {key!r}{did_you_mean(key, declared)} (options: {valid})"
            )
    resolved = {}
    for name, opt in declared.items():
        value = given.get(name, opt.default)
        if value is not None and opt.type in (int, float) and isinstance(value, str):
            try:
                value = opt.type(value)
            except ValueError:
                raise UsageError(f"--{name.replace('_', '-')} must be {_type_name(opt.type)}, got {value!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
        if value is not None and opt.type is str and not isinstance(value, str):
            value = str(value)
        if value is not None and opt.choices and value not in opt.choices:
            raise UsageError(
                f"--{name.replace('_', '-')} must be one of {', '.join(opt.choices)}, got {value!r}"
                f"{did_you_mean(str(value), opt.choices)}"
            )
        resolved[name] = value
    return resolved


def to_toml(config: RunConfig) -> str:
    """The resolved config as TOML (what --dry-run prints and config.toml holds)."""
    import tomli_w

    def drop_empty(d: dict[str, Any]) -> dict[str, Any]:
        return {k: (drop_empty(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}

    return tomli_w.dumps(drop_empty(config.as_dict()))
