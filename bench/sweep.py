"""Bench: 8 tiny runs as a sweep, three ways: one after another (local executor, --parallel 1),
two at a time (--parallel 2: two processes, the cores split between them), and on the Ray
executor (a local Ray instance, one CPU per run). Prints JSON: each wall time, the speed-up
over the sequential sweep, and the per-run overhead of each executor (the wall time each run
slot spent beyond the runs' own durations from their records: process start, imports,
scheduling, data).

    .venv/bin/python bench/sweep.py [--plugin torch-cnn] [--epochs 1] [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

TINY = [
    "--dataset", "synthetic", "--set", "dataset_options.train_size=200", "--set", "dataset_options.test_size=100",
    "--batch-size", "50", "--set", "prediction_samples=0", "--device", "cpu",
]  # fmt: skip


def sweep(root: Path, name: str, plugin: str, epochs: int, extra: list[str]) -> dict:
    args = ["--plugin", plugin, "--grid", "lr=0.01,0.005,0.002,0.001", "--seeds", "2", "--epochs", str(epochs)]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cifarfw", "sweep", *args, *TINY, "--runs-root", str(root), "--name", name, *extra],
        capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sweep {name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    durations = []
    for record_file in root.glob("*/run.json"):
        record = json.loads(record_file.read_text())
        if (record.get("sweep") or {}).get("name") == name:
            span = datetime.fromisoformat(record["ended_at"]) - datetime.fromisoformat(record["started_at"])
            durations.append(span.total_seconds())
    return {"wall_s": round(wall, 2), "runs": len(durations), "mean_run_s": round(sum(durations) / len(durations), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", default="torch-cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-ray", action="store_true")
    ns = parser.parse_args()
    modes = {"sequential": (["--parallel", "1"], 1), "parallel_2": (["--parallel", "2"], 2)}
    if not ns.skip_ray:
        modes["ray"] = (["--executor", "ray", "--cpus-per-run", "1", "--parallel", "2"], 2)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cifarfw-bench-sweep-") as tmp:
        for mode, (extra, slots) in modes.items():
            result = sweep(Path(tmp) / mode, mode.replace("_", "-"), ns.plugin, ns.epochs, extra)
            # Each slot runs runs/slots runs back to back; what its wall time holds beyond them is overhead.
            result["overhead_per_run_s"] = round(result["wall_s"] * slots / result["runs"] - result["mean_run_s"], 2)
            results[mode] = result
    base = results["sequential"]["wall_s"]
    for result in results.values():
        result["speedup"] = round(base / result["wall_s"], 2)
    print(
        json.dumps(
            {
                "bench": "sweep",
                "runs": 8,
                "plugin": ns.plugin,
                "epochs": ns.epochs,
                "cores": len(os.sched_getaffinity(0)),
                "baseline": "sequential (local executor, --parallel 1)",
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
