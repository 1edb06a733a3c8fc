"""Where a Keras training step's time goes: the keras trainer's own pieces, timed apart.

Builds a model plugin's model and compiles it exactly as the keras trainer does (its
``compile_model``, ``data.train_dataset``), then times, in ms per batch:

  fwd          the forward pass alone (inference mode)
  fwd_bwd      forward + gradients, no update
  step_fixed   Keras's compiled train function on one batch repeated from memory
               (no input pipeline): forward, gradients, optimizer update, metrics
  step_data    the same train function fed by the trainer's tf.data pipeline
  pipeline     the input pipeline alone (batches pulled and dropped)
  fit          model.fit over the pipeline with the trainer's EventBridge-like progress callback

``--vs-study N`` instead alternates, in this one process, an epoch of N batches of this trainer's
``model.fit`` (the recipe as the trainer compiles it) with an epoch of N batches of the study's
own ``fit`` (float32, Keras defaults, float64 arrays as its script passes them, batch 32), each
timed from on_epoch_begin to on_epoch_end: the ratio of rounds that ran under the same load.

With ``--trace DIR``, it captures TensorFlow's profiler over ``step_data`` and prints the
ops' share of the traced CPU time (grouped: convolutions, their gradients, pooling,
optimizer, metrics, input pipeline, ...).

  python plugins/cifarfw-keras/tools/profile_step.py [--batch 32] [--steps 400] [--trace /tmp/kp]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "cifar-10-batches-py"


def load_train(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in range(1, 6):
        with open(path / f"data_batch_{i}", "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d["labels"], np.int64))
        if sum(len(y) for y in ys) >= n:
            break
    return np.ascontiguousarray(np.concatenate(xs)[:n]), np.concatenate(ys)[:n]


CPU_MS: dict[str, float] = {}


def per_batch_ms(fn: Any, steps: int, repeats: int = 3, name: str = "") -> float:
    """Best of ``repeats`` timings of ``fn(steps)``, in ms per batch (the best survives load);
    the process CPU ms per batch of that best repeat go to CPU_MS[name]."""
    best = float("inf")
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn(steps)
        wall = (time.perf_counter() - start) / steps * 1000
        if wall < best:
            best = wall
            CPU_MS[name] = (time.process_time() - cpu) / steps * 1000
    return best


GROUPS = [
    ("conv forward", r"^Conv2D$|_FusedConv2D|^BiasAdd$"),
    ("conv backward", r"Conv2DBackprop|BiasAddGrad"),
    ("matmul fwd+bwd", r"MatMul"),
    ("pooling fwd+bwd", r"MaxPool"),
    ("relu/softmax/loss", r"Relu|Softmax|Log|Xent|CrossEntropy"),
    ("optimizer update", r"ResourceApply|AssignAddVariable|AssignSubVariable|AssignVariable|Sqrt|RealDiv|Pow"),
    ("casts", r"^Cast$"),
    ("input pipeline", r"Iterator|GatherV2|OneHot|Dataset|Optional"),
    ("control flow (while/cond)", r"While|If|StatelessIf|Switch|Merge|Enter|Exit|NextIteration|LoopCond"),
]


def _layer(scope: str) -> str:
    match = re.search(r"(conv2d[^/]*)/", scope)
    return match.group(1) if match else "?"


def summarise_trace(logdir: str, steps: int) -> dict[str, Any]:
    """Aggregate the TF ops of the host plane's op line(s) of the newest xplane.pb."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb")), key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(files[-1]).read_bytes())
    per_op: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "?")
                # Leaf kernels are named "scope/op:OpType"; the executor's and the eager
                # runtime's enclosing events (ExecutorState::Process, ...) would count twice.
                if ":" not in name or "::" in name or name.startswith("EagerLocalExecute"):
                    continue
                scope = name.split(":")[0]
                op = name.split(":")[-1]
                key = op if "conv" not in scope.lower() else f"{op} [{_layer(scope)}]"
                per_op[key] += ev.duration_ps / 1e9  # ms
    grouped: collections.Counter[str] = collections.Counter()
    for op, ms in per_op.items():
        group = next((g for g, rx in GROUPS if re.search(rx, op)), "other")
        grouped[group] += ms
    total = sum(grouped.values())
    return {
        "op_ms_per_step_total": round(total / steps, 3),
        "groups_ms_per_step": {g: round(ms / steps, 3) for g, ms in grouped.most_common()},
        "groups_share": {g: round(ms / total, 3) for g, ms in grouped.most_common()},
        "top_ops_ms_per_step": {op: round(ms / steps, 3) for op, ms in per_op.most_common(25)},
    }


def vs_study(args: Any, model: Any, train: Any, x_np: np.ndarray, y_np: np.ndarray, keras: Any, precision: str) -> None:
    """Alternate epochs of N batches: this trainer's fit against the study's fit, same process."""
    import statistics

    from cifarfw_keras_cnn.model import build

    n = args.vs_study
    x_study = x_np[: n * 32] / 255.0  # float64, as the study's script hands it to fit
    y_study = y_np[: n * 32]
    keras.utils.set_random_seed(0)
    from cifarfw_keras.trainer import dtype_policy

    with dtype_policy("float32"):  # the study's script never sets a policy
        study = build(10)
    study.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    spans: dict[str, list[float]] = {"cifarfw": [], "study": []}
    cpu: dict[str, list[float]] = {"cifarfw": [], "study": []}

    class Timer(keras.callbacks.Callback):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            spans[self.name].append((time.perf_counter() - self.start) / n * 1000)
            cpu[self.name].append((time.process_time() - self.cpu) / n * 1000)

    class Progress(keras.callbacks.Callback):  # what the trainer's bridge does every call
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            float((logs or {}).get("loss", 0.0))

    ours = train.take(n)
    for r in range(args.rounds + 1):  # round 0 traces both: dropped
        model.fit(ours, epochs=1, verbose=0, shuffle=False, callbacks=[Progress(), Timer("cifarfw")])
        study.fit(x_study, y_study, batch_size=32, epochs=1, verbose=0, callbacks=[Timer("study")])
        if r == 0:
            for d in (spans, cpu):
                d["cifarfw"].clear()
                d["study"].clear()
    ratios = [s / c for s, c in zip(spans["study"], spans["cifarfw"], strict=True)]
    result = {
        "batches_per_epoch": n,
        "precision": precision,
        "load_avg": os.getloadavg(),
        "ms_per_batch": {k: [round(v, 2) for v in vs] for k, vs in spans.items()},
        "cpu_ms_per_batch": {k: [round(v, 2) for v in vs] for k, vs in cpu.items()},
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
        "cpu_ratio_median": round(
            statistics.median(s / c for s, c in zip(cpu["study"], cpu["cifarfw"], strict=True)), 3
        ),
    }
    json.dump(result, sys.stdout, indent=1)
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="keras-cnn")
    p.add_argument("--recipe", default="study")
    p.add_argument("--batch", type=int, default=0, help="batch size (default: the recipe's)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=400, help="batches per timing")
    p.add_argument("--train-n", type=int, default=10_000)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--trace", default="", help="profiler log folder: trace step_data and summarise the ops")
    p.add_argument("--intra", type=int, default=-1, help="TensorFlow intra-op threads (default: the trainer's)")
    p.add_argument("--inter", type=int, default=-1, help="TensorFlow inter-op threads (default: the trainer's)")
    p.add_argument("--vs-study", type=int, default=0, metavar="N", help="alternate N-batch epochs with the study's fit")
    p.add_argument("--rounds", type=int, default=5, help="rounds of --vs-study")
    p.add_argument("--spin", action="store_true", help="idle TensorFlow threads spin (the trainer lets them sleep)")
    p.add_argument("--only", default="", help="comma list of timings to run (default all)")
    args = p.parse_args()

    import importlib

    from cifarfw.config import RunConfig

    found: list[Any] = []  # the model plugin's module, asked directly (no plugin host needed)
    importlib.import_module(f"cifarfw_{args.model.replace('-', '_')}.plugin").register_models(found.append)
    spec = next(s for s in found if s.name == args.model)
    recipe = dict(spec.recipes[args.recipe])
    augment = recipe.pop("augment", {})
    cfg = RunConfig(plugin=args.model, model=args.model, precision=args.precision, **recipe)
    for k, v in augment.items():
        setattr(cfg.augment, k, v)
    if args.batch:
        cfg.batch_size = args.batch

    from cifarfw_keras import data, runtime, trainer
    from cifarfw_keras._tf import keras, tf

    if not args.spin:  # as the trainer does, before TensorFlow's runtime starts
        runtime.stop_thread_spinning()
    if args.intra >= 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter >= 0:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    x_np, y_np = load_train(args.data, args.train_n)
    rt = runtime.resolve(cfg)
    steps = data.steps_per_epoch(len(y_np), cfg.batch_size)
    keras.utils.set_random_seed(0)

    class _Run:  # what build_model reads
        model = spec
        config = cfg

        class dataset:
            num_classes = 10

    with tf.device(rt.device):
        model = trainer.build_model(_Run, rt.policy)
        trainer.compile_model(model, cfg, steps, probabilities=True)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        aug = data.AugmentSettings(cfg.augment.crop_padding, cfg.augment.flip, cfg.augment.brightness)
        train = data.train_dataset(
            x_np, y_np, num_classes=10, batch_size=cfg.batch_size, seed=0, epoch=epoch_var, augment=aug,
            input_size=spec.input_size, mean=spec.mean, std=spec.std,
        )  # fmt: skip
        xb, yb = next(iter(train))
        fixed = tf.data.Dataset.from_tensors((xb, yb)).repeat()
        if args.vs_study:
            vs_study(args, model, train, x_np, y_np, keras, rt.precision)
            return
        model.make_train_function()
        spe = int(model.steps_per_execution) if hasattr(model, "steps_per_execution") else 1
        only = set(filter(None, args.only.split(",")))
        result: dict[str, Any] = {
            "model": args.model,
            "recipe": args.recipe,
            "batch": cfg.batch_size,
            "precision": rt.precision,
            "steps_per_execution": spe,
            "load_avg": os.getloadavg(),
            "tf_threads": {
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            },
            "env": {k: v for k, v in os.environ.items() if k.startswith(("TF_", "OMP_", "KMP_", "ONEDNN", "DNNL"))},
            "ms_per_batch": {},
        }

        def want(name: str) -> bool:
            return not only or name in only

        fwd = tf.function(lambda x: model(x, training=False))
        if want("fwd"):
            fwd(xb)
            result["ms_per_batch"]["fwd"] = per_batch_ms(
                lambda n: [fwd(xb) for _ in range(n)][-1].numpy(), 200, name="fwd"
            )

        @tf.function
        def fwd_bwd(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
            return tape.gradient(loss, model.trainable_weights)

        if want("fwd_bwd"):
            fwd_bwd(xb, yb)
            result["ms_per_batch"]["fwd_bwd"] = per_batch_ms(
                lambda n: [fwd_bwd(xb, yb) for _ in range(n)][-1][0].numpy(), 200, name="fwd_bwd"
            )

        def run_train(iterator: Any, n: int) -> None:
            for _ in range(max(1, n // spe)):
                logs = model.train_function(iterator)
            float(logs["loss"])

        if want("step_fixed"):
            it = iter(fixed)
            run_train(it, spe)
            result["ms_per_batch"]["step_fixed"] = per_batch_ms(
                lambda n: run_train(it, n), args.steps, name="step_fixed"
            )
        if want("pipeline"):
            it = iter(train.repeat())
            result["ms_per_batch"]["pipeline"] = per_batch_ms(
                lambda n: [next(it) for _ in range(n)], args.steps, name="pipeline"
            )
        if want("step_data"):
            it = iter(train.repeat())
            run_train(it, spe)
            result["ms_per_batch"]["step_data"] = per_batch_ms(lambda n: run_train(it, n), args.steps, name="step_data")
            if args.trace:
                tf.profiler.experimental.start(args.trace)
                run_train(it, args.steps)
                tf.profiler.experimental.stop()
                result["trace"] = summarise_trace(args.trace, args.steps)
        if want("fit"):

            class Progress(keras.callbacks.Callback):
                def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                    float((logs or {}).get("loss", 0.0))

            def fit(n: int) -> None:
                model.fit(train.take(n), epochs=1, verbose=0, shuffle=False, callbacks=[Progress()])

            fit(spe)
            result["ms_per_batch"]["fit"] = per_batch_ms(fit, min(args.steps, steps), repeats=2, name="fit")
    result["images_per_s"] = {k: round(cfg.batch_size * 1000 / v) for k, v in result["ms_per_batch"].items()}
    result["ms_per_batch"] = {k: round(v, 3) for k, v in result["ms_per_batch"].items()}
    result["cpu_ms_per_batch"] = {k: round(v, 3) for k, v in CPU_MS.items()}
    result["load_avg_end"] = os.getloadavg()
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
