"""The Ray executor: each run of a sweep is one Ray task.

The task reserves ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs and runs the job as an
ordinary ``cifarfw run`` process on whichever node Ray picks; the run's record names that
node (``executor.node_id``, Ray's node id). When a node dies, Ray's own retry
(``max_retries``) runs the task again on another node, and the job continues the run from
its last checkpoint (``cifarfw run --resume``), since the runs root is shared: a run is never
started twice.
"""

from __future__ import annotations

import signal
import socket
from concurrent.futures import Future
from typing import Any

from cifarfw.errors import UsageError
from cifarfw_sweep.executors import Job, Outcome

# Retries after the task's worker or node died (system failures only: a run that fails on
# its own is not retried, its record says why).
MAX_RETRIES = 3


def run_task(job: dict[str, Any], threads: int) -> dict[str, Any]:
    """The body of each Ray task: run (or resume) the job on this node."""
    import ray

    from cifarfw_sweep.executors import run_job

    node_id = ray.get_runtime_context().get_node_id()
    # SIGKILL when this worker dies: the node is gone, the retry elsewhere resumes the run.
    outcome = run_job(Job(**job), "ray", node_id, threads=threads, deathsig=signal.SIGKILL)
    return outcome.__dict__


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that does not answer is a one-line error before Ray tries for a minute."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--ray-address must be HOST:PORT or auto, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise UsageError(
            f"--ray-address {address}: no Ray cluster answers there ({err.strerror or err}); "
            "start one with `ray start --head` or check the address"
        ) from None


class RayExecutor:
    """``--executor ray``: runs as Ray tasks, as many at once as the cluster's CPUs allow."""

    name = "ray"

    def __init__(self, options: dict[str, Any]) -> None:
        address = options.get("ray_address") or None
        cpus, gpus = options.get("cpus_per_run") or 1, options.get("gpus_per_run") or 0.0
        if not isinstance(cpus, int) or cpus < 1:
            raise UsageError(f"--cpus-per-run must be a positive integer, got {cpus!r}")
        if gpus < 0:
            raise UsageError(f"--gpus-per-run must be 0 or more, got {gpus!r}")
        if address and address != "auto":
            check_address(address)
        import ray

        try:
            if address is None:  # the embedded default: a Ray instance for this sweep alone
                ray.init(include_dashboard=False, log_to_driver=False, logging_level="warning")
            else:
                ray.init(address=address, log_to_driver=False, logging_level="warning")
        except ConnectionError as err:
            raise UsageError(f"--ray-address {address}: {' '.join(str(err).split())[:200]}") from None
        total = ray.cluster_resources().get("CPU", 1.0)
        self.capacity = int(options.get("parallel") or max(1, int(total // cpus)))
        self.threads = cpus
        self._task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=MAX_RETRIES, retry_exceptions=False)(run_task)

    def submit(self, job: Job) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        ref = self._task.remote(job.to_dict(), self.threads)

        def done(ray_future: Future[Any]) -> None:
            try:
                future.set_result(Outcome(**ray_future.result()))
            except BaseException as err:  # Ray gave up (retries spent): the sweep reports it
                future.set_exception(err)

        ref.future().add_done_callback(done)
        return future

    def close(self) -> None:
        import ray

        ray.shutdown()
