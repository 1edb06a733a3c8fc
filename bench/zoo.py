"""Benchmark: the model zoos (cifarfw-timm, cifarfw-keras-apps) on one budget, one recipe.

Trains 8 timm and 4 Keras architectures, from the small end of each family, with their
zoo's default recipe (`zoo`, the same values in both zoos) on a fixed budget of the real
CIFAR-10 (default: 10,000 class-balanced training images, 3 epochs, the whole test set),
each in its own process. For each it prints one JSON line: parameters, MACs per image
(when the run record has a `cost` entry), training images/s on this machine (the trainer's
own figure: training images over training seconds), test accuracy, wall time and peak
memory. A last line holds them all, and the `cifarfw compare` command for the same runs.

Usage:
  python bench/zoo.py [--train-limit 10000] [--epochs 3] [--test-limit 0]
      [--data-dir ../shared/data] [--data-checksums ../shared/data/cifar-10-batches-py.md5]
      [--models timm/resnet18,keras/mobilenetv2] [--runs-root runs/bench-zoo]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, run_measured

ROOT = Path(__file__).resolve().parent.parent
# The small end of each family (parameters at 32 px, 10 classes).
TIMM_MODELS = (
    "resnet18",  # 11.2 M
    "regnetx_002",  # 2.3 M
    "convnext_atto",  # 3.4 M
    "efficientnet_b0",  # 4.0 M
    "mobilenetv3_small_100",  # 1.5 M
    "ghostnet_100",  # 3.9 M
    "vit_tiny_patch16_224",  # 5.5 M with img_size=32
    "swin_tiny_patch4_window7_224",  # 27.5 M with img_size=32 (windows shrink to the 8x8 tokens)
)
KERAS_MODELS = ("mobilenetv3small", "mobilenetv2", "efficientnetb0", "resnet50")
DEFAULT_MODELS = tuple(f"timm/{m}" for m in TIMM_MODELS) + tuple(f"keras/{m}" for m in KERAS_MODELS)
PLUGIN_OF = {"timm": "timm", "keras": "keras-apps"}


def run_one(model: str, args: argparse.Namespace, runs_root: Path) -> dict[str, Any]:
    """Train ``model`` (``timm/resnet18``) in a child process; summarise its run.json."""
    namespace, name = model.split("/", 1)
    before = {p.name for p in runs_root.iterdir()} if runs_root.is_dir() else set()
    cmd = [sys.executable, "-m", "cifarfw", "run", "--plugin", PLUGIN_OF[namespace], "--model", name,
           "--train-limit", str(args.train_limit), "--test-limit", str(args.test_limit),
           "--epochs", str(args.epochs), "--runs-root", str(runs_root), "--name", "zoo-bench",
           "--data-dir", args.data_dir]  # fmt: skip
    if args.data_checksums:
        cmd += ["--data-checksums", args.data_checksums]
    measured = run_measured(cmd, cwd=ROOT)
    new = sorted(p for p in runs_root.iterdir() if p.name not in before and (p / "run.json").is_file())
    row: dict[str, Any] = {"model": model, "exit_code": measured.returncode, "wall_s": round(measured.wall_s, 1),
                           "peak_rss_gib": measured.peak_rss_gib}  # fmt: skip
    if measured.returncode != 0 or not new:
        row["error"] = (measured.stderr.strip().splitlines() or ["no output"])[-1]
        return row
    record = json.loads((new[-1] / "run.json").read_text(encoding="utf-8"))
    final = record.get("final") or {}
    row.update(
        run_dir=str(new[-1]),
        status=record.get("status"),
        params=(record.get("params") or {}).get("total"),
        train_images_per_s=round(float(final.get("train_images_per_s", 0.0)), 1),
        train_seconds=round(float(final.get("train_seconds", 0.0)), 1),
        test_acc=final.get("test_acc"),
        precision=(record.get("resolved") or {}).get("precision"),
    )
    cost = record.get("cost")
    if isinstance(cost, dict) and cost.get("macs_per_image") is not None:  # the trainers' cost record
        row["macs_per_image"] = cost["macs_per_image"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train zoo models on a fixed budget; one JSON line each.")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated timm/NAME, keras/NAME")
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--test-limit", type=int, default=0, help="0 = the whole test set")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--data-checksums", default=str(ROOT.parent / "shared" / "data" / "cifar-10-batches-py.md5"))
    parser.add_argument("--runs-root", type=Path, default=ROOT / "runs" / "bench-zoo")
    args = parser.parse_args(argv)
    if args.data_checksums and not Path(args.data_checksums).is_file():
        args.data_checksums = ""
    args.runs_root.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        row = run_one(model, args, args.runs_root)
        print(json.dumps(row), flush=True)
        rows.append(row)
    dirs = [r["run_dir"] for r in rows if "run_dir" in r]
    summary = {
        "budget": {"train_limit": args.train_limit, "test_limit": args.test_limit, "epochs": args.epochs},
        "load_average": load_average(),
        "models": rows,
        "compare": "cifarfw compare " + " ".join(dirs),
    }
    print(json.dumps(summary))
    return 0 if all(r.get("status") == "finished" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
