"""How many CPU cores this process may run on (its affinity mask, not the machine's core count)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """Cores in this process's affinity mask (``os.cpu_count()`` where there is none), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)
