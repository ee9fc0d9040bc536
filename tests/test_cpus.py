"""How many CPU cores ragroute uses (``ragroute.cpus.usable_cpus``): its affinity mask, at most its
cgroup's CPU quota (read from files made here, never the machine's own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragroute import cpus


@pytest.fixture
def cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cgroup file system under ``tmp_path`` (``/proc/self/cgroup`` as ``tmp_path/self-cgroup``)
    and an affinity mask of 64 cores."""
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path / "cgroup", raising=False)
    monkeypatch.setattr(cpus, "PROC_CGROUP", tmp_path / "self-cgroup", raising=False)
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    cpus.process_cpu_quota.cache_clear()
    yield tmp_path
    cpus.process_cpu_quota.cache_clear()  # the machine's own, for the tests after these


def _usable() -> int:
    """``usable_cpus()`` reading the cgroup files as they are now (a process reads them once)."""
    cpus.process_cpu_quota.cache_clear()
    return cpus.usable_cpus()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_cgroup_v2_quota_caps_the_cores(cgroups: Path) -> None:
    """A container given 1.5 CPUs on a 64-core machine: until session 48 ragroute counted 64 (a local
    Ray build started 64 workers, each loading the encoder; ONNX ran 64 threads on 1.5 CPUs)."""
    _write(cgroups / "self-cgroup", "0::/pods/job\n")
    _write(cgroups / "cgroup/pods/job/cpu.max", "max 100000\n")
    assert _usable() == 64  # no quota here
    _write(cgroups / "cgroup/pods/cpu.max", "150000 100000\n")  # an ancestor's quota holds too
    assert _usable() == 2
    _write(cgroups / "cgroup/pods/job/cpu.max", "100000 100000\n")
    assert _usable() == 1


def test_a_cgroup_v1_quota_caps_the_cores(cgroups: Path) -> None:
    """cgroup v1, the container's cgroup mounted at the controller's root (its own path, as the host
    names it, is not there)."""
    _write(cgroups / "self-cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    _write(cgroups / "cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    _write(cgroups / "cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert _usable() == 64  # -1: no quota
    _write(cgroups / "cgroup/cpu,cpuacct/cpu.cfs_quota_us", "400000\n")
    assert _usable() == 4


def test_unreadable_or_odd_cgroup_files_leave_the_affinity_mask(cgroups: Path) -> None:
    assert _usable() == 64  # no /proc/self/cgroup at all
    _write(cgroups / "self-cgroup", "garbage\n0::/\n")
    _write(cgroups / "cgroup/cpu.max", "lots 100000\n")
    assert _usable() == 64
    _write(cgroups / "cgroup/cpu.max", "0 0\n")
    assert _usable() == 64
