"""bench/time_to_accuracy.py: the arithmetic that turns run records into times to targets."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "time_to_accuracy.py"


@pytest.fixture(scope="module")
def tta():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EPOCHS = [
    {"epoch": 1, "test_acc": 0.60, "wall_s": 20.0, "train_clock_s": 10.0},
    {"epoch": 2, "test_acc": 0.82, "wall_s": 30.0, "train_clock_s": 20.0},
    {"epoch": 3, "test_acc": 0.81, "wall_s": 40.0, "train_clock_s": 30.0},
    {"epoch": 4, "test_acc": 0.84, "wall_s": 50.0, "train_clock_s": 40.0},
    {"epoch": 5, "test_acc": 0.845, "wall_s": 60.0, "train_clock_s": 50.0},
]


def test_first_epoch_at_or_above_the_target(tta):
    hit = tta.first_reaching(EPOCHS, 0.82, every=1)
    assert hit == {"epoch": 2, "wall_s": 30.0, "train_clock_s": 20.0, "test_acc": 0.82}
    assert tta.first_reaching(EPOCHS, 0.9, every=1) is None


def test_only_every_kth_evaluation_counts_and_the_last(tta):
    assert tta.first_reaching(EPOCHS, 0.82, every=3)["epoch"] == 5  # epoch 3 is below, the last counts
    assert tta.first_reaching(EPOCHS, 0.82, every=2)["epoch"] == 2


def test_spread(tta):
    assert tta.spread([]) == {"mean": None, "std": None}
    assert tta.spread([3.0]) == {"mean": 3.0, "std": None}
    assert tta.spread([1.0, 3.0]) == {"mean": 2.0, "std": 1.4142}


def test_targets_parse_sorted_and_checked(tta):
    assert tta.parse_targets("0.93,0.7092") == [0.7092, 0.93]
    for bad in ("", "0.5,x", "93"):
        with pytest.raises(argparse.ArgumentTypeError):
            tta.parse_targets(bad)
