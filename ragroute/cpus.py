"""How many CPU cores this process may run on (its affinity mask and its cgroup's CPU quota, not the
machine's core count)."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

#: where the cgroup file systems are mounted (v2: the unified hierarchy; v1: one folder per controller)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: this process's cgroups, one ``ID:CONTROLLERS:PATH`` line per hierarchy
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus() -> int:
    """Cores in this process's affinity mask (``os.cpu_count()`` where there is none), at most its
    cgroup's CPU quota rounded up (a container's ``--cpus``: until session 48 a container given 2 CPUs
    on a 64-core machine counted 64), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    quota = process_cpu_quota()
    return max(1, cores if quota is None else min(cores, quota))


@functools.cache
def process_cpu_quota() -> int | None:
    """:func:`cgroup_cpu_quota`, read once per process: :func:`usable_cpus` is asked on every query
    searching several sources (how many groups to search them in), where reading the cgroup files
    each time would cost more than the search's hand-off."""
    return cgroup_cpu_quota()


def cgroup_cpu_quota() -> int | None:
    """The CPUs this process's cgroup quota allows, rounded up (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the smallest over the cgroup and its ancestors);
    None without a quota, or where the cgroup files cannot be read."""
    try:
        lines = PROC_CGROUP.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    quotas: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:  # v2: the unified hierarchy
            quotas += _quotas_along(CGROUP_ROOT, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            quotas += _quotas_along(CGROUP_ROOT / controllers, path, _v1_quota)
    return min(quotas, default=None)


def _quotas_along(mount: Path, path: str, read: Callable[[Path], int | None]) -> list[int]:
    """The quotas ``read`` finds in the cgroup folder ``path`` under ``mount`` and in each folder
    above it, up to ``mount`` (a container's own cgroup is often mounted there, its path as the host
    names it absent)."""
    folder = mount.joinpath(*[part for part in path.split("/") if part and part != ".."])
    found = []
    while True:
        quota = read(folder)
        if quota is not None:
            found.append(quota)
        if folder == mount:
            return found
        folder = folder.parent


def _v2_quota(folder: Path) -> int | None:
    """CPUs of a cgroup v2 ``cpu.max`` (``QUOTA PERIOD``, or ``max PERIOD``: none)."""
    fields = _read(folder / "cpu.max").split()
    return _cpus(fields[0], fields[1]) if len(fields) == 2 else None


def _v1_quota(folder: Path) -> int | None:
    """CPUs of a cgroup v1 CFS quota (``-1``: none)."""
    return _cpus(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))


def _cpus(quota: str, period: str) -> int | None:
    """``quota / period`` rounded up, or None for no quota (``max``, ``-1``) or unreadable values."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return math.ceil(q / p) if q > 0 and p > 0 else None


def _read(path: Path) -> str:
    """A cgroup file's text, stripped ("" when it cannot be read)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
