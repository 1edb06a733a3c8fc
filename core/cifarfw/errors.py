"""Errors a user can cause, each with its own exit code and a one-line message.

The CLI prints ``Error: <message>`` and exits with ``exit_code``; nothing here ever
reaches the user as a traceback. docs/exit-codes.md lists the codes.
"""

from __future__ import annotations


class CifarfwError(Exception):
    """Base class: a failure the user can act on. ``str(err)`` is the one-line message."""

    exit_code = 1


class UsageError(CifarfwError):
    """A bad flag, option value, config file or unknown name."""

    exit_code = 2


class DataError(CifarfwError):
    """Missing, truncated, corrupt or unverified data files."""

    exit_code = 3


class WeightsError(CifarfwError):
    """Missing, tampered or mismatched model weights or checkpoints."""

    exit_code = 4


class PluginError(CifarfwError):
    """A plugin failed to load, or two plugins registered the same name."""

    exit_code = 5


class RunDirError(CifarfwError):
    """The runs root or a run folder cannot be written, is locked, or is unknown."""

    exit_code = 6


class DiskFullError(CifarfwError):
    """The disk filled up while writing; nothing half-written was left behind."""

    exit_code = 7


class NonFiniteLossError(CifarfwError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 8


class RunStopped(CifarfwError):
    """A reporter asked the run to stop at its next checkpoint (a sweep pruning it, say);
    not a failure: the run ends with ``status`` and the command succeeds."""

    exit_code = 0

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class RunInterrupted(CifarfwError):
    """SIGINT or SIGTERM stopped the run at a safe point, after a checkpoint."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
