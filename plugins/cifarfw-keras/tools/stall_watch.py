"""Run a Python script under a stall watchdog: when did its process stop using the CPU, and why.

A background thread samples the process's CPU time every 0.25 s; a stretch in which the
process used under 5% of one CPU is a stall. Keras's ``fit`` is wrapped to time each epoch
(``on_epoch_begin`` to ``on_epoch_end``, the span the benchmarks time), so each stall can be
placed in its epoch. ``--dump`` prints every thread's stack at the first half second of each
stall: native frames with ``py-spy dump --native`` when py-spy is on PATH (how issue 19's
end-of-epoch stall was traced to tf.data's autotuner), else Python frames (``faulthandler``).

  python plugins/cifarfw-keras/tools/stall_watch.py [--dump] SCRIPT [ARGS...]
  e.g. python plugins/cifarfw-keras/tools/stall_watch.py ../shared/bench/seed_keras_cnn.py \\
           ../shared/data/cifar-10-batches-py --epochs 4
       python plugins/cifarfw-keras/tools/stall_watch.py "$(which cifarfw)" run --plugin keras-cnn --epochs 4

Prints one JSON line last: the epochs and the stalls, as seconds from the start.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import runpy
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

SAMPLE_S = 0.25
IDLE_SHARE = 0.05  # under 5% of one CPU over a sample: nothing is running
START = time.perf_counter()


def since_start(t: float) -> float:
    return round(t - START, 2)


def dump_stacks() -> None:
    """Every thread's stack to stderr: native frames when py-spy is available."""
    spy = shutil.which("py-spy")
    if spy:
        subprocess.run([spy, "dump", "--native", "--pid", str(os.getpid())], stdout=sys.stderr, check=False)
    else:
        faulthandler.dump_traceback(sys.stderr, all_threads=True)


class Watchdog:
    """Samples the process's CPU time; ``stalls`` are the stretches it stood still."""

    def __init__(self, dump: bool) -> None:
        self.dump = dump
        self.stalls: list[dict[str, float]] = []
        self.began: float | None = None  # the stall in progress
        self.last = time.perf_counter()

    def run(self) -> None:
        last_cpu = time.process_time()
        while True:
            time.sleep(SAMPLE_S)
            cpu, now = time.process_time(), time.perf_counter()
            idle = cpu - last_cpu < IDLE_SHARE * (now - self.last)
            if idle and self.began is None:
                self.began = self.last
                if self.dump:
                    print(f"--- stall at {since_start(self.began)} s", file=sys.stderr, flush=True)
                    dump_stacks()
            elif not idle and self.began is not None:
                self.close(self.last)
            last_cpu, self.last = cpu, now

    def close(self, end: float) -> None:
        if self.began is not None:
            self.stalls.append({"at_s": since_start(self.began), "seconds": round(end - self.began, 2)})
            self.began = None


def time_keras_epochs(epochs: list[dict[str, float]]) -> None:
    """Add an epoch-timing callback to every ``keras.Model.fit`` of the script."""
    try:  # the trainer's import: torch's triton before TensorFlow, or a later torch import crashes
        from cifarfw_keras._tf import keras
    except ImportError:
        import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            epochs.append({"at_s": since_start(self.began), "seconds": round(time.perf_counter() - self.began, 2)})

    original_fit = keras.Model.fit

    def timed_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), EpochTimer()]
        return original_fit(self, *args, **kwargs)

    keras.Model.fit = timed_fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", action="store_true", help="print every thread's stack when a stall begins")
    parser.add_argument("script", help="the Python script to run (as __main__)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args()
    epochs: list[dict[str, float]] = []
    watchdog = Watchdog(args.dump)
    threading.Thread(target=watchdog.run, daemon=True).start()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    time_keras_epochs(epochs)
    sys.argv = [args.script, *args.args]
    code: int | str | None = 0
    try:
        runpy.run_path(args.script, run_name="__main__")
    except SystemExit as exit_:  # a CLI's sys.exit: report, then exit with its code
        code = exit_.code
    watchdog.close(watchdog.last)  # a stall still going when the script ended
    stalls = [s for s in watchdog.stalls if s["seconds"] >= 2 * SAMPLE_S]
    print(json.dumps({"epochs": epochs, "stalls": stalls}))
    sys.exit(code)


if __name__ == "__main__":
    main()
