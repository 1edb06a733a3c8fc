"""What a trained model costs (run.json's ``cost``), measured once after training.

* ``macs_per_image``: multiply-accumulates of one forward pass of one image, from
  ``torch.utils.flop_counter.FlopCounterMode`` (it counts 2 flops per multiply-accumulate
  of convolutions and matrix products; normalisation, activations and pooling are not
  multiply-accumulates and are not counted, as in the usual MAC tables);
* ``params``: the model's parameters; ``checkpoint_bytes``: the newest checkpoint on disk
  (model, optimizer and schedule state; null when the run writes none);
* ``inference``: images per second in eval mode on the run's device with its precision,
  at batch 1 and batch 256, over a few hundred of the test images (a smaller test set: all
  of it, ``batch_256_size`` saying the batch used), with the thread count.

The Keras trainer records the same keys (:mod:`cifarfw_keras.cost`), so ``cifarfw
compare`` shows both frameworks alike.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarfw.report import augmentation_summary
from cifarfw.runs import Run

BATCH_1_IMAGES = 200  # single-image forward passes timed (fewer when the time budget runs out)
BATCH_1_SECONDS = 3.0  # the batch-1 measurement stops after this long (AlexNet on a CPU)
BIG_BATCH = 256


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of ``model(example)`` per image (eval mode, no autograd)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2 // len(example)


def _images(run: Run, count: int, size: int, device: torch.device, memory_format: Any) -> torch.Tensor:
    """``count`` test images as the model takes them (normalised, NCHW, resized to ``size``)."""
    spec, images = run.model, run.dataset.test.images[:count]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.to(device).contiguous(memory_format=memory_format)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(forward: Callable[[torch.Tensor], Any], x: torch.Tensor) -> dict[str, Any]:
    """Images per second of ``forward`` at batch 1 and at batch 256 (or all of ``x``)."""
    device = x.device
    with torch.inference_mode():
        forward(x[:1])  # warm-up: lazy initialisation, kernels chosen, caches filled
        _sync(device)
        started, done = time.perf_counter(), 0
        for index in range(min(BATCH_1_IMAGES, len(x))):
            forward(x[index : index + 1])
            done += 1
            if time.perf_counter() - started > BATCH_1_SECONDS:
                break
        _sync(device)
        one = done / (time.perf_counter() - started)
        big = x[:BIG_BATCH]
        forward(big[: min(len(big), 8)])  # warm-up of the batched path
        _sync(device)
        started = time.perf_counter()
        forward(big)
        _sync(device)
        many = len(big) / (time.perf_counter() - started)
    return {"batch_1_images_per_s": one, "batch_1_images": done, "batch_256_images_per_s": many,
            "batch_256_size": len(big)}  # fmt: skip


def newest_checkpoint_bytes(folder: Path) -> int | None:
    files = [p for p in Path(folder).glob("epoch-*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime).stat().st_size if files else None


def measure(run: Run, model: nn.Module, forward: Callable[[torch.Tensor], Any], device: torch.device,
            memory_format: Any = torch.contiguous_format) -> dict[str, Any]:  # fmt: skip
    """run.json's ``cost`` of ``model`` (``forward``: the trainer's eval forward, with its
    autocast and compiled module)."""
    size = run.model.input_size
    macs = count_macs(model, _images(run, 1, size, device, memory_format))
    net_was_training = model.training
    model.eval()
    try:
        x = _images(run, max(BATCH_1_IMAGES, BIG_BATCH), size, device, memory_format)
        speed = throughput(forward, x)
    finally:
        model.train(net_was_training)
    precision = (run.record.get("resolved") or {}).get("precision", "fp32")
    return {
        "macs_per_image": macs,
        "macs_counted_by": "torch.utils.flop_counter.FlopCounterMode (flops / 2)",
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": newest_checkpoint_bytes(run.dir / "checkpoints") if run.config.checkpoint else None,
        "inference": {"device": str(device), "precision": precision, "threads": torch.get_num_threads(), **speed},
    }


def applied_augmentation(run: Run, dropped: list[str]) -> str:
    """The augmentation the run trained with: its config's, less what a feature cache dropped."""
    augment = run.config.augment
    keys = {"crop": "crop_padding", "brightness": "brightness", "flip": "flip"}
    values = {"crop_padding": augment.crop_padding, "flip": augment.flip, "brightness": augment.brightness}
    for name in dropped:
        values[keys[name]] = 0
    text = augmentation_summary(values)
    return f"{text} ({', '.join(dropped)} dropped by the feature cache)" if dropped else text


def record(run: Run, model: nn.Module, forward: Callable[[torch.Tensor], Any], runtime: Any, source: Any) -> None:
    """Write ``cost`` and ``resolved.augmentation`` (what was applied) into the run's record;
    rank 0 only (the others' records are not kept)."""
    plan = source.describe().get("feature_cache") or {}
    run.record.setdefault("resolved", {})["augmentation"] = applied_augmentation(run, list(plan.get("dropped", [])))
    if not run.is_main:
        return
    try:  # the cost is a note on a finished training, never a reason to fail it
        run.record["cost"] = measure(run, model, forward, runtime.device, runtime.memory_format)
    except Exception as err:
        run.record["cost"] = {"error": " ".join(f"{type(err).__name__}: {err}".split())}
        print(f"warning: the model's cost was not measured ({run.record['cost']['error']})", file=sys.stderr)
