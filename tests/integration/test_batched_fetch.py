"""Batched ack+fetch (fetch.lua serving several slots per call, node/fetch_batcher.py) keeps what a
call per slot guaranteed: every popped job is recorded in flight in the same step, a slot gets at
most one job, one slot's bad ack holds up no other slot, a retried call pops nothing new, work
spreads evenly across nodes, and nothing is lost when a node is killed -9 mid-drain."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from pathlib import Path

import redis

from cluster.client import Client
from cluster.fetchbatch import FetchCall, SlotCall, SlotReply, parse
from cluster.keys import Keys
from cluster.scripts import Scripts
from tests.support import wait_until
from tests.support.inproc import NodeFactory, wait_for
from tests.support.jobtasks import TASKS, read_log
from tests.support.nodes import NodeCluster

K = Keys("resque")
NODE = "n1"


def _call(fc: FetchCall, slot: int, exec_id: str, **kw: object) -> SlotCall:
    name = f"{NODE}+{slot}"
    return SlotCall(slot, fc.slot_keys(f"{name}:default", name, "default"), name, exec_id, True, ["default"], False,
                    **kw)  # type: ignore[arg-type]


async def _run(client: Client, fc: FetchCall, calls: list[SlotCall]) -> tuple[str | None, list[SlotReply]]:
    return parse(await Scripts(client.redis).run("fetch", *fc.build(calls, time.time())), len(calls))


async def test_a_batch_records_every_popped_job_in_flight_one_per_slot(client: Client) -> None:
    await client.redis.zadd(K.members, {NODE: 1})
    await client.enqueue_many([("noop", {"id": i}) for i in range(3)])
    fc = FetchCall(K, NODE, 0)
    bad, replies = await _run(client, fc, [_call(fc, s, f"{s}.1") for s in range(5)])
    assert bad is None
    got = [r for r in replies if r.payload is not None]
    assert len(got) == 3, "3 jobs for 5 free slots: each slot takes one at most, the rest find nothing"
    assert await client.redis.llen(K.queue("default")) == 0
    inflight = await client.redis.hgetall(K.inflight(NODE))
    for s, r in enumerate(replies):
        if r.payload is not None:
            assert inflight[str(s)] == r.payload and inflight[f"{s}:e"] == f"{s}.1" and inflight[f"{s}:q"] == "default"
            assert await client.redis.get(K.worker(f"{NODE}+{s}:default")), "the slot's resque worker key names its job"
        else:
            assert str(s) not in inflight
    assert len({r.payload for r in got}) == 3
    assert await client.redis.zscore(K.idle("default"), NODE) is not None, "slots that found nothing park the node"
    # the lost-reply retry of the whole batch: the same jobs back, nothing popped or recorded twice
    await client.enqueue("noop", {"id": 99})
    _, again = await _run(client, fc, [_call(fc, s, f"{s}.1") for s in range(5) if replies[s].payload is not None])
    assert sorted(r.payload or "" for r in again) == sorted(r.payload or "" for r in got)
    assert await client.redis.llen(K.queue("default")) == 1


async def test_acks_in_one_batch_apply_per_slot_and_a_bad_failed_key_holds_up_only_its_slot(client: Client) -> None:
    await client.redis.zadd(K.members, {NODE: 1})
    await client.enqueue_many([("noop", {"id": i}) for i in range(3)])
    fc = FetchCall(K, NODE, 0)
    _, first = await _run(client, fc, [_call(fc, s, f"{s}.1") for s in range(3)])
    assert all(r.payload is not None for r in first)
    await client.enqueue_many([("noop", {"id": i}) for i in range(10, 13)])
    await client.redis.hset(K.failed, "not", "a list")
    calls = [_call(fc, 0, "0.2", ack_exec="0.1", ack_kind="ok"),
             _call(fc, 1, "1.2", ack_exec="1.1", ack_kind="fail", ack_entry='{"e":1}'),
             _call(fc, 2, "2.2", ack_exec="stale", ack_kind="ok")]
    bad, replies = await _run(client, fc, calls)
    assert [r.status for r in replies] == ["OK", "BADFAILED", "LOST"]
    assert bad is not None and K.failed in bad
    inflight = await client.redis.hgetall(K.inflight(NODE))
    assert inflight["1:e"] == "1.1" and inflight["1"] == first[1].payload, "the failing job stays in flight"
    assert replies[1].payload is None, "a slot whose ack could not be written fetches nothing"
    assert inflight["0:e"] == "0.2" and inflight["2:e"] == "2.2", "the other slots took their next jobs"
    assert await client.redis.get(K.stat("processed")) == "1"
    assert await client.redis.get(K.stat("processed", f"{NODE}+0")) == "1"
    assert not await client.redis.exists(K.stat("failed")), "nothing of the refused failure was written"


async def test_a_batch_takes_a_queue_in_order_gives_back_what_it_could_not_serve_and_reads_enqueue_times(
        client: Client) -> None:
    await client.redis.zadd(K.members, {NODE: 1})
    await client.enqueue_many([("noop", {"id": i}) for i in range(3)])  # one qtimes run of 3
    await client.enqueue_many([("noop", {"id": i}) for i in range(3, 6)])  # and one of 3
    runs = await client.redis.lrange(K.qtimes("default"), 0, -1)
    fc = FetchCall(K, NODE, 0)
    _, first = await _run(client, fc, [_call(fc, 0, "0.1")])
    await client.redis.hset(K.failed, "not", "a list")
    calls = [_call(fc, 1, "1.1"), _call(fc, 0, "0.2", ack_exec="0.1", ack_kind="fail", ack_entry="{}"),
             _call(fc, 2, "2.1"), _call(fc, 3, "3.1")]
    _, replies = await _run(client, fc, calls)
    ids = [json.loads(r.payload)["args"][0]["id"] if r.payload else None for r in replies]
    assert json.loads(first[0].payload or "")["args"][0]["id"] == 0
    assert ids == [1, None, 2, 3], "served in queue order; the refused slot took nothing"
    left = [json.loads(p)["args"][0]["id"] for p in await client.redis.lrange(K.queue("default"), 0, -1)]
    assert left == [4, 5], "the job taken for the refused slot went back to the head, in order"
    assert [r.left for r in replies if r.payload] == [2, 2, 2]
    enq = [r.enqueued_ms for r in replies if r.payload]
    ms = [float(x.split(":")[1]) for x in runs]
    assert enq == [ms[0], ms[0], ms[1]], (enq, runs)
    assert await client.redis.lrange(K.qtimes("default"), 0, -1) == [runs[1].replace("3:", "2:", 1)]


async def test_a_node_draining_a_backlog_batches_its_slots_calls(inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node("from cluster import task\n\n@task(name='noop')\nasync def noop(params, ctx):\n    pass\n",
                             concurrency=16, log_level="warning")
    await client.enqueue_many([("noop", {"id": i}) for i in range(3000)])
    await wait_for(lambda: _processed(client, 3000), 60, what="3000 jobs processed")
    batcher = node.pool.batcher
    assert batcher.records / batcher.calls > 2, f"{batcher.records} slot records in {batcher.calls} calls"
    await wait_for(lambda: _inflight_empty(client, node.node_id), 10, what="in-flight hash empty")
    assert await client.redis.llen(K.queue("default")) == 0
    print(f"\n{batcher.records} slot records in {batcher.calls} script calls")


async def _processed(client: Client, n: int) -> bool:
    return int(await client.redis.get(K.stat("processed")) or 0) >= n


async def _inflight_empty(client: Client, node_id: str) -> bool:
    return not await client.redis.hlen(K.inflight(node_id))


def _tasks_dir(tmp_path: Path) -> tuple[Path, Path]:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "jobs.py").write_text(TASKS.replace("tick = Task", "_tick = Task"))
    logs = tmp_path / "joblog"
    logs.mkdir()
    return tasks, logs


def _enqueue_many(url: str, jobs: list[tuple[str, dict]]) -> None:
    async def go() -> None:
        async with await Client.connect(url) as c:
            await c.enqueue_many(jobs)

    asyncio.run(go())


def test_batched_nodes_spread_a_backlog_evenly(tmp_path: Path, redis_url: str) -> None:
    tasks, logs = _tasks_dir(tmp_path)
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, queues="default,default",
                          env={"JOBLOG_DIR": str(logs)}, extra_args=["--log-level", "warning", "--concurrency", "8"])
    try:
        nodes = cluster.start(3)
        cluster.wait_leader(15)
        _enqueue_many(redis_url, [("work", {"id": i, "s": 0.01}) for i in range(3000)])
        wait_until(lambda: len([r for r in read_log(logs) if r["kind"] == "end"]) >= 3000, 90,
                   message="3000 jobs done")
        per_node = collections.Counter(r["pid"] for r in read_log(logs) if r["kind"] == "end")
        print(f"\nspread of 3000 jobs over 3 nodes x 16 slots: {sorted(per_node.values())}")
        assert sorted(per_node) == sorted(n.pid for n in nodes)
        assert all(abs(n / 3000 - 1 / 3) <= 0.1 / 3 for n in per_node.values()), per_node
    finally:
        cluster.close()


def test_nothing_is_lost_when_a_batching_node_is_killed_mid_drain(tmp_path: Path, redis_url: str) -> None:
    tasks, logs = _tasks_dir(tmp_path)
    fast = ["--heartbeat-interval", "0.3", "--dead-after", "1.5", "--log-level", "warning", "--concurrency", "16"]
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, queues="default",
                          env={"JOBLOG_DIR": str(logs)}, extra_args=fast)
    n = 4000
    try:
        a, b = cluster.start(2)
        cluster.wait_leader(15)
        victim = b if a.is_leader() else a
        victim_id = victim.reported_id
        _enqueue_many(redis_url, [("work", {"id": i, "s": 0.02}) for i in range(n)])
        wait_until(lambda: sum(r["kind"] == "end" and r["pid"] == victim.pid for r in read_log(logs)) >= 300, 30,
                   message="the victim mid-drain")
        victim.kill()
        wait_until(lambda: {r["id"] for r in read_log(logs) if r["kind"] == "end"} >= set(range(n)), 60,
                   message="every job finished somewhere")
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: r.hlen(f"resque:corral:inflight:{victim_id}") == 0, 15, message="victim's in-flight recovered")
        assert r.llen("resque:queue:default") == 0
        ends = collections.Counter(x["id"] for x in read_log(logs) if x["kind"] == "end")
        twice = [i for i, c in ends.items() if c > 1]
        starts_on_victim = collections.Counter(x["id"] for x in read_log(logs)
                                               if x["kind"] == "start" and x["pid"] == victim.pid)
        ends_on_victim = collections.Counter(x["id"] for x in read_log(logs)
                                             if x["kind"] == "end" and x["pid"] == victim.pid)
        # a job runs twice only if the victim ran it and died before its ack: at most its slots' worth
        assert all(i in starts_on_victim for i in twice), twice
        assert len(twice) <= 16, f"{len(twice)} jobs ran twice: more than the victim's 16 slots held"
        cut_short = [i for i in starts_on_victim if i not in ends_on_victim]
        assert cut_short, "the kill landed mid-job: some jobs started on the victim and ended elsewhere"
        print(f"\n{sum(ends_on_victim.values())} jobs ended on the victim, {len(twice)} ran again after the kill")
    finally:
        cluster.close()


SYNC_TASKS = """
import time
from cluster import task

@task(name="slow_sync")
def slow_sync(params, ctx):
    time.sleep(0.3)
"""


async def test_sync_jobs_are_bounded_by_threads_not_by_slots(inproc_node: NodeFactory, client: Client) -> None:
    """12 slots, 2 threads: a node takes no new job while one of its sync jobs waits for a thread, so
    it does not sit on 12 jobs that other nodes could run (before: every slot held one). Jobs come
    50 ms apart (the slots that fetch in the same round trip as a burst each take one)."""
    node = await inproc_node(SYNC_TASKS, concurrency=12, threads=2)
    held = []

    async def produce() -> None:
        for i in range(16):
            await client.enqueue("slow_sync", {"i": i})
            await asyncio.sleep(0.05)

    producer = asyncio.create_task(produce())
    while int(await client.redis.get(K.stat("processed")) or 0) < 16:
        fields = await client.redis.hkeys(K.inflight(node.node_id))
        held.append(sum(f.endswith(":e") for f in fields))
        await asyncio.sleep(0.02)
    print(f"\njobs held in flight by a 12-slot, 2-thread node: max {max(held)}, samples {len(held)}")
    await producer
    assert max(held) <= 5, f"held up to {max(held)} jobs for 2 threads"
    assert await client.redis.llen(K.queue("default")) == 0
