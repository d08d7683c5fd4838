"""How many CPUs this process may use: the container's CPU quota, not the host's CPU count.

`os.cpu_count()` in a container is the host's count (64 on a big node), while a pod limited to
2 CPUs gets 2 CPUs' worth of time per period from the kernel (CFS quota); a `cpu_bound` pool sized
from the host count then runs 64 processes that are throttled in turn. The quota is read from
cgroup v2 (`cpu.max`, "max" or "<quota> <period>") or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`,
-1 = none) along the process's cgroup path up to the root (a parent's limit binds too), rounded
up, and capped by the CPUs the process may run on (cpuset / affinity).
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(mount: Path, cgroup_path: str) -> list[Path]:
    """The cgroup directory of this process and its parents up to the mount point. Inside a
    container with its own cgroup namespace the path is "/" and the mount point is the group."""
    parts = [p for p in cgroup_path.split("/") if p]
    dirs = [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()] or [mount]


def _v2_quota(root: Path, cgroup_path: str) -> float | None:
    limits = []
    for d in _ancestors(root / "sys/fs/cgroup", cgroup_path):
        fields = (_read(d / "cpu.max") or "").split()
        if len(fields) == 2 and fields[0] != "max":
            quota, period = int(fields[0]), int(fields[1])
            if quota > 0 and period > 0:
                limits.append(quota / period)
    return min(limits) if limits else None


def _v1_quota(root: Path, cgroup_path: str) -> float | None:
    limits = []
    for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        for d in _ancestors(root / "sys/fs/cgroup" / name, cgroup_path):
            quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if quota and period and quota.lstrip("-").isdigit() and period.isdigit():
                if int(quota) > 0 and int(period) > 0:
                    limits.append(int(quota) / int(period))
        if limits:
            break
    return min(limits) if limits else None


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5 = 150 ms per 100 ms), None when unlimited."""
    lines = (_read(root / "proc/self/cgroup") or "").splitlines()
    for line in lines:  # v2: "0::/path"
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            quota = _v2_quota(root, path)
            if quota is not None:
                return quota
    for line in lines:  # v1: "4:cpu,cpuacct:/path"
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "cpu" in controllers.split(","):
            return _v1_quota(root, path)
    return None


def available_cpus(root: Path = Path("/")) -> int:
    """CPUs this process may use: the cgroup quota rounded up, capped by its CPU affinity; >= 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
