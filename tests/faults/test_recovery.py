"""F5 (kill -9 a worker node mid-job) and F12 (poison pill), with real node processes."""

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


def _tasks_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "jobs.py").write_text(TASKS.replace("tick = Task", "_tick = Task"))
    return d


def _enqueue(url: str, jobs: list[tuple[str, dict]]) -> None:
    async def go() -> None:
        async with await Client.connect(url) as c:
            for name, params in jobs:
                await c.enqueue(name, params)

    asyncio.run(go())


def test_kill_9_mid_job_jobs_run_again_elsewhere_within_15s(tmp_path: Path, redis_url: str) -> None:
    logs = tmp_path / "joblog"
    logs.mkdir()
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=_tasks_dir(tmp_path), queues="default,default",
                          env={"JOBLOG_DIR": str(logs)})
    try:
        a, b = cluster.start(2)
        cluster.wait_leader(15)
        victim = b if a.is_leader() else a
        survivor = a if victim is b else b
        # 4 slow jobs: some land on the victim; then kill it while they run
        _enqueue(redis_url, [("work", {"id": f"j{i}", "s": 3}) for i in range(4)])
        # 4 slots in all (2 per node): wait until every job started, so the victim's share is known
        wait_until(lambda: len({r["id"] for r in read_log(logs) if r["kind"] == "start"}) == 4
                   and any(r["kind"] == "start" and r["pid"] == victim.pid for r in read_log(logs)), 10,
                   message="all 4 jobs started, some on the victim")
        on_victim = {r["id"] for r in read_log(logs) if r["kind"] == "start" and r["pid"] == victim.pid}
        victim_id = victim.reported_id
        killed_at = time.monotonic()
        victim.kill()
        wait_until(lambda: {r["id"] for r in read_log(logs) if r["kind"] == "end"} >= {f"j{i}" for i in range(4)},
                   25, message="every job finished")
        rerun = {r["id"]: r["t"] for r in read_log(logs) if r["kind"] == "start" and r["pid"] == survivor.pid
                 and r["id"] in on_victim}
        assert set(rerun) == on_victim, "every job in flight on the killed node ran again on the survivor"
        recovery = max(rerun.values()) - (time.time() - (time.monotonic() - killed_at))
        assert recovery <= 15.0, f"recovered after {recovery:.1f}s"
        ends = collections.Counter(r["id"] for r in read_log(logs) if r["kind"] == "end")
        assert all(ends[f"j{i}"] == 1 for i in range(4)), ends
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        assert r.llen("resque:queue:default") == 0
        assert r.hlen(f"resque:corral:inflight:{victim_id}") == 0
        assert victim_id not in r.zrange("resque:corral:members", 0, -1)
        assert not [w for w in r.smembers("resque:workers") if w.startswith(victim_id)]
        assert survivor.metric("corral_jobs_recovered_total") == len(on_victim)
    finally:
        cluster.close()


def test_poison_pill_goes_to_failed_after_3_recoveries(tmp_path: Path, redis_url: str) -> None:
    logs = tmp_path / "joblog"
    logs.mkdir()
    tasks = _tasks_dir(tmp_path)
    fast = ["--heartbeat-interval", "0.3", "--dead-after", "1.5"]
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, queues="default",
                          env={"JOBLOG_DIR": str(logs)}, extra_args=fast)
    try:
        leader = cluster.add("lead", scheduler=True, queues="other")
        leader.wait_ready(20)
        cluster.wait_leader(15)
        _enqueue(redis_url, [("suicide", {"id": "pill"}), ("work", {"id": "ok1"}), ("work", {"id": "ok2"})])
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        crashes = 0
        while r.llen("resque:failed") == 0:
            assert crashes < 4, "the pill should have been failed after 3 recoveries"
            w = cluster.add(f"w{crashes}", scheduler=False, queues="default")
            wait_until(lambda w=w: not w.running, 30, message="the worker took the pill and died")
            crashes += 1
            wait_until(lambda: r.llen("resque:failed") > 0
                       or any("suicide" in j for j in r.lrange("resque:queue:default", 0, -1)), 20,
                       message="the leader recovered the pill (back in its queue, or failed)")
        assert r.llen("resque:failed") == 1
        entry = Client._parse(r.lindex("resque:failed", 0))
        assert entry["exception"] == "PoisonJob"
        assert entry["payload"]["class"] == "suicide"
        assert "3 recoveries" in entry["error"]
        assert crashes == 4  # first run + 3 recoveries, each killed its node
        healthy = cluster.add("healthy", scheduler=False, queues="default")
        healthy.wait_ready(20)
        wait_until(lambda: {x["id"] for x in read_log(logs) if x["kind"] == "end"} >= {"ok1", "ok2"}, 20,
                   message="the other jobs ran")
    finally:
        cluster.close()


def test_five_identical_payloads_in_flight_are_five_executions_each_recovered_once(tmp_path: Path,
                                                                                  redis_url: str) -> None:
    """Before: the recovery count was keyed by the payload's bytes, so killing a node that ran 5
    identical jobs recovered 4 and failed the 5th as a poison pill ("died 4 times")."""
    logs = tmp_path / "joblog"
    logs.mkdir()
    fast = ["--heartbeat-interval", "0.3", "--dead-after", "1.5"]
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=_tasks_dir(tmp_path), env={"JOBLOG_DIR": str(logs)},
                          extra_args=fast)
    try:
        leader = cluster.add("lead", scheduler=True, queues="other")
        leader.wait_ready(20)
        cluster.wait_leader(15)
        victim = cluster.add("victim", scheduler=False, queues="default", concurrency=5)
        victim.wait_ready(20)
        _enqueue(redis_url, [("work", {"id": "same", "s": 60})] * 5)
        wait_until(lambda: sum(1 for x in read_log(logs) if x["kind"] == "start" and x["pid"] == victim.pid) == 5, 15,
                   message="the 5 identical jobs running on the victim")
        victim.kill()
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: sum('"work"' in j for j in r.lrange("resque:queue:default", 0, -1)) == 5, 15,
                   message="5 copies back in their queue")
        assert r.llen("resque:failed") == 0, Client._parse(r.lindex("resque:failed", 0))
        assert leader.metric("corral_jobs_recovered_total") == 5
        assert leader.metric("corral_jobs_poisoned_total") == 0
    finally:
        cluster.close()
