"""Targeted wake-ups on real node processes: a lone job wakes one idle node (the longest idle),
not every node, so it costs one fetch whatever the cluster size, and lone jobs rotate evenly."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import redis

from cluster.client import Client
from cluster.keys import Keys
from tests.support import wait_until
from tests.support.jobtasks import TASKS, read_log
from tests.support.nodes import NodeCluster

K = Keys("resque")


def _evalsha_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_lone_jobs_wake_one_node_each_and_rotate(tmp_path: Path, redis_url: str) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "jobs.py").write_text(TASKS.replace("tick = Task", "_tick = Task"))
    logs = tmp_path / "joblog"
    logs.mkdir()
    # a long poll interval: a job picked up at all within the bound was picked up by a wake-up
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, queues="default",
                          env={"JOBLOG_DIR": str(logs)},
                          extra_args=["--log-level", "warning", "--poll-interval", "30"])
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        nodes = cluster.start(4)
        cluster.wait_leader(15)
        wait_until(lambda: r.zcard(K.idle("default")) == 4, 15, 0.05, message="all 4 nodes filed as idle")
        n = 24

        async def go() -> list[int]:
            calls = []
            async with await Client.connect(redis_url) as c:
                for i in range(n):
                    before = _evalsha_calls(r)
                    await c.enqueue("work", {"id": f"w{i}", "s": 0})
                    await asyncio.to_thread(
                        wait_until, lambda i=i: any(x["id"] == f"w{i}" and x["kind"] == "end" for x in read_log(logs))
                        and r.zcard(K.idle("default")) == 4, 5.0, 0.005, message=f"job w{i} done, its node idle again")
                    calls.append(_evalsha_calls(r) - before)
            return calls

        calls = asyncio.run(go())
        per_node = collections.Counter(x["pid"] for x in read_log(logs) if x["kind"] == "end")
        print(f"EVALSHA per lone job: {collections.Counter(calls)}; jobs per node: {sorted(per_node.values())}")
        assert sorted(per_node) == sorted(nd.pid for nd in nodes)
        assert sorted(per_node.values()) == [n // 4] * 4, f"lone jobs should rotate over the idle nodes: {per_node}"
        # enqueue + fetch + the ack that finds nothing; a broadcast would add a fetch per other node
        # (every job >= 6 here). Heartbeats, renewals and the leader's ticks are EVALSHAs too, counted
        # in whichever job's window they fall (under a loaded CI run one window saw 8 of them): so the
        # median and the 80th percentile are asserted, not the sum.
        ordered = sorted(calls)
        assert ordered[n // 2] == 3 and ordered[int(n * 0.8)] <= 4, f"EVALSHA per lone job {calls}"
    finally:
        r.close()
        cluster.close()
