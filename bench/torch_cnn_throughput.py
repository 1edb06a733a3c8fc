"""Training throughput: the study's PyTorch CNN pipeline against cifarfw's ``torch-cnn`` study recipe.

Both sides train the same number of steps of batch 64 on the same data, on this machine,
in this one script run, each in its own child process:

* the study's pipeline: ../shared/bench/seed_torch_cnn.py ``DATA/cifar-10-batches-py
  --max-steps N --workers W`` (per-image PIL transforms in a DataLoader, Adam lr 0.01);
* cifarfw: ``torch-cnn`` with its ``study`` recipe (batch 64, Adam, lr 0.01, crop/flip/
  brightness, precision auto) through the core runner, the torch trainer stopping after N
  steps (``TorchTrainer(max_steps=N)``; a benchmark-only knob, not a config key).

Throughput = training images / training seconds as each side measures them (the training
loop: batches, augmentation, forward, backward, optimizer; not data loading from disk,
model building or test evaluation). Peak memory is each child's RSS high-water mark.

Usage:
  .venv/bin/python bench/torch_cnn_throughput.py [--steps 300] [--data ../shared/data]
      [--checksums FILE] [--workers 2] [--study-threads N] [--repeats 1]

Prints one JSON object: both images/s, their ratio (goal >= 3.0 on the 2-core machine),
both peak RSS (goal <= 3 GiB for cifarfw), the resolved precision/threads, and the load
average before and after (other work on the machine slows both sides; with --repeats R
the sides alternate R times and the medians are compared). On a machine other work keeps
busy, the study pipeline's default 2 torch threads stall at every op's barrier (cifarfw
picks its thread count from the free cores); --study-threads 1 gives the study side the
same relief, for a conservative ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import last_json, load_average, run_measured

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
BATCH = 64
GOAL_RATIO, GOAL_RSS_GIB = 3.0, 3.0


def study_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(args.seed_script), str(args.data / "cifar-10-batches-py")]
    cmd += ["--max-steps", str(args.steps), "--workers", str(args.workers)]
    env = dict(os.environ)
    if args.study_threads:  # the study as written leaves torch's default (one per core)
        env["OMP_NUM_THREADS"] = str(args.study_threads)
    done = run_measured(cmd, cwd=ROOT, env=env)
    if done.returncode != 0:
        sys.exit(f"the study pipeline failed ({done.returncode}): {done.stderr[-2000:]}")
    out = last_json(done.stdout)
    return {
        "images_per_s": round(out["train_images_per_s"], 1),
        "train_s": round(out["train_s"], 2),
        "steps": out["steps"],
        "peak_rss_gib": done.peak_rss_gib,
        "wall_s": round(done.wall_s, 1),
    }


def cifarfw_side(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(args.steps)]
    cmd += ["--data", str(args.data)] + (["--checksums", str(args.checksums)] if args.checksums else [])
    done = run_measured(cmd, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"cifarfw failed ({done.returncode}): {done.stderr[-2000:]}")
    out = last_json(done.stdout)
    return {**out, "peak_rss_gib": done.peak_rss_gib, "wall_s": round(done.wall_s, 1)}


def child(args: argparse.Namespace) -> None:
    """One cifarfw run of the torch-cnn study recipe, stopped after --steps steps (in this process)."""
    import dataclasses

    from cifarfw import runner
    from cifarfw.plugins import PluginHost
    from cifarfw_torch.trainer import TorchTrainer

    host = PluginHost()
    with tempfile.TemporaryDirectory(prefix="torch-cnn-bench-") as runs_root:
        flags = {"data_dir": str(args.data), "runs_root": runs_root, "seed": 0, "prediction_samples": 0}
        if args.checksums:
            flags["data_checksums"] = str(args.checksums)
        plugin, spec, config = runner.resolve(host, "torch-cnn", None, {}, flags)
        trainer = host.trainers["torch"]
        host.trainers["torch"] = dataclasses.replace(trainer, factory=lambda: TorchTrainer(max_steps=args.steps))
        run_dir = runner.execute(host, plugin, spec, config)
        record = json.loads((run_dir / "run.json").read_text())
    extra, final = record["extra"], record["final"]
    print(
        json.dumps(
            {
                "images_per_s": round(extra["images_trained"] / final["train_seconds"], 1),
                "train_s": round(final["train_seconds"], 2),
                "steps": extra["steps"],
                "recipe": record["recipe"],
                "batch_size": record["config"]["batch_size"],
                "resolved": record["resolved"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of batch 64 on each side")
    parser.add_argument("--data", type=Path, default=SHARED / "data", help="the folder holding cifar-10-batches-py")
    parser.add_argument("--checksums", type=Path, default=SHARED / "data" / "cifar-10-batches-py.md5")
    parser.add_argument("--seed-script", type=Path, default=SHARED / "bench" / "seed_torch_cnn.py")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the study pipeline")
    parser.add_argument(
        "--study-threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS for the study pipeline (default: unset, as the study ran it); 1 spares it the "
        "thread stalls of a machine other work keeps busy",
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two sides this many times")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checksums is not None and not args.checksums.exists():
        args.checksums = None
    if args.child:
        child(args)
        return

    load_before = load_average()
    study, ours = [], []
    for _ in range(args.repeats):
        study.append(study_pipeline(args))
        ours.append(cifarfw_side(args))
    study_ips = statistics.median(s["images_per_s"] for s in study)
    ours_ips = statistics.median(o["images_per_s"] for o in ours)
    ratio = ours_ips / study_ips
    peak = max(o["peak_rss_gib"] for o in ours)
    print(
        json.dumps(
            {
                "benchmark": "torch_cnn_throughput",
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                    "load_average_before": load_before,
                    "load_average_after": load_average(),
                },
                "steps": args.steps,
                "batch_size": BATCH,
                "study_threads": args.study_threads or "torch default",
                "study_pipeline": {"images_per_s": study_ips, "runs": study},
                "cifarfw": {"images_per_s": ours_ips, "runs": ours},
                "ratio": round(ratio, 2),
                "peak_rss_gib": {"cifarfw": peak, "study_pipeline": max(s["peak_rss_gib"] for s in study)},
                "goals": {"ratio_ge_3": ratio >= GOAL_RATIO, "cifarfw_peak_rss_le_3_gib": peak <= GOAL_RSS_GIB},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
