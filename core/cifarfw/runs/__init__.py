"""Run folders, their locks and the Run object trainers and reporters share.

A run folder ``<runs_root>/<YYYYmmdd-HHMMSS>-<model>-s<seed>[-name]-<4 hex>`` holds
``config.toml`` (the resolved config), ``run.json`` (the public record, see
docs/run-folder.md; read only through :mod:`cifarfw.runs.records`, whose names are
re-exported here), TensorBoard event files, ``checkpoints/`` and ``predictions.npz``.

``.lock`` names its owner (host, PID, process start time). It is stale only when the owner
is provably gone on this host: no such process, or one of that PID started at another time
(PID 1 of a restarted container). Another host's lock is never taken over on a guess (a
shared filesystem); ``--force-unlock`` does it by hand. Old locks (a bare PID) still read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarfw.errors import DiskFullError, RunDirError, RunInterrupted, RunStopped
from cifarfw.runs.records import *  # noqa: F403 (the reader's public names are this package's)

if TYPE_CHECKING:
    import pluggy

    from cifarfw.config import RunConfig
    from cifarfw.data import Dataset
    from cifarfw.specs import ModelSpec, TrainerSpec


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
        root = str(self.config.runs_root)  # the hint must find the run: name a root that is not ./runs
        where = "" if Path(root) == Path("runs") else f" --runs-root {root}"
        advice = self.resume_advice().replace(f"--resume {self.id}`", f"--resume {self.id}{where}`")
        return RunInterrupted(f"{name}: run {self.id} {advice}", self.stop_requested or 2)

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


# --- locks: .lock names its owner by host, PID and process start time ----------------------

LOCK = ".lock"


def start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's /proc); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()[19]  # field 22, counted after "pid (comm)"
    except (OSError, ValueError, IndexError):
        return None


class RunLock:
    """An exclusive lock on a run folder, held by one process."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self, force: bool = False) -> None:
        """Take the lock; a stale one is taken over, a live one (or one of another host, unless
        ``force``) refused with RunDirError. A full disk raises DiskFullError, leaving no lock."""
        me = {"host": socket.gethostname(), "pid": os.getpid(), "start": start_time(os.getpid())}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner and not force and _alive(owner, me):
                    where = "" if owner["host"] in (None, me["host"]) else f" on host {owner['host']}"
                    raise RunDirError(
                        f"run folder {self.path.parent} is in use by process {owner['pid']}{where}; wait for it or "
                        "stop it (if it is gone, `cifarfw run --resume RUN --force-unlock` takes the lock over)"
                    ) from None
                if owner and force:
                    print(f"warning: taking over the lock of process {owner['pid']} ({owner['host']})", file=sys.stderr)
                self.path.unlink(missing_ok=True)
                continue
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(me) + "\n")
            except OSError as err:
                self.path.unlink(missing_ok=True)  # an empty lock would look like nobody's
                if err.errno == errno.ENOSPC:
                    raise DiskFullError(f"the disk is full: cannot lock {self.path.parent}; free space") from None
                raise
            self.held = True
            return
        raise RunDirError(f"could not lock run folder {self.path.parent}")

    def owner(self) -> dict[str, Any] | None:
        """{host, pid, start} of the lock's owner (host and start None in the old bare-PID form)."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            text = self.path.read_text().strip()
            if text.isdigit():
                return {"host": None, "pid": int(text), "start": None, "bare": True}
            data = json.loads(text)
            return {"host": str(data["host"]), "pid": int(data["pid"]), "start": data.get("start")}
        return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(owner: dict[str, Any], me: dict[str, Any] | None = None) -> bool:
    """Whether ``owner`` may still hold its lock: True unless it is provably gone on this host."""
    if owner["host"] not in (None, socket.gethostname()):
        return True  # another host's process: it cannot be checked from here
    if me is not None and owner.get("bare") and owner["pid"] == me["pid"]:
        return False  # an old-format lock naming this very process (a new PID namespace) is not its own
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = start_time(owner["pid"])
    return owner["start"] is None or started is None or started == owner["start"]


def lock_alive(run_dir: Path) -> bool:
    """Whether a live process holds the run folder's lock (a "running" run without one was killed)."""
    owner = RunLock(run_dir).owner()
    return owner is not None and _alive(owner)
