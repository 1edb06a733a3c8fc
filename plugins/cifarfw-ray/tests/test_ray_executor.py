"""The ray executor on a two-node Ray cluster on loopback, one CPU per node.

Ray advertises (and dials) the machine's own non-loopback address even when told
127.0.0.1, so the cluster runs inside a private network namespace the test makes itself,
holding only ``lo`` (``unshare --net`` + ``ip link set lo up``; needs root, as CI has): no
test traffic leaves loopback. The sweep's runs land on both nodes, and the worker node,
removed while it trains a run, costs nothing: Ray retries the task on the head node, which
resumes the run from its checkpoint; every run finishes, none twice.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import SMALL

from cifarfw.runs import iter_runs
from cifarfw.testing import assert_one_line_error, run_cli

HERE = Path(__file__).parent


def _netns_available() -> str:
    """'' when a private network namespace can be made here, else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private network namespace (unshare --net needs root): {probe.stderr.strip()[:120]}"
    return ""


NO_NETNS = _netns_available()


@pytest.mark.skipif(bool(NO_NETNS), reason=NO_NETNS or "-")
def test_ray_cluster_runs_on_both_nodes_and_survives_a_node_removed(tmp_path, env):
    root = tmp_path / "runs"
    sweep = ["--plugin", "fake", "--grid", "lr=0.1,0.05", "--seeds", "2", "--epochs", "3", "--name", "r", *SMALL]
    script = f'ip link set lo up && exec {sys.executable} {HERE / "ray_cluster_sweep.py"} "$@"'
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh", str(root), *sweep],
        env={**env, "CIFARFW_FAKE_EPOCH_S": "1.5", "RAY_USAGE_STATS_ENABLED": "0"},
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["returncode"] == 0, result["output"]
    assert result["removed"], "the worker node was never seen training a second run"
    records = [rec for _, rec in iter_runs(root, warn=None)]
    assert sorted(r["sweep"]["index"] for r in records) == [0, 1, 2, 3]  # each run once
    assert all(r["status"] == "finished" for r in records)
    nodes = {r["executor"]["node_id"] for r in records}
    assert nodes == {result["head"], result["worker"]}  # both nodes ran runs
    assert all(r["executor"]["name"] == "ray" for r in records)
    moved = [r for r in records if r.get("resumed")]
    assert moved and all(r["executor"]["node_id"] == result["head"] for r in moved)  # retried on the head


def test_unreachable_ray_address_is_one_line_and_writes_nothing(tmp_path, env, fake_site, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.setenv("CIFARFW_FAKES_DIR", env["CIFARFW_FAKES_DIR"])
    root = tmp_path / "runs"
    args = ["--plugin", "fake", "--grid", "lr=0.1,0.2", "--executor", "ray", "--ray-address", "127.0.0.1:1"]
    code, _, err = run_cli("sweep", *args, *SMALL, "--runs-root", str(root))
    assert_one_line_error(code, err, "--ray-address 127.0.0.1:1", "no Ray cluster answers there")
    assert code == 2
    assert not root.exists()


def test_ray_flags_belong_to_the_ray_executor(tmp_path, env, fake_site, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.setenv("CIFARFW_FAKES_DIR", env["CIFARFW_FAKES_DIR"])
    code, _, err = run_cli("sweep", "--plugin", "fake", "--grid", "lr=0.1,0.2", "--cpus-per-run", "2", *SMALL,
                           "--runs-root", str(tmp_path / "runs"))  # fmt: skip
    assert_one_line_error(code, err, "--cpus-per-run belongs to --executor ray")
