"""Executors: where a sweep's runs execute, and the job each one is given.

An executor takes :class:`Job` objects and returns a ``concurrent.futures.Future`` per job
that resolves to an :class:`Outcome` (docs/sweeps.md, "Writing an executor"). Every job is
an ordinary ``cifarfw run`` in a process of its own, told where it runs through
``CIFARFW_RECORD_EXTRA``. :func:`command_for` makes a job idempotent: a job whose run already
exists (a sweep resumed, a task retried by Ray on another node) continues that run with
``cifarfw run --resume`` or, when it ended, is not run again.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cifarfw import runner, runs

# A run with one of these statuses is done: running it again would repeat it. "nan" is
# deterministic (the same config diverges again), "pruned" was the search's decision.
DONE = ("finished", "pruned", "nan")
THREAD_ENV = ("CIFARFW_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
OPTUNA_ENV = "CIFARFW_SWEEP_OPTUNA"  # the trial a pruning reporter reports to (JSON)


@dataclass
class Job:
    """One run of a sweep: ``argv`` are the arguments of ``cifarfw run`` for a fresh run."""

    sweep: str
    index: int
    params: dict[str, Any]
    seed: int
    argv: list[str]
    runs_root: str  # absolute: executors on other nodes see the same path
    env: dict[str, str] = field(default_factory=dict)
    log: str = ""  # the run's console output goes here ("" = inherited)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    """How a job ended: the run's status (``missing`` when no run record exists) and where."""

    index: int
    status: str
    run_id: str = ""
    node_id: str = ""
    returncode: int = 0


class Executor(Protocol):
    """What an executor factory returns."""

    name: str
    capacity: int  # how many runs it executes at once

    def submit(self, job: Job) -> Future[Outcome]: ...

    def close(self) -> None: ...


def existing_run(job: Job) -> runs.RunEntry | None:
    """The run this job already made (its record names the sweep and index), if any."""
    found = [
        (path, rec)
        for path, rec in runs.iter_runs(job.runs_root, warn=None)
        if (rec.get("sweep") or {}).get("name") == job.sweep and (rec.get("sweep") or {}).get("index") == job.index
    ]
    if not found:
        return None
    path, rec = found[-1]
    return runs.RunEntry(path.name, path, rec)


def command_for(job: Job, wait_s: float = 0.5, take_foreign: bool = False) -> list[str] | None:
    """``cifarfw run`` arguments for ``job``: a fresh run, a ``--resume`` of its unfinished run
    (after the process still holding its lock is gone), or None when its run is done.

    ``take_foreign``: a lock held on another host is taken over (``--force-unlock``) instead of
    waited for. Ray runs a task again only after its node died, so there the other host's
    process is gone, though it cannot be checked from here."""
    entry = existing_run(job)
    if entry is None:
        return ["run", *job.argv]
    force = []
    while runs.lock_alive(entry.dir):  # a killed sweep's run finishing its epoch, or a lost task
        owner = runs.RunLock(entry.dir).owner() or {}
        if take_foreign and owner.get("host") not in (None, socket.gethostname()):
            force = ["--force-unlock"]
            break
        time.sleep(wait_s)
        entry = existing_run(job) or entry
    if entry.status in DONE:
        return None
    return ["run", "--resume", str(entry.dir), "--runs-root", job.runs_root, *force]


def outcome_of(job: Job, returncode: int, node_id: str) -> Outcome:
    entry = existing_run(job)
    if entry is None:
        return Outcome(job.index, "missing", "", node_id, returncode)
    return Outcome(job.index, entry.status, entry.id, node_id, returncode)


def child_env(job: Job, executor: str, node_id: str, threads: int | None) -> dict[str, str]:
    """The run's environment: where it runs (for its record), its trial, its thread count."""
    env = {**os.environ, **job.env}
    extra = {"sweep": {"name": job.sweep, "index": job.index, "params": job.params}}
    env[runner.RECORD_EXTRA_ENV] = json.dumps({**extra, "executor": {"name": executor, "node_id": node_id}})
    if threads:
        # Each trainer reads its own variable (docs/sweeps.md): torch CIFARFW_TORCH_THREADS,
        # TensorFlow TF_NUM_INTRAOP_THREADS, BLAS and OpenMP the other two.
        env.update({name: str(threads) for name in THREAD_ENV})
        env["TF_NUM_INTEROP_THREADS"] = "1" if threads == 1 else "2"
    return env


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _child_setup(deathsig: int, cpus: list[int] | None) -> Any:
    """In the child, before exec: die with ``deathsig`` when the parent dies (so a killed sweep
    leaves no run going on behind a resume), and keep to ``cpus``."""
    if _LIBC is None:
        return None

    def setup() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, deathsig)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def start(
    job: Job,
    argv: list[str],
    executor: str,
    node_id: str,
    threads: int | None = None,
    cpus: list[int] | None = None,
    deathsig: int = signal.SIGTERM,
) -> subprocess.Popen:
    """Start ``python -m cifarfw <argv>`` for ``job``; its output goes to ``job.log``."""
    out: Any = None
    if job.log:
        Path(job.log).parent.mkdir(parents=True, exist_ok=True)
        out = open(job.log, "ab")  # noqa: SIM115 - the child owns it; closed below once handed over
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "cifarfw", *argv],
            env=child_env(job, executor, node_id, threads),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            preexec_fn=_child_setup(deathsig, cpus),
        )
    finally:
        if out is not None:
            out.close()


def run_job(
    job: Job, executor: str, node_id: str, threads: int | None = None, deathsig: int = signal.SIGKILL
) -> Outcome:
    """Run ``job`` to its end in this process's care (what a Ray task does, retried by Ray
    on another node when its node dies: that node's lock is taken over)."""
    argv = command_for(job, take_foreign=True)
    if argv is None:
        return outcome_of(job, 0, node_id)
    returncode = start(job, argv, executor, node_id, threads, deathsig=deathsig).wait()
    return outcome_of(job, returncode, node_id)


def core_slots(parallel: int) -> list[list[int]]:
    """The cores of each of ``parallel`` slots, so runs together use the cores once: N runs on
    C cores get C // N cores each; more runs than cores share them one core each."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no pinning, only thread counts
        cores = list(range(os.cpu_count() or 1))
    if parallel >= len(cores):
        return [[cores[i % len(cores)]] for i in range(parallel)]
    per = len(cores) // parallel
    return [cores[i * per : (i + 1) * per] for i in range(parallel)]


class LocalExecutor:
    """``--executor local``: up to ``parallel`` runs at once, each a process on its own cores.

    Processes are started from the calling (main) thread: a child's parent-death signal fires
    when the thread that forked it ends, so pool threads must not fork."""

    name = "local"

    def __init__(self, options: dict[str, Any]) -> None:
        self.capacity = int(options.get("parallel") or 1)
        self.slots = core_slots(self.capacity)
        self.free = list(range(self.capacity))
        self.node_id = socket.gethostname()
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen] = {}

    def submit(self, job: Job) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        argv = command_for(job)
        if argv is None:
            future.set_result(outcome_of(job, 0, self.node_id))
            return future
        with self.lock:
            if not self.free:
                raise RuntimeError("LocalExecutor: more jobs submitted than its capacity")
            slot = self.free.pop(0)
        cpus = self.slots[slot]
        proc = start(job, argv, self.name, self.node_id, threads=len(cpus), cpus=cpus, deathsig=signal.SIGTERM)
        self.procs[job.index] = proc
        threading.Thread(target=self._wait, args=(job, proc, slot, future), daemon=True).start()
        return future

    def _wait(self, job: Job, proc: subprocess.Popen, slot: int, future: Future[Outcome]) -> None:
        returncode = proc.wait()
        try:
            outcome = outcome_of(job, returncode, self.node_id)
        except Exception as err:  # a record that cannot be read is the job's outcome, not a hang
            outcome = Outcome(job.index, f"unreadable: {err}", "", self.node_id, returncode)
        with self.lock:
            self.free.append(slot)
            self.procs.pop(job.index, None)
        future.set_result(outcome)

    def close(self) -> None:
        """Wait for the runs still going (after Ctrl-C they stop at their next checkpoint)."""
        for proc in list(self.procs.values()):
            proc.wait()


def make_local(options: dict[str, Any]) -> LocalExecutor:
    return LocalExecutor(options)
