"""A deterministic, learnable 10-class 32x32 dataset generated in well under a second.

Each class is a striped pattern with its own orientation and frequency and its own colour,
drawn at a random phase with noise, so a small CNN learns it in a few epochs while a
constant guess stays at 10%. For demos and tests; no files needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cifarfw.data import Dataset, Split

CLASS_NAMES = tuple(f"pattern{i}" for i in range(10))
_ANGLES = np.linspace(0, np.pi, 5, endpoint=False)
MAX_SIZE = 1_000_000  # 3 GB of images: more is a typo, not a demo


def generate(n: int, seed: int, size: int = 32, noise: float = 0.35) -> Split:
    """``n`` images, classes balanced and shuffled, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    # Ten class templates of one period each; an image is its template at a random phase.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = _ANGLES[np.arange(10) % 5][:, None, None]
    freq = np.where(np.arange(10) < 5, 2.0, 4.0)[:, None, None] * (2 * np.pi / size)
    proj = (freq * (np.cos(angle) * xx + np.sin(angle) * yy)).astype(np.float32)  # (10, size, size)
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    wave = 0.5 + 0.5 * np.sin(proj[labels] + phase)  # (n, size, size) in [0, 1]
    classes = np.arange(10)
    colour = np.stack([(classes * 37 % 10) / 9, (classes * 53 % 10) / 9, (classes * 71 % 10) / 9], axis=1)
    colour = (0.3 + 0.7 * colour).astype(np.float32)[labels][:, None, None, :]
    image = wave[..., None] * colour
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise)
    image *= 255
    np.clip(image, 0, 255, out=image)
    return Split(image.astype(np.uint8), labels.astype(np.int64))


def check_options(options: dict[str, Any]) -> dict[str, int]:
    """The checked options ``train_size`` (2000), ``test_size`` (500) and ``seed`` (0); UsageError otherwise."""
    from cifarfw.errors import UsageError

    unknown = set(options) - {"train_size", "test_size", "seed"}
    if unknown:
        raise UsageError(f"unknown synthetic dataset option(s): {', '.join(sorted(unknown))}")
    checked = {}
    for key, default, low, high in (
        ("train_size", 2000, 10, MAX_SIZE),
        ("test_size", 500, 10, MAX_SIZE),
        ("seed", 0, 0, 2**32 - 10_001),
    ):
        value = options.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UsageError(f"dataset_options.{key} must be an integer from {low} to {high:,}, got {value!r}")
        checked[key] = value
    return checked


def load(options: dict[str, Any]) -> Dataset:
    """The synthetic dataset of :func:`check_options`."""
    checked = check_options(options)
    return Dataset(
        "synthetic",
        generate(checked["train_size"], checked["seed"]),
        generate(checked["test_size"], checked["seed"] + 10_000),
        CLASS_NAMES,
        {"source": "generated", "verified": "generated", "official": False},
    )
