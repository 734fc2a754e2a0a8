"""What this machine is, from /proc (standard library only: the README figures script imports
it from the demo's venv, where the benchmarks' dependencies are not installed)."""

from __future__ import annotations

import platform

__all__ = ["cpu_model", "memory_gib"]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_gib() -> float | None:
    """Total memory in GiB (/proc/meminfo's MemTotal), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None
