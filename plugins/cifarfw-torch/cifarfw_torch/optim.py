"""Optimizers and learning-rate schedules from a RunConfig.

Every schedule is a ``LambdaLR`` stepped once per batch (``total_steps`` = epochs x
batches per epoch), so its state is two integers and resuming continues it exactly:

* ``constant``: ``lr`` throughout.
* ``step``: ``lr * step_gamma ** (epoch // step_epochs)`` (changes at epoch boundaries).
* ``cosine``: from ``lr`` down to 0 along half a cosine, per batch.
* ``onecycle``: linear warm-up from ``lr / 25`` to ``lr`` over ``warmup_fraction`` of the
  steps, then cosine annealing to ``lr / 25 / 1e4`` (the usual one-cycle shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from cifarfw.config import RunConfig

ONECYCLE_START_DIVISOR = 25.0
ONECYCLE_FINAL_DIVISOR = 1e4


def make_optimizer(
    params: Iterable[torch.nn.Parameter], config: RunConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Adam, AdamW, SGD (momentum, Nesterov, weight decay) or RMSprop over ``params``.

    The fused implementations are used where torch has them for the device: one kernel
    for all parameters instead of a Python loop over them (measurable on small models).
    RMSprop has none (torch's foreach kernels serve CUDA); it keeps torch's defaults
    (``alpha`` 0.99, ``eps`` 1e-8, no momentum: ``--momentum`` is SGD's) with the run's
    ``lr`` and ``weight_decay``.
    """
    params = list(params)
    fused = device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in params)
    name = config.optimizer
    if name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")  # the config layer has already refused it


def lr_factor(config: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of ``config.lr`` at (0-based) global step ``step``."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "constant":
        return lambda step: 1.0
    if config.schedule == "step":
        return lambda step: config.step_gamma ** ((step // steps_per_epoch) // config.step_epochs)
    if config.schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if config.schedule == "onecycle":
        warmup = round(config.warmup_fraction * total)
        start = 1.0 / ONECYCLE_START_DIVISOR
        final = start / ONECYCLE_FINAL_DIVISOR

        def onecycle(step: int) -> float:
            if step < warmup:
                return start + (1.0 - start) * step / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return onecycle
    raise ValueError(f"unknown schedule {config.schedule!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: RunConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's schedule as a LambdaLR, to be stepped after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
