"""Redis data that is not what Corral expects: a key of the wrong type is skipped, reported once
(a log line naming key and type, `corral_bad_keys_total{kind}`), and everything else is served.

In-process nodes against the real Redis; each test names what it failed on before the fix.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from cluster.client import Client
from cluster.fetchbatch import FetchCall, SlotCall, parse
from cluster.keys import Keys
from cluster.scripts import Scripts
from cluster.wire import encode_job
from node.runtime import Node
from tests.support.inproc import NodeFactory, wait_for

TASKS = '''
from cluster import task


@task(name="mark")
async def mark(params, ctx):
    await ctx.client.redis.rpush("marks", str(params.get("id")))


@task(name="boom")
async def boom(params, ctx):
    raise ValueError("boom " + str(params.get("id")))
'''

K = Keys("resque")


def _bad_key_records(caplog: pytest.LogCaptureFixture, key: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "bad_key" and getattr(r, "key", None) == key]


def _bad_keys_metric(node: Node, kind: str) -> float:
    return float(node.metrics.bad_keys.labels(kind)._value.get())


async def _marks(client: Client) -> list[str]:
    return [str(x) for x in await client.redis.lrange("marks", 0, -1)]


async def test_string_at_a_listed_queue_key_is_skipped_and_every_other_queue_served(
        inproc_node: NodeFactory, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Before: every `*` fetch died on WRONGTYPE, no job on any queue ran, the log said only ResponseError."""
    caplog.set_level(logging.INFO)
    await client.redis.set(K.queue("aaa"), "not a list")
    await client.redis.sadd(K.queues, "aaa")
    node = await inproc_node(TASKS, queues=("*",), concurrency=2)
    for i, q in enumerate(["bbb", "default", "zzz"]):
        await client.enqueue("mark", {"id": f"{q}{i}"}, queue=q)

    async def all_ran() -> bool:
        return sorted(await _marks(client)) == ["bbb0", "default1", "zzz2"]

    await wait_for(all_ran, 10, what="the jobs on the good queues ran")
    await asyncio.sleep(3 * node.cfg.poll_interval)  # several more fetches and queue-list reads meet the bad key
    records = _bad_key_records(caplog, K.queue("aaa"))
    assert len(records) == 1, [r.getMessage() for r in records]
    assert "string" in records[0].getMessage() and records[0].kind == "queue"  # type: ignore[attr-defined]
    assert _bad_keys_metric(node, "queue") == 1
    assert await client.redis.get(K.queue("aaa")) == "not a list", "the bad key is left as it was"
    assert (await node.handlers.readyz())[0] == 200


async def test_string_at_a_named_queue_is_reported_once(inproc_node: NodeFactory, client: Client,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await client.redis.set(K.queue("aaa"), "x")
    node = await inproc_node(TASKS, queues=("aaa", "default"))
    await client.enqueue("mark", {"id": "d"}, queue="default")
    await wait_for(lambda: _has(client, "d"), 10, what="the default queue's job ran")
    await asyncio.sleep(3 * node.cfg.poll_interval)
    assert len(_bad_key_records(caplog, K.queue("aaa"))) == 1
    assert _bad_keys_metric(node, "queue") == 1


async def _has(client: Client, mark: str) -> bool:
    return mark in await _marks(client)


async def test_queues_set_of_the_wrong_type_star_workers_find_queues_by_scan(
        inproc_node: NodeFactory, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Before: SMEMBERS failed on every fetch of a `*` worker and the enqueue script failed at SADD."""
    caplog.set_level(logging.INFO)
    await client.redis.set(K.queues, "a string")
    node = await inproc_node(TASKS, queues=("*",))
    await client.enqueue("mark", {"id": "one"}, queue="default")
    await client.enqueue("mark", {"id": "two"}, queue="other")
    await wait_for(lambda: _both(client), 15, what="both jobs ran without a queues set")
    assert len(_bad_key_records(caplog, K.queues)) == 1
    assert _bad_keys_metric(node, "queues") == 1
    assert await client.redis.get(K.queues) == "a string"


async def _both(client: Client) -> bool:
    return sorted(await _marks(client)) == ["one", "two"]


async def test_failed_of_the_wrong_type_keeps_the_failing_job_in_flight_until_fixed(
        inproc_node: NodeFactory, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Before: fetch.lua applied half the ack (in-flight record deleted, stat:failed +1), then RPUSH
    failed raised; the retried ack read LOST and the failing job vanished."""
    caplog.set_level(logging.INFO)
    await client.redis.hset(K.failed, "not", "a list")
    node = await inproc_node(TASKS, queues=("default",))
    await client.enqueue("boom", {"id": 1})
    await wait_for(lambda: _reported(caplog, K.failed), 10, what="the bad failed key reported")
    inflight = await client.redis.hgetall(K.inflight(node.node_id))
    assert any("boom" in v for v in inflight.values()), f"the failing job is not in flight any more: {inflight}"
    assert int(await client.redis.get(K.stat("failed")) or 0) == 0, "half an ack was applied"
    # the good jobs of the other slots are not held up... and once the key is fixed the failure lands
    await client.redis.delete(K.failed)
    await wait_for(lambda: _failed_len(client, 1), 15, what="the failed entry written once the key was fixed")
    entry = (await client.failed(0, 0))[0]
    assert entry["exception"] == "ValueError" and entry["error"] == "boom 1"
    assert int(await client.redis.get(K.stat("failed")) or 0) == 1
    assert await client.redis.hlen(K.inflight(node.node_id)) == 0
    assert len(_bad_key_records(caplog, K.failed)) == 1


async def _reported(caplog: pytest.LogCaptureFixture, key: str) -> bool:
    return bool(_bad_key_records(caplog, key))


async def _failed_len(client: Client, n: int) -> bool:
    return int(await client.redis.llen(K.failed)) >= n


async def test_fetch_script_writes_nothing_when_failed_is_not_a_list(client: Client) -> None:
    """The ack of a failed job against a `failed` hash: not one write (no half change)."""
    scripts = Scripts(client.redis)
    await client.redis.zadd(K.members, {"n1": 1})
    await client.redis.hset(K.inflight("n1"), mapping={"0": "{}", "0:q": "default", "0:e": "0.1"})
    await client.redis.hset(K.failed, "x", "y")
    before = {k: await client.redis.dump(k) for k in await client.redis.keys("*")}
    fc = FetchCall(K, "n1", 0)
    call = SlotCall(0, fc.slot_keys("n1+0:default", "n1+0", "default"), "n1+0", "0.2", True, ["default"], False,
                    ack_exec="0.1", ack_kind="fail", ack_entry='{"entry":1}')
    bad, replies = parse(await scripts.run("fetch", *fc.build([call], time.time())), 1)
    assert replies[0].status == "BADFAILED" and bad is not None and K.failed in bad
    after = {k: await client.redis.dump(k) for k in await client.redis.keys("*")}
    assert after == before


async def test_a_delayed_bucket_of_the_wrong_type_does_not_block_later_ones(
        inproc_node: NodeFactory, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Before: LPOP on the bad bucket raised inside promote.lua on every tick: no later delayed job ran."""
    caplog.set_level(logging.INFO)
    now = int(time.time())
    bad_ts = now - 30
    await client.redis.set(K.delayed(bad_ts), "not a list")
    await client.redis.zadd(K.delayed_schedule, {str(bad_ts): bad_ts})
    await client.enqueue_at(now - 5, "mark", {"id": "past"})
    await client.enqueue_at(now + 2, "mark", {"id": "soon"})
    node = await inproc_node(TASKS, queues=("default",))
    await wait_for(lambda: _both_delayed(client), 15, what="both later delayed jobs ran")
    assert await client.redis.get(K.delayed(bad_ts)) == "not a list", "the bad key itself is left alone"
    assert await client.redis.zscore(K.delayed_schedule, str(bad_ts)) is None
    assert len(_bad_key_records(caplog, K.delayed(bad_ts))) == 1
    assert _bad_keys_metric(node, "delayed") == 1


async def _both_delayed(client: Client) -> bool:
    return sorted(await _marks(client)) == ["past", "soon"]


async def test_a_delayed_job_whose_queue_key_is_not_a_list_fails_with_its_reason(
        inproc_node: NodeFactory, client: Client) -> None:
    await client.redis.set(K.queue("broken"), "x")
    now = int(time.time())
    await client.redis.rpush(K.delayed(now - 1), encode_job("mark", "broken", [{"id": "b"}]))
    await client.redis.zadd(K.delayed_schedule, {str(now - 1): now - 1})
    await client.enqueue_at(now - 1, "mark", {"id": "fine"})
    await inproc_node(TASKS, queues=("default",))
    await wait_for(lambda: _failed_len(client, 1), 10, what="the job for the bad queue failed")
    entry = (await client.failed(0, 0))[0]
    assert "holds a string" in entry["error"] and entry["queue"] == "broken"
    await wait_for(lambda: _has(client, "fine"), 10, what="the other job of the same bucket ran")


async def test_enqueue_to_a_queue_key_of_the_wrong_type_is_refused_naming_it(client: Client) -> None:
    await client.redis.set(K.queue("aaa"), "x")
    with pytest.raises(Exception, match=r"BADKEY resque:queue:aaa holds a string"):
        await client.enqueue("mark", {}, queue="aaa")
    assert await client.redis.smembers(K.queues) == set(), "nothing written"


async def test_5000_empty_queue_names_cost_star_workers_nothing_per_fetch(
        inproc_node: NodeFactory, client: Client) -> None:
    """Before: every fetch of a `*` slot LPOPped all 5,000 names (draining 5.6x slower), and every
    name was a metric series (5,001)."""
    n_jobs = 600
    await client.redis.sadd(K.queues, *[f"empty{i:04d}" for i in range(5000)])
    await client.enqueue_many([("mark", {"id": i}) for i in range(n_jobs)], queue="default")
    await client.redis.config_resetstat()
    node = await inproc_node(TASKS, queues=("*",), concurrency=2)
    t0 = time.monotonic()
    await wait_for(lambda: _marks_at_least(client, n_jobs), 60, what="the queue drained")
    elapsed = time.monotonic() - t0
    stats = await client.redis.info("commandstats")
    lpops = int(stats.get("cmdstat_lpop", {}).get("calls", 0))
    # one LPOP per job plus the empty fetches of idle slots (each tries the listed non-empty queues only)
    assert lpops < 3 * n_jobs, f"{lpops} LPOPs for {n_jobs} jobs: fetches still try the empty queues"
    await asyncio.sleep(2 * node.cfg.metrics_refresh)
    text = (await node.handlers.metrics())[2].decode()
    series = [ln for ln in text.splitlines() if ln.startswith("corral_queue_length{")]
    assert len(series) <= 51, f"{len(series)} corral_queue_length series"
    assert any('queue="__other__"' in ln for ln in series)
    assert "corral_queues 5001.0" in text
    print(f"\ndrained {n_jobs} jobs past 5,000 empty queue names in {elapsed:.2f}s; {lpops} LPOPs; "
          f"{len(series)} queue series")


async def _marks_at_least(client: Client, n: int) -> bool:
    return int(await client.redis.llen("marks")) >= n


@pytest.mark.parametrize("which", ["schedule", "bucket", "timestamps"])
async def test_enqueue_at_onto_a_key_of_the_wrong_type_is_refused_naming_it(client: Client, which: str) -> None:
    ts = int(time.time()) + 60
    payload = encode_job("mark", "default", [{"id": "x"}])
    key = {"schedule": K.delayed_schedule, "bucket": K.delayed(ts), "timestamps": K.timestamps(payload)}[which]
    await client.redis.set(key, "x")
    with pytest.raises(Exception, match=re.escape(f"BADKEY {key} holds a string")):
        await client.enqueue_at(ts, "mark", {"id": "x"})
    assert sorted(await client.redis.keys("*")) == [key], "nothing else written"


async def test_a_schedule_of_the_wrong_type_is_reported_and_the_rest_served(
        inproc_node: NodeFactory, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await client.redis.hset(K.delayed_schedule, "x", "y")
    node = await inproc_node(TASKS, queues=("default",))
    await client.enqueue("mark", {"id": "now"})
    await wait_for(lambda: _has(client, "now"), 10, what="an immediate job ran")
    await wait_for(lambda: _reported(caplog, K.delayed_schedule), 10, what="the bad schedule reported")
    assert _bad_keys_metric(node, "delayed_queue_schedule") == 1
