"""Where and how a Keras run computes: --device and --precision mapped onto TensorFlow.

``validate_config`` runs before any run folder exists and imports TensorFlow only when
the answer depends on the GPUs present (``--device gpu``, ``--precision fp16``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cifarfw.errors import UsageError
from cifarfw.hardware import cpu_has_native_bf16

if TYPE_CHECKING:
    from cifarfw.config import RunConfig
    from cifarfw.specs import ModelSpec

# Keras dtype policy of each cifarfw precision.
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_GPU_RE = re.compile(r"^(?:gpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Runtime:
    """The resolved device and precision of one run."""

    device: str  # a TensorFlow device name, "/CPU:0" or "/GPU:N"
    precision: str  # fp32 | bf16 | fp16
    accelerator: str  # "cpu" or the GPU's name

    @property
    def policy(self) -> str:
        return POLICIES[self.precision]

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("/GPU")

    def describe(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.precision}


def _gpus() -> list[Any]:
    from cifarfw_keras._tf import tf

    return tf.config.list_physical_devices("GPU")


def _gpu_details(gpu: Any) -> dict[str, Any]:
    from cifarfw_keras._tf import tf

    try:
        return dict(tf.config.experimental.get_device_details(gpu))
    except (ValueError, RuntimeError):
        return {}


def resolve_device(requested: str) -> tuple[str, dict[str, Any]]:
    """``auto``/``cpu``/``gpu[:N]``/``cuda[:N]`` -> (TensorFlow device name, GPU details)."""
    if requested == "cpu":
        return "/CPU:0", {}
    gpus = _gpus()
    if requested == "auto":
        return ("/GPU:0", _gpu_details(gpus[0])) if gpus else ("/CPU:0", {})
    match = _GPU_RE.match(requested)
    if match is None:  # the core's config check already limits the forms
        raise UsageError(f"--device {requested}: use auto, cpu, gpu[:N] or cuda[:N]")
    if not gpus:
        from cifarfw_keras._tf import tf

        build = "built with CUDA" if tf.test.is_built_with_cuda() else "a CPU-only build"
        raise UsageError(
            f"--device {requested}: TensorFlow sees no GPU here (tensorflow {tf.__version__}, {build}); "
            "use --device cpu or --device auto"
        )
    index = int(match.group(1) or 0)
    if index >= len(gpus):
        raise UsageError(f"--device {requested}: TensorFlow sees {len(gpus)} GPU(s), numbered 0-{len(gpus) - 1}")
    return f"/GPU:{index}", _gpu_details(gpus[index])


def resolve_precision(requested: str, device: str, gpu: dict[str, Any]) -> str:
    """The precision used on ``device``; UsageError for one it cannot do well."""
    if device.startswith("/GPU"):
        capability = tuple(gpu.get("compute_capability") or (0, 0))
        bf16_ok = capability >= (8, 0)
        if requested == "auto":
            return "bf16" if bf16_ok else "fp16"
        if requested == "bf16" and not bf16_ok:
            raise UsageError(
                f"--precision bf16: {gpu.get('device_name', 'this GPU')} has no bfloat16 support; use fp16, fp32 or auto"
            )
        return requested
    if requested == "fp16":
        raise UsageError(
            "--precision fp16 needs a GPU (mixed_float16 with loss scaling); on a CPU use bf16, fp32 or auto"
        )
    if requested == "bf16" and not cpu_has_native_bf16():
        raise UsageError(
            "--precision bf16: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16), so bf16 would be "
            "slower than fp32; use --precision fp32 or auto"
        )
    if requested == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return requested


def allowed_cpus() -> int:
    """The CPUs this process may run on: what TensorFlow sizes a pool left at 0 to."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(wanted: dict[str, Any] | None) -> tuple[dict[str, int], bool]:
    """Fix TensorFlow's intra- and inter-op pool sizes for the run: ``wanted`` (a resumed run's
    recorded ones) when given, else what TensorFlow would pick. Returns (the sizes in effect,
    whether ``wanted`` could be honoured). The sizes decide how reductions split their work, so
    a resume must run with the sizes the run began with; TensorFlow's own choice does not
    depend on load, but it does on the CPUs a process is allowed (taskset, container limits)."""
    from cifarfw_keras._tf import tf

    threading = tf.config.threading
    current = {
        "intra_op": threading.get_intra_op_parallelism_threads() or allowed_cpus(),
        "inter_op": threading.get_inter_op_parallelism_threads() or allowed_cpus(),
    }
    if not wanted:
        wanted = current
    target = {key: int(wanted.get(key) or current[key]) for key in current}
    if target != current:
        try:
            threading.set_intra_op_parallelism_threads(target["intra_op"])
            threading.set_inter_op_parallelism_threads(target["inter_op"])
        except RuntimeError:  # TensorFlow's runtime already started in this process: pools are fixed
            return current, False
    return target, True


def stop_thread_spinning() -> bool:
    """Let TensorFlow's idle pool threads sleep instead of spinning; returns whether they do.

    Between two kernels a spinning thread keeps polling for work, taking the CPU the busy
    thread needs when there are only a few cores: the keras-cnn step measured 10-15% less CPU
    and 4% less wall time a batch on the 2-core machine (plugins/cifarfw-keras/README.md). The
    switch is ``ConfigProto.experimental.disable_thread_spinning``, read once when TensorFlow's
    runtime starts and set by no public API, so it is put into the eager context's own
    configuration before then; after that (an earlier run in this process) the pools are
    what they are and the answer says so."""
    from cifarfw_keras._tf import tf  # noqa: I001  (first: it imports TensorFlow the safe way, see _tf)
    from tensorflow.python.eager import context as eager_context

    ctx = eager_context.context()
    try:
        if ctx._context_handle is not None:  # started: the pools exist already
            return bool(ctx._config is not None and ctx._config.experimental.disable_thread_spinning)
        proto = tf.compat.v1.ConfigProto()
        if ctx._config is not None:
            proto.CopyFrom(ctx._config)
        proto.experimental.disable_thread_spinning = True
        ctx._config = proto
    except AttributeError:  # a TensorFlow whose context keeps its configuration elsewhere
        return False
    return True


def resolve(config: RunConfig) -> Runtime:
    device, gpu = resolve_device(config.device)
    precision = resolve_precision(config.precision, device, gpu)
    return Runtime(device, precision, gpu.get("device_name", "GPU") if gpu else "cpu")


def validate_config(config: RunConfig, model: ModelSpec) -> None:
    """Everything the keras trainer refuses, checked before any run folder exists."""
    if config.nesterov and (config.optimizer != "sgd" or config.momentum <= 0):
        raise UsageError("nesterov needs --optimizer sgd and --momentum > 0")
    validate_launch(config)
    # Only the GPU-dependent answers need TensorFlow (seconds to import): auto/auto needs none.
    if config.device == "cpu":
        resolve_precision(config.precision, "/CPU:0", {})
    elif config.device != "auto" or config.precision != "auto":
        resolve(config)


def validate_launch(config: RunConfig) -> None:
    """A distributed launch this trainer cannot run (see distributed.py), refused up front."""
    import os

    from cifarfw.runner import world_from_env

    workers = world_from_env()[1]
    if workers > 1 and not os.environ.get("TF_CONFIG"):
        raise UsageError(
            "the keras trainer distributes with tf.distribute, which reads TF_CONFIG; start one process per worker "
            "with its TF_CONFIG (torchrun and --nproc-per-node are for torch plugins)"
        )
    if workers > 1 and config.batch_size % workers:
        raise UsageError(
            f"--batch-size {config.batch_size} is the global batch and must divide evenly among the {workers} "
            f"workers; use a multiple of {workers}"
        )
