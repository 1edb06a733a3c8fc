"""Run folders and the Run object trainers and reporters share.

A run folder ``<runs_root>/<YYYYmmdd-HHMMSS>-<model>-s<seed>[-name]-<4 hex>`` holds
``config.toml`` (the resolved config), ``run.json`` (the public record, see
docs/run-folder.md), TensorBoard event files, ``checkpoints/`` and ``predictions.npz``.
Records are read only through :mod:`cifarfw.runs.records`; locks are :mod:`cifarfw.runs.locks`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarfw.errors import DiskFullError, RunDirError, RunInterrupted, RunStopped
from cifarfw.runs.locks import LOCK, RunLock, lock_alive
from cifarfw.runs.records import (
    FINISHED,
    GROUP_IGNORED,
    RECORD,
    SCHEMA_VERSION,
    RunEntry,
    final_metrics,
    find_run,
    group_id,
    iter_runs,
    load_entry,
    now_iso,
    read_record,
    relative_to_run,
    select_runs,
    start_key,
    upgrade_record,
)

if TYPE_CHECKING:
    import pluggy

    from cifarfw.config import RunConfig
    from cifarfw.data import Dataset
    from cifarfw.specs import ModelSpec, TrainerSpec

__all__ = [
    "FINISHED", "GROUP_IGNORED", "LOCK", "RECORD", "SCHEMA_VERSION", "Run", "RunEntry", "RunLock", "atomic_write",
    "final_metrics", "find_run", "group_id", "iter_runs", "load_entry", "lock_alive", "make_run_dir", "now_iso",
    "read_record", "relative_to_run", "select_runs", "start_key", "upgrade_record", "write_json",
]  # fmt: skip


def _read_umask() -> int:
    """The umask, read once: from /proc when it can be read without changing it (os.umask sets
    it, a race with other threads), else set and restored at import, before any thread starts."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line.split()[1] for line in status if line.startswith("Umask:")), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600; files get the mode open() would give them (0644 under umask 022).
FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: readers see
    the old file or the new one, never half of one. A full disk raises DiskFullError."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
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
    label = f"-{_slug(name)}" if name else ""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
        for _ in range(100):
            path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(model)}-s{seed}{label}-{secrets.token_hex(2)}"
            with contextlib.suppress(FileExistsError):
                path.mkdir()
                return path
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DiskFullError(f"the disk is full: cannot start a run under {root}; free space") from None
        raise RunDirError(
            f"cannot write to runs root {root}: {err.strerror or err}; choose another with --runs-root"
        ) from None
    raise RunDirError(f"could not create a unique run folder under {root}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40]


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
        return RunInterrupted(f"{name}: run {self.id} {self.resume_advice()}", self.stop_requested or 2)

    def resume_advice(self) -> str:
        if not self.config.checkpoint:
            return "stopped; it writes no checkpoints (checkpoint=false), so it cannot be resumed: start it again"
        return f"stopped after its last checkpoint; continue with `cifarfw run --resume {self.id}`"

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

        A complete checkpoint is a safe point (an epoch's end, for a run that writes none): when a
        signal asked the run to stop, ``emit`` raises :class:`RunInterrupted` after the reporters ran.
        """
        getattr(self.hooks, event)(run=self, **kwargs)
        safe = event == ("on_checkpoint" if self.config.checkpoint else "on_epoch_end")
        if safe and self.stop_requested:
            raise self.interrupted()
        if event == "on_checkpoint" and self.stop_status:
            raise RunStopped(
                f"run {self.id} stopped after epoch {kwargs.get('epoch')}: {self.stop_status}", self.stop_status
            )
