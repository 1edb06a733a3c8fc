"""The test kit's adapter for torch models (``cifarfw.testing``'s forward and learns checks).

The torch plugin declares it with ``TrainerSpec(adapter=...)``; the kit asks for it only
when it checks a torch model, so torch is imported then.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cifarfw.specs import ModelSpec
from cifarfw.testing import ContractError


@contextmanager
def _one_thread() -> Iterator[None]:
    """The kit's batches are tiny: one thread is faster than several that contend
    (several times faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


class TorchAdapter:
    """torch.nn.Module models: NCHW float tensors, logits out, Adam on trainable parameters."""

    def build(self, spec: ModelSpec, num_classes: int, options: Mapping[str, Any]) -> torch.nn.Module:
        model = spec.factory(num_classes=num_classes, options=dict(options))
        if not isinstance(model, torch.nn.Module):
            raise ContractError(
                f"model {spec.name!r}: the factory returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model

    def forward(self, model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
        model.eval()
        with _one_thread(), torch.no_grad():
            out = model(_tensor(images))
        return out.float().numpy()

    def count_params(self, model: torch.nn.Module) -> tuple[int, int]:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return int(total), int(trainable)

    def loss_before_after(
        self, model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, steps: int
    ) -> tuple[float, float]:
        x, y = _tensor(images), torch.from_numpy(labels)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ContractError("the model has no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=1e-3)
        model.train()

        def loss_now() -> float:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(0)  # the same dropout masks each time: a deterministic loss
                return float(F.cross_entropy(model(x).float(), y))

        with _one_thread():
            before = loss_now()
            for _ in range(steps):
                optimizer.zero_grad()
                F.cross_entropy(model(x).float(), y).backward()
                optimizer.step()
            return before, loss_now()
