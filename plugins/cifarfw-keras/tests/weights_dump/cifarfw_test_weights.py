"""A plugin for the distributed tests: at each epoch end, saves the live Keras model's weights
of its rank to ``$CIFARFW_TEST_WEIGHTS_DIR/rank<R>-epoch<E>.npz``; with
``CIFARFW_TEST_SIGTERM_EPOCH=E``, sends its own process SIGTERM during epoch E's training.

It finds the model among the live objects (the trainer does not hand it to plugins), so the
trainer needs no test hook. Test code only: installed into a test's PYTHONPATH with a
dist-info of its own, never shipped.
"""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import numpy as np

from cifarfw import hookimpl

_signalled = []


@hookimpl
def on_train_progress(epoch):
    if os.environ.get("CIFARFW_TEST_SIGTERM_EPOCH") == str(epoch) and not _signalled:
        _signalled.append(epoch)
        os.kill(os.getpid(), signal.SIGTERM)


@hookimpl
def on_epoch_end(run, epoch):
    from cifarfw_keras._tf import keras

    models = {id(m): m for m in gc.get_objects() if isinstance(m, keras.Sequential)}
    assert len(models) == 1, f"expected one keras.Sequential, found {len(models)}"
    (model,) = models.values()
    out = Path(os.environ["CIFARFW_TEST_WEIGHTS_DIR"])
    np.savez(out / f"rank{run.rank}-epoch{epoch}.npz", **{w.path: np.asarray(w.numpy()) for w in model.weights})
