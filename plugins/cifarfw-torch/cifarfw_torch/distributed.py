"""Data-parallel training on torch.distributed: one process per device, DistributedDataParallel.

A run is distributed when its launcher (``torchrun``, or ``cifarfw run --nproc-per-node N``,
which hands over to torchrun) starts several processes and sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT; the core reads them into ``run.rank``,
``run.world_size`` and ``run.local_rank``. Then :class:`Group` makes the trainer's
single-process loop a data-parallel one:

* Backend: ``gloo`` on the CPU, ``nccl`` on CUDA, where process ``LOCAL_RANK`` uses
  ``cuda:LOCAL_RANK``. Every collective has a timeout (``CIFARFW_DIST_TIMEOUT`` seconds,
  default :data:`DEFAULT_TIMEOUT_S`): a process whose peer hangs fails instead of waiting
  forever; a peer that dies closes its sockets and the others fail at once.
* Batches: ``--batch-size`` is the GLOBAL batch. Every process draws the same epoch
  permutation and per-image augmentation from (seed, epoch), exactly what a single-process
  run draws, and trains on its contiguous block of each global batch (``batch_size /
  world_size`` images). The learning rate is used as given, not rescaled: the gradient
  DDP averages is the gradient of the global batch's mean loss (each local loss is
  weighted by its share of the batch, which matters only for an uneven last batch), so a
  distributed run follows the hyper-parameters of a single-process run with that batch.
* Model randomness (dropout): each process reseeds torch's global generator from
  (seed, epoch, rank) at each epoch, so processes draw different masks and a resumed run
  draws the ones an uninterrupted run would have drawn.
* Batch norm: each process normalises with its local batch's statistics (plain DDP, no
  SyncBatchNorm); the running statistics are averaged over processes after every epoch,
  so all processes hold identical weights and buffers before evaluation and checkpoints.
* Metrics: train loss/accuracy sums and counts are all-reduced; the test split is
  evaluated in contiguous shards, one per process, and its loss sum and predictions are
  reduced and gathered, so every process reports the global numbers.
* Files: only rank 0 writes checkpoints (the core gives other ranks no reporters, hence
  no run.json or TensorBoard), before any collective of that epoch's end, so a peer that
  died cannot cost it; then the processes meet (every one waits for the checkpoint) and
  agree whether a SIGINT/SIGTERM reached any of them, and if so all stop after it.

With one process every method of :class:`Group` is the identity, so the trainer has one
code path.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cifarfw.errors import CifarfwError, RunInterrupted, UsageError

if TYPE_CHECKING:
    from cifarfw.config import RunConfig
    from cifarfw.runs import Run

TIMEOUT_ENV = "CIFARFW_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 120.0


def launcher_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) as the launcher's environment gives them."""
    from cifarfw.runner import world_from_env

    return world_from_env()


def timeout() -> datetime.timedelta:
    """The collective timeout: ``CIFARFW_DIST_TIMEOUT`` seconds, else :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def validate_config(config: RunConfig) -> None:
    """What a distributed launch refuses, checked before any run folder exists."""
    _, world_size, local_rank = launcher_world()
    if world_size <= 1:
        return
    if not torch.distributed.is_available():
        raise UsageError("this torch build has no torch.distributed; launch a single process instead")
    if config.batch_size % world_size:
        lower = max(world_size, config.batch_size // world_size * world_size)
        raise UsageError(
            f"--batch-size {config.batch_size} is the global batch and must be divisible by the "
            f"{world_size} processes (each trains on batch_size / {world_size}); try --batch-size {lower}"
        )
    if config.device.replace("gpu", "cuda", 1).startswith("cuda:"):
        raise UsageError(
            f"--device {config.device}: in a distributed run each process uses cuda:LOCAL_RANK; "
            "use --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    if config.device != "cpu" and torch.cuda.is_available() and local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"process with LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
            "start at most that many processes per node (--nproc-per-node)"
        )
    timeout()


def process_device(device: torch.device, run: Run) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` in a distributed CUDA run."""
    if run.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", run.local_rank)
        torch.cuda.set_device(device)
    return device


@dataclass
class Group:
    """This process's place in a data-parallel run (``world_size`` 1: a single process)."""

    rank: int = 0
    world_size: int = 1
    backend: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    # --- data ---------------------------------------------------------------------------

    def shard(self, start: int, stop: int) -> tuple[int, int]:
        """This process's contiguous block of positions ``start:stop`` (sizes differ by at most one)."""
        if not self.active:
            return start, stop
        base, extra = divmod(stop - start, self.world_size)
        first = start + self.rank * base + min(self.rank, extra)
        return first, first + base + (1 if self.rank < extra else 0)

    def weight_loss(self, loss: torch.Tensor, local: int, total: int) -> torch.Tensor:
        """The local mean loss weighted so that DDP's average of gradients is the gradient of
        the global batch's mean loss (weight 1 unless the batch splits unevenly)."""
        if not self.active or local * self.world_size == total:
            return loss
        return loss * (local * self.world_size / total)

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Reseed torch's global generator (dropout) from (seed, epoch, rank)."""
        if self.active:
            state = np.random.SeedSequence([seed, epoch, self.rank]).generate_state(2, dtype=np.uint32)
            torch.manual_seed(int(state[0]) << 32 | int(state[1]))

    # --- model --------------------------------------------------------------------------

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel (parameters broadcast from rank 0); buffers are
        not broadcast at each forward (see :meth:`average_buffers`)."""
        if not self.active:
            return module
        if not any(p.requires_grad for p in module.parameters()):
            raise UsageError("this model has no trainable parameters; a distributed run has nothing to train")
        from torch.nn.parallel import DistributedDataParallel

        options = inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {}
        if not no_buffer_sync:  # torch < 2.13
            no_buffer_sync = {"broadcast_buffers": False}
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync)

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (batch-norm running statistics) over processes."""
        if not self.active:
            return
        for buffer in module.buffers():
            if buffer.dtype.is_floating_point:
                torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
                buffer.div_(self.world_size)

    # --- metrics ------------------------------------------------------------------------

    def sum(self, *values: torch.Tensor | float) -> list[float]:
        """Each value summed over processes, as Python floats (one collective)."""
        if not self.active:
            return [float(v) for v in values]
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values])
        torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.SUM)
        return packed.tolist()

    def mean(self, value: torch.Tensor | float) -> float:
        (total,) = self.sum(value)
        return total / self.world_size

    def gather(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every process's :meth:`shard` of a length-``n`` vector, concatenated, on every process."""
        if not self.active:
            return local
        width = -(-n // self.world_size)
        padded = torch.zeros(width, dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded)
        sizes = [self._shard_size(r, n) for r in range(self.world_size)]
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    def _shard_size(self, rank: int, n: int) -> int:
        return n // self.world_size + (1 if rank < n % self.world_size else 0)

    # --- agreement ----------------------------------------------------------------------

    def agree_on_stop(self, run: Run) -> None:
        """A SIGINT/SIGTERM that reached any process stops every process at this epoch's end.
        A collective, so also the barrier at which processes wait for rank 0's checkpoint."""
        if self.active:
            signum = torch.tensor([run.stop_requested], dtype=torch.int64, device=self.device)
            torch.distributed.all_reduce(signum, op=torch.distributed.ReduceOp.MAX)
            run.stop_requested = run.stop_requested or int(signum.item())

    def interrupted(self, run: Run) -> RunInterrupted:
        """The error that stops this process after a signal; on ranks other than 0 it names no
        run to resume (their run id is a scratch folder's), rank 0's own message does."""
        if run.is_main:
            return run.interrupted()
        name = signal.Signals(run.stop_requested).name if run.stop_requested else "stop"
        return RunInterrupted(
            f"{name}: process {self.rank} stopped with rank 0 after its checkpoint", run.stop_requested or 2
        )


@contextlib.contextmanager
def process_group(run: Run, device: torch.device) -> Iterator[Group]:
    """Join the launcher's process group for the run's duration (nothing for one process).

    Records the backend in ``config.backend`` and run.json. The process group is destroyed
    at the end (after a barrier) unless someone else had created it."""
    if run.world_size <= 1:
        yield Group(device=device)
        return
    dist = torch.distributed
    backend = "nccl" if device.type == "cuda" else "gloo"
    created = not dist.is_initialized()
    if created:
        options = {"device_id": device} if backend == "nccl" else {}
        try:
            dist.init_process_group(backend=backend, timeout=timeout(), **options)
        except ValueError as err:  # MASTER_ADDR/MASTER_PORT missing: not a real launcher
            raise UsageError(
                f"cannot join the distributed run ({err}); launch with torchrun or --nproc-per-node"
            ) from None
    else:
        backend = dist.get_backend()
    group = Group(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=backend, device=device)
    run.config.backend = backend
    run.record.setdefault("config", {})["backend"] = backend
    run.record["config"]["world_size"] = group.world_size
    per_process = run.config.batch_size // group.world_size
    run.record.setdefault("resolved", {})["distributed"] = (
        f"{group.world_size} processes ({backend}), {per_process} images each per step, test split sharded"
    )
    if not created:
        yield group
        return
    try:
        yield group
    except BaseException as err:
        # A failed run: NCCL's teardown is collective and would wait for peers that may be
        # gone (the launcher ends this process); gloo's only closes this process's sockets.
        if backend == "gloo":
            dist.destroy_process_group()
        if lost_peer(err):
            resume = f"`cifarfw run --resume {run.id}` with the same launch options" if run.is_main else "--resume"
            raise CifarfwError(
                f"the distributed run lost a process ({_first_sentence(err)}); the last checkpoint is kept: "
                f"find out why that process stopped (its own output, above), then continue with {resume}"
            ) from None
        raise
    dist.barrier()  # leave together: a process exiting while a peer still uses the group can abort
    dist.destroy_process_group()


def lost_peer(err: BaseException) -> bool:
    """True for the errors a collective raises when a peer died, hung past the timeout or
    became unreachable (gloo raises plain RuntimeErrors, newer backends DistError)."""
    if isinstance(err, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out")
    )


def _first_sentence(err: BaseException) -> str:
    """A backend error's message without its source-file prefix, up to its first sentence."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    return re.sub(r"^\[[^\]]*\]\s*", "", lines[0]).split(". ")[0][:200]
