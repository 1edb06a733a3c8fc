"""What a trained Keras model costs (run.json's ``cost``), measured once after training;
the same keys as the torch trainer's (:mod:`cifarfw_torch.cost`), so ``cifarfw compare``
shows both frameworks alike.

* ``macs_per_image``: an exact per-layer count of multiply-accumulates of one forward pass
  from the built model's layer shapes: a convolution ``H_out * W_out * C_out * C_in/groups
  * k * k``, a depthwise one ``H_out * W_out * C_in * multiplier * k * k``, a dense layer
  ``inputs * units`` (per position it is applied at). Normalisation, activations and
  pooling are not multiply-accumulates and are not counted (as torch's FlopCounterMode
  does not). A layer with a kernel this count does not know makes the count null, naming
  the layer in ``macs_counted_by``, rather than a number that leaves it out;
* ``params``, ``checkpoint_bytes`` (the newest ``epoch-NNNN.keras``: weights and optimizer
  state; null when the run writes none);
* ``inference``: images per second of ``model(x, training=False)`` in one traced function on
  the run's device, at batch 1 and batch 256 over a few hundred test images (all of a
  smaller test set), with TensorFlow's intra-op thread count.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarfw_keras._tf import keras, tf

if TYPE_CHECKING:
    from cifarfw.runs import Run

BATCH_1_IMAGES = 200
BATCH_1_SECONDS = 3.0
BIG_BATCH = 256


def _spatial(shape: Any, data_format: str) -> int:
    dims = list(shape[1:-1]) if data_format == "channels_last" else list(shape[2:])
    return math.prod(int(d) for d in dims)


def layer_macs(layer: Any) -> int | None:
    """Multiply-accumulates of one image through ``layer`` (0 for layers without them; None
    for a layer with a kernel this count does not know)."""
    layers = keras.layers
    if isinstance(layer, layers.DepthwiseConv2D | layers.DepthwiseConv1D):
        kernel = layer.kernel.shape  # (*k, C_in, multiplier); Keras 3 names it kernel here
        return _spatial(layer.output.shape, layer.data_format) * math.prod(int(d) for d in kernel)
    if isinstance(layer, layers.SeparableConv2D | layers.SeparableConv1D):
        depth = layer.depthwise_kernel.shape
        point = layer.pointwise_kernel.shape  # (1, 1, C_in * multiplier, C_out)
        return _spatial(layer.output.shape, layer.data_format) * (
            math.prod(int(d) for d in depth) + math.prod(int(d) for d in point)
        )
    if isinstance(layer, layers.Conv1D | layers.Conv2D | layers.Conv3D) and not isinstance(
        layer, layers.Conv1DTranspose | layers.Conv2DTranspose | layers.Conv3DTranspose
    ):
        kernel = layer.kernel.shape  # (*k, C_in / groups, C_out)
        return _spatial(layer.output.shape, layer.data_format) * math.prod(int(d) for d in kernel)
    if isinstance(layer, layers.Dense):
        positions = math.prod(int(d) for d in layer.output.shape[1:-1])  # 1 for (batch, units)
        return positions * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    if hasattr(layer, "layers") and layer.layers:  # a nested model
        return count_macs(layer)
    if any("kernel" in w.path.split("/")[-1] for w in getattr(layer, "weights", [])):
        return None
    return 0


def count_macs(model: Any) -> int | None:
    """The model's multiply-accumulates per image (None when a layer could not be counted)."""
    total = 0
    for layer in model.layers:
        macs = layer_macs(layer)
        if macs is None:
            return None
        total += macs
    return total


def _uncounted(model: Any) -> list[str]:
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            found += _uncounted(layer)
        elif layer_macs(layer) is None:
            found.append(f"{layer.name} ({type(layer).__name__})")
    return found


def throughput(model: Any, x: Any) -> dict[str, Any]:
    """Images per second of ``model(x, training=False)`` at batch 1 and at batch 256 (or all of ``x``)."""
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    forward(x[:1]).numpy()  # traces the batch-1 graph: outside the clock
    count = min(BATCH_1_IMAGES, int(x.shape[0]))
    started, done = time.perf_counter(), 0
    for index in range(count):
        forward(x[index : index + 1]).numpy()  # .numpy(): waits for the result
        done += 1
        if time.perf_counter() - started > BATCH_1_SECONDS:
            break
    one = done / (time.perf_counter() - started)
    big = x[:BIG_BATCH]
    forward(big).numpy()  # traces (and warms) the batched graph
    started = time.perf_counter()
    forward(big).numpy()
    many = int(big.shape[0]) / (time.perf_counter() - started)
    return {"batch_1_images_per_s": one, "batch_1_images": done, "batch_256_images_per_s": many,
            "batch_256_size": int(big.shape[0])}  # fmt: skip


def measure(run: Run, model: Any, device: str) -> dict[str, Any]:
    """run.json's ``cost`` of ``model`` after its run."""
    from cifarfw_keras import data

    spec = run.model
    images = run.dataset.test.images[: max(BATCH_1_IMAGES, BIG_BATCH)]
    with tf.device(device):
        x = data.to_model_input(tf.cast(images, tf.float32) * (1.0 / 255.0), spec.input_size, spec.mean, spec.std)
        speed = throughput(model, x)
    macs = count_macs(model)
    missing = _uncounted(model) if macs is None else []
    resolved = run.record.get("resolved") or {}
    threads = resolved.get("threads")
    files = sorted(Path(run.dir, "checkpoints").glob("epoch-*.keras"))
    return {
        "macs_per_image": macs,
        "macs_counted_by": "per-layer count (conv, depthwise, separable, dense)"
        + (f"; not counted: {', '.join(missing)}" if missing else ""),
        "params": int(model.count_params()),
        "checkpoint_bytes": files[-1].stat().st_size if files and run.config.checkpoint else None,
        "inference": {
            "device": device,
            "precision": resolved.get("precision", "fp32"),
            "threads": threads.get("intra_op") if isinstance(threads, dict) else threads,
            **speed,
        },
    }


def record(run: Run, model: Any, device: str) -> None:
    """Write ``cost`` and ``resolved.augmentation`` (the config's: Keras applies all of it)."""
    from cifarfw.report import augmentation_summary

    augment = run.config.augment
    values = {"crop_padding": augment.crop_padding, "flip": augment.flip, "brightness": augment.brightness}
    run.record.setdefault("resolved", {})["augmentation"] = augmentation_summary(values)
    if run.is_main:
        run.record["cost"] = measured(lambda: measure(run, model, device))


def measured(measure_cost: Any) -> dict[str, Any]:
    """The cost, or what stopped its measurement: the cost is a note on a finished training,
    never a reason to fail it."""
    try:
        return measure_cost()
    except Exception as err:  # a layer or device this count does not know
        message = f"{type(err).__name__}: {err}".replace("\n", " ")
        print(f"warning: the model's cost was not measured ({message})", file=sys.stderr, flush=True)
        return {"error": message}
