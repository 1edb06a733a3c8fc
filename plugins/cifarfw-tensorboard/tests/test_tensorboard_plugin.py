"""The tensorboard plugin on its own: its registration, its light plugin module, the
HParams experiment file. (Real runs read back with TensorBoard: tests/test_tensorboard.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import cifarfw_tensorboard.plugin
from cifarfw.plugins import PluginHost
from cifarfw.testing import run_cli
from cifarfw_tensorboard import hparams


def test_registers_the_default_tensorboard_reporter():
    host = PluginHost(load_entry_points=False)
    host.add(cifarfw_tensorboard.plugin, "tensorboard")
    host.collect()
    assert host.plugins["tensorboard"].status == "ok"
    spec = host.reporters["tensorboard"]
    assert spec.default  # every run writes events, as when TensorBoard was built in


def test_plugin_module_imports_neither_tensorboard_nor_matplotlib():
    code = (
        "import sys, cifarfw_tensorboard.plugin\n"
        "print(sorted(m for m in ('tensorboard', 'matplotlib', 'tensorflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_installed_and_listed_by_cifarfw_plugins(monkeypatch):
    monkeypatch.delenv("CIFARFW_PLUGINS", raising=False)
    monkeypatch.delenv("CIFARFW_DISABLE_PLUGINS", raising=False)
    code, out, _ = run_cli("plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and rows["tensorboard"]["status"] == "ok"
    assert "reporter:tensorboard" in rows["tensorboard"]["registered"]
    assert "reporter:tensorboard" not in rows["builtin"]["registered"]


def test_the_experiment_file_is_rewritten_only_when_its_content_changes(tmp_path):
    record = {"plugin": "p", "model": "m", "framework": "torch", "config": {"lr": 0.1, "model_options": {}}}
    holder = tmp_path / "run-a"
    holder.mkdir()
    old_layout = tmp_path / f"events.out.tfevents.0000000001.{hparams.EXPERIMENT_FILE_TAG}.abc"
    old_layout.write_bytes(b"")  # where older versions wrote it: TensorBoard's run "."
    assert hparams.write_experiment(tmp_path, extra=[hparams.hparams_of(record)]) is None  # no run: nowhere
    first = hparams.write_experiment(tmp_path, extra=[hparams.hparams_of(record)], holder=holder)
    assert first.parent == holder and first.name.startswith(hparams.EXPERIMENT_PREFIX) and not old_layout.exists()
    assert hparams.write_experiment(tmp_path, extra=[hparams.hparams_of(record)], holder=holder) == first
    record["config"]["model_options"] = {"freeze": "features"}
    second = hparams.write_experiment(tmp_path, extra=[hparams.hparams_of(record)], holder=holder)
    assert second != first and not first.exists() and second.exists()
