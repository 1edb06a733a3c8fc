"""Benchmark: cifarfw's keras-cnn against the study's own Keras pipeline, in one run.

1. The study's pipeline (../shared/bench/seed_keras_cnn.py: model.fit on float arrays, batch
   32, Adam) and cifarfw's keras-cnn with its `study` recipe train the same number of epochs
   on the same number of images; each in its own process, so each one's peak memory (RSS
   high-water mark) is its own. Throughput = training images / training seconds, where both
   sides time the same span: each epoch from Keras's on_epoch_begin to its on_epoch_end
   (batches, optimizer updates, per-batch callbacks), summed over the epochs. One-off work
   before the first epoch (the study's float64->float32 copy inside `fit`, cifarfw's
   pipeline set-up) and the test evaluation after each epoch are outside it on both sides.
   The study script runs unchanged: a wrapper adds the timing callback to its `fit`. The
   ratio is given over all epochs and over epochs 2+ (the first holds graph tracing).
   `--rounds N` (default 3) alternates the two sides N times (study, cifarfw, study, ...),
   so a change in the machine's speed over minutes lands on both; each round has its ratio,
   and the headline ratio is the median of the rounds' (the pooled one is beside it).
2. Time to the study's test accuracy (70.92%): cifarfw trains the given recipes (in order,
   until one gets there) on the full data and reports when an epoch first ends at or above it:
   seconds from process start (Python, TensorFlow import, data loading included), from the
   start of the run (data loaded) and of training alone (the study's 84 s were this kind).
3. The precision `auto` picked (bf16 on CPUs with native bfloat16) against float32, same run.

Prints one JSON object. Usage:
  python bench/keras_cnn_throughput.py [--epochs 3] [--rounds 3] [--data ../shared/data]
      [--train-n 50000] [--target-recipes fast,study] [--no-target] [--no-precision-check]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
SEED_SCRIPT = ROOT.parent / "shared" / "bench" / "seed_keras_cnn.py"
STUDY_TEST_ACC = 0.7092


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str, float, float]:
    """Run ``cmd``; return (exit code, stdout, stderr, wall seconds, peak RSS in MiB of that process)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), wall, usage.ru_maxrss / 1024


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


# --- child: one cifarfw run in this process ---------------------------------------------------


def child(spec: dict[str, Any]) -> None:
    """Train keras-cnn as ``spec`` says; print a JSON line with per-epoch timings."""
    from cifarfw import hookimpl, runner
    from cifarfw.plugins import PluginHost
    from cifarfw.specs import ReporterSpec

    marks: dict[str, Any] = {"epochs": []}

    class Timer:
        @hookimpl
        def on_run_start(self) -> None:
            marks["run_start"] = time.perf_counter()

        @hookimpl
        def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
            now = time.perf_counter()
            marks["epochs"].append(
                {
                    "epoch": epoch,
                    "test_acc": metrics["test_acc"],
                    "from_process_start_s": now - PROCESS_START,
                    "from_run_start_s": now - marks["run_start"],
                    # CPU seconds of this process (all threads): what the load of other processes can't inflate much
                    "cpu_s_from_process_start": time.process_time(),
                }
            )

    class TimerPlugin:
        @hookimpl
        def register_reporters(self, register: Any) -> None:
            register(ReporterSpec("bench-timer", lambda run: Timer()))

    host = PluginHost()
    host.add(TimerPlugin(), "bench-timer")
    plugin, model, config = runner.resolve(host, "keras-cnn", None, {}, spec)
    run_dir = runner.execute(host, plugin, model, config)
    record = json.loads((run_dir / "run.json").read_text())
    images = record["dataset"]["train_images"]
    train_seconds = 0.0
    for mark, entry in zip(marks["epochs"], record["epochs"], strict=True):
        mark["train_s"] = images / entry["train_images_per_s"]  # the trainer's epoch span
        train_seconds += mark["train_s"]
        mark["train_s_so_far"] = train_seconds
    print(
        json.dumps(
            {
                "run_dir": str(run_dir),
                "recipe": config.recipe,
                "epochs": config.epochs,
                "batch_size": config.batch_size,
                "train_images": record["dataset"]["train_images"],
                "train_seconds": record["final"]["train_seconds"],
                "final_test_acc": record["final"]["test_acc"],
                "resolved": record["resolved"],
                "per_epoch": marks["epochs"],
            }
        )
    )


# --- child: the study's script, unchanged, with an epoch timer added to its fit -------------


def study_child(argv: list[str]) -> None:
    """Run the study's script as __main__ with a callback timing each epoch of its ``fit``
    (the span cifarfw's trainer times); print a JSON line with those times after its own."""
    import runpy

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    spans: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            spans.append(time.perf_counter() - self.start)

    original_fit = keras.Model.fit

    def timed_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), EpochTimer()]
        return original_fit(self, *args, **kwargs)

    keras.Model.fit = timed_fit
    sys.argv = [str(SEED_SCRIPT), *argv]
    runpy.run_path(str(SEED_SCRIPT), run_name="__main__")
    print(json.dumps({"epoch_s": spans}))


def span_summary(images_per_epoch: int, epoch_s: list[float]) -> dict[str, Any]:
    """Throughput over all epochs and over epochs 2+ of per-epoch training spans."""
    steady = epoch_s[1:] or epoch_s
    return {
        "train_images_per_s": images_per_epoch * len(epoch_s) / sum(epoch_s),
        "train_s": sum(epoch_s),
        "epoch_s": [round(s, 3) for s in epoch_s],
        "steady_images_per_s": images_per_epoch * len(steady) / sum(steady),
    }


# --- parent ---------------------------------------------------------------------------------


def cifarfw_run(args: argparse.Namespace, runs_root: str, **settings: Any) -> dict[str, Any]:
    spec = {
        "data_dir": str(args.data),
        "data_checksums": str(args.checksums),
        "runs_root": runs_root,
        "checkpoint": False,
        "prediction_samples": 0,
        **settings,
    }
    code, out, err, wall, rss = run_child([sys.executable, __file__, "--child", json.dumps(spec)])
    if code != 0:
        raise SystemExit(f"cifarfw run failed ({code}): {err.strip().splitlines()[-1:]}")
    result = last_json(out)
    result.update(wall_s=wall, peak_rss_mib=rss)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the throughput comparison (default 3)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated study/cifarfw pairs (default 3; 0: time to accuracy only)"
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder of cifar-10-batches-py"
    )
    parser.add_argument("--checksums", type=Path, default=None, help="md5 file accepting a local copy")
    parser.add_argument("--train-n", type=int, default=50_000, help="training images of the comparison")
    parser.add_argument("--target-recipes", default="fast,study", help="recipes tried in turn for 70.92%%")
    parser.add_argument("--no-target", action="store_true", help="skip the time-to-accuracy part")
    parser.add_argument("--no-precision-check", action="store_true", help="skip the float32 comparison run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--study-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.study_child:
        study_child(json.loads(args.study_child))
        return
    if args.child:
        child(json.loads(args.child))
        return
    if args.checksums is None:
        args.checksums = args.data / "cifar-10-batches-py.md5"

    report: dict[str, Any] = {
        "benchmark": "keras_cnn_throughput",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": os.getloadavg()},
        "note": "other processes may share the CPUs: compare load_avg with cpu_count before trusting absolute times",
        "epochs": args.epochs,
        "train_n": args.train_n,
        "timed_span": "per epoch, on_epoch_begin to on_epoch_end of Keras's fit, summed (both sides); one-off "
        "data preparation before the first epoch and the test evaluation after each are outside it",
    }
    study_args = [str(args.data / "cifar-10-batches-py"), "--epochs", str(args.epochs), "--train-n", str(args.train_n)]
    with tempfile.TemporaryDirectory(prefix="kerascnn-bench-") as runs_root:
        rounds: list[dict[str, Any]] = []
        for _ in range(args.rounds):  # alternated, so drifts in the machine's speed land on both sides
            code, out, err, wall, rss = run_child([sys.executable, __file__, "--study-child", json.dumps(study_args)])
            if code != 0:
                raise SystemExit(f"the study's pipeline failed ({code}): {err.strip().splitlines()[-1:]}")
            study = json.loads(out.strip().splitlines()[-2])  # the script's own line, then the epoch times
            study_side = {
                **span_summary(args.train_n, last_json(out)["epoch_s"]),
                "whole_fit_call_images_per_s": study["train_images_per_s"],  # the script's own clock: fit() whole
                "test_acc": study["test_acc"],
                "peak_rss_mib": rss,
                "wall_s": wall,
            }
            ours = cifarfw_run(args, runs_root, recipe="study", epochs=args.epochs, train_limit=args.train_n)
            ours_side = {
                "recipe": "study",
                **span_summary(ours["train_images"], [e["train_s"] for e in ours["per_epoch"]]),
                "test_acc": ours["final_test_acc"],
                "peak_rss_mib": ours["peak_rss_mib"],
                "wall_s": ours["wall_s"],
                "resolved": ours["resolved"],
            }
            rounds.append(
                {
                    "study_pipeline": study_side,
                    "cifarfw": ours_side,
                    "throughput_ratio": ours_side["train_images_per_s"] / study_side["train_images_per_s"],
                    "steady_throughput_ratio": ours_side["steady_images_per_s"] / study_side["steady_images_per_s"],
                    "peak_rss_ratio": ours_side["peak_rss_mib"] / study_side["peak_rss_mib"],
                }
            )
        report["rounds"] = rounds
        if rounds:
            for key in ("throughput_ratio", "steady_throughput_ratio", "peak_rss_ratio"):
                report[key] = statistics.median(r[key] for r in rounds)
                report[f"{key}_per_round"] = [round(r[key], 3) for r in rounds]
            for side in ("study_pipeline", "cifarfw"):  # all rounds' epochs pooled
                epoch_s = [t for r in rounds for t in r[side]["epoch_s"]]
                report[f"{side}_pooled_images_per_s"] = args.train_n * len(epoch_s) / sum(epoch_s)
            report["pooled_throughput_ratio"] = (
                report["cifarfw_pooled_images_per_s"] / report["study_pipeline_pooled_images_per_s"]
            )
            report["cifarfw"] = rounds[-1]["cifarfw"]  # what the precision check compares with
        images = args.train_n * args.epochs
        if rounds and not args.no_precision_check and report["cifarfw"]["resolved"].get("precision") != "fp32":
            # What --precision auto chose, against float32: the evidence for the choice.
            fp32 = cifarfw_run(
                args, runs_root, recipe="study", epochs=args.epochs, train_limit=args.train_n, precision="fp32"
            )
            report["cifarfw_fp32"] = {
                "train_images_per_s": images / fp32["train_seconds"],
                "test_acc": fp32["final_test_acc"],
                "peak_rss_mib": fp32["peak_rss_mib"],
            }
            report["auto_precision_speedup"] = (
                report["cifarfw"]["train_images_per_s"] / report["cifarfw_fp32"]["train_images_per_s"]
            )

        if not args.no_target:
            attempts = []
            for recipe in [r for r in args.target_recipes.split(",") if r]:
                result = cifarfw_run(args, runs_root, recipe=recipe)
                hit = next((e for e in result["per_epoch"] if e["test_acc"] >= STUDY_TEST_ACC), None)
                attempts.append(
                    {
                        "recipe": recipe,
                        "epochs": result["epochs"],
                        "batch_size": result["batch_size"],
                        "precision": result["resolved"].get("precision"),
                        "test_acc_per_epoch": [round(e["test_acc"], 4) for e in result["per_epoch"]],
                        "reached": hit is not None,
                        "epoch": hit["epoch"] if hit else None,
                        "from_process_start_s": hit["from_process_start_s"] if hit else None,
                        "from_run_start_s": hit["from_run_start_s"] if hit else None,
                        "train_s": hit["train_s_so_far"] if hit else None,
                        "cpu_s_from_process_start": hit["cpu_s_from_process_start"] if hit else None,
                        "peak_rss_mib": result["peak_rss_mib"],
                    }
                )
                if hit is not None:
                    break
            report["time_to_study_accuracy"] = {"target_test_acc": STUDY_TEST_ACC, "goal_s": 84, "attempts": attempts}
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
