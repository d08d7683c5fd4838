"""`--processes` 0 sizes the cpu_bound pool from the container's CPU quota (cgroup v2 cpu.max,
v1 CFS quota), read under a fake root laid out like /proc and /sys/fs/cgroup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.config import NodeConfig
from node.cpu_quota import available_cpus, cgroup_cpu_quota


def _layout(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize(("files", "quota"), [
    # cgroup v2 in a container (own cgroup namespace): the group is the mount point
    ({"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "150000 100000\n"}, 1.5),
    ({"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "max 100000\n"}, None),
    # v2 seen from the host: the pod's limit sits on a parent of the container's group
    ({"proc/self/cgroup": "0::/kubepods/pod1/ctr\n", "sys/fs/cgroup/kubepods/pod1/cpu.max": "200000 100000\n",
      "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "max 100000\n", "sys/fs/cgroup/cpu.max": "max 100000\n"}, 2.0),
    # the tighter of a group and its parent binds
    ({"proc/self/cgroup": "0::/a/b\n", "sys/fs/cgroup/a/cpu.max": "400000 100000\n",
      "sys/fs/cgroup/a/b/cpu.max": "50000 100000\n"}, 0.5),
    # cgroup v1: CFS quota and period, -1 = unlimited
    ({"proc/self/cgroup": "4:memory:/x\n3:cpu,cpuacct:/\n", "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "300000\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"proc/self/cgroup": "2:cpuacct:/\n1:cpu:/\n", "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
      "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}, None),
    # no cgroup information at all (not Linux, /proc not mounted)
    ({}, None),
])
def test_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cgroup_cpu_quota(_layout(tmp_path, files)) == quota


def test_available_cpus_rounds_the_quota_up_and_never_exceeds_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    half = _layout(tmp_path / "half", {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "50000 100000\n"})
    assert available_cpus(half) == 1
    wide = _layout(tmp_path / "wide", {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "6400000 100000\n"})
    assert available_cpus(wide) == affinity, "a quota above the CPUs the process may run on does not count"
    assert available_cpus(tmp_path / "none") == affinity


def test_processes_zero_means_the_quota_and_an_explicit_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.cpu_quota.cgroup_cpu_quota", lambda root=None: 1.2)
    cfg = NodeConfig.from_sources({}, {})
    assert cfg.processes == 0 and cfg.pool_processes() == min(2, len(os.sched_getaffinity(0)))
    assert NodeConfig.from_sources({"processes": 5}, {}).pool_processes() == 5
