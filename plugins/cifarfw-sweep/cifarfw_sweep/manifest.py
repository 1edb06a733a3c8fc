"""The sweep manifest: ``<runs_root>/sweeps/<name>/manifest.json``.

It holds what the sweep asked for (enough to resume it without the original flags), its
jobs, and for each job index the run id and status last seen. Every change is a
read-modify-write under an exclusive ``flock`` and lands with ``atomic_write``, so a sweep
killed at any moment leaves the previous or the next version, and two workers of one Optuna
study sharing a runs root do not overwrite each other's entries. The run records stay the
truth: a resumed sweep asks them (:func:`cifarfw_sweep.executors.existing_run`) before it runs
anything, so an entry lost to a kill never makes a run twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cifarfw.errors import RunDirError, UsageError
from cifarfw.runs import atomic_write, now_iso

VERSION = 1
FILE = "manifest.json"


def sweep_dir(runs_root: str | Path, name: str) -> Path:
    return Path(runs_root) / "sweeps" / name


def path_of(runs_root: str | Path, name: str) -> Path:
    return sweep_dir(runs_root, name) / FILE


def exists(runs_root: str | Path, name: str) -> bool:
    return path_of(runs_root, name).is_file()


def load(runs_root: str | Path, name: str) -> dict[str, Any]:
    """The manifest of sweep ``name``; a one-line RunDirError when there is none."""
    path = path_of(runs_root, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.parent.name for p in (Path(runs_root) / "sweeps").glob(f"*/{FILE}"))
        hint = f"; sweeps there: {', '.join(known)}" if known else ""
        raise RunDirError(f"no sweep {name!r} under {runs_root}{hint}") from None
    except (OSError, ValueError) as err:
        raise RunDirError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise UsageError(f"{path} is not a cifarfw sweep manifest of version {VERSION}")
    return data


@contextlib.contextmanager
def _locked(runs_root: str | Path, name: str) -> Iterator[None]:
    folder = sweep_dir(runs_root, name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".manifest.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update(runs_root: str | Path, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` to the manifest (created when missing) and write it atomically."""
    with _locked(runs_root, name):
        path = path_of(runs_root, name)
        data = load(runs_root, name) if path.is_file() else {"version": VERSION, "name": name, "created_at": now_iso()}
        data.setdefault("runs", {})
        change(data)
        data["updated_at"] = now_iso()
        atomic_write(path, json.dumps(data, indent=2) + "\n")
    return data


def set_run(runs_root: str | Path, name: str, index: int, **fields: Any) -> None:
    """Record what is known of job ``index`` (run id, status, trial, ...)."""

    def change(data: dict[str, Any]) -> None:
        entry = data["runs"].setdefault(str(index), {})
        entry.update({k: v for k, v in fields.items() if v is not None})

    update(runs_root, name, change)
