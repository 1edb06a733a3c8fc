"""The comparison table: one column per run group, the study's rows, mean ± std over seeds.

Reads run records only, through :mod:`cifarfw.runs` (run.json; for the HTML report also
predictions.npz). Runs that share ``record["group"]`` (same config, other seed) are one
column; every metric is ``mean ± std (n=...)`` over the finished runs of the group. A run
that did not finish (running, failed, interrupted, nan) gets a column of its own showing
its status and its last epoch, never averaged in. Columns that differ in data,
augmentation, epochs, batch size or precision are flagged as not directly comparable,
saying which.

One :class:`Comparison` feeds every format (markdown, csv, json here; html in
:mod:`cifarfw_compare.html`), so they carry the same content. The study's published
figures are the data file ``study.toml`` beside this module.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from cifarfw.errors import UsageError
from cifarfw.metrics import BY_NAME, COMPARISON_ROWS
from cifarfw.report import augmentation_summary
from cifarfw.runs import FINISHED, GROUP_IGNORED, RunEntry, final_metrics, lock_alive
from cifarfw_compare import significance

# (key, label) of every row, in order; the study's rows first. Metric rows come from the
# registry of metric names (cifarfw.metrics), in its order.
ROWS: tuple[tuple[str, str], ...] = (
    ("model", "Model"),
    ("plugin", "Plugin"),
    ("framework", "Framework"),
    ("status", "Status"),
    *((name, BY_NAME[name].label) for name in COMPARISON_ROWS),
    ("vs_reference", "Test accuracy vs reference (Welch 95% CI)"),
    ("params_total", "Parameters (total)"),
    ("params_trainable", "Parameters (trainable)"),
    ("macs", "MACs per image (forward)"),
    ("checkpoint_size", "Checkpoint size"),
    ("inference_b1", "Inference, batch 1 (images/s)"),
    ("inference_b256", "Inference, batch 256 (images/s)"),
    ("epochs", "Epochs"),
    ("batch_size", "Batch size"),
    ("lr", "Learning rate"),
    ("optimizer", "Optimizer"),
    ("accelerator", "Accelerator"),
    ("dataset", "Dataset"),
    ("official", "Official data"),
    ("augmentation", "Augmentation"),
    ("precision", "Precision"),
    ("recipe", "Recipe"),
    ("seeds", "Seeds"),
    ("comparable", "Directly comparable"),
    ("runs", "Runs"),
)
# The settings that make two columns not directly comparable when they differ.
COMPARABILITY = (
    ("dataset", "data"),
    ("data_copy", "data copy"),
    ("augmentation", "augmentation"),
    ("epochs", "epochs"),
    ("batch_size", "batch size"),
    ("precision", "precision"),
)


@cache
def study() -> dict[str, Any]:
    """The study's published figures (``study.toml``): ``common`` cells, ``column`` tables
    (``key``, ``label`` and cells by row key) and ``notes``."""
    return tomllib.loads(resources.files(__package__).joinpath("study.toml").read_text(encoding="utf-8"))


# --- the table --------------------------------------------------------------------------


@dataclass
class Column:
    """One column: a group of finished seeds, one unfinished run, or a study reference."""

    key: str
    label: str
    kind: str  # "runs" | "study"
    status: str
    runs: list[RunEntry] = field(default_factory=list)
    cells: dict[str, str] = field(default_factory=dict)
    stats: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # what comparability looks at
    vs_reference: dict[str, Any] | None = None  # significance.welch against the reference column

    @property
    def group(self) -> str:
        return str(self.runs[0].record.get("group", "")) if self.runs else ""


@dataclass
class Comparison:
    columns: list[Column]
    notes: list[str]
    runs_root: str = ""
    rows: tuple[tuple[str, str], ...] = ROWS

    @property
    def run_columns(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "runs"]


def mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (None for one value) and count."""
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if n > 1 else None,
        "n": n,
    }


def format_stat(name: str, stat: Mapping[str, Any]) -> str:
    """Metric ``name``'s statistic in the registry's format: ``82.86 ± 0.31% (n=2)``; one
    value: ``82.86% (n=1)``."""
    mean, std, n = stat.get("mean"), stat.get("std"), stat.get("n", 0)
    if mean is None or n == 0:
        return "-"
    if not math.isfinite(mean):
        return f"{mean} (n={n})"
    text = BY_NAME[name].format(mean)
    if std is not None:
        unit = "%" if text.endswith("%") else ""  # once, after the std: 82.86 ± 0.31%
        text = f"{text.removesuffix(unit)} ± {BY_NAME[name].format(std)}"
    return f"{text} (n={n})"


def _join_unique(values: Iterable[Any]) -> str:
    seen: list[str] = []
    for value in values:
        text = "-" if value is None or value == "" else str(value)
        if text not in seen:
            seen.append(text)
    return " / ".join(seen) or "-"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def _dataset_cell(dataset: Mapping[str, Any]) -> str:
    name = dataset.get("name") or "?"
    train, test = dataset.get("train_images"), dataset.get("test_images")
    if isinstance(train, int) and isinstance(test, int):
        return f"{name} ({train:,} train / {test:,} test)"
    return str(name)


def _official_cell(dataset: Mapping[str, Any]) -> str:
    if dataset.get("official") is True:
        return "yes"
    verified = dataset.get("verified")
    if isinstance(verified, str) and verified.startswith("checksums:"):
        return f"no (local copy accepted by {Path(verified.split(':', 1)[1]).name})"
    if verified in ("generated", "unverified"):
        return f"no ({verified})"
    if dataset.get("official") is False:
        return "no"
    return "unknown"


def _data_copy(dataset: Mapping[str, Any]) -> str:
    """Which copy of the data, without its path: two folders of the same files are one copy."""
    verified = str(dataset.get("verified") or "")
    if dataset.get("official") is True or verified == "official":
        return "official"
    return {"checksums": "local copy (checksum file)", "generated": "generated"}.get(
        verified.split(":")[0], "unverified"
    )


_AUGMENT_KEYS = {"crop": "crop_padding", "flip": "flip", "brightness": "brightness"}


def applied_augmentation(record: Mapping[str, Any]) -> str:
    """The augmentation a run trained with: ``resolved.augmentation`` when the trainer recorded
    it, else the config's less what ``resolved.feature_cache.dropped`` lists, saying so."""
    resolved = record.get("resolved") or {}
    if isinstance(resolved.get("augmentation"), str):
        return resolved["augmentation"]
    augment = dict((record.get("config") or {}).get("augment") or {})
    cache = resolved.get("feature_cache")
    dropped = [d for d in (cache.get("dropped") or []) if d in _AUGMENT_KEYS] if isinstance(cache, Mapping) else []
    for name in dropped:
        augment[_AUGMENT_KEYS[name]] = 0
    text = augmentation_summary(augment)
    return f"{text} ({', '.join(dropped)} dropped by the feature cache)" if dropped else text


def _bytes(value: Any) -> str:
    return f"{value / 1e6:.2f} MB" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _cost_cells(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The cost rows (run.json ``cost``): MACs, checkpoint size, inference throughput (mean ± std
    over seeds, with the device and thread count it was measured with)."""
    costs = [r.get("cost") if isinstance(r.get("cost"), Mapping) else {} for r in records]
    cells = {
        "macs": _join_unique(_count(c.get("macs_per_image")) for c in costs),
        "checkpoint_size": _join_unique(_bytes(c.get("checkpoint_bytes")) for c in costs),
    }
    stats = {}
    for key, batch in (("inference_b1", "batch_1"), ("inference_b256", "batch_256")):
        runs = [c.get("inference") or {} for c in costs]
        stats[key] = mean_std(
            [float(i[f"{batch}_images_per_s"]) for i in runs if _is_number(i.get(f"{batch}_images_per_s"))]
        )
        if not stats[key]["n"]:
            cells[key] = "-"
            continue
        mean, std = stats[key]["mean"], stats[key]["std"]
        where = _join_unique(
            f"{i.get('device', '?')}, {i.get('threads', '?')} thread{'' if i.get('threads') == 1 else 's'}"
            + (
                f", batch {i['batch_256_size']}"
                if batch == "batch_256" and i.get("batch_256_size") not in (None, 256)
                else ""
            )
            for i in runs
            if i
        )
        spread = f" ± {std:,.0f}" if std is not None else ""
        cells[key] = f"{mean:,.0f}{spread} (n={stats[key]['n']}; {where})"
    return cells, stats


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optimizer_cell(config: Mapping[str, Any]) -> str:
    text = str(config.get("optimizer", "?"))
    if text == "sgd":
        text += f" (momentum {config.get('momentum', 0):g}{', nesterov' if config.get('nesterov') else ''})"
    if config.get("weight_decay"):
        text += f", wd {config['weight_decay']:g}"
    schedule = config.get("schedule")
    if schedule and schedule != "constant":
        text += f", {schedule} schedule"
    return text


def _settings(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The cells every run of a column shares (taken from its records)."""
    first = records[0]
    config = first.get("config") or {}
    dataset = first.get("dataset") or {}
    return {
        "model": str(first.get("model") or "-"),
        "plugin": str(first.get("plugin") or "-"),
        "framework": str(first.get("framework") or "-"),
        "params_total": _join_unique(_count((r.get("params") or {}).get("total")) for r in records),
        "params_trainable": _join_unique(_count((r.get("params") or {}).get("trainable")) for r in records),
        "epochs": str(config.get("epochs", "-")),
        "batch_size": str(config.get("batch_size", "-")),
        "lr": f"{config['lr']:g}" if isinstance(config.get("lr"), int | float) else "-",
        "optimizer": _optimizer_cell(config),
        "accelerator": _join_unique((r.get("hardware") or {}).get("accelerator") for r in records),
        "dataset": _dataset_cell(dataset),
        "official": _official_cell(dataset),
        "data_copy": _data_copy(dataset),
        "augmentation": _join_unique(applied_augmentation(r) for r in records),
        "precision": _join_unique(
            (r.get("resolved") or {}).get("precision") or (r.get("config") or {}).get("precision") for r in records
        ),
        "recipe": str(first.get("recipe") or "-"),
    }


def _status_cell(entry: RunEntry) -> str:
    record = entry.record
    status = entry.status
    done = len(record.get("epochs") or [])
    planned = (record.get("config") or {}).get("epochs", "?")
    if status == "running":
        alive = lock_alive(entry.dir)
        return f"running (epoch {done} of {planned})" + ("" if alive else "; no live process, probably killed")
    if status == "failed" and record.get("error"):
        return f"failed: {record['error']}".splitlines()[0][:160]
    return f"{status} (epoch {done} of {planned})"


def _label(entries: Sequence[RunEntry]) -> str:
    record = entries[0].record
    recipe = record.get("recipe")
    return f"{record.get('model') or record.get('plugin') or '?'}" + (f" ({recipe})" if recipe else "")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _disambiguate(columns: list[Column]) -> None:
    """Columns with the same label get the config keys they differ in (else the group id)."""
    by_label: dict[str, list[Column]] = {}
    for column in columns:
        by_label.setdefault(column.label, []).append(column)
    for label, same in by_label.items():
        if len(same) < 2:
            continue
        flats = [_flatten(c.runs[0].record.get("config") or {}) for c in same]
        differing = [
            k
            for k in flats[0]
            if k not in GROUP_IGNORED and len({json.dumps(f.get(k), default=str) for f in flats}) > 1
        ]
        for column, flat in zip(same, flats, strict=True):
            # An unset key reads "no data_dir", never an empty "data_dir=".
            shown = (f"{k}={flat[k]}" if flat.get(k) not in (None, "") else f"no {k}" for k in differing[:2])
            extra = ", ".join(shown) or column.group
            column.label = f"{label} [{extra}]"
    # Still equal (e.g. a group split into finished seeds and an unfinished run): number them.
    counts: dict[str, int] = {}
    for column in columns:
        counts[column.label] = counts.get(column.label, 0) + 1
    seen: dict[str, int] = {}
    for column in columns:
        if counts[column.label] > 1:
            seen[column.label] = seen.get(column.label, 0) + 1
            column.label = f"{column.label} #{seen[column.label]}"


def build(
    entries: Sequence[RunEntry], with_study: bool = False, runs_root: str | Path = "", reference: str | None = None
) -> Comparison:
    """The comparison of ``entries`` (grouped into columns), plus the study when asked.

    ``reference`` (a run id or prefix, or a group id or prefix) names the column every other
    is tested and flagged against; default: the first column of finished runs."""
    groups: dict[str, list[RunEntry]] = {}
    for entry in entries:
        groups.setdefault(str(entry.record.get("group")), []).append(entry)
    columns: list[Column] = []
    for group, members in groups.items():
        finished = sorted((e for e in members if e.status == FINISHED), key=lambda e: (e.record.get("seed", 0), e.id))
        if finished:
            columns.append(_group_column(group, finished, len(members)))
        for entry in members:
            if entry.status != FINISHED:
                columns.append(_unfinished_column(entry))
    _disambiguate(columns)
    chosen = _reference(columns, reference)
    notes = _flag_comparability(columns, chosen)
    if chosen is not None:
        _significance(columns, chosen)
    if any(c.kind == "runs" and c.status != FINISHED for c in columns):
        notes.append("Runs that did not finish are shown alone with their status and last epoch, never averaged.")
    if with_study:
        published = study()
        for column in published["column"]:
            cells = {**published["common"], **{k: v for k, v in column.items() if k not in ("key", "label", "augment")}}
            cells["vs_reference"] = "published figure: no test"
            settings = {key: str(cells.get(key, "-")) for key, _ in COMPARABILITY}
            settings.update(data_copy="official", augmentation=augmentation_summary(column.get("augment")))
            verdict = {"diff": None, "ci95": None, "p": None, "verdict": cells["vs_reference"]}
            columns.append(
                Column(column["key"], column["label"], "study", "published", [], cells, {}, settings, verdict)
            )
        notes.extend(_flag_study(columns))
        notes.extend(published["notes"])
    return Comparison(columns, notes, str(runs_root))


def _reference(columns: list[Column], wanted: str | None) -> Column | None:
    """The reference column: the one holding run or group ``wanted``, else the first finished one."""
    runs = [c for c in columns if c.kind == "runs"]
    if wanted is None:
        return next((c for c in runs if c.status == FINISHED), runs[0] if runs else None)
    for match in (lambda a, b: a == b, lambda a, b: a.startswith(b)):  # exact names first, then prefixes
        found = [c for c in runs if match(c.group, wanted) or any(match(e.id, wanted) for e in c.runs)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UsageError(f"--reference {wanted} matches {len(found)} columns; give more of the run or group id")
    known = ", ".join(sorted({c.group for c in runs if c.group})) or "none"
    raise UsageError(f"--reference {wanted}: no run or group of that id among the compared runs (groups: {known})")


def _test_accuracies(column: Column) -> list[float]:
    return [m["test_acc"] for m in (final_metrics(e.record) for e in column.runs) if "test_acc" in m]


def _significance(columns: list[Column], reference: Column) -> None:
    """Each finished column's test accuracy against the reference's: Welch's t-test."""
    baseline = _test_accuracies(reference)
    for column in (c for c in columns if c.kind == "runs"):
        if column is reference:
            column.vs_reference = {"diff": None, "ci95": None, "p": None, "verdict": "reference"}
        elif column.status != FINISHED:
            column.vs_reference = {"diff": None, "ci95": None, "p": None, "verdict": "not finished: no test"}
        else:
            result = significance.welch(_test_accuracies(column), baseline)
            column.vs_reference = {k: result[k] for k in ("diff", "ci95", "p", "verdict")}
        column.cells["vs_reference"] = significance.describe(column.vs_reference)


def _group_column(group: str, finished: list[RunEntry], members: int) -> Column:
    records = [e.record for e in finished]
    settings = _settings(records)
    stats = {}
    metrics = [final_metrics(r) for r in records]
    cells = dict(settings)
    for key in COMPARISON_ROWS:
        stats[key] = mean_std([m[key] for m in metrics if key in m])
        cells[key] = format_stat(key, stats[key])
    cost_cells, cost_stats = _cost_cells(records)
    cells.update(cost_cells)
    stats.update(cost_stats)
    other = members - len(finished)
    cells["status"] = FINISHED + (f" ({other} unfinished run{'s' * (other > 1)} shown apart)" if other else "")
    seeds = [str(r.get("seed", "?")) for r in records]
    cells["seeds"] = f"{len(records)} ({', '.join(seeds)})"
    cells["runs"] = ", ".join(e.id for e in finished)
    return Column(group, _label(finished), "runs", FINISHED, finished, cells, stats, settings)


def _unfinished_column(entry: RunEntry) -> Column:
    settings = _settings([entry.record])
    cells = dict(settings)
    epochs = entry.record.get("epochs") or []
    last = final_metrics(entry.record)  # its last epoch: an unfinished run has no final metrics
    stats = {}
    for key in COMPARISON_ROWS:
        value = last.get(key)
        stats[key] = {"mean": value, "std": None, "n": 1 if value is not None else 0}
        cells[key] = "-" if value is None else format_stat(key, stats[key]).replace("(n=1)", f"(epoch {len(epochs)})")
    cells.update(_cost_cells([entry.record])[0])
    cells["status"] = _status_cell(entry)
    cells["seeds"] = f"1 ({entry.record.get('seed', '?')})"
    cells["runs"] = entry.id
    label = f"{_label([entry])} [{entry.status}]"
    return Column(f"run:{entry.id}", label, "runs", entry.status, [entry], cells, stats, settings)


def _flag_comparability(columns: list[Column], reference: Column | None) -> list[str]:
    """Fill the 'Directly comparable' row against the reference column; return the notes."""
    runs = [c for c in columns if c.kind == "runs"]
    if not runs or reference is None:
        return []
    notes = []
    for key, name in COMPARABILITY:
        values = {c.label: c.settings.get(key, "-") for c in runs}
        if len(set(values.values())) > 1:
            listed = "; ".join(f"{label}: {value}" for label, value in values.items())
            notes.append(f"Not directly comparable: {name} differs ({listed}).")
    for column in runs:
        if column is reference:
            column.cells["comparable"] = "reference" if len(runs) > 1 else "yes"
            continue
        differs = [name for key, name in COMPARABILITY if column.settings.get(key) != reference.settings.get(key)]
        column.cells["comparable"] = f"no: {', '.join(differs)} differ{'s' * (len(differs) == 1)}" if differs else "yes"
    return notes


def _flag_study(columns: list[Column]) -> list[str]:
    """Each study column against the run columns of its plugin: the settings that differ
    (epochs, data, data copy, augmentation, batch size, precision), as for any other column."""
    notes = []
    for published in (c for c in columns if c.kind == "study"):
        mine = [c for c in columns if c.kind == "runs" and c.settings.get("plugin") == published.cells.get("plugin")]
        flagged = []
        for column in mine:
            differs = [
                f"{name} ({column.settings.get(key, '-')} vs {published.settings.get(key, '-')})"
                for key, name in COMPARABILITY
                if column.settings.get(key, "-") != published.settings.get(key, "-")
            ]
            if differs:
                flagged.append(column.label)
                notes.append(
                    f"Not directly comparable with {published.label}: {column.label} differs in {'; '.join(differs)}."
                )
        if flagged:
            published.cells["comparable"] = f"study; differs from {', '.join(flagged)} (see notes)"
        elif mine:
            published.cells["comparable"] = f"study; same settings as {', '.join(c.label for c in mine)}"
    return notes


# --- formats ----------------------------------------------------------------------------

LEGEND = (
    "Metrics are mean ± sample std over seeds (n = finished runs); accuracies in %. Test accuracy vs reference: "
    "difference of means in percentage points, its 95% confidence interval and Welch's t-test p-value."
)


def rows_of(table: Comparison) -> list[list[str]]:
    """The table as rows of text: a header, then one row per metric."""
    out = [["Metric", *(c.label for c in table.columns)]]
    for key, label in table.rows:
        out.append([label, *(c.cells.get(key, "-") for c in table.columns)])
    return out


def to_markdown(table: Comparison) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = rows_of(table)
    lines = ["| " + " | ".join(cell(c) for c in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows[1:]]
    lines += ["", LEGEND]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = rows_of(table)
    writer.writerows(rows)
    writer.writerow(["Legend", LEGEND])
    for note in table.notes:
        writer.writerow(["Note", note])
    return buffer.getvalue()


def to_dict(table: Comparison) -> dict[str, Any]:
    return {
        "format": "cifarfw-compare",
        "version": 1,
        "runs_root": table.runs_root,
        "legend": LEGEND,
        "columns": [
            {
                "key": c.key,
                "label": c.label,
                "kind": c.kind,
                "status": c.status,
                "group": c.group,
                "runs": [{"id": e.id, "seed": e.record.get("seed"), "status": e.status} for e in c.runs],
                "stats": {row: {k: _finite_or_text(v) for k, v in stat.items()} for row, stat in c.stats.items()},
                "vs_reference": c.vs_reference,
            }
            for c in table.columns
        ],
        "rows": [
            {"key": key, "label": label, "cells": {c.key: c.cells.get(key, "-") for c in table.columns}}
            for key, label in table.rows
        ],
        "notes": list(table.notes),
    }


def _finite_or_text(value: Any) -> Any:
    """NaN and infinities as text: JSON has no number for them."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def to_json(table: Comparison) -> str:
    return json.dumps(to_dict(table), indent=2, ensure_ascii=False) + "\n"


FORMATS: dict[str, Callable[[Comparison], str]] = {"md": to_markdown, "csv": to_csv, "json": to_json}
