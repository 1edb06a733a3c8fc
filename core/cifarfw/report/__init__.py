"""The built-in reporters (console, run record) and what every reporter shows alike.

``METRIC_TAGS`` and ``REQUIRED_METRICS`` are kept for plugins written against hook API 1;
the registry they come from is :mod:`cifarfw.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cifarfw.metrics import REQUIRED as REQUIRED_METRICS
from cifarfw.metrics import TAGS as METRIC_TAGS

__all__ = ["METRIC_TAGS", "REQUIRED_METRICS", "augmentation_summary"]


def augmentation_summary(augment: Mapping[str, Any] | None) -> str:
    """A config's ``augment`` as one phrase, the same in TensorBoard's HParams and the comparison:
    ``{"crop_padding": 4, "flip": True, "brightness": 0.2}`` -> ``crop (pad 4), flip, brightness 20%``."""
    if not isinstance(augment, Mapping) or not augment:
        return "none"
    parts = []
    if augment.get("crop_padding"):
        parts.append(f"crop (pad {augment['crop_padding']})")
    if augment.get("flip"):
        parts.append("flip")
    if augment.get("brightness"):
        parts.append(f"brightness {100 * float(augment['brightness']):g}%")
    return ", ".join(parts) or "none"
