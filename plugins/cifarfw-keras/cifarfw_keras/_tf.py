"""Import TensorFlow and Keras once, quietly, with the TensorFlow backend.

TensorFlow prints C++ start-up lines (oneDNN notices, absl's "log messages before
InitializeLog") straight to file descriptor 2, ignoring Python's logging. Unless the user
asked for TensorFlow's logs (TF_CPP_MIN_LOG_LEVEL set by them, or CIFARFW_TF_LOGS=1), the
import runs with fd 2 pointed at /dev/null and TensorFlow's and absl's loggers are set to
errors only; cifarfw's console reporter shows progress instead of Keras's bars.

Importing this module is what imports TensorFlow: only trainers, factories and
validators do it, never a plugin module (``cifarfw --help`` must stay fast).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


def _user_wants_tf_logs() -> bool:
    return os.environ.get("CIFARFW_TF_LOGS") == "1" or "TF_CPP_MIN_LOG_LEVEL" in os.environ


@contextlib.contextmanager
def _stderr_silenced(enabled: bool) -> Iterator[None]:
    """Point fd 2 at /dev/null for the block (C++ writes bypass sys.stderr)."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _load_triton_first() -> None:
    """Load torch's triton (when installed) before TensorFlow: loaded after TensorFlow's
    libraries, libtriton segfaults the process as soon as torch imports it (e.g. a torch
    optimizer after a keras run in one `cifarfw run --plugin keras-cnn --plugin torch-cnn`)."""
    import importlib.util

    try:
        if importlib.util.find_spec("triton") is not None:
            import triton  # noqa: F401
    except Exception:  # a broken triton only matters to torch, which will say so itself
        pass


def _import() -> tuple[Any, Any]:
    quiet = not _user_wants_tf_logs()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    _load_triton_first()
    with _stderr_silenced(quiet):
        import keras as keras_module
        import tensorflow as tf_module
    if keras_module.backend.backend() != "tensorflow":
        from cifarfw.errors import UsageError

        raise UsageError(
            f"Keras was already loaded with the {keras_module.backend.backend()!r} backend; the keras trainer needs "
            "TensorFlow: unset KERAS_BACKEND or set it to tensorflow"
        )
    if quiet:
        import logging

        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        tf_module.get_logger().setLevel(logging.ERROR)
    return tf_module, keras_module


tf, keras = _import()

__all__ = ["keras", "tf"]
