"""Run folders, run records and the Run object trainers and reporters share.

A run folder ``<runs_root>/<YYYYmmdd-HHMMSS>-<model>-s<seed>[-name]-<4 hex>`` holds
``config.toml`` (the resolved config), ``run.json`` (the public record, see
docs/run-folder.md), TensorBoard event files, ``checkpoints/`` and ``predictions.npz``.

This module is the only reader of run records (listing, selection, group ids, final metrics);
schema 0 records are upgraded on reading, newer schemas refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarfw.errors import DiskFullError, RunDirError, RunInterrupted, RunStopped, UsageError

if TYPE_CHECKING:
    import pluggy

    from cifarfw.config import RunConfig
    from cifarfw.data import Dataset
    from cifarfw.specs import ModelSpec, TrainerSpec

SCHEMA_VERSION = 1
RECORD = "run.json"
LOCK = ".lock"
FINISHED = "finished"
# Config keys that do not change what a run computes: runs differing only in these share a group.
GROUP_IGNORED = frozenset({"seed", "seeds", "name", "runs_root", "device"})


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: readers see
    the old file or the new one, never half of one. A full disk raises DiskFullError."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise DiskFullError(f"the disk is full while writing {path}; free space and resume the run") from None
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def make_run_dir(runs_root: str | Path, model: str, seed: int, name: str = "") -> Path:
    """Create a new, uniquely named run folder; sortable by start time."""
    root = Path(runs_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise RunDirError(
            f"cannot write to runs root {root}: {err.strerror or err}; choose another with --runs-root"
        ) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = f"-{_slug(name)}" if name else ""
    for _ in range(100):
        path = root / f"{stamp}-{_slug(model)}-s{seed}{label}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a unique run folder under {root}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40]


class RunLock:
    """An exclusive lock on a run folder, held by one process; a stale lock (its process
    is gone) is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._owner()
                if pid is not None and _alive(pid):
                    raise RunDirError(
                        f"run folder {self.path.parent} is in use by process {pid}; wait for it or stop it"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self.held = True
            return
        raise RunDirError(f"could not lock run folder {self.path.parent}")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Run:
    """One training run, as trainers and reporters see it.

    Trainers read ``config``, ``model``, ``dataset`` and ``dir``, and report through
    :meth:`emit`; reporters receive the events. ``record`` is the live content of
    run.json (the record reporter writes it).
    """

    id: str
    dir: Path
    config: RunConfig
    plugin: str
    model: ModelSpec
    dataset: Dataset
    trainer: TrainerSpec
    hooks: pluggy.HookRelay
    record: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    resume_checkpoint: Path | None = None  # set when continuing a run: the trainer restores it
    resumed_from_epoch: int = 0  # the last epoch the resumed run had completed
    stop_requested: int = 0  # the signal number of a SIGINT/SIGTERM asking the run to stop
    stop_status: str = ""  # set by request_stop: the status the run ends with at its next checkpoint

    def request_stop(self, status: str) -> None:
        """End the run at its next checkpoint with ``status`` (e.g. ``"pruned"`` by a sweep's
        reporter); its record and checkpoint are kept. Single-process runs only."""
        self.stop_status = status

    def interrupted(self) -> RunInterrupted:
        """The error a trainer raises after writing its checkpoint when ``stop_requested``."""
        name = signal.Signals(self.stop_requested).name if self.stop_requested else "stop"
        return RunInterrupted(
            f"{name}: run {self.id} stopped after its last checkpoint; continue with `cifarfw run --resume {self.id}`",
            self.stop_requested or 2,
        )

    @property
    def checkpoint_dir(self) -> Path:
        path = self.dir / "checkpoints"
        path.mkdir(exist_ok=True)
        return path

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0 of a distributed run)."""
        return self.rank == 0

    def emit(self, event: str, **kwargs: Any) -> None:
        """Send an event hook (``on_epoch_end``, ...) to every reporter, keyword arguments only.

        A complete checkpoint is a safe point: when a signal asked the run to stop,
        ``emit("on_checkpoint", ...)`` raises :class:`RunInterrupted` after the reporters ran.
        """
        getattr(self.hooks, event)(run=self, **kwargs)
        if event == "on_checkpoint" and self.stop_requested:
            raise self.interrupted()
        if event == "on_checkpoint" and self.stop_status:
            raise RunStopped(
                f"run {self.id} stopped after epoch {kwargs.get('epoch')}: {self.stop_status}", self.stop_status
            )


def read_record(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} is not a run folder (no {RECORD})") from None
    except (OSError, ValueError) as err:
        raise RunDirError(f"cannot read {path}: {err}") from None


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


def group_id(config: Mapping[str, Any]) -> str:
    """The group of a config dict: runs differing only in ``GROUP_IGNORED`` keys share it."""
    values = {k: v for k, v in config.items() if k not in GROUP_IGNORED}
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
    """A run record of any readable schema, as schema 1; RunDirError when it cannot be read."""
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise RunDirError(f"{where}: {RECORD} is not a cifarfw run record (no config)")
    version = record.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RunDirError(
            f"{where}: run record schema {version!r} is newer than this cifarfw reads ({SCHEMA_VERSION}); "
            "upgrade cifarfw to read it"
        )
    rec = dict(record)
    config = rec["config"]
    for key, default in (("plugin", ""), ("model", ""), ("recipe", ""), ("seed", 0)):
        rec.setdefault(key, config.get(key, default))
    rec.setdefault("framework", "")
    rec.setdefault("group", group_id(config))
    dataset = rec.get("dataset")
    if not isinstance(dataset, dict):
        rec["dataset"] = {"name": dataset or config.get("dataset", "")}
    params = rec.get("params")
    if isinstance(params, int):
        rec["params"] = {"total": params, "trainable": params}
    elif not isinstance(params, dict):
        rec["params"] = {"total": None, "trainable": None}
    rec["epochs"] = [e for e in rec.get("epochs") or [] if isinstance(e, dict) and "epoch" in e]
    for key in ("resolved", "hardware"):
        if not isinstance(rec.get(key), dict):
            rec[key] = {}
    if rec.get("final") is None and rec.get("status") in (None, FINISHED) and rec["epochs"]:
        rec["final"] = final_metrics(rec)  # schema 0 kept its results only in the epochs
    if "status" not in rec:
        rec["status"] = FINISHED if rec.get("final") else "unknown"
    rec["schema_version"] = SCHEMA_VERSION
    return rec


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
    return RunEntry(run_dir.name, run_dir, upgrade_record(read_record(run_dir), run_dir))


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


def lock_alive(run_dir: Path) -> bool:
    """Whether a live process holds the run folder's lock (a "running" run without one was killed)."""
    owner = RunLock(run_dir)._owner()
    return owner is not None and _alive(owner)


def find_run(runs_root: str | Path, ref: str) -> Path:
    """A run folder by path, id, unique id prefix, or ``last``."""
    candidate = Path(ref)
    if (candidate / RECORD).is_file():
        return candidate
    runs = [path for path, _ in iter_runs(runs_root, warn=None)]
    if ref == "last":
        if not runs:
            raise RunDirError(f"no runs under {runs_root}")
        return runs[-1]
    matches = [p for p in runs if p.name == ref] or [p for p in runs if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunDirError(f"no run {ref!r} under {runs_root}; `cifarfw runs` lists them")
    raise RunDirError(f"{ref!r} matches {len(matches)} runs under {runs_root}; give more of the id")
