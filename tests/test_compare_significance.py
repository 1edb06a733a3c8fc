"""The comparison a reviewer accepts (issue 17): Welch's test against the reference column,
the model-cost rows, the study columns' confounder flags, labels without empty fields.

Records are written by hand (run.json only), so the numbers are fixed and known."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from cifarfw import runs
from cifarfw.errors import UsageError
from cifarfw_compare import compare, significance


def test_welch_matches_scipy_and_a_hand_computed_interval():
    a, b = [0.80, 0.82, 0.84], [0.76, 0.78, 0.80]
    got = significance.welch(a, b)
    # By hand: means 0.82 and 0.78; both variances 0.0004; se^2 = 2 * 0.0004 / 3; with equal
    # n and variances the Welch-Satterthwaite df is 2 (n - 1) = 4; t(0.975, 4) = 2.776445 (tables).
    se = math.sqrt(2 * 0.0004 / 3)
    assert got["diff"] == pytest.approx(0.04)
    assert got["df"] == pytest.approx(4.0)
    assert got["ci95"] == pytest.approx([0.04 - 2.776445 * se, 0.04 + 2.776445 * se], abs=1e-6)
    assert got["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert got["p"] == pytest.approx(0.0704, abs=1e-3)  # t = 2.449 on 4 df
    assert got["verdict"] == "no significant difference at 0.05"
    # Unequal variances and sizes: still scipy's Welch p-value.
    c, d = [0.70, 0.74, 0.69, 0.75, 0.71], [0.60, 0.61]
    got = significance.welch(c, d)
    assert got["p"] == pytest.approx(stats.ttest_ind(c, d, equal_var=False).pvalue)
    assert got["verdict"] == "better"
    assert significance.welch(d, c)["verdict"] == "worse"
    assert significance.welch([0.5], d)["verdict"] == "one seed: no test"
    assert significance.welch(d, [0.5])["verdict"] == "reference has one seed: no test"
    text = significance.describe(significance.welch(a, b))
    assert text.startswith("+4.00 pp [-0.53, +8.53], p = 0.07") and text.endswith("at 0.05")


def _record(root: Path, name: str, seed: int, test_acc: float, **over: Any) -> Path:
    config = {"plugin": "mine", "model": "mine", "epochs": 2, "batch_size": 8, "lr": 0.1, "seed": seed}
    config.update(over.pop("config", {}))
    epoch = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.1, "test_acc": test_acc, "seconds": 2.0}
    dataset = over.pop("dataset", {"name": "cifar10", "train_images": 2000, "test_images": 500, "official": True,
                                   "verified": "official"})  # fmt: skip
    record = {
        "schema_version": runs.SCHEMA_VERSION,
        "status": "finished",
        "plugin": config["plugin"],
        "model": config["model"],
        "framework": "torch",
        "seed": seed,
        "group": runs.group_id(config, dataset),
        "config": config,
        "dataset": dataset,
        "resolved": {"precision": "fp32"},
        "epochs": [epoch],
        "final": {k: v for k, v in epoch.items() if k not in ("epoch", "seconds")},
        "started_at": f"2026-01-01T00:00:{len(list(root.glob('*'))) if root.exists() else 0:02d}.000+00:00",
        **over,
    }
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


COST = {
    "macs_per_image": 1_234_567,
    "params": 1930,
    "checkpoint_bytes": 2_500_000,
    "inference": {"device": "cpu", "threads": 2, "batch_1_images_per_s": 900.0, "batch_256_images_per_s": 4000.0},
}


@pytest.fixture
def table_root(tmp_path):
    root = tmp_path / "runs"
    for seed, acc in enumerate((0.80, 0.82, 0.84)):
        _record(root, f"a-{seed}", seed, acc, cost=COST)
    for seed, acc in enumerate((0.60, 0.61)):
        _record(root, f"b-{seed}", seed, acc, config={"lr": 0.5}, cost=COST)
    _record(root, "c-0", 0, 0.9, config={"lr": 0.9})
    return root


def test_each_column_is_tested_against_the_reference_in_every_format(table_root, cli):
    table = compare.build(runs.select_runs(table_root))
    by_label = {c.label: c for c in table.columns}
    a, b, c = by_label["mine [lr=0.1]"], by_label["mine [lr=0.5]"], by_label["mine [lr=0.9]"]
    assert a.cells["vs_reference"] == "reference"
    expected = significance.welch([0.60, 0.61], [0.80, 0.82, 0.84])
    assert b.vs_reference == {k: expected[k] for k in ("diff", "ci95", "p", "verdict")}
    assert b.vs_reference["verdict"] == "worse"
    assert c.cells["vs_reference"] == "one seed: no test"
    data = json.loads(compare.to_json(table))
    assert data["columns"][1]["vs_reference"]["p"] == pytest.approx(expected["p"])
    assert set(data["columns"][1]["vs_reference"]) == {"diff", "ci95", "p", "verdict"}
    md = compare.to_markdown(table)
    assert "| Test accuracy vs reference (Welch 95% CI) | reference | -21.50 pp [" in md
    assert compare.to_csv(table).count("one seed: no test") == 1
    from cifarfw_compare.html import to_html

    assert "worse</span>" in to_html(table)  # the verdict beside the accuracy
    # --reference: another column, by its group id or one of its runs
    code, out, err = cli("compare", "--runs-root", str(table_root), "--reference", b.group, "--format", "json")
    assert code == 0, err
    columns = {col["label"]: col for col in json.loads(out)["columns"]}
    assert columns["mine [lr=0.5]"]["vs_reference"]["verdict"] == "reference"
    assert columns["mine [lr=0.1]"]["vs_reference"]["verdict"] == "better"
    code, out, err = cli("compare", "--runs-root", str(table_root), "--reference", "a-1")
    assert code == 0 and "| reference | -21.50 pp" in out, err
    with pytest.raises(UsageError, match="--reference nope: no run or group"):
        compare.build(runs.select_runs(table_root), reference="nope")
    code, _, err = cli("compare", "--runs-root", str(table_root), "--reference", "nope")
    assert code != 0 and err.startswith("Error: --reference nope") and err.count("\n") == 1


def test_cost_rows_come_from_run_json(table_root):
    table = compare.build(runs.select_runs(table_root))
    a = table.columns[0]
    assert a.cells["macs"] == "1,234,567"
    assert a.cells["checkpoint_size"] == "2.50 MB"
    assert a.cells["inference_b1"] == "900 ± 0 (n=3; cpu, 2 threads)"
    assert a.cells["inference_b256"].startswith("4,000 ± 0 (n=3")
    assert table.columns[2].cells["macs"] == "-"  # no cost recorded: no number invented


def test_study_columns_are_flagged_like_any_other(tmp_path):
    root = tmp_path / "runs"
    local = {"name": "cifar10", "train_images": 2000, "test_images": 500, "official": False,
             "verified": "checksums:/x/sums.md5", "train_limit": 2000}  # fmt: skip
    config = {
        "plugin": "torch-cnn",
        "model": "torch-cnn",
        "augment": {"crop_padding": 4, "flip": True, "brightness": 0.2},
    }
    _record(root, "t-0", 0, 0.5, config=config, dataset=local)
    _record(root, "t-1", 1, 0.6, config=config, dataset=local)
    table = compare.build(runs.select_runs(root), with_study=True)
    study = next(c for c in table.columns if c.key == "study:torch-cnn")
    assert study.cells["comparable"].startswith("study; differs from torch-cnn")
    note = next(n for n in table.notes if n.startswith("Not directly comparable with Study: PyTorch CNN"))
    assert "epochs (2 vs 20)" in note
    assert "data (cifar10 (2,000 train / 500 test) vs cifar10 (50,000 train / 10,000 test))" in note
    assert "data copy (local copy (checksum file) vs official)" in note
    assert "augmentation" not in note  # the study recipe's own: not flagged
    assert "precision" not in note
    keras = next(c for c in table.columns if c.key == "study:keras-cnn")
    assert keras.cells["comparable"] == "reference (study)"  # no keras run here: nothing to flag


def test_the_feature_cache_s_dropped_augmentation_is_flagged(tmp_path):
    root = tmp_path / "runs"
    config = {"plugin": "alexnet", "model": "alexnet", "augment": {"crop_padding": 2, "flip": True, "brightness": 0.2}}
    cached = {"precision": "fp32", "feature_cache": {"kept": ["flip"], "dropped": ["crop", "brightness"]}}
    _record(root, "x-0", 0, 0.5, config={**config, "feature_cache": True}, resolved=cached)
    _record(root, "y-0", 0, 0.5, config={**config, "feature_cache": False})
    table = compare.build(runs.select_runs(root), with_study=True)
    cache_col, live_col = table.columns[0], table.columns[1]
    assert cache_col.cells["augmentation"] == "flip (crop, brightness dropped by the feature cache)"
    assert live_col.cells["augmentation"] == "crop (pad 2), flip, brightness 20%"
    assert live_col.cells["comparable"] == "no: augmentation differs"
    note = next(n for n in table.notes if n.startswith("Not directly comparable with Study: AlexNet"))
    assert f"augmentation ({cache_col.cells['augmentation']} vs crop (pad 2), flip, brightness 20%)" in note


def test_labels_carry_no_empty_fields(tmp_path):
    root = tmp_path / "runs"
    _record(root, "p-0", 0, 0.5, config={"name_tag": ""})
    _record(root, "q-0", 0, 0.5, config={"name_tag": "x"})
    labels = [c.label for c in compare.build(runs.select_runs(root)).columns]
    assert labels == ["mine [no name_tag]", "mine [name_tag=x]"]
    assert not any(label.endswith("=]") or "=," in label for label in labels)
