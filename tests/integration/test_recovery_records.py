"""Recovery and periodic records that earlier versions mishandled, driven through a real leader
(an in-process node) against real Redis with the records written as the interleavings leave them.

- identical payloads in flight together: each copy is one execution, recovered once (before: the
  count was per payload bytes, so the 5th of 5 identical copies was failed as a poison pill);
- an in-flight hash of a node that is not a member (recovered, then a fetch landed before its next
  heartbeat, then it died): recovered (before: left for ever), and such a fetch is now refused;
- a heartbeat in the future (Redis' clock stepped back after it): recovered within dead_after
  (before: the node looked alive for the size of the step);
- a periodic record whose last slot is an hour ahead (written by a leader whose clock ran ahead):
  healed, the task fires at its next slot (before: silent for the hour).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from cluster.client import Client
from cluster.clock import RedisClock
from cluster.fetchbatch import FetchCall, SlotCall, SlotReply, parse
from cluster.keys import Keys
from cluster.scripts import Scripts
from cluster.testing import FakeClock
from cluster.wire import encode_job
from tests.support.inproc import NodeFactory, wait_for

K = Keys("resque")
FAST = {"dead_after": 2.0, "heartbeat_interval": 0.5}

TASKS = '''
from cluster import Task, task


@task(name="mark")
async def mark(params, ctx):
    await ctx.client.redis.rpush("marks", str(params.get("id")))


async def _tick(params, ctx):
    await ctx.client.redis.rpush("ticks", repr(__import__("time").time()))


tick = Task(name="tick", frequency=1.0, run=_tick)
'''


async def _redis_ms(client: Client) -> int:
    sec, usec = await client.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


async def _ghost(client: Client, node: str, payloads: list[str], *, score_ms: int | None,
                 counts: list[int] | None = None) -> None:
    fields: dict[str, str] = {}
    for i, p in enumerate(payloads):
        fields.update({str(i): p, f"{i}:q": "parked", f"{i}:e": f"{i}.1"})
        if counts and counts[i]:
            fields[f"{i}:r"] = str(counts[i])
    await client.redis.hset(K.inflight(node), mapping=fields)
    if score_ms is not None:
        await client.redis.zadd(K.members, {node: score_ms})


async def _parked(client: Client, n: int) -> bool:
    return int(await client.redis.llen(K.queue("parked"))) >= n


async def test_identical_payloads_in_flight_are_each_recovered_once(inproc_node: NodeFactory, client: Client) -> None:
    payload = encode_job("mark", "parked", [{"id": "same"}])
    await _ghost(client, "ghost-5", [payload] * 5, score_ms=await _redis_ms(client) - 60_000)
    node = await inproc_node(TASKS, **FAST)
    await wait_for(lambda: _parked(client, 5), 10, what="5 copies back in their queue")
    assert await client.redis.llen(K.failed) == 0, "a copy was failed as a poison pill"
    assert await client.redis.hget(K.recovered, _sha(payload)) == "1,1,1,1,1"
    assert node.metrics.recovered._value.get() == 5 and node.metrics.poisoned._value.get() == 0


async def test_a_copy_recovered_k_times_is_still_a_poison_pill(inproc_node: NodeFactory, client: Client) -> None:
    payload = encode_job("mark", "parked", [{"id": "pill"}])
    await _ghost(client, "ghost-p", [payload, payload], score_ms=await _redis_ms(client) - 60_000, counts=[3, 0])
    await inproc_node(TASKS, **FAST, max_recoveries=3)
    await wait_for(lambda: _parked(client, 1), 10, what="the fresh copy requeued")
    failed = await client.failed()
    assert len(failed) == 1 and failed[0]["exception"] == "PoisonJob" and "died 4 times" in failed[0]["error"]


def _sha(payload: str) -> str:
    import hashlib

    return hashlib.sha1(payload.encode()).hexdigest()


async def test_fetch_from_a_node_that_is_not_a_member_is_refused(client: Client) -> None:
    """The interleaving of issue 20 item 3: the node was recovered (no longer a member), then one of
    its fetches landed before its next heartbeat. Before: the job was popped and recorded where no
    recovery would ever look."""
    scripts = Scripts(client.redis)
    await client.enqueue("mark", {"id": "x"}, queue="default")
    fc = FetchCall(K, "n1", 0)

    async def fetch(exec_id: str) -> SlotReply:
        call = SlotCall(0, fc.slot_keys("n1+0:default", "n1+0", "default"), "n1+0", exec_id, True, ["default"], False)
        return parse(await scripts.run("fetch", *fc.build([call], time.time())), 1)[1][0]

    res = await fetch("0.1")
    assert res.not_member and res.payload is None
    assert await client.redis.llen(K.queue("default")) == 1
    assert not await client.redis.exists(K.inflight("n1"))
    await client.redis.zadd(K.members, {"n1": await _redis_ms(client)})
    res = await fetch("0.2")
    assert res.payload and await client.redis.hget(K.inflight("n1"), "0:e") == "0.2"


async def test_an_orphaned_in_flight_hash_is_recovered(inproc_node: NodeFactory, client: Client) -> None:
    await _ghost(client, "orphan-1", [encode_job("mark", "parked", [{"id": "o"}])], score_ms=None)
    t0 = time.monotonic()
    await inproc_node(TASKS, **FAST)
    await wait_for(lambda: _parked(client, 1), 15, what="the orphaned job back in its queue")
    assert not await client.redis.exists(K.inflight("orphan-1"))
    print(f"\norphaned in-flight job recovered {time.monotonic() - t0:.1f}s after the leader started")


async def test_a_heartbeat_in_the_future_is_recovered_within_dead_after(inproc_node: NodeFactory,
                                                                     client: Client) -> None:
    """Redis' clock stepped back an hour after the node's last heartbeat."""
    await _ghost(client, "future-1", [encode_job("mark", "parked", [{"id": "f"}])],
                 score_ms=await _redis_ms(client) + 3_600_000)
    node = await inproc_node(TASKS, **FAST)
    t0 = time.monotonic()
    await wait_for(lambda: _parked(client, 1), 15, what="the job of the node that only looked alive")
    took = time.monotonic() - t0
    assert took <= node.cfg.dead_after + 3.0, f"recovered after {took:.1f}s"
    assert await client.redis.zscore(K.members, "future-1") is None


async def test_a_periodic_record_an_hour_ahead_heals(inproc_node: NodeFactory, client: Client,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ahead = time.time() + 3600
    await client.redis.hset(K.periodic("tick"), "last", repr(float(int(ahead))))
    await inproc_node(TASKS, **FAST)
    t0 = time.time()
    await wait_for(lambda: _ticks(client, 2), 6, what="two ticks after the bogus record")
    first = float(str(await client.redis.lindex("ticks", 0)))
    assert first - t0 <= 2.5, f"first tick {first - t0:.2f}s after start"
    assert float(str(await client.redis.hget(K.periodic("tick"), "last"))) < time.time() + 1
    assert any(getattr(r, "event", None) == "periodic_record_healed" for r in caplog.records)


async def _ticks(client: Client, n: int) -> bool:
    return int(await client.redis.llen("ticks")) >= n


async def test_redis_clock_follows_redis_and_not_the_process_wall_clock(client: Client) -> None:
    base = FakeClock(wall=time.time() + 3600, mono=time.monotonic())  # wall clock an hour ahead
    clock = RedisClock(base)
    await clock.sync(client.redis)
    sec, usec = await client.redis.time()
    assert abs(clock.time() - (int(sec) + int(usec) / 1e6)) < 0.05
    base.advance(2.0)
    assert abs(clock.time() - (int(sec) + int(usec) / 1e6 + 2.0)) < 0.05
    clock.observe(1000.0, base.mono, base.mono)  # Redis' clock stepped: taken whatever the round trip
    assert abs(clock.time() - 1000.0) < 1e-6
    await asyncio.sleep(0)


async def test_a_live_node_whose_heartbeats_look_old_is_not_declared_dead(inproc_node: NodeFactory,
                                                                         client: Client) -> None:
    """Redis' clock stepped forward an hour: every heartbeat written before the step looks an hour
    old. A node that keeps heartbeating is alive: only a heartbeat the leader saw unchanged for a
    heartbeat round counts. Before: recovered at once (a spurious recovery, its jobs run twice)."""
    payload = encode_job("mark", "parked", [{"id": "live"}])
    await _ghost(client, "live-1", [payload], score_ms=await _redis_ms(client) - 3_600_000)
    node = await inproc_node(TASKS, **FAST)
    stop = asyncio.Event()

    async def heartbeat() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            await client.redis.zadd(K.members, {"live-1": await _redis_ms(client) - 3_600_000 + step})
            await asyncio.sleep(0.25)

    beating = asyncio.create_task(heartbeat())
    try:
        await asyncio.sleep(3 * node.cfg.dead_after)
        assert await client.redis.hlen(K.inflight("live-1")) == 3, "a live node's job was recovered"
        assert await client.redis.llen(K.queue("parked")) == 0
    finally:
        stop.set()
        await beating
    t0 = time.monotonic()  # and once it stops heartbeating, it is recovered
    await wait_for(lambda: _parked(client, 1), 15, what="recovered once its heartbeat stopped")
    assert time.monotonic() - t0 <= node.cfg.dead_after + 3.0
