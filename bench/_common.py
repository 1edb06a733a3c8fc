"""Shared by the benchmarks: run a command as a measured child process, read its JSON line.

Each side of a comparison runs in its own process so that each one's peak memory (the
RSS high-water mark from ``os.wait4``, the child's own rusage) is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3


@dataclass
class Measured:
    """A finished child process: exit code, output, wall time and peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int

    @property
    def peak_rss_gib(self) -> float:
        return round(self.peak_rss_bytes / GIB, 3)


def run_measured(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` to completion; its output goes through temporary files (no pipe limits)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        # ru_maxrss is in KiB on Linux
        return Measured(
            os.waitstatus_to_exitcode(status),
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            wall,
            usage.ru_maxrss * 1024,
        )


def last_json(text: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def load_average() -> float | None:
    """The 1-minute load average: how busy the machine was (other work slows both sides)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
