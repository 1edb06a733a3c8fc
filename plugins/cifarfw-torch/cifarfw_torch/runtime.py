"""Where and how a run computes: device, precision, memory format, seeds, determinism.

Precision policy (``--precision``):

* ``auto``: fp16 autocast with a GradScaler (AMP) on CUDA; bf16 autocast on a CPU with
  native bfloat16 instructions (avx512_bf16 / amx_bf16 on x86, bf16 on Arm); else fp32.
* ``bf16``: refused (UsageError) where the device has no native bfloat16: emulated bf16
  on a CPU is slower than fp32.
* ``fp16``: CUDA only (loss scaling; fp16 autocast on a CPU is slow and unscaled).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cifarfw.errors import UsageError
from cifarfw.hardware import cpu_has_native_bf16

if TYPE_CHECKING:
    from cifarfw.config import RunConfig
    from cifarfw.specs import ModelSpec

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """The resolved device and precision of one run."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16 (never auto)
    channels_last: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.precision)

    @property
    def uses_grad_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 has fp32's exponent range and does not."""
        return self.precision == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to the run's precision (a no-op for fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> dict[str, Any]:
        """What run.json's ``resolved`` records."""
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last}

    def accelerator(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "cpu"


@functools.cache
def cpu_bf16_native() -> bool:
    """True when this CPU computes bfloat16 natively and torch's bf16 kernels run here."""
    if not cpu_has_native_bf16():
        return False  # emulated bf16 would be slower than fp32
    try:  # the kernels exist and give the right answer
        ones = torch.ones(8, 8, dtype=torch.bfloat16)
        return bool(((ones @ ones) == 8).all())
    except RuntimeError:
        return False


def resolve_device(requested: str) -> torch.device:
    """``auto``/``cpu``/``cuda[:N]``/``gpu[:N]`` -> a device; UsageError when it is not there."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    name = requested.replace("gpu", "cuda", 1)
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise UsageError(
            f"--device {requested}: no CUDA device is available here (torch {torch.__version__}, {built}); "
            "use --device cpu or --device auto"
        )
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UsageError(f"--device {requested}: this machine has {count} CUDA device(s), numbered 0-{count - 1}")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision actually used; UsageError for one the device cannot do well."""
    if device.type == "cuda":
        if requested == "auto":
            return "fp16"
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise UsageError(
                f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use fp16, fp32 or auto"
            )
        return requested
    if requested == "fp16":
        raise UsageError(
            "--precision fp16 needs a CUDA device (AMP with loss scaling); on a CPU use bf16, fp32 or auto"
        )
    if requested == "bf16" and not cpu_bf16_native():
        raise UsageError(
            "--precision bf16: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16), so bf16 would be "
            "slower than fp32; use --precision fp32 or auto"
        )
    if requested == "auto":
        return "bf16" if cpu_bf16_native() else "fp32"
    return requested


def resolve(config: RunConfig) -> Runtime:
    device = resolve_device(config.device)
    return Runtime(device, resolve_precision(config.precision, device), bool(config.channels_last))


def validate_config(config: RunConfig, model: ModelSpec) -> None:
    """Everything the torch trainer refuses, checked before any run folder exists."""
    runtime = resolve(config)
    if config.nesterov and (config.optimizer != "sgd" or config.momentum <= 0):
        raise UsageError("nesterov needs --optimizer sgd and --momentum > 0")
    if config.compile and runtime.device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise UsageError(
            "--compile on a CPU needs a C++ compiler (g++ or clang++) on PATH; install one or drop --compile"
        )
    if runtime.device.type == "cpu":
        env_threads()  # a bad CIFARFW_TORCH_THREADS is refused before the run folder exists


THREADS_ENV = "CIFARFW_TORCH_THREADS"


def env_threads() -> int | None:
    """``CIFARFW_TORCH_THREADS`` as a count (None when unset or ``auto``); UsageError when malformed."""
    wanted = os.environ.get(THREADS_ENV, "").strip()
    if not wanted or wanted == "auto":
        return None
    try:
        count = int(wanted)
    except ValueError:
        count = 0
    if count < 1:
        raise UsageError(f"{THREADS_ENV} must be a positive integer or auto, got {wanted!r}")
    return count


def busy_cores(window_s: float = 0.5) -> float | None:
    """How many cores other processes keep busy: /proc/stat sampled over ``window_s`` while
    this process sleeps (so its own past work does not count, unlike the load average).
    None where /proc/stat does not exist."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except (OSError, IndexError):
            return None
        ticks = [int(f) for f in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return sum(ticks), idle

    first = sample()
    if first is None:
        return None
    time.sleep(window_s)
    second = sample()
    if second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def choose_threads() -> tuple[int, str]:
    """Intra-op CPU threads for a run, and why.

    ``CIFARFW_TORCH_THREADS=N`` (or ``OMP_NUM_THREADS``) decides when set. Otherwise torch's
    default (one per core) is used unless other processes already keep cores busy: every
    parallel op ends in a barrier, and a barrier that waits for a thread the OS has
    descheduled costs a time slice, so on an oversubscribed machine a 2-thread training
    runs many times slower than a 1-thread one. Then the run takes the cores left free
    (rounded), at least one. Busy cores are measured over half a second at the start
    (:func:`busy_cores`; the 1-minute load average where /proc/stat is missing).
    """
    wanted = env_threads()
    if wanted is not None:
        return wanted, THREADS_ENV
    default = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        return default, "default"
    busy = busy_cores()
    if busy is None:
        if not hasattr(os, "getloadavg"):
            return default, "default"
        busy = os.getloadavg()[0]
    free = max(1, min(default, int((os.cpu_count() or default) - busy + 0.5)))
    if free < default:
        return free, f"{busy:.1f} cores busy with other work"
    return default, "default"


def _threads(count: int) -> str:
    return f"{count} thread{'s' if count != 1 else ''}"


def plan_threads(deterministic: bool, recorded: Any = None) -> tuple[int, str]:
    """A CPU run's intra-op thread count, and why in words (run.json's notes, the console).

    The count changes the numbers (parallel reductions add in another order), so a run's
    results hold only for the count it ran with:

    * a resume (``recorded``: the count in the run's record) continues with that count;
    * ``deterministic`` runs use ``CIFARFW_TORCH_THREADS`` when set, else torch's default
      (one per core, or ``OMP_NUM_THREADS``), whatever the load;
    * other runs take :func:`choose_threads`: fewer threads on a machine that other work
      keeps busy, for speed.
    """
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        why = f"resuming with {_threads(recorded)} as the run started"
        wanted = env_threads()
        if wanted is not None and wanted != recorded:
            why += f" ({THREADS_ENV}={wanted} is not applied: another count would give other numbers)"
        return recorded, why
    if deterministic:
        wanted = env_threads()
        if wanted is not None:
            return wanted, f"{_threads(wanted)}, as {THREADS_ENV} sets, whatever the load (--deterministic)"
        count = torch.get_num_threads()
        source = "OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS") else "one per core"
        return count, f"{_threads(count)} ({source}), fixed by --deterministic whatever the load"
    count, tag = choose_threads()
    if tag == THREADS_ENV:
        return count, f"{_threads(count)}, as {THREADS_ENV} sets"
    if tag == "default":
        source = "OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS") else "one per core"
        return count, f"{_threads(count)} ({source})"
    return count, (
        f"using {count} of {_threads(torch.get_num_threads())}: {tag} at the start (for speed; "
        f"--deterministic or {THREADS_ENV}=N fixes the count)"
    )


@contextlib.contextmanager
def cpu_threads(device: torch.device, chosen: tuple[int, str] | None = None) -> Iterator[tuple[int, str]]:
    """Use ``chosen`` (count, why) threads, else :func:`choose_threads`'s, for the run's
    duration (CPU runs), then restore."""
    previous = torch.get_num_threads()
    if device.type != "cpu":
        threads, why = previous, "default"
    else:
        threads, why = chosen or choose_threads()
    torch.set_num_threads(threads)
    try:
        yield threads, why
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model init, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the run's duration, restored afterwards
    (it is process-global state, and tests run many trainings in one process). Ops with no
    deterministic kernel (max-pool backward on CUDA, say) warn instead of stopping the run."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    if enabled != previous:  # the call imports torch._inductor (seconds): only when it changes something
        torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not enabled
    try:
        yield
    finally:
        if enabled != previous:
            torch.use_deterministic_algorithms(previous)
        torch.backends.cudnn.benchmark = previous_benchmark


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for one epoch's shuffle and augmentation, derived from (seed, epoch)
    only, so a resumed run draws exactly what an uninterrupted one would have drawn."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator
