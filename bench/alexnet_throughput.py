"""AlexNet fine-tuning throughput: the study's pipeline against cifarfw's ``alexnet`` study recipe.

Both run here, one after the other, on the same data and machine, for the same number of
training steps of batch 64, with random backbone weights (same timing as pretrained ones:
the backbone is frozen either way):

* the study's pipeline, ../shared/bench/seed_alexnet.py ``--max-steps N`` (per-image PIL
  resize to 224 and augmentation in a DataLoader, the whole network run every step);
* ``cifarfw run --plugin alexnet --weights none`` with the study recipe (10 epochs,
  batch 64, Adam, lr 0.01), on a class-balanced subset of N*64/10 training images (and a
  fifth of that for testing), so that its 10 epochs take N steps. That keeps the full
  recipe's proportions: the frozen features are computed once per image (and its mirror)
  and then reused for 10 epochs, exactly as in a full run, only on fewer images.

Two procedures of cifarfw are measured against the same study pipeline, so each ratio
says which training it is:

* the cached procedure (the ``study`` recipe as it runs by default, ``feature_cache=true``):
  the frozen backbone's outputs are computed once, so only augmentations that commute with
  it survive: flips; random crop and brightness are dropped (run.json's
  ``resolved.feature_cache.dropped``; ``resolved.augmentation`` says what was applied);
* the live procedure (``--set feature_cache=false``): every augmentation of the recipe
  (crop, flip, brightness) on every step, the whole network run each step, with bf16 where
  the CPU has it, channels-last and the resize folded into the first convolution;

``ratio_cached_procedure`` and ``ratio_live_procedure`` are each over the study pipeline's
images per second. Only the live procedure trains what the study trains. ``--no-live``
skips it (it is the slow one).

cifarfw's throughput counts the feature cache's build time (train and test images) as
training time; the steady state (the cached head training alone) is printed too. The
projection to the full recipe (50,000 / 10,000 images, 10 epochs) scales each measured
part by its own count: cache time per cached image, head steps, test evaluation, and keeps
what is fixed per run (start-up, data loading, model build, 10 checkpoints); its
``projected_from`` says the slice it scaled from (images, epochs, steps). Peak memory is
each process's RSS high-water mark (os.wait4); the projection adds the full cache's size.

Usage: .venv/bin/python bench/alexnet_throughput.py [--steps 300] [--data-dir DIR] [--no-flip-too]
``--no-flip-too`` adds a second cifarfw run with ``--set augment.flip=false``: the cache
then holds 60,000 images instead of 110,000 (no mirrored copies), at the cost of the
flip augmentation. Prints one JSON object. Other work on the machine slows both sides; the ratio holds better
than the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FULL_TRAIN, FULL_TEST, EPOCHS, BATCH = 50_000, 10_000, 10, 64
STUDY_P100_SECONDS = 740.0
LOAD: dict[str, list[float | None]] = {}  # 1-minute load average before and after each side

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GIB, Measured, last_json, load_average, run_measured  # noqa: E402


def measured(side: str, cmd: list[str]) -> Measured:
    """Run one side as its own process (its own peak RSS); stop the benchmark if it fails."""
    before = load_average()
    result = run_measured(cmd, cwd=ROOT)
    LOAD[side] = [before, load_average()]
    if result.returncode != 0:
        sys.exit(f"{side} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def study_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(args.seed_script), str(args.data_dir / "cifar-10-batches-py")]
    cmd += ["--max-steps", str(args.steps), "--workers", str(args.workers), "--test-n", "64"]
    run = measured("study_pipeline", cmd)
    result = last_json(run.stdout)
    return {
        "command": " ".join(cmd),
        "steps": result["steps"],
        "train_images_per_s": round(result["train_images_per_s"], 1),
        "train_s": round(result["train_s"], 1),
        "trainable_params": result["trainable_params"],
        "wall_s": round(run.wall_s, 1),
        "peak_rss_gib": round(run.peak_rss_gib, 2),
        "projected_10_epoch_train_s": round(EPOCHS * FULL_TRAIN / result["train_images_per_s"], 0),
    }


def cifarfw_recipe(args: argparse.Namespace, work: Path, settings: tuple[str, ...] = ()) -> dict[str, Any]:
    train_limit = args.steps * BATCH // EPOCHS
    test_limit = train_limit * FULL_TEST // FULL_TRAIN
    runs_root = work / "runs"
    flags = ["run", "--plugin", "alexnet", "--weights", "none", "--data-dir", str(args.data_dir)]
    if args.checksums:
        flags += ["--data-checksums", str(args.checksums)]
    flags += ["--epochs", str(EPOCHS), "--train-limit", str(train_limit), "--test-limit", str(test_limit)]
    flags += ["--runs-root", str(runs_root), "--seed", "0"]
    for setting in settings:
        flags += ["--set", setting]
    cmd = [sys.executable, "-c", "from cifarfw.cli import main; main()", *flags]
    run = measured("cifarfw", cmd)
    wall, rss = run.wall_s, run.peak_rss_bytes
    (record_path,) = runs_root.glob("*/run.json")
    record = json.loads(record_path.read_text())
    epochs = record["epochs"]
    extra = record.get("extra", {})
    cache_s = float(extra.get("feature_cache_seconds", 0.0))
    cache_bytes = int(extra.get("feature_cache_bytes", 0))
    plan = record["resolved"].get("feature_cache")
    train_variants = 2 if plan and "flip" in plan["kept"] else 1
    test_variants = 2 if record["config"]["tta"] else 1

    steps = int(extra.get("steps", 0))
    images = int(extra.get("images_trained", steps * BATCH))
    loop_s = [train_limit / e["train_images_per_s"] for e in epochs]  # each epoch trains every image once
    eval_s = [e["seconds"] - s for e, s in zip(epochs, loop_s, strict=True)]
    fixed_s = wall - cache_s - sum(e["seconds"] for e in epochs)  # start-up, data, build, checkpoints, ...
    steady_ips = train_limit * len(epochs) / sum(loop_s)

    cached_now = train_limit * train_variants + test_limit * test_variants
    cached_full = FULL_TRAIN * train_variants + FULL_TEST * test_variants
    projected = {
        "feature_cache_s": cache_s * cached_full / cached_now if plan else 0.0,
        "head_training_s": EPOCHS * FULL_TRAIN / steady_ips,
        "test_evaluation_s": sum(eval_s) * FULL_TEST / test_limit,
        "fixed_s": fixed_s,
    }
    projected["wall_s"] = sum(projected.values())
    projected_rss = rss + cache_bytes * (cached_full / cached_now - 1)
    return {
        "command": "cifarfw " + " ".join(flags),
        "steps": steps,
        "train_limit": train_limit,
        "test_limit": test_limit,
        "resolved": record["resolved"],
        "augmentation_applied": record["resolved"].get("augmentation"),
        "params": record["params"],
        "train_images_per_s_incl_cache": round(images / (cache_s + sum(loop_s)), 1),
        "steady_images_per_s": round(steady_ips, 1),
        "feature_cache_s": round(cache_s, 1),
        "feature_cache_bytes": cache_bytes,
        "train_seconds_recorded": round(record["final"]["train_seconds"], 1),
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(rss / GIB, 2),
        "final_test_acc": record["final"]["test_acc"],
        "projected_full_recipe": {k: round(v, 0) for k, v in projected.items()},
        "projected_from": {
            "train_images": train_limit,
            "test_images": test_limit,
            "epochs": len(epochs),
            "steps": steps,
            "to": {"train_images": FULL_TRAIN, "test_images": FULL_TEST, "epochs": EPOCHS},
            "how": "each part scaled by its own count (cache per cached image, head steps, test images); "
            "start-up and checkpoints kept as measured",
        },
        "projected_peak_rss_gib": round(projected_rss / GIB, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of batch 64 on each side")
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data")
    parser.add_argument("--checksums", type=Path, default=SHARED / "data" / "cifar-10-batches-py.md5")
    parser.add_argument("--seed-script", type=Path, default=SHARED / "bench" / "seed_alexnet.py")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the study pipeline")
    parser.add_argument("--no-live", action="store_true", help="skip the live procedure (feature_cache=false)")
    parser.add_argument(
        "--no-flip-too",
        action="store_true",
        help="also run the recipe with --set augment.flip=false (the cache then holds no mirrored copies)",
    )
    args = parser.parse_args()
    if args.steps % EPOCHS:
        parser.error(f"--steps must be a multiple of {EPOCHS}")
    if args.checksums and not args.checksums.exists():
        args.checksums = None
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
        work = Path(tmp)
        study = study_pipeline(args)
        ours = cifarfw_recipe(args, work / "recipe")
        live = None if args.no_live else cifarfw_recipe(args, work / "live", ("feature_cache=false",))
        no_flip = cifarfw_recipe(args, work / "no-flip", ("augment.flip=false",)) if args.no_flip_too else None
    ratio = ours["train_images_per_s_incl_cache"] / study["train_images_per_s"]
    wall = ours["projected_full_recipe"]["wall_s"]
    ratios = {
        "ratio_cached_procedure": {
            "ratio": round(ratio, 2),
            "augmentation": ours["augmentation_applied"],
            "note": "flips only: crop and brightness dropped by the feature cache; not the study's training",
        }
    }
    if live is not None:
        ratios["ratio_live_procedure"] = {
            "ratio": round(live["train_images_per_s_incl_cache"] / study["train_images_per_s"], 2),
            "augmentation": live["augmentation_applied"],
            "note": "every augmentation, whole network each step (bf16, channels-last, folded resize): "
            "the study's training",
        }
    print(
        json.dumps(
            {
                "benchmark": "alexnet_throughput",
                "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_avg_1m_before_after": LOAD},
                "steps": args.steps,
                "study_pipeline": study,
                "cifarfw": ours,
                **({"cifarfw_live": live} if live else {}),
                **ratios,
                "ratio": round(ratio, 2),  # the cached procedure's, as before; see ratio_cached_procedure
                "ratio_steady": round(ours["steady_images_per_s"] / study["train_images_per_s"], 2),
                "projected_10_epoch_wall_s": wall,
                "study_p100_s": STUDY_P100_SECONDS,
                **({"cifarfw_no_flip": no_flip} if no_flip else {}),
                "goals": {
                    "ratio_ge_5": ratio >= 5,
                    "projected_wall_le_600_s": wall <= 600,
                    "peak_rss_le_6_gib": ours["projected_peak_rss_gib"] <= 6,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
