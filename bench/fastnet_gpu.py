"""fastnet's ``gpu`` recipe on a CUDA machine: epoch times and total time of a full run.

Runs ``cifarfw run --plugin fastnet --recipe gpu`` twice (the first run pays CUDA start-up
and cuDNN's autotuning, as airbench's warm-up run does) on the real data when
``--data-dir`` is given, else on the synthetic dataset at CIFAR-10's size (50,000 / 10,000
images: right for timing, meaningless for accuracy). Prints JSON: per run, each epoch's
seconds (training plus the flip-TTA test evaluation) and test accuracy, the summed epoch
time, the training time the trainer reports and the process wall time.

Usage: python bench/fastnet_gpu.py [--data-dir DIR] [--runs 2] [--extra ARGS...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def one_run(args: argparse.Namespace, index: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"fastnet-gpu-{index}-"))
    cmd = [sys.executable, "-m", "cifarfw", "run", "--plugin", "fastnet", "--recipe", "gpu", "--runs-root", str(root)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
        checksums = Path(args.data_dir) / "cifar-10-batches-py.md5"
        if checksums.is_file():
            cmd += ["--data-checksums", str(checksums)]
    else:
        cmd += ["--dataset", "synthetic", "--set", "dataset_options.train_size=50000"]
        cmd += ["--set", "dataset_options.test_size=10000"]
    cmd += ["--seed", str(index), *args.extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"command": " ".join(cmd), "exit": done.returncode, "stderr": done.stderr[-3000:]}
    (record_path,) = root.glob("*/run.json")
    record = json.loads(record_path.read_text())
    epochs = record["epochs"]
    return {
        "command": " ".join(cmd),
        "resolved": record.get("resolved"),
        "accelerator": record.get("hardware", {}).get("accelerator"),
        "params": record.get("params"),
        "epoch_seconds": [round(e["seconds"], 3) for e in epochs],
        "test_acc": [round(e["test_acc"], 4) for e in epochs],
        "sum_epoch_seconds": round(sum(e["seconds"] for e in epochs), 2),
        "train_seconds": (record.get("final") or {}).get("train_seconds"),
        "process_wall_s": round(wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    runs = [one_run(args, i) for i in range(args.runs)]
    data = args.data_dir or "synthetic 50000/10000 (timing only)"
    print(json.dumps({"benchmark": "fastnet_gpu", "data": data, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
