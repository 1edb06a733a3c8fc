"""The issue's grid on the real trainers: 2 learning rates x torch-cnn and keras-cnn x 2 seeds,
two runs at a time, one epoch on tiny synthetic data: 8 finished runs in one runs root, each
run's CPU threads split (one core each on this machine's share), and `compare --sweep` gives
4 columns of n = 2."""

from __future__ import annotations

import json
import os

import pytest
from sweep_helpers import SMALL, cifarfw

from cifarfw.plugins import PluginHost
from cifarfw.runs import iter_runs
from cifarfw.testing import run_cli


def _installed(*plugins: str) -> bool:
    host = PluginHost()
    return all(host.plugins.get(p) is not None and host.plugins[p].status == "ok" for p in plugins)


@pytest.mark.skipif(not _installed("torch-cnn", "keras-cnn"), reason="needs the torch-cnn and keras-cnn plugins")
def test_torch_and_keras_grid_in_parallel(tmp_path, env):
    root = tmp_path / "runs"
    args = ["--plugin", "torch-cnn", "--plugin", "keras-cnn", "--grid", "lr=0.01,0.001", "--seeds", "2"]
    args += ["--parallel", "2", "--epochs", "1", "--device", "cpu", "--precision", "fp32", "--name", "fw"]
    done = cifarfw(env, "sweep", *args, *SMALL, "--runs-root", str(root), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [rec for _, rec in iter_runs(root, warn=None)]
    assert len(records) == 8 and all(r["status"] == "finished" for r in records)
    assert sorted(r["sweep"]["index"] for r in records) == list(range(8))
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    torch_threads = [r["resolved"].get("threads") for r in records if r["framework"] == "torch"]
    assert torch_threads == [expected] * 4, torch_threads  # the cores split between the two at a time
    code, out, err = run_cli("compare", "--runs-root", str(root), "--sweep", "fw", "--format", "json")
    assert code == 0, err
    columns = json.loads(out)["columns"]
    assert len(columns) == 4 and all(c["stats"]["test_acc"]["n"] == 2 for c in columns)
    assert {(c["params"]["plugin"], c["params"]["lr"]) for c in columns} == {
        (p, lr) for p in ("torch-cnn", "keras-cnn") for lr in (0.01, 0.001)
    }
