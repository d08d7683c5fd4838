"""The leader's scheduler: a 100,000-job delayed backlog drains in batches without blocking the loop."""

from __future__ import annotations

import time

from cluster.client import Client
from cluster.wire import encode_job
from tests.support.inproc import NodeFactory, wait_for

TASKS = '''
from cluster import task

@task(name="later")
async def later(params, ctx): ...
'''


async def test_backlog_of_100k_delayed_jobs_drains_without_blocking_the_loop(
        inproc_node: NodeFactory, client: Client) -> None:
    n = 100_000
    due = int(time.time()) - 5
    async with client.redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            ts = due + i % 5
            payload = encode_job("later", "parked", [{"i": i}])
            pipe.rpush(client.keys.delayed(ts), payload)
            pipe.sadd(client.keys.timestamps(payload), client.keys.delayed_member(ts))
            if i < 5:
                pipe.zadd(client.keys.delayed_schedule, {str(ts): ts})
        await pipe.execute()
    node = await inproc_node(TASKS, queues=("default",))  # nobody works `parked`: promoted jobs stay there
    lags = []

    async def drained() -> bool:
        lags.append(node.loop_lag)
        return await client.length("parked") >= n

    await wait_for(drained, timeout=60, interval=0.05, what="100k delayed jobs promoted")
    assert await client.timestamps() == []
    assert await client.redis.keys(client.keys.timestamps("*")) == []
    assert max(lags) < 0.25, f"event loop lag reached {max(lags):.3f}s while promoting"
    assert node.metrics.promoted_total._value.get() == n
