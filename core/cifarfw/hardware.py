"""Facts about this machine that every trainer needs, without any framework import."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> set[str] | None:
    """The CPU feature flags from /proc/cpuinfo (x86 "flags", Arm "Features"), else None."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return None


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX512-BF16, AMX, Arm BF16). Elsewhere
    bf16 is emulated and slower than float32, so precision "auto" keeps float32 there."""
    flags = cpu_flags() or set()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return True
    return platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags


def cpu_name() -> str:
    """The CPU model as the run record shows it."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
