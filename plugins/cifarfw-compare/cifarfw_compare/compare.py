"""The comparison table: one column per run group, the study's rows, mean ± std over seeds.

Reads run records only (run.json, and for the HTML report predictions.npz). Runs that
share ``record["group"]`` (same config, other seed) are one column; every metric is
``mean ± std (n=...)`` over the finished runs of the group. A run that did not finish
(running, failed, interrupted, nan) gets a column of its own showing its status and its
last epoch, never averaged in. Columns that differ in data, augmentation, epochs, batch
size or precision are flagged as not directly comparable, saying which.

One :class:`Comparison` feeds every format (markdown, csv, json here; html in
:mod:`cifarfw.report.html`), so they carry the same content.

Run records: schema 1 is current. Schema 0 (records written before ``schema_version``
existed) is upgraded on reading: a missing group is derived from the config, a dataset
given as a plain name becomes ``{"name": ...}``, a params count becomes
``{"total": n, "trainable": n}``, missing results are taken from the last epoch. A
record of a newer schema is refused with a message saying to upgrade cifarfw.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarfw.errors import RunDirError
from cifarfw.report.hparams import augmentation_summary
from cifarfw.runs import RECORD, SCHEMA_VERSION, RunLock, _alive, find_run, read_record, start_key

FINISHED = "finished"

# (key, label) of every row, in order; the study's rows first.
ROWS: tuple[tuple[str, str], ...] = (
    ("model", "Model"),
    ("plugin", "Plugin"),
    ("framework", "Framework"),
    ("status", "Status"),
    ("train_acc", "Training accuracy"),
    ("test_acc", "Testing accuracy"),
    ("train_loss", "Training loss"),
    ("test_loss", "Testing loss"),
    ("train_seconds", "Training time (s)"),
    ("params_total", "Parameters (total)"),
    ("params_trainable", "Parameters (trainable)"),
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
METRIC_ROWS = ("train_acc", "test_acc", "train_loss", "test_loss", "train_seconds")
# The settings that make two columns not directly comparable when they differ.
COMPARABILITY = (
    ("dataset", "data"),
    ("augmentation", "augmentation"),
    ("epochs", "epochs"),
    ("batch_size", "batch size"),
    ("precision", "precision"),
)

# The study's published figures ("Last Comparison", ../shared/MISSION.md), as printed.
STUDY_COLUMNS: tuple[dict[str, str], ...] = (
    {
        "key": "study:torch-cnn",
        "label": "Study: PyTorch CNN",
        "model": "Model 1, PyTorch CNN",
        "plugin": "torch-cnn",
        "framework": "torch",
        "train_acc": "82.86%",
        "test_acc": "80.64%",
        "train_loss": "0.4829",
        "test_loss": "0.5722",
        "train_seconds": "663.81",
        "params_total": "350,342",
        "params_trainable": "350,342",
        "epochs": "20",
        "batch_size": "64",
        "lr": "0.01",
        "optimizer": "adam",
        "augmentation": "crop, flip, brightness 20%",
    },
    {
        "key": "study:keras-cnn",
        "label": "Study: Keras CNN",
        "model": "Model 2, Keras CNN",
        "plugin": "keras-cnn",
        "framework": "keras",
        "train_acc": "90.43%",
        "test_acc": "70.92%",
        "train_loss": "0.2692",
        "test_loss": "1.2214",
        "train_seconds": "84",
        "params_total": "224,842",
        "params_trainable": "224,842",
        "epochs": "20",
        "batch_size": "32",
        "lr": "0.01 (default)",
        "optimizer": "adam",
        "augmentation": "none",
    },
    {
        "key": "study:alexnet",
        "label": "Study: AlexNet fine-tuned",
        "model": "Model 3, AlexNet (ImageNet weights)",
        "plugin": "alexnet",
        "framework": "torch",
        "train_acc": "95.97%",
        "test_acc": "83.49%",
        "train_loss": "0.1290",
        "test_loss": "0.5556",
        "train_seconds": "740",
        "params_total": "60M",
        "params_trainable": "4,211,082",
        "epochs": "10",
        "batch_size": "64",
        "lr": "0.01",
        "optimizer": "adam",
        "augmentation": "crop, flip, brightness 20% (resized to 224)",
    },
)
_STUDY_COMMON = {
    "status": "published (study)",
    "accelerator": "Tesla P100-PCIE-16GB",
    "dataset": "cifar10 (50,000 train / 10,000 test)",
    "official": "yes",
    "precision": "fp32",
    "recipe": "study",
    "seeds": "1",
    "comparable": "reference (study)",
    "runs": "-",
}
STUDY_NOTES = (
    "Study columns are the study's published figures as printed (Tesla P100); its code gives other parameter "
    "counts: PyTorch CNN 350,366, Keras CNN 126,730; the Keras learning rate it called 0.01 (default) is "
    "Keras's default 0.001.",
)


# --- reading run records ----------------------------------------------------------------


@dataclass
class RunEntry:
    """One run folder and its (upgraded) record."""

    id: str
    dir: Path
    record: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.record.get("status") or "unknown")


def group_of(config: Mapping[str, Any]) -> str:
    """The group of a config without one recorded: what runner.group_id computes (runs that
    differ only in seed, name, runs root or device share it)."""
    values = {k: v for k, v in config.items() if k not in ("seed", "seeds", "name", "runs_root", "device")}
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def upgrade_record(record: Any, where: Path | str) -> dict[str, Any]:
    """A run record of any readable schema, as schema 1; RunDirError when it cannot be read."""
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise RunDirError(f"{where}: {RECORD} is not a cifarfw run record (no config)")
    version = record.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RunDirError(
            f"{where}: run record schema {version!r} is newer than this cifarfw reads ({SCHEMA_VERSION}); "
            "upgrade cifarfw to compare it"
        )
    rec = dict(record)
    config = rec["config"]
    rec.setdefault("plugin", config.get("plugin", ""))
    rec.setdefault("model", config.get("model", ""))
    rec.setdefault("framework", "")
    rec.setdefault("recipe", config.get("recipe", ""))
    rec.setdefault("seed", config.get("seed", 0))
    rec.setdefault("group", group_of(config))
    dataset = rec.get("dataset")
    if not isinstance(dataset, dict):
        rec["dataset"] = {"name": dataset or config.get("dataset", "")}
    params = rec.get("params")
    if isinstance(params, int):
        rec["params"] = {"total": params, "trainable": params}
    elif not isinstance(params, dict):
        rec["params"] = {"total": None, "trainable": None}
    rec["epochs"] = [e for e in rec.get("epochs") or [] if isinstance(e, dict) and "epoch" in e]
    if not isinstance(rec.get("resolved"), dict):
        rec["resolved"] = {}
    if not isinstance(rec.get("hardware"), dict):
        rec["hardware"] = {}
    if rec.get("final") is None and rec.get("status") in (None, FINISHED) and rec["epochs"]:
        last = rec["epochs"][-1]
        rec["final"] = {
            **{k: v for k, v in last.items() if k != "epoch"},
            "train_seconds": sum(float(e.get("seconds", 0.0)) for e in rec["epochs"]),
        }
    if "status" not in rec:
        rec["status"] = FINISHED if rec.get("final") else "unknown"
    rec["schema_version"] = SCHEMA_VERSION
    return rec


def load_entry(run_dir: Path) -> RunEntry:
    return RunEntry(run_dir.name, run_dir, upgrade_record(read_record(run_dir), run_dir))


def select_runs(
    runs_root: str | Path,
    refs: Sequence[str] = (),
    latest: int | None = None,
    plugins: Sequence[str] = (),
    warn: Callable[[str], None] | None = None,
) -> list[RunEntry]:
    """The runs to compare: those ``refs`` name (ids, prefixes, paths, ``last``), else every
    run under ``runs_root``; then only those of ``plugins``; then the ``latest`` N."""
    root = Path(runs_root)
    if refs:
        entries = [load_entry(find_run(root, ref)) for ref in refs]
    else:
        if not root.is_dir():
            raise RunDirError(f"runs root {root} does not exist; pass --runs-root DIR or make runs with `cifarfw run`")
        entries = []
        for path in (p for p in root.iterdir() if (p / RECORD).is_file()):
            try:
                entries.append(load_entry(path))
            except RunDirError as err:  # one unreadable record must not hide the others
                (warn or _warn)(f"skipping {err}")
        entries.sort(key=lambda e: start_key(e.dir, e.record))  # oldest first
        if not entries:
            raise RunDirError(f"no runs under {root}; make some with `cifarfw run --plugin NAME`")
    if plugins:
        wanted = set(plugins)
        entries = [e for e in entries if e.record.get("plugin") in wanted or e.record.get("model") in wanted]
        if not entries:
            raise RunDirError(f"no runs of {', '.join(plugins)} under {root}; `cifarfw runs` lists them")
    if latest is not None:
        if latest <= 0:
            from cifarfw.errors import UsageError

            raise UsageError(f"--latest must be a positive integer, got {latest}")
        entries = sorted(entries, key=lambda e: start_key(e.dir, e.record))[-latest:]
    seen: set[Path] = set()
    unique = []
    for entry in entries:  # a run named twice is one run
        if entry.dir.resolve() not in seen:
            seen.add(entry.dir.resolve())
            unique.append(entry)
    return unique


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


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


def format_stat(key: str, stat: Mapping[str, Any]) -> str:
    """``82.86 ± 0.31% (n=2)``; one value: ``82.86% (n=1)``."""
    mean, std, n = stat.get("mean"), stat.get("std"), stat.get("n", 0)
    if mean is None or n == 0:
        return "-"
    if not math.isfinite(mean):
        return f"{mean} (n={n})"
    if key.endswith("_acc"):
        scale, digits, unit = 100.0, 2, "%"
    elif key == "train_seconds":
        scale, digits, unit = 1.0, 2, ""
    else:
        scale, digits, unit = 1.0, 4, ""
    if std is None:
        return f"{mean * scale:.{digits}f}{unit} (n={n})"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{unit} (n={n})"


def _final_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    final = dict(record.get("final") or {})
    epochs = record.get("epochs") or []
    last = epochs[-1] if epochs else {}
    out = {}
    for key in METRIC_ROWS:
        value = final.get(key, last.get(key) if key != "train_seconds" else None)
        if key == "train_seconds" and value is None and epochs:
            value = sum(float(e.get("seconds", 0.0)) for e in epochs)
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


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
        "augmentation": augmentation_summary(config.get("augment")),
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
        owner = RunLock(entry.dir)._owner()  # the pid in the run's .lock, if any
        alive = owner is not None and _alive(owner)
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
        ignore = {"seed", "seeds", "name", "runs_root", "device"}
        differing = [
            k for k in flats[0] if k not in ignore and len({json.dumps(f.get(k), default=str) for f in flats}) > 1
        ]
        for column, flat in zip(same, flats, strict=True):
            extra = ", ".join(f"{k}={flat.get(k)}" for k in differing[:2]) or column.group
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


def build(entries: Sequence[RunEntry], with_study: bool = False, runs_root: str | Path = "") -> Comparison:
    """The comparison of ``entries`` (grouped into columns), plus the study when asked."""
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
    notes = _flag_comparability(columns)
    if any(c.kind == "runs" and c.status != FINISHED for c in columns):
        notes.append("Runs that did not finish are shown alone with their status and last epoch, never averaged.")
    if with_study:
        for study in STUDY_COLUMNS:
            cells = {**_STUDY_COMMON, **{k: v for k, v in study.items() if k not in ("key", "label")}}
            columns.append(Column(study["key"], study["label"], "study", "published", cells=cells))
        notes.extend(STUDY_NOTES)
    return Comparison(columns, notes, str(runs_root))


def _group_column(group: str, finished: list[RunEntry], members: int) -> Column:
    records = [e.record for e in finished]
    settings = _settings(records)
    stats = {}
    metrics = [_final_metrics(r) for r in records]
    for key in METRIC_ROWS:
        stats[key] = mean_std([m[key] for m in metrics if key in m])
    cells = dict(settings)
    for key in METRIC_ROWS:
        cells[key] = format_stat(key, stats[key])
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
    last = epochs[-1] if epochs else {}
    stats = {}
    for key in METRIC_ROWS:
        value = last.get(key) if key != "train_seconds" else (sum(e.get("seconds", 0.0) for e in epochs) or None)
        stats[key] = {"mean": value, "std": None, "n": 1 if value is not None else 0}
        cells[key] = "-" if value is None else format_stat(key, stats[key]).replace("(n=1)", f"(epoch {len(epochs)})")
    cells["status"] = _status_cell(entry)
    cells["seeds"] = f"1 ({entry.record.get('seed', '?')})"
    cells["runs"] = entry.id
    label = f"{_label([entry])} [{entry.status}]"
    return Column(f"run:{entry.id}", label, "runs", entry.status, [entry], cells, stats, settings)


def _flag_comparability(columns: list[Column]) -> list[str]:
    """Fill the 'Directly comparable' row against the first column; return the notes."""
    runs = [c for c in columns if c.kind == "runs"]
    if not runs:
        return []
    reference = runs[0]
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


# --- formats ----------------------------------------------------------------------------

LEGEND = "Metrics are mean ± sample std over seeds (n = finished runs); accuracies in %."


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


def render(table: Comparison, fmt: str) -> str:
    if fmt == "html":
        from cifarfw.report.html import to_html

        return to_html(table)
    return FORMATS[fmt](table)
