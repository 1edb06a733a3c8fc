"""Checkpoints in Keras's own format: ``epoch-NNNN.keras`` (weights + optimizer state) and a
JSON sidecar ``epoch-NNNN.json`` (epoch, seed, model, accumulated training time).

Each file is written under a temporary name and renamed into place, so a crash leaves the
previous checkpoint intact; the last two epochs are kept. Loading uses
``keras.saving.load_model(..., safe_mode=True)``: no arbitrary code from a checkpoint runs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from cifarfw.errors import DiskFullError, WeightsError
from cifarfw.runs import write_json

KEEP = 2
_NAME = re.compile(r"^epoch-(\d{4,})\.keras$")


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch:04d}.keras"


def sidecar_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def save(model: Any, directory: Path, epoch: int, state: dict[str, Any], keep: int = KEEP) -> Path:
    """Write the checkpoint of ``epoch`` atomically; drop all but the newest ``keep``."""
    directory = Path(directory)
    target = checkpoint_path(directory, epoch)
    temp = directory / f".{target.stem}.{secrets.token_hex(4)}.tmp.keras"  # Keras insists on .keras
    try:
        model.save(temp)
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, target)
        write_json(sidecar_path(target), {"epoch": int(epoch), **state})
    except BaseException as err:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise DiskFullError(f"the disk is full while writing {target}; free space and resume the run") from None
        raise
    prune(directory, keep)
    return target


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes a kill interrupted: ``.epoch-NNNN.*.tmp.keras``
    (the model) and ``.epoch-NNNN.json.*.tmp`` (the sidecar). ``save`` removes its own on any
    error it lives through, but nothing runs after SIGKILL."""
    removed = []
    for pattern in (".epoch-*.tmp.keras", ".epoch-*.json.*.tmp"):
        for path in sorted(Path(directory).glob(pattern)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def listing(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint in ``directory``, oldest first."""
    found = []
    for path in Path(directory).glob("epoch-*.keras"):
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune(directory: Path, keep: int = KEEP) -> None:
    for _, path in listing(directory)[:-keep]:
        for stale in (path, sidecar_path(path)):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def load(path: Path | str, model_name: str) -> tuple[Any, dict[str, Any]]:
    """The compiled model (weights and optimizer state restored) and the sidecar state of a
    checkpoint file, or of the newest checkpoint in a folder. WeightsError when it is missing,
    unreadable or belongs to another model."""
    from cifarfw_keras._tf import keras

    path = Path(path)
    if path.is_dir():
        found = listing(path)
        if not found:
            raise WeightsError(f"no checkpoint (epoch-NNNN.keras) in {path}; give a checkpoint file or another run")
        path = found[-1][1]
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist; check the path or resume from another checkpoint")
    state = _read_state(path)
    if state.get("model") not in (None, model_name):
        raise WeightsError(f"checkpoint {path} is of model {state['model']!r}, not {model_name!r}; pick the right run")
    try:
        model = keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as err:  # zip, HDF5 and config errors all mean the same to the user
        raise WeightsError(
            f"checkpoint {path} cannot be loaded ({_one_line(err)}); it is corrupt or not a Keras checkpoint: "
            "resume from an earlier checkpoint"
        ) from None
    if getattr(model, "optimizer", None) is None:
        raise WeightsError(f"checkpoint {path} holds no optimizer state; it was not written by cifarfw's keras trainer")
    return model, state


def _read_state(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    state: dict[str, Any] = {}
    if side.is_file():
        try:
            state = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise WeightsError(
                f"checkpoint state {side} is unreadable ({_one_line(err)}); delete it to resume"
            ) from None
    if "epoch" not in state:
        match = _NAME.match(path.name)
        if not match:
            raise WeightsError(f"cannot tell the epoch of checkpoint {path}: name it epoch-NNNN.keras")
        state["epoch"] = int(match.group(1))
    if not isinstance(state["epoch"], int) or state["epoch"] < 0:
        raise WeightsError(f"checkpoint state {side} has a bad epoch {state['epoch']!r}")
    return state
