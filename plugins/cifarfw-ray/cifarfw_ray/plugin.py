"""The ``ray`` plugin: the ``ray`` executor of ``cifarfw sweep`` (``register_executors``).

Ray is imported only when a sweep uses the executor: plugin modules are imported by every
``cifarfw`` start, and ``cifarfw --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cifarfw import hookimpl
from cifarfw.specs import ExecutorSpec, Option

if TYPE_CHECKING:
    from collections.abc import Callable

CIFARFW_HOOK_API = 2

OPTIONS = (
    Option("ray_address", "The Ray cluster, HOST:PORT or auto (default: start a local Ray instance)."),
    Option("cpus_per_run", "CPUs each run's Ray task reserves, and its thread count (default 1).", default=1, type=int),
    Option(
        "gpus_per_run", "GPUs each run's Ray task reserves (default 0; fractions share a GPU).", default=0.0, type=float
    ),
)


def _ray(options: dict[str, Any]) -> Any:
    from cifarfw_ray.executor import RayExecutor

    return RayExecutor(options)


@hookimpl
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    register(
        ExecutorSpec(
            "ray",
            _ray,
            OPTIONS,
            description="each run a Ray task (local instance or a cluster); a run whose node dies is retried on another",
        )
    )
