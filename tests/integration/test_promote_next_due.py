"""promote.lua's answer "the next due second" at the edge of a second, on real Redis.

The script judges due-ness with Redis' TIME; here TIME is pinned by rewriting that one call in
the script's text (a clock seam for Lua), so the edge is hit every run instead of once in 20,000
ticks. A tick that runs 40 us before a due second (the leader wakes by its estimate of Redis'
clock, which runs a hair ahead) must name that second as the next one due: the old script wrote
`'(' .. now`, which Lua rounds to 14 digits (the due second itself), answered "none" and the
leader slept a whole re-read (0.4-1 s) past it (seen in F9: one promotion 402 ms late)."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from cluster.keys import Keys
from cluster.scripts import source

DUE = 1_796_641_027


def _promote_at(sec: int, usec: int) -> str:
    text = source("promote")
    pinned = text.replace("redis.call('TIME')", f"{{'{sec}', '{usec}'}}")
    assert pinned != text, "promote.lua no longer reads TIME as redis.call('TIME')"
    return pinned


@pytest.mark.parametrize("usec", [999_960, 999_999, 999_950, 500_000])
async def test_next_due_second_is_named_just_before_it(redis_url: str, usec: int) -> None:
    keys = Keys("edge")
    r = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await r.set(keys.leader_lock, "tok")
        await r.zadd(keys.delayed_schedule, {str(DUE): DUE, str(DUE + 1): DUE + 1})
        await r.rpush(keys.delayed(DUE), '{"class":"later","queue":"parked","args":[{}]}')
        await r.rpush(keys.delayed(DUE + 1), '{"class":"later","queue":"parked","args":[{}]}')
        res = await r.eval(_promote_at(DUE - 1, usec), 6, keys.leader_lock, keys.audit, keys.delayed_schedule,
                           keys.queues, keys.promoting, keys.failed,
                           "tok", "0", 1, "", 200, keys.namespace + ":", keys.wake_channel, "now")
        assert res[0] == "OK" and int(res[1]) == 0, f"promoted before its second: {res}"
        assert float(res[3]) == DUE, f"next due second at Redis time {DUE - 1}.{usec:06d}: {res[3]} (want {DUE})"
        assert await r.llen(keys.delayed(DUE)) == 1
    finally:
        await r.aclose()
