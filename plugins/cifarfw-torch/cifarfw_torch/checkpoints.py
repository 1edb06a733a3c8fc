"""Checkpoints: a dict of state dicts, written atomically, read with ``weights_only=True``.

A checkpoint holds everything a run needs to continue with the next epoch exactly as an
uninterrupted run would: model, optimizer, scheduler and grad-scaler state, the epoch,
the global RNG states (torch, CUDA, numpy, Python: dropout and anything a model draws)
and the metrics history. Shuffle and augmentation need no state: each epoch's are drawn
from a generator seeded by (seed, epoch). Only plain containers, numbers, strings and
tensors are stored, so ``torch.load(..., weights_only=True)`` reads it without running
any pickled code.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarfw.errors import WeightsError
from cifarfw.runs import atomic_write

FORMAT = 1
KEEP = 2  # the newest checkpoints kept in a run folder
_NAME = re.compile(r"^epoch-(\d+)\.pt$")


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return Path(folder) / f"epoch-{epoch:04d}.pt"


def rng_state() -> dict[str, Any]:
    key, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": str(key),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    nps = state["numpy"]
    keys = nps["keys"].numpy().astype(np.uint32)
    np.random.set_state((nps["key"], keys, nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save(folder: Path, epoch: int, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format and RNG states) as epoch ``epoch``'s checkpoint,
    atomically; then delete all but the newest ``KEEP``. Returns the path."""
    path = checkpoint_path(folder, epoch)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "epoch": epoch, "rng": rng_state(), **state}, buffer)
    atomic_write(path, buffer.getvalue())
    for old in sorted(_checkpoints(folder))[:-KEEP]:
        old[1].unlink(missing_ok=True)
    return path


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in Path(folder).glob("epoch-*.pt"):
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return found


def latest(folder: Path) -> Path | None:
    """The newest checkpoint in ``folder``, or None."""
    found = sorted(_checkpoints(folder))
    return found[-1][1] if found else None


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code) onto the CPU; ``load_state_dict`` moves each
    tensor to its model's device. WeightsError when the file is not a checkpoint."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # truncated zip, tampered pickle, foreign object: all the same to the user
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise WeightsError(f"checkpoint {path} cannot be read ({reason}); resume from an earlier one") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise WeightsError(f"{path} is not a cifarfw-torch checkpoint (format {FORMAT})")
    return state
