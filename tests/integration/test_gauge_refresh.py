"""The cluster-wide gauges a node exports are published together: a scrape never sees one
refresh's queue lengths beside another's oldest-job ages (a CI run under load saw a queue of 20
with no oldest age: the lengths were published before the later reads of the same refresh)."""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.client import Client
from tests.support.inproc import NodeFactory

TASKS = '''
from cluster import task

@task(name="parked", queue="default")
async def parked(params, ctx):
    pass
'''


async def test_a_refresh_publishes_lengths_and_ages_at_once(inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node(TASKS, queues=("other",))  # nothing here works `default`: the job stays queued
    refresher, gauges = node.gauges, node.metrics.cluster
    entered, gate = asyncio.Event(), asyncio.Event()
    real = refresher._read_counts

    async def held() -> Any:  # every refresh from now on stops after reading the queue lengths
        entered.set()
        await gate.wait()
        return await real()

    refresher._read_counts = held  # type: ignore[method-assign]
    try:
        await client.enqueue("parked", {})
        entered.clear()  # a refresh that read the lengths before the enqueue may be waiting already
        mine = asyncio.create_task(refresher.refresh())
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.sleep(0)  # let every refresh under way reach the gate
        assert "default" not in gauges.queue_lengths, "a queue length was published before its refresh ended"
        gate.set()
        await asyncio.wait_for(mine, 5)
    finally:
        gate.set()
        refresher._read_counts = real  # type: ignore[method-assign]
    assert gauges.queue_lengths["default"] == 1 and "default" in gauges.oldest_age, (
        gauges.queue_lengths, gauges.oldest_age)
