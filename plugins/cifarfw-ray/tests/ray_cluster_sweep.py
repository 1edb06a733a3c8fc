"""Run inside a private network namespace holding only ``lo`` (see test_ray_executor.py): a
two-node Ray cluster on loopback (``ray.cluster_utils.Cluster``, one CPU per node), a sweep of
four runs on it, and the worker node removed once it has finished a run and started another.
Prints one JSON line: the sweep's exit code and output, and both node ids."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ray.cluster_utils import Cluster


def records(root: Path) -> list[dict]:
    out = []
    for path in root.glob("*/run.json"):
        try:
            out.append(json.loads(path.read_text()))
        except ValueError:  # being rewritten right now
            continue
    return out


def main() -> None:
    root, *sweep_args = sys.argv[1:]
    runs_root = Path(root)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    command = [sys.executable, "-m", "cifarfw", "sweep", "--executor", "ray", "--ray-address", cluster.address]
    sweep = subprocess.Popen(
        [*command, "--runs-root", root, *sweep_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    removed = False
    deadline = time.monotonic() + 240
    while sweep.poll() is None and not removed and time.monotonic() < deadline:
        on_worker = [r for r in records(runs_root) if (r.get("executor") or {}).get("node_id") == worker.node_id]
        # Remove the node once it finished a run and is training its next one: that run must be
        # retried on the other node and resumed there, not started again.
        if any(r["status"] == "finished" for r in on_worker) and any(
            r["status"] == "running" and r.get("epochs") for r in on_worker
        ):
            cluster.remove_node(worker)
            removed = True
        time.sleep(0.2)
    try:
        output, _ = sweep.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        sweep.kill()
        output, _ = sweep.communicate()
    result = {
        "returncode": sweep.returncode,
        "output": output[-4000:],
        "removed": removed,
        "head": cluster.head_node.node_id,
        "worker": worker.node_id,
    }
    cluster.shutdown()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
