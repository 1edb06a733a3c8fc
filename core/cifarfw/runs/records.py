"""The one reader of run records: read, check shape and types, upgrade, list, select, find.

A damaged record (not JSON, or JSON that is not a run record) is a RunDirError naming its
folder; a listing skips it with one warning line, so one bad folder never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cifarfw.errors import RunDirError, UsageError

SCHEMA_VERSION = 2  # 2: checkpoint paths relative to the run folder (1: as written, absolute or cwd-relative)
RECORD = "run.json"
FINISHED = "finished"
# Config keys that do not change what a run computes: runs differing only in these share a group.
# Where the data was read from is not what it is: group_id's ``data`` says that.
GROUP_IGNORED = frozenset({"seed", "seeds", "name", "runs_root", "device", "data_dir", "data_checksums", "verify_data"})
_CHECKPOINTS = ("checkpoint", "previous_checkpoint")
# The type of every field a reader relies on (schema 0 fields are filled in before the check).
_TYPES: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(("config", "dataset", "params", "resolved", "hardware"), dict),
    **dict.fromkeys(("status", "plugin", "model", "framework", "recipe", "group"), str),
    **dict.fromkeys(_CHECKPOINTS, (dict, type(None))),
    "seed": int, "epochs": list, "resumed": list, "extra": dict, "started_at": str,
}  # fmt: skip


def read_record(run_dir: Path) -> dict[str, Any]:
    """The record of ``run_dir``, checked and upgraded to this schema; RunDirError when it cannot be read."""
    path = Path(run_dir) / RECORD
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} is not a run folder (no {RECORD})") from None
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} is damaged and cannot be read ({type(err).__name__})") from None
    return upgrade_record(raw, run_dir)


def now_iso() -> str:
    """The local time with milliseconds and offset, as run.json stores times.

    Milliseconds, because runs started in the same second (a seed sweep of a tiny model) must
    still sort in the order they started: folder names only carry the second."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def start_key(path: Path, record: Mapping[str, Any]) -> tuple[float, str]:
    """Sorts runs in the order they started: ``started_at``, then the folder's name."""
    try:
        started = datetime.fromisoformat(str(record["started_at"])).timestamp()
    except (KeyError, TypeError, ValueError):
        # A hand-made or damaged record: the folder's own time stands in.
        started = path.stat().st_mtime
    return started, path.name


def group_id(config: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> str:
    """The group of a config dict and its data (``Dataset.describe()``): runs differing only in
    ``GROUP_IGNORED`` keys share it. The data counts by name, sizes, subset and how it was
    verified (official sums, or a checksum file's), never by a path."""
    values = {k: v for k, v in config.items() if k not in GROUP_IGNORED}
    if data is not None:
        values["data"] = {k: str(v).split(":")[0] if k == "verified" else v for k, v in data.items() if k != "source"}
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def final_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """A run's numbers: ``final`` over its last epoch's; no ``train_seconds``: the epochs' seconds summed."""
    epochs = [e for e in record.get("epochs") or [] if isinstance(e, Mapping)]
    values = {k: v for k, v in (epochs[-1] if epochs else {}).items() if k != "epoch"}
    values.update(record["final"] if isinstance(record.get("final"), Mapping) else {})
    if "train_seconds" not in values and epochs:
        values["train_seconds"] = sum(e.get("seconds", 0.0) for e in epochs if _number(e.get("seconds", 0.0)))
    return {k: float(v) for k, v in values.items() if _number(v)}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def upgrade_record(record: Any, where: Path | str) -> dict[str, Any]:
    """A run record of any readable schema, as this one; RunDirError naming ``where`` when it
    is not a run record of a schema this cifarfw reads, or a field has the wrong type."""
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise RunDirError(f"{where}: {RECORD} is not a cifarfw run record (no config object)")
    version = record.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RunDirError(
            f"{where}: run record schema {version!r} is newer than this cifarfw reads ({SCHEMA_VERSION}); "
            "upgrade cifarfw to read it"
        )
    rec, config = dict(record), record["config"]
    for key, default in (("plugin", ""), ("model", ""), ("recipe", ""), ("seed", 0)):
        rec.setdefault(key, config.get(key, default))
    rec.setdefault("framework", "")
    rec.setdefault("group", group_id(config))
    if not isinstance(rec.get("dataset"), dict):  # schema 0: the dataset's name
        rec["dataset"] = {"name": rec.get("dataset") or config.get("dataset", "")}
    params = rec.get("params")
    if not isinstance(params, dict):  # schema 0: a count, or nothing
        rec["params"] = (
            {"total": params, "trainable": params} if _number(params) else {"total": None, "trainable": None}
        )
    rec.setdefault("epochs", [])
    for key in ("resolved", "hardware"):
        rec.setdefault(key, {})
    problem = _damage(rec)
    if problem:
        raise RunDirError(f"{where}: {RECORD} is damaged: {problem}")
    if rec.get("final") is None and rec.get("status") in (None, FINISHED) and rec["epochs"]:
        rec["final"] = final_metrics(rec)  # schema 0 kept its results only in the epochs
    rec.setdefault("status", FINISHED if rec.get("final") else "unknown")
    if version < 2:  # paths as written (absolute, or relative to the cwd of the run) -> relative to the folder
        for key in (k for k in _CHECKPOINTS if rec.get(k)):
            rec[key] = {**rec[key], "path": _inside(Path(rec[key]["path"]), Path(where).name)}
    rec["schema_version"] = SCHEMA_VERSION
    return rec


def _damage(rec: dict[str, Any]) -> str:
    """What makes ``rec`` unreadable as a run record ("" when nothing)."""
    for key, kind in _TYPES.items():
        value = rec.get(key)
        if key in rec and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            return f"{key} is a {type(value).__name__}"
    for entry in rec["epochs"]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("epoch"), int)
            or not all(map(_number, entry.values()))
        ):
            return "an epochs entry is not an object of numbers with an integer epoch"
    final = rec.get("final")
    if final is not None and not (
        isinstance(final, dict) and all(_number(v) and math.isfinite(v) for v in final.values())
    ):
        return "final is not an object of finite numbers"
    for key in (k for k in _CHECKPOINTS if rec.get(k) is not None):
        if not isinstance(rec[key].get("epoch"), int) or not isinstance(rec[key].get("path"), str):
            return f"{key} is not {{epoch, path}}"
    return ""


def _inside(path: Path, folder_name: str) -> str:
    """``path`` relative to the run folder ``folder_name`` it names, else unchanged."""
    parts = path.parts
    if folder_name in parts:
        return Path(*parts[len(parts) - parts[::-1].index(folder_name) :]).as_posix()
    return str(path)


def relative_to_run(run_dir: Path, path: str | Path) -> str:
    """How run.json stores a path: relative to the run folder when inside it, so a moved folder
    (or a relative runs root used from another directory) still finds its files."""
    try:
        return Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


@dataclass
class RunEntry:
    """One run folder and its (upgraded) record."""

    id: str
    dir: Path
    record: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.record.get("status") or "unknown")


def load_entry(run_dir: Path) -> RunEntry:
    """The run in ``run_dir``, its record upgraded; RunDirError when it cannot be read."""
    run_dir = Path(run_dir)
    return RunEntry(run_dir.name, run_dir, read_record(run_dir))


def _listing(root: Path, warn: Callable[[str], None] | None) -> list[RunEntry]:
    """Every readable run under ``root``, oldest first; one bad folder must not hide the others."""
    entries = []
    for path in (p for p in root.iterdir() if (p / RECORD).is_file()):
        try:
            entries.append(load_entry(path))
        except RunDirError as err:
            if warn is not None:
                warn(f"skipping {err}")
    return sorted(entries, key=lambda e: start_key(e.dir, e.record))


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def iter_runs(runs_root: str | Path, warn: Callable[[str], None] | None = _warn) -> Iterator[tuple[Path, dict]]:
    """(folder, upgraded record) of each run, oldest first; a bad one is one line to ``warn`` (None: silent)."""
    root = Path(runs_root)
    if root.is_dir():
        yield from ((e.dir, e.record) for e in _listing(root, warn))


def select_runs(
    runs_root: str | Path,
    refs: Sequence[str] = (),
    latest: int | None = None,
    plugins: Sequence[str] = (),
    warn: Callable[[str], None] | None = _warn,
) -> list[RunEntry]:
    """The runs ``refs`` name (ids, prefixes, paths, ``last``), else all under ``runs_root``; then
    those of ``plugins`` (plugin or model names); then the ``latest`` N. Oldest first, each once."""
    root = Path(runs_root)
    if latest is not None and latest <= 0:
        raise UsageError(f"--latest must be a positive integer, got {latest}")
    if refs:
        entries = [load_entry(find_run(root, ref)) for ref in refs]
    else:
        if not root.is_dir():
            raise RunDirError(f"runs root {root} does not exist; pass --runs-root DIR or make runs with `cifarfw run`")
        entries = _listing(root, warn)
        if not entries:
            raise RunDirError(f"no runs under {root}; make some with `cifarfw run --plugin NAME`")
    if plugins:
        wanted = set(plugins)
        entries = [e for e in entries if e.record.get("plugin") in wanted or e.record.get("model") in wanted]
        if not entries:
            raise RunDirError(f"no runs of {', '.join(plugins)} under {root}; `cifarfw runs` lists them")
    if latest is not None:
        entries = sorted(entries, key=lambda e: start_key(e.dir, e.record))[-latest:]
    return list({e.dir.resolve(): e for e in entries}.values())  # a run named twice is one run


def find_run(runs_root: str | Path, ref: str) -> Path:
    """A run folder by path, id, unique id prefix, or ``last``."""
    candidate = Path(ref)
    if (candidate / RECORD).is_file():
        return candidate
    if ref == "last":
        runs = [path for path, _ in iter_runs(runs_root, warn=None)]
        if not runs:
            raise RunDirError(f"no runs under {runs_root}")
        return runs[-1]
    root = Path(runs_root)
    # Damaged ones too: their reader then says what is wrong, rather than "no run".
    runs = sorted(p for p in root.iterdir() if (p / RECORD).is_file()) if root.is_dir() else []
    matches = [p for p in runs if p.name == ref] or [p for p in runs if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunDirError(f"no run {ref!r} under {runs_root}; `cifarfw runs` lists them")
    raise RunDirError(f"{ref!r} matches {len(matches)} runs under {runs_root}; give more of the id")
