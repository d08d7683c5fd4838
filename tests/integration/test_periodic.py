"""Periodic tasks on one in-process node: slot math, overlap skip, pause/resume, catch-up."""

from __future__ import annotations

import asyncio
import itertools

from cluster.client import Client
from cluster.periodic import PeriodicEnqueuer, next_slot, slots_between
from cluster.task import Registry, Task
from tests.support.inproc import NodeFactory, wait_for


async def _noop(params: dict, ctx: object) -> None: ...


def test_frequency_slots_are_aligned_multiples() -> None:
    t = Task(name="t", run=_noop, frequency=2.0)
    assert slots_between(t, 100.0, 107.0) == [102.0, 104.0, 106.0]
    assert slots_between(t, 100.5, 100.9) == []
    assert next_slot(t, 101.0) == 102.0 and next_slot(t, 102.0) == 104.0


def test_cron_slots_follow_the_time_zone() -> None:
    t = Task(name="t", run=_noop, cron="0 3 * * *", timezone="Europe/Paris")
    day = 24 * 3600
    start = 1_700_000_000.0
    slots = slots_between(t, start, start + 3 * day)
    assert len(slots) == 3 and all(b - a == day for a, b in itertools.pairwise(slots))
    import datetime as dt
    from zoneinfo import ZoneInfo

    assert all(dt.datetime.fromtimestamp(s, ZoneInfo("Europe/Paris")).hour == 3 for s in slots)


def test_due_slots_catch_up_within_window_and_skip_policy() -> None:
    reg = Registry([Task(name="c", run=_noop, frequency=1.0), Task(name="s", run=_noop, frequency=1.0, missed="skip")])
    p = PeriodicEnqueuer.__new__(PeriodicEnqueuer)
    c, s = reg.get("c"), reg.get("s")
    assert p.due_slots(c, 100.0, 105.5) == [101.0, 102.0, 103.0, 104.0, 105.0]
    assert p.due_slots(s, 100.0, 105.5) == [105.0]
    assert p.due_slots(c, 100.0, 300.5) == [float(x) for x in range(241, 301)]  # only the last 60 s
    # first boot (no record): `last` is when the term began, so nothing before it is replayed
    assert p.due_slots(c, 105.5, 105.5) == [] and p.due_slots(c, 105.5, 106.2) == [106.0]


TASKS = '''
import asyncio
from cluster import Task

async def long_run(params, ctx):
    await ctx.client.redis.rpush("runs", "x")
    await asyncio.sleep(2.5)

busy = Task(name="busy", frequency=1.0, overlap="skip", run=long_run)
'''


async def test_overlap_skip_and_pause_resume(inproc_node: NodeFactory, client: Client) -> None:
    await inproc_node(TASKS, concurrency=3)
    # up to one lease (5 s) of lock-delay first when this test is the first to elect on a new Redis run
    await wait_for(lambda: _llen(client, "runs", 1), timeout=11, what="first occurrence ran")
    await asyncio.sleep(2.2)  # two more slots pass while the first run is still running
    assert await client.redis.llen("runs") == 1, "occurrences were enqueued while one was running"
    assert await client.stop_recurrent_job("busy") == 0
    await wait_for(lambda: _llen(client, "runs", 1), timeout=5)
    paused_at = await client.redis.llen("runs")
    await asyncio.sleep(2.5)
    assert await client.redis.llen("runs") == paused_at, "a paused task fired"
    assert await client.enqueue_recurrent_job("busy")
    await wait_for(lambda: _llen(client, "runs", paused_at + 1), timeout=5, what="resumed")


async def _llen(client: Client, key: str, n: int) -> bool:
    return int(await client.redis.llen(key)) >= n
