"""The one registry of metric names: what trainers report, under which TensorBoard tag,
as which comparison row, in which format.

A trainer's epoch metrics use these names; reporters and the comparison read this table.
A new first-class metric is one :class:`Metric` line here (and the trainers that compute it).
Metrics a trainer reports beyond this table are kept in run.json and written to
TensorBoard under ``extra/<name>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric: its name in epoch metrics and run.json, its TensorBoard ``tag``, its
    comparison row ``label`` (empty: not a row), its ``kind`` (how it is shown) and whether
    every trainer must report it each epoch."""

    name: str
    tag: str
    label: str = ""
    kind: str = "number"  # fraction (shown as %), loss, seconds, rate, number
    required: bool = False
    higher_is_better: bool = True

    def format(self, value: float | None) -> str:
        """``value`` as the console and the comparison show it."""
        if value is None or not isinstance(value, int | float) or not math.isfinite(value):
            return "-"
        if self.kind == "fraction":
            return f"{100 * value:.2f}%"
        if self.kind == "loss":
            return f"{value:.4f}"
        if self.kind == "seconds":
            return f"{value:.1f}"
        if self.kind == "rate":
            return f"{value:,.0f}"
        return f"{value:.4g}"


METRICS: tuple[Metric, ...] = (
    Metric("train_acc", "accuracy/train", "Training accuracy", "fraction", required=True),
    Metric("test_acc", "accuracy/test", "Testing accuracy", "fraction", required=True),
    Metric("train_loss", "loss/train", "Training loss", "loss", required=True, higher_is_better=False),
    Metric("test_loss", "loss/test", "Testing loss", "loss", required=True, higher_is_better=False),
    Metric("lr", "lr", kind="number", required=True),
    Metric("seconds", "time/epoch_s", kind="seconds", required=True, higher_is_better=False),
    Metric("train_images_per_s", "extra/train_images_per_s", kind="rate"),
    Metric("train_seconds", "time/train_s", "Training time (s)", "seconds", higher_is_better=False),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
REQUIRED: tuple[str, ...] = tuple(m.name for m in METRICS if m.required)
TAGS: dict[str, str] = {m.name: m.tag for m in METRICS if m.required}
COMPARISON_ROWS: tuple[str, ...] = tuple(m.name for m in METRICS if m.label)


def tag_of(name: str) -> str:
    """The TensorBoard tag of metric ``name`` (``extra/<name>`` for one not in the table)."""
    metric = BY_NAME.get(name)
    return metric.tag if metric is not None else f"extra/{name}"
