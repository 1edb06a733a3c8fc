"""``cifarfw run --nproc-per-node N``: hand the same command over to torchrun.

torchrun starts one process per device and sets RANK / WORLD_SIZE / LOCAL_RANK (and the
rendezvous address); each process runs ``python -m cifarfw <argv>`` without the launcher's
own options, reads that environment and trains its share (:mod:`cifarfw_torch.distributed`).
One machine uses torchrun's ``--standalone`` rendezvous; several meet at
``--rdzv-endpoint HOST:PORT`` (the c10d backend). This module imports no torch: the core
calls :func:`launch` through the trainer spec's ``launch`` before any process exists.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from cifarfw.errors import UsageError

# The options that configure the launch itself: the processes torchrun starts must not see
# them, or each would launch again.
LAUNCH_OPTIONS = frozenset({"--nproc-per-node", "--nnodes", "--rdzv-endpoint"})


def launch(argv: list[str], nproc_per_node: int, nnodes: int, rdzv_endpoint: str | None) -> int:
    """Run ``cifarfw argv`` under torchrun and return torchrun's exit code.

    ``argv`` is the user's cifarfw command line (``["run", "--plugin", ...]``, the program
    name left out); the launcher options in it are dropped. UsageError when torch's launcher
    is not installed.
    """
    if not _has_module("torch.distributed.run"):
        raise UsageError("--nproc-per-node needs torch installed (torchrun); install cifarfw-torch")
    return subprocess.call(command(argv, nproc_per_node, nnodes, rdzv_endpoint))


def command(argv: list[str], nproc_per_node: int, nnodes: int, rdzv_endpoint: str | None) -> list[str]:
    """The torchrun command line :func:`launch` runs."""
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc_per_node}",
        f"--nnodes={nnodes}",
    ]
    if rdzv_endpoint:
        launcher += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    else:
        launcher += ["--standalone"]
    return [*launcher, "-m", "cifarfw", *drop_options(argv, LAUNCH_OPTIONS)]


def drop_options(args: list[str], names: frozenset[str] | set[str]) -> list[str]:
    """``args`` without the named options and their values (``--x V`` and ``--x=V``)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in names:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
