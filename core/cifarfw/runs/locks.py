"""The lock of a run folder: ``.lock`` names its owner by host, PID and process start time.

A lock is stale only when its owner is provably gone on this host: no such process, or a
process of that PID that started at another time (a PID reused, say PID 1 of a restarted
container). A lock of another host is never taken over on a guess (a shared filesystem);
``--force-unlock`` does it by hand. Old locks hold a bare PID and still read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from cifarfw.errors import DiskFullError, RunDirError

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
