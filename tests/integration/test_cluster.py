"""Three real node processes on one Redis: even spread, one enqueue per periodic slot, delayed
jobs promoted on time."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import redis

from cluster.client import Client
from tests.support import wait_until
from tests.support.jobtasks import TASKS, read_log
from tests.support.nodes import NodeCluster


def _setup(tmp_path: Path, periodic: bool) -> tuple[Path, Path]:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "jobs.py").write_text(TASKS if periodic else TASKS.replace("tick = Task", "_tick = Task"))
    logs = tmp_path / "joblog"
    logs.mkdir()
    return tasks, logs


def test_work_spreads_evenly_across_nodes(tmp_path: Path, redis_url: str) -> None:
    tasks, logs = _setup(tmp_path, periodic=False)
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, queues="default,default",
                          env={"JOBLOG_DIR": str(logs)}, extra_args=["--log-level", "warning"])
    try:
        nodes = cluster.start(3)
        cluster.wait_leader(15)

        async def go() -> None:
            async with await Client.connect(redis_url) as c:
                await c.enqueue_many([("work", {"id": i, "s": 0.01}) for i in range(3000)])

        asyncio.run(go())
        wait_until(lambda: len([r for r in read_log(logs) if r["kind"] == "end"]) >= 3000, 60,
                   message="3000 jobs done")
        per_node = collections.Counter(r["pid"] for r in read_log(logs) if r["kind"] == "end")
        assert sorted(per_node) == sorted(n.pid for n in nodes)
        shares = {pid: n / 3000 for pid, n in per_node.items()}
        print(f"spread of 3000 jobs over 3 nodes x 2 workers: {sorted(per_node.values())}")
        assert all(abs(s - 1 / 3) <= 0.1 / 3 for s in shares.values()), f"shares {shares}"
    finally:
        cluster.close()


def test_periodic_and_delayed_across_three_nodes(tmp_path: Path, redis_url: str) -> None:
    tasks, logs = _setup(tmp_path, periodic=True)
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, queues="default,default",
                          env={"JOBLOG_DIR": str(logs)}, extra_args=["--audit"])
    try:
        cluster.start(3)
        cluster.wait_leader(15)
        due = int(time.time()) + 2

        async def go() -> None:
            async with await Client.connect(redis_url) as c:
                for i in range(20):
                    await c.enqueue_at(due + i % 3, "work", {"id": f"d{i}"})

        asyncio.run(go())
        wait_until(lambda: len({r["id"] for r in read_log(logs) if r["kind"] == "end"}) >= 20, 15,
                   message="20 delayed jobs ran")
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        audit = r.xrange("resque:corral:audit")
        slots = [f["detail"] for _id, f in audit if f["op"] == "periodic"]
        assert len(slots) >= 3, slots
        assert len(slots) == len(set(slots)), f"duplicate periodic slots: {slots}"
        wait_until(lambda: len([x for x in read_log(logs) if x["kind"] == "tick"]) >= len(slots), 5)
        ticks = [x for x in read_log(logs) if x["kind"] == "tick"]
        assert len(ticks) <= len(set(f["detail"] for _id, f in r.xrange("resque:corral:audit")
                                     if f["op"] == "periodic"))
        # delayed: each ran once, none before its due second, promoted promptly
        starts = collections.defaultdict(list)
        for x in read_log(logs):
            if x["kind"] == "start":
                starts[x["id"]].append(x["t"])
        for i in range(20):
            assert len(starts[f"d{i}"]) == 1
            lateness = starts[f"d{i}"][0] - (due + i % 3)
            assert 0 <= lateness < 0.5, f"d{i} started {lateness * 1000:.0f} ms after its due second"
        promote_lat = [int(f["redis_time_us"]) / 1e6 - int(b.split(":")[0])
                       for _id, f in audit if f["op"] == "promote" for b in f["detail"].split(",")]
        assert promote_lat and max(promote_lat) < 0.1, promote_lat
    finally:
        cluster.close()
