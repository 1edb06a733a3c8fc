"""Framework-neutral datasets: uint8 images (N, H, W, C), int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Split:
    """One split of a dataset."""

    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, limit: int) -> Split:
        """A class-balanced subset of ``limit`` images (first images of each class, in order)."""
        if limit <= 0 or limit >= len(self):
            return self
        index = balanced_indices(self.labels, limit)
        return Split(self.images[index], self.labels[index])


def balanced_indices(labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of ``limit`` samples spread evenly over classes, keeping the dataset's order."""
    classes = np.unique(labels)
    per_class = np.full(len(classes), limit // len(classes))
    per_class[: limit % len(classes)] += 1
    chosen = []
    for cls, count in zip(classes, per_class, strict=True):
        chosen.append(np.flatnonzero(labels == cls)[:count])
    return np.sort(np.concatenate(chosen))


@dataclass
class Dataset:
    """A dataset as every trainer receives it."""

    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)  # source, verification, ...

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def limited(self, train_limit: int, test_limit: int) -> Dataset:
        """This dataset cut to class-balanced subsets (0 = keep the whole split)."""
        info = dict(self.info)
        if train_limit:
            info["train_limit"] = train_limit
        if test_limit:
            info["test_limit"] = test_limit
        return Dataset(self.name, self.train.subset(train_limit), self.test.subset(test_limit), self.class_names, info)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train_images": len(self.train),
            "test_images": len(self.test),
            "classes": len(self.class_names),
            "class_names": list(self.class_names),
            "image_shape": list(self.train.images.shape[1:]),
            **self.info,
        }
