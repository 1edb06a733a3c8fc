"""The compare plugin on its own: the study's published figures (its data file), the
``on_session_end`` hook, its registration, the table <-> renderer import direction.
(Real runs in every format: tests/test_compare.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cifarfw_compare.plugin
from cifarfw.plugins import PluginHost
from cifarfw.runs import SCHEMA_VERSION, group_id
from cifarfw.testing import run_cli
from cifarfw_compare import compare

# The study's "Last Comparison" (../shared/MISSION.md): train acc, test acc, train loss,
# test loss, training time (s), as published on a Tesla P100.
PUBLISHED = {
    "study:torch-cnn": ("82.86%", "80.64%", "0.4829", "0.5722", "663.81"),
    "study:keras-cnn": ("90.43%", "70.92%", "0.2692", "1.2214", "84"),
    "study:alexnet": ("95.97%", "83.49%", "0.1290", "0.5556", "740"),
}


def test_the_study_data_file_holds_the_published_figures():
    data = compare.study()
    columns = {c["key"]: c for c in data["column"]}
    assert set(columns) == set(PUBLISHED)
    for key, figures in PUBLISHED.items():
        column = columns[key]
        got = tuple(column[row] for row in ("train_acc", "test_acc", "train_loss", "test_loss", "train_seconds"))
        assert got == figures, key
    assert columns["study:torch-cnn"]["params_total"] == "350,342"
    assert columns["study:keras-cnn"]["params_total"] == "224,842"
    assert (columns["study:alexnet"]["params_total"], columns["study:alexnet"]["params_trainable"]) == (
        "60M",
        "4,211,082",
    )
    assert [columns[k]["epochs"] for k in PUBLISHED] == ["20", "20", "10"]
    assert [columns[k]["batch_size"] for k in PUBLISHED] == ["64", "32", "64"]
    assert data["common"]["accelerator"] == "Tesla P100-PCIE-16GB"
    # every cell names a row of the table
    rows = {key for key, _ in compare.ROWS}
    assert all(k in rows for c in data["column"] for k in c if k not in ("key", "label", "augment"))
    assert set(data["common"]) <= rows


def test_study_columns_in_the_table():
    table = compare.build([], with_study=True)
    assert [c.key for c in table.columns] == list(PUBLISHED)
    assert table.columns[0].cells["test_acc"] == "80.64%"
    assert table.columns[0].cells["status"] == "published (study)"
    assert any("Tesla P100" in n for n in table.notes)


def _finished_run(root: Path, name: str, seed: int, test_acc: float) -> Path:
    """A run folder holding only a finished run.json, as the comparison reads it."""
    config = {"plugin": "mine", "model": "mine", "epochs": 1, "batch_size": 8, "lr": 0.1, "seed": seed}
    epoch = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.1, "test_acc": test_acc, "seconds": 2.0}
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "finished",
        "plugin": "mine",
        "model": "mine",
        "seed": seed,
        "group": group_id(config),
        "config": config,
        "epochs": [epoch],
        "final": {k: v for k, v in epoch.items() if k not in ("epoch", "seconds")},
        "started_at": f"2026-01-01T00:00:0{seed}.000+00:00",
    }
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


def test_hook_on_session_end(tmp_path, capsys):
    """After a multi-run `cifarfw run`, the plugin prints the comparison of the finished runs."""
    host = PluginHost(load_entry_points=False)
    host.add(cifarfw_compare.plugin, "compare")
    dirs = [_finished_run(tmp_path, f"run-{s}", s, acc) for s, acc in ((0, 0.5), (1, 0.7))]
    host.pm.hook.on_session_end(run_dirs=dirs, failures=1)
    out = capsys.readouterr().out
    assert "Comparison of these runs" in out and "1 failed run not in it" in out
    assert "| Testing accuracy | 60.00 ± 14.14% (n=2) |" in out
    assert "| Training time (s) | 2.0 ± 0.0 (n=2) |" in out  # no train_seconds recorded: the epochs' sum
    host.pm.hook.on_session_end(run_dirs=[], failures=2)  # nothing finished: nothing to compare
    assert capsys.readouterr().out == ""


def test_installed_and_listed_by_cifarfw_plugins(monkeypatch):
    monkeypatch.delenv("CIFARFW_PLUGINS", raising=False)
    monkeypatch.delenv("CIFARFW_DISABLE_PLUGINS", raising=False)
    code, out, _ = run_cli("plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["compare"]["status"] == "ok" and rows["tensorboard"]["status"] == "ok"
    code, out, _ = run_cli("--help")
    assert "compare" in out and "tensorboard" in out


@pytest.mark.parametrize("module", ["cifarfw_compare.plugin", "cifarfw_compare.compare"])
def test_the_table_never_imports_its_renderer_or_matplotlib(module):
    code = f"import sys, {module}\nprint(sorted(m for m in ('cifarfw_compare.html', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
