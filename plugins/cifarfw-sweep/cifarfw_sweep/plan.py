"""What a sweep runs: ``--grid``/``--range`` parsed, combinations x seeds, and each run as the
arguments of an ordinary ``cifarfw run``.

Values are parsed as ``--set`` parses them (:func:`cifarfw.config.parse_set`), and every key
is checked by the core's own config validation, so a sweep accepts exactly what ``run`` does.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cifarfw import config as config_mod
from cifarfw.errors import UsageError

# Grid keys that are not config keys: they choose what runs rather than how.
CHOOSERS = ("plugin", "model")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Range:
    """``--range KEY=LOW:HIGH[:log]``: floats, or ints when both bounds are ints."""

    key: str
    low: float | int
    high: float | int
    log: bool = False

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


@dataclass
class Space:
    """A sweep's parameters: categorical values per key (plugin included) and numeric ranges."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)

    def combinations(self) -> list[dict[str, Any]]:
        """Every grid combination, in the order the keys were given (last key varies fastest)."""
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"sweep name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _key(raw: str, flag: str) -> str:
    key = raw.strip().replace("-", "_")
    if not key or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", key):
        raise UsageError(f"{flag} expects KEY=..., got key {raw.strip()!r}")
    return key


def _check_key(key: str, value: Any, flag: str) -> None:
    """Unknown keys and ill-typed values, by the core's own rules (with its did-you-mean)."""
    if key in CHOOSERS:
        if not isinstance(value, str) or not value:
            raise UsageError(f"{flag} {key}: values must be names, got {value!r}")
        return
    head, _, sub = key.partition(".")
    layer = {head: {sub: value}} if sub else {head: value}
    if sub and head not in ("augment", "model_options", "dataset_options"):
        raise UsageError(f"{flag}: unknown key {key!r} ({head} is not a table)")
    config_mod.validate_layer(layer, flag)


def parse_value(key: str, raw: str) -> Any:
    """One value as ``--set KEY=raw`` would give it."""
    parsed = config_mod.parse_set(f"{key}={raw}")
    head, _, sub = key.partition(".")
    return parsed[head][sub] if sub else parsed[head]


def parse_grid(items: Sequence[str], flag: str = "--grid") -> dict[str, list[Any]]:
    """``["lr=0.1,0.01", ...]`` -> ``{"lr": [0.1, 0.01]}``; unknown keys and empty values refused."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        raw_key, sep, raw = item.partition("=")
        if not sep:
            raise UsageError(f"{flag} expects KEY=V1,V2,... (e.g. {flag} lr=0.01,0.001), got {item!r}")
        key = _key(raw_key, flag)
        texts = config_mod.split_values(raw)
        if not raw.strip() or any(not t for t in texts):
            raise UsageError(f"{flag} {key}: empty value in {raw!r}; give V1,V2,...")
        add_grid(grid, key, [parse_value(key, t) for t in texts], flag)
    return grid


def add_grid(grid: dict[str, list[Any]], key: str, values: Sequence[Any], flag: str) -> None:
    if key in grid:
        raise UsageError(f"{flag} {key} is given twice; list every value once: {key}=V1,V2,...")
    if not values:
        raise UsageError(f"{flag} {key}: no values")
    for value in values:
        _check_key(key, value, flag)
    unique = list({json.dumps(v, sort_keys=True): v for v in values}.values())
    grid[key] = unique


def parse_range(item: str, flag: str = "--range") -> Range:
    """``"lr=1e-4:1e-1:log"`` -> Range; LOW < HIGH, and log ranges strictly positive."""
    raw_key, sep, raw = item.partition("=")
    parts = raw.split(":")
    if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
        raise UsageError(
            f"{flag} expects KEY=LOW:HIGH or KEY=LOW:HIGH:log (e.g. {flag} lr=1e-4:1e-1:log), got {item!r}"
        )
    key = _key(raw_key, flag)
    if key in CHOOSERS:
        raise UsageError(f"{flag} {key}: {key} takes names; use --grid {key}=A,B")
    bounds = []
    for text in parts[:2]:
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UsageError(f"{flag} {key}: bounds must be numbers, got {text.strip()!r}")
        bounds.append(value)
    low, high = bounds
    log = len(parts) == 3
    if low >= high:
        raise UsageError(f"{flag} {key}: LOW must be below HIGH, got {low}:{high}")
    if log and low <= 0:
        raise UsageError(f"{flag} {key}: a log range needs positive bounds, got {low}:{high}")
    _check_key(key, low, flag)
    _check_key(key, high, flag)
    return Range(key, low, high, log)


def toml_literal(value: Any) -> str:
    """A value as ``--set`` reads it back (TOML literal)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise UsageError(f"cannot pass {value!r} to a run")


def set_arguments(flags: Mapping[str, Any]) -> list[str]:
    """A flag layer as ``--set key=value`` arguments, tables as dotted keys."""
    out = []
    for key, value in flags.items():
        if isinstance(value, Mapping):
            out += [arg for sub, v in value.items() for arg in ("--set", f"{key}.{sub}={toml_literal(v)}")]
        else:
            out += ["--set", f"{key}={toml_literal(value)}"]
    return out


def apply(flags: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The flag layer of one combination: the sweep's flags with its parameters on top."""
    out = dict(flags)
    for key, value in params.items():
        if key in CHOOSERS:
            continue
        head, _, sub = key.partition(".")
        out = config_mod.merge(out, {head: {sub: value}} if sub else {head: value})
    return out


def label(params: Mapping[str, Any]) -> str:
    """``plugin=torch-cnn, lr=0.01``: how a combination is shown."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
