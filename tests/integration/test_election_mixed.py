"""Roles in a mixed cluster (issue 15, docs/DESIGN.md "Mixed clusters: roles"), with the real npm
node-resque `Scheduler` (tests/interop/scheduler.js) and real `corral node` processes.

While node-resque's scheduler holds `resque_scheduler_leader_lock` (it re-applies it on every
poll), it promotes the delayed jobs, and Corral's own duties still run on exactly one Corral node,
elected on Corral's lock `corral:leader_lock`: a 1 s periodic task fires every second once, and a
killed Corral node's job is recovered. When node-resque's scheduler goes, Corral's leader takes
the resque lock and promotes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from cluster import Client
from cluster.keys import Keys
from tests.integration.test_interop import NS, NodeScript, Records, client, node_scripts, r  # noqa: F401
from tests.support import wait_until, wait_until_async
from tests.support.nodes import NodeCluster, NodeProcess

TASKS = '''
import asyncio, json, time
from cluster import Task, task

OUT = __OUT__


def _record(kind, params, ctx):
    line = {"kind": kind, "task": ctx.task, "params": params, "node": ctx.node_id, "at": time.time()}
    with open(OUT, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\\n")


@task(name="record")
async def record(params, ctx):
    _record("record", params, ctx)


@task(name="slow", queue="slow")
async def slow(params, ctx):
    _record("slow-start", params, ctx)
    await asyncio.sleep(params.get("seconds", 3))
    _record("slow-end", params, ctx)


async def _tick(params, ctx):
    _record("tick", params, ctx)


tick = Task(name="tick", run=_tick, frequency=1.0)
'''

KEYS = Keys(NS)


@pytest.fixture
def records(tmp_path: Path) -> Records:
    return Records(tmp_path / "out.jsonl")


@pytest.fixture
def mixed_nodes(node_cluster: NodeCluster, tmp_path: Path, records: Records) -> Callable[..., list[NodeProcess]]:
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "mixed_tasks.py").write_text(TASKS.replace("__OUT__", repr(str(records.path))), encoding="utf-8")

    def start(n: int = 1, **kwargs: Any) -> list[NodeProcess]:
        return node_cluster.start(n, tasks_dir=d, queues="default,slow", extra_args=["--poll-interval", "0.1"],
                                  **kwargs)

    return start


def corral_leaders(nodes: list[NodeProcess]) -> list[NodeProcess]:
    return [n for n in nodes if n.running and n.is_leader()]


async def test_with_node_resque_scheduler_leading_corral_duties_run_on_one_corral_node(
        node_scripts: Callable[..., NodeScript], mixed_nodes: Callable[..., list[NodeProcess]],  # noqa: F811
        records: Records, client: Client, r: Redis) -> None:  # noqa: F811
    sched = node_scripts("scheduler.js", {"name": "nr-sched", "seconds": 120, "timeout": 100})
    sched.wait_event("leader", 10)
    assert await r.get(KEYS.leader_lock) == "nr-sched"

    # The first Corral node leads Corral's duties and runs a long job on the queue "slow".
    [victim] = mixed_nodes(1)
    wait_until(lambda: corral_leaders([victim]) == [victim], 15, message="a Corral leader beside node-resque's")
    await client.enqueue("slow", {"seconds": 60, "id": "in-flight"}, queue="slow")
    wait_until(lambda: records.all("slow-start"), 10, message="the victim to start the slow job")
    [survivor] = mixed_nodes(1)
    nodes = [victim, survivor]

    # node-resque promotes the delayed job, once; the periodic task fires every second, once.
    t0 = time.time()
    await client.enqueue_in(1.0, "record", {"promoted_by": "node-resque"})
    [done] = records.wait(1)
    assert done["params"] == {"promoted_by": "node-resque"}
    wait_until(lambda: sched.seen("transferredJob"), 5, message="node-resque's transferredJob")
    assert await r.get(KEYS.leader_lock) == "nr-sched"
    assert corral_leaders(nodes) == [victim]
    await asyncio.sleep(max(0.0, t0 + 5.0 - time.time()))

    # kill -9 the Corral leader with its job in flight: the survivor takes Corral's lock and
    # recovers the job (it runs again there) within 20 s; node-resque's scheduler leads on.
    t_kill = time.time()
    victim.kill()
    again = wait_until(lambda: [x for x in records.all("slow-start") if x["node"] == survivor.reported_id], 20,
                       message="the killed node's job recovered and started again on the survivor")
    recovered_s = again[0]["at"] - t_kill
    assert corral_leaders(nodes) == [survivor]
    await asyncio.sleep(2.0)  # ticks after the failover
    assert await r.get(KEYS.leader_lock) == "nr-sched", "Corral took node-resque's lock while it was held"
    end = [e for e in sched.finish() if e["event"] == "end"][-1]
    assert end["transferred"] == 1 and end["lock"] == "nr-sched", end

    ticks = sorted(x["at"] for x in records.all("tick"))
    seconds = [math.floor(t) for t in ticks]
    late = [round(t - math.floor(t), 3) for t in ticks]
    print(f"\nmixed: {len(ticks)} ticks, lateness max {max(late):.3f}s; job recovered {recovered_s:.2f}s after "
          f"kill -9; node-resque transferred {end['transferred']}")
    before = [s for s in seconds if s < t_kill]
    assert before == list(range(before[0], before[-1] + 1)), f"ticks missed or doubled while node-resque leads: {before}"
    assert len(before) >= 5
    # on time: each occurrence ran within its second, before the next one was due
    assert max(t - math.floor(t) for t in ticks if t < t_kill) < 1.0, late
    assert [s for s in seconds if s > t_kill], "no tick after the Corral leader was killed"
    # across the failover the survivor replays the slots missed meanwhile (catch-up), each once:
    # one run per second from the first to the last, none twice
    assert len(seconds) == seconds[-1] - seconds[0] + 1, f"occurrences missing or run twice: {seconds}"
    assert recovered_s <= 20.0, f"recovered {recovered_s:.1f}s after kill -9"
    slow = [x for x in records.all("slow-start") if x["params"]["id"] == "in-flight"]
    assert len(slow) == 2, f"the in-flight job ran {len(slow)} times: {slow}"


async def test_corral_leader_takes_the_resque_lock_when_node_resque_scheduler_stops(
        node_scripts: Callable[..., NodeScript], mixed_nodes: Callable[..., list[NodeProcess]],  # noqa: F811
        records: Records, client: Client, r: Redis) -> None:  # noqa: F811
    sched = node_scripts("scheduler.js", {"name": "nr-sched", "seconds": 60, "timeout": 100})
    sched.wait_event("leader", 10)
    nodes = mixed_nodes(2)
    leader = wait_until(lambda: corral_leaders(nodes), 15, message="a Corral leader")[0]
    assert (await client.leader_info() or {}).get("scheduler") == "nr-sched"
    end = [e for e in sched.finish() if e["event"] == "end"][-1]  # node-resque releases its lock
    assert end["leader"] == 1
    token = await r.get(KEYS.corral_lock)

    async def taken() -> bool:
        return bool(await r.get(KEYS.leader_lock) == token)

    # taken at the leader's next renew (every second)
    await wait_until_async(taken, 3.0, message="the Corral leader to take node-resque's lock")
    assert (await client.leader_info() or {}).get("scheduler") == leader.reported_id
    await client.enqueue_in(0.5, "record", {"promoted_by": "corral"})
    [done] = records.wait(1)
    assert done["params"] == {"promoted_by": "corral"}
    assert corral_leaders(nodes) == [leader]
