"""A plugin for the crash tests: SIGKILLs its own process at a point named by CIFARFW_TEST_KILL.

``epoch_progress:E`` kills mid-epoch E (after a few training steps), ``checkpoint:E`` right after
checkpoint E is complete (between epochs), ``checkpoint_write:E`` while checkpoint E is being
written (its temporary file is complete, the rename has not happened). Test code only: it is
installed into a test's PYTHONPATH with a dist-info of its own, never shipped.
"""

from __future__ import annotations

import os
import signal

from cifarfw import hookimpl

KIND, _, EPOCH = os.environ.get("CIFARFW_TEST_KILL", ":0").partition(":")
EPOCH = int(EPOCH or 0)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def on_train_progress(epoch, step):
    if KIND == "epoch_progress" and epoch == EPOCH and step >= 2:
        _die()


@hookimpl
def on_checkpoint(epoch):
    if KIND == "checkpoint" and epoch == EPOCH:
        _die()


if KIND == "checkpoint_write":
    _replace = os.replace
    _writes = {"n": 0}

    def _replace_then_die(src, dst, *args, **kwargs):  # checkpoints are renamed into place
        if "checkpoints" in str(dst) and "run.json" not in str(dst):
            _writes["n"] += 1
            if _writes["n"] == EPOCH:
                _die()
        return _replace(src, dst, *args, **kwargs)

    os.replace = _replace_then_die
