"""A periodic claim whose slot Redis' clock says is not due yet: refused as EARLY, waited out on
Redis' clock, claimed once, and the leader's log says where the occurrence's time went
(`lateness_ms`, `woke_ms`, `early`: what docs/DESIGN.md's F13b diagnosis reads)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from cluster.clock import SYSTEM_CLOCK
from cluster.connection import RedisSettings, close_redis, make_redis
from cluster.election.base import Term
from cluster.keys import Keys
from cluster.observe import NULL_OBSERVER
from cluster.periodic import PeriodicEnqueuer
from cluster.task import Registry, Task

NS = "timeline"
AHEAD = 0.4  # how far the estimate of Redis' clock is pushed ahead (s)


async def _noop(params: dict, ctx: object) -> None: ...


async def test_early_claim_is_waited_out_on_redis_clock_and_logged(redis_url: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys(NS)
    redis = make_redis(RedisSettings(url=redis_url))
    try:
        await redis.set(keys.corral_lock, "tok")  # this term holds Corral's lock: its claims are fenced by it
        term = Term(node="n1", token="tok", epoch=1, since=time.time(), deadline=time.monotonic() + 60,
                    clock=SYSTEM_CLOCK)
        task = Task(name="every", run=_noop, frequency=1.0)
        enq = PeriodicEnqueuer(redis=redis, keys=keys, clock=SYSTEM_CLOCK, observer=NULL_OBSERVER,
                               registry=Registry([task]), audit=False)
        redis_now = await enq.clock.sync(redis)
        # a pass whose estimate of Redis' clock runs 0.4 s ahead: it believes the next slot is due
        slot = float(int(redis_now) + 1)
        # +2 ms: a timer may fire a millisecond early, which would leave the slot not yet due
        await asyncio.sleep(max(0.0, slot - AHEAD - enq.clock.time()) + 0.002)
        enq.clock.offset = (enq.clock.offset or 0.0) + AHEAD
        caplog.set_level(logging.INFO, logger="corral.periodic")
        last = {task.name: slot - 1.0}
        await enq._fire_due(term, task, last, enq.clock.time())

        claimed = [r for r in caplog.records if getattr(r, "event", None) == "periodic_enqueued"]
        assert len(claimed) == 1 and claimed[0].slot == slot, "the early slot was not claimed in the same pass"
        record = claimed[0]
        assert record.early >= 1, "Redis refused nothing: the estimate was not ahead"
        assert record.lateness_ms >= 0, "claimed before the slot by Redis' clock"
        # waited out on Redis' clock and claimed in this pass, not a period later in the next one
        assert record.lateness_ms < 500, f"the EARLY slot was claimed {record.lateness_ms} ms late"
        # on the fast estimate the pass woke at the slot (or late, on a loaded host), never before it
        assert record.woke_ms >= 0, record.woke_ms
        assert await redis.llen(keys.queue(task.queue)) == 1, "one enqueue for the one occurrence"
        assert float(await redis.hget(keys.periodic(task.name), "last")) == slot
    finally:
        await close_redis(redis)
