"""`cluster.Client` against a real redis-server: the whole API of docs/INTERFACE.md §2, key by key.

Every test gets an emptied Redis (`redis_url`) and checks what the call wrote in the resque
layout (docs/INTERFACE.md §5) besides what it returned. No node runs here; worker and failed
records are written the way node-resque and Corral workers write them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from cluster import Client, EnqueueError, QueueLock, Registry, Task
from cluster.connection import RedisSettings, make_redis
from cluster.keys import Keys
from cluster.testing import FakeClock
from cluster.wire import decode_failed, encode_failed, encode_job, js_date

NOW = 1_700_000_000.25  # FakeClock wall time: enqueue_in and clean_old_workers are exact
K = Keys("resque")


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client to look at what the API wrote."""
    raw = Redis.from_url(redis_url, decode_responses=True)
    yield raw
    await raw.aclose()


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[Client]:
    """A Client on a fake clock (wall time NOW)."""
    c = Client(make_redis(RedisSettings(url=redis_url)), "resque", clock=FakeClock(NOW))
    yield c
    await c.close()


async def _keys(r: Redis) -> list[str]:
    return sorted(await r.keys("*"))


async def _resque_keys(r: Redis) -> list[str]:
    """Every key but Corral's own bookkeeping (`<namespace>:corral:...`, docs/INTERFACE.md §5)."""
    return [k for k in await _keys(r) if ":corral:" not in k]


# -- connect / close ----------------------------------------------------------------------------


async def test_connect_as_context_manager(redis_url: str, r: Redis) -> None:
    async with await Client.connect(redis_url, namespace="myapp") as client:
        assert await client.enqueue("sayHello", {"a": 1}) is True
    assert await r.lrange("myapp:queue:default", 0, -1) == ['{"class":"sayHello","queue":"default","args":[{"a":1}]}']
    assert await r.smembers("myapp:queues") == {"default"}


async def test_connect_fails_fast_without_redis() -> None:
    with pytest.raises(Exception):  # noqa: B017 - redis' ConnectionError or OSError, whichever comes first
        await Client.connect("redis://127.0.0.1:1/0")


# -- enqueue ------------------------------------------------------------------------------------


async def test_enqueue_writes_node_resque_bytes(api: Client, r: Redis) -> None:
    assert await api.enqueue("sendWelcomeEmail", {"to": "evan@example.com", "n": 1.0}) is True
    assert await api.enqueue("sayHello") is True  # no params: [{}], as actionhero
    assert await api.enqueue("sayHello", {}, queue="mail") is True
    assert await r.lrange("resque:queue:default", 0, -1) == [
        '{"class":"sendWelcomeEmail","queue":"default","args":[{"to":"evan@example.com","n":1}]}',
        '{"class":"sayHello","queue":"default","args":[{}]}',
    ]
    assert await r.lrange("resque:queue:mail", 0, -1) == ['{"class":"sayHello","queue":"mail","args":[{}]}']
    assert await r.smembers("resque:queues") == {"default", "mail"}
    assert await _resque_keys(r) == ["resque:queue:default", "resque:queue:mail", "resque:queues"]


async def test_enqueue_raw_args_and_registry_queue(redis_url: str, r: Redis) -> None:
    async def run(params: Any, ctx: Any) -> None:
        return None

    registry = Registry([Task(name="mailer", queue="mail", run=run),
                         Task(name="locked", queue="default", plugins=[QueueLock], run=run)])
    async with await Client.connect(redis_url, registry=registry) as client:
        assert await client.enqueue("mailer", {"x": 1}) is True  # the task's own queue
        assert await client.enqueue("legacy", raw_args=[1, "two", None]) is True
        assert await client.enqueue("locked", {"k": 1}) is True
        assert await client.enqueue("locked", {"k": 1}) is False  # QueueLock refused the copy
        with pytest.raises(EnqueueError, match="raw_args"):
            await client.enqueue("legacy", raw_args="oops")  # type: ignore[arg-type]
    assert await r.lrange("resque:queue:mail", 0, -1) == ['{"class":"mailer","queue":"mail","args":[{"x":1}]}']
    assert await r.lrange("resque:queue:default", 0, -1) == [
        '{"class":"legacy","queue":"default","args":[1,"two",null]}',
        '{"class":"locked","queue":"default","args":[{"k":1}]}',
    ]
    assert await r.keys("resque:lock:locked:default:*")


async def test_enqueue_at_datetime_and_epoch(api: Client, r: Redis) -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ts = await api.enqueue_at(when, "sendWelcomeEmail", {"to": "a@b.c"})
    assert ts == int(when.timestamp())
    payload = '{"class":"sendWelcomeEmail","queue":"default","args":[{"to":"a@b.c"}]}'
    assert await r.lrange(f"resque:delayed:{ts}", 0, -1) == [payload]
    assert await r.smembers(f"resque:timestamps:{payload}") == {f"delayed:{ts}"}
    assert await r.zrange("resque:delayed_queue_schedule", 0, -1, withscores=True) == [(str(ts), float(ts))]
    # delayed enqueues do not add the queue name (the promotion does), as node-resque
    assert await r.exists("resque:queues") == 0

    # a zone other than UTC, and epoch seconds: a fraction is rounded up (never runs early)
    other = dt.datetime(2030, 1, 2, 4, 4, 5, 500000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert await api.enqueue_at(other, "t", queue="mail") == ts + 1
    assert await api.enqueue_at(NOW + 100.2, "t", {"i": 1}) == math.ceil(NOW + 100.2)
    assert await api.enqueue_at(1_900_000_000, "t", {"i": 2}) == 1_900_000_000
    assert await api.enqueue_at(1_900_000_000.0, "t", {"i": 3}) == 1_900_000_000
    assert await api.timestamps() == [1_700_000_101, ts, ts + 1, 1_900_000_000]
    assert await r.llen("resque:delayed:1900000000") == 2


async def test_enqueue_at_refuses_a_time_past_ten_years(api: Client, r: Redis) -> None:
    # an epoch in milliseconds would be filed ~50,000 years ahead and never run: refused, nothing written
    with pytest.raises(EnqueueError, match="more than 10 years ahead; it looks like milliseconds: epoch seconds "
                                           "would be 1700000100"):
        await api.enqueue_at(NOW * 1000 + 99_750, "t")
    with pytest.raises(EnqueueError, match="more than 10 years ahead"):
        await api.enqueue_in(11 * 366 * 86400, "t")
    assert await api.timestamps() == [] and await r.dbsize() == 0


async def test_enqueue_in_seconds_and_timedelta(api: Client, r: Redis) -> None:
    assert await api.enqueue_in(10.0, "t", {"a": 1}) == math.ceil(NOW + 10)
    assert await api.enqueue_in(10, "t", {"a": 2}) == math.ceil(NOW + 10)
    assert await api.enqueue_in(dt.timedelta(minutes=1, milliseconds=800), "t", {"a": 3}) == math.ceil(NOW + 60.8)
    assert await api.enqueue_in(0, "t", {"a": 4}, queue="now") == math.ceil(NOW)
    assert await api.timestamps() == [math.ceil(NOW), math.ceil(NOW + 10), math.ceil(NOW + 60.8)]
    assert await api.delayed_at(math.ceil(NOW + 10)) == [
        {"class": "t", "queue": "default", "args": [{"a": 1}]},
        {"class": "t", "queue": "default", "args": [{"a": 2}]},
    ]
    assert await api.delayed_count() == 4


async def test_enqueue_many_counts_and_orders(api: Client, r: Redis) -> None:
    n = await api.enqueue_many([("sendWelcomeEmail", {"to": "a@x"}), ("sayHello", None), ("sendWelcomeEmail", {})])
    assert n == 3
    assert await r.lrange("resque:queue:default", 0, -1) == [
        '{"class":"sendWelcomeEmail","queue":"default","args":[{"to":"a@x"}]}',
        '{"class":"sayHello","queue":"default","args":[{}]}',
        '{"class":"sendWelcomeEmail","queue":"default","args":[{}]}',
    ]
    assert await api.enqueue_many([], queue="empty") == 0
    assert await api.enqueue_many([("t", {"i": i}) for i in range(25)], queue="q2", batch_size=10) == 25
    assert [json.loads(x)["args"][0]["i"] for x in await r.lrange("resque:queue:q2", 0, -1)] == list(range(25))
    assert await api.queues() == ["default", "q2"]


async def _count_round_trips(fn: Callable[[], Awaitable[Any]], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, int]:
    sent = 0
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        nonlocal sent
        sent += 1
        await original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(AbstractConnection, "send_packed_command", counting)
        result = await fn()
    return result, sent


@pytest.mark.parametrize("batch_size", [5000, 100])
async def test_enqueue_many_1000_jobs_costs_a_bounded_number_of_commands(
        api: Client, r: Redis, monkeypatch: pytest.MonkeyPatch, batch_size: int) -> None:
    await api.redis.ping()  # the connection is open before counting
    await r.config_resetstat()
    jobs = [("sendWelcomeEmail", {"to": f"user{i}@example.com"}) for i in range(1000)]
    n, round_trips = await _count_round_trips(lambda: api.enqueue_many(jobs, batch_size=batch_size), monkeypatch)
    assert n == 1000
    assert await r.llen("resque:queue:default") == 1000
    stats = await r.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
             if k not in ("cmdstat_config|resetstat", "cmdstat_info")}
    # one script call per batch (commandstats also counts the few commands the script runs inside),
    # never a command per job
    batches = math.ceil(1000 / batch_size)
    scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
    assert scripts == batches, calls
    assert sum(calls.values()) <= 10 * batches + 3, calls
    assert max(calls.values()) <= 2 * batches + 1, calls
    # one pipelined round trip for the jobs (+ the script check redis-py does before a pipeline)
    assert round_trips <= 3, round_trips


async def test_enqueue_many_onto_a_queue_key_of_the_wrong_type_raises_and_queues_the_other_queues(
        api: Client, r: Redis) -> None:
    """The chunks go out pipelined on the raw connection: one refused chunk is raised, not swallowed."""
    await r.set("resque:queue:bad", "a string")
    with pytest.raises(Exception, match="BADKEY"):
        await api.enqueue_many([("t", {"i": 1}), ("u", {"i": 2})], queue="bad")
    assert await r.get("resque:queue:bad") == "a string"
    assert await api.enqueue_many([("t", {"i": i}) for i in range(7)], queue="good", batch_size=3) == 7
    assert [json.loads(p)["args"][0]["i"] for p in await r.lrange("resque:queue:good", 0, -1)] == list(range(7))


async def test_each_enqueue_records_its_redis_time_in_ms_in_qtimes(api: Client, r: Redis) -> None:
    """enqueue.lua writes "<count>:<epoch ms>" from Redis' TIME (the workers' wait times and the
    oldest job's age): 120 lone enqueues spread over 1.2 s, so some fall in the first 100 ms of a
    second (microseconds < 100,000: zero-padded in the text), each inside the TIME bracket around it."""
    n, entries, brackets = 120, [], []
    for i in range(n):
        before = await r.time()
        assert await api.enqueue("t", {"i": i}, queue="timed")
        after = await r.time()
        brackets.append((before[0] * 1000 + before[1] // 1000, after[0] * 1000 + after[1] // 1000))
        await asyncio.sleep(0.01)  # time must pass: the TIME values have to cover a whole second
    entries = await r.lrange(K.qtimes("timed"), 0, -1)
    assert len(entries) == n
    assert any(lo % 1000 < 100 for lo, _ in brackets), "no enqueue fell in the first 100 ms of a second"
    for e, (lo, hi) in zip(entries, brackets, strict=True):
        count, _, ms = e.partition(":")
        assert count == "1" and ms.isdigit() and lo <= int(ms) <= hi, (e, lo, hi)
    assert [int(e.split(":")[1]) for e in entries] == sorted(int(e.split(":")[1]) for e in entries)


async def test_enqueue_onto_a_queue_key_of_the_wrong_type_writes_nothing(api: Client, r: Redis) -> None:
    await r.set(K.queue("bad"), "a string")
    with pytest.raises(Exception, match=r"BADKEY resque:queue:bad holds a string, not a list: nothing enqueued"):
        await api.enqueue("t", {"i": 1}, queue="bad")
    assert await r.get(K.queue("bad")) == "a string"
    assert not await r.exists(K.queues, K.qtimes("bad"))


# -- bad input ----------------------------------------------------------------------------------

BAD_CALLS: list[tuple[str, Callable[[Client], Awaitable[Any]], str]] = [
    ("params list", lambda c: c.enqueue("t", [1, 2]), "params must be a JSON object"),  # type: ignore[arg-type]
    ("params str", lambda c: c.enqueue("t", "x"), "params must be a JSON object"),  # type: ignore[arg-type]
    ("params int", lambda c: c.enqueue_in(1, "t", 5), "params must be a JSON object"),  # type: ignore[arg-type]
    ("NaN", lambda c: c.enqueue("t", {"x": float("nan")}), "nan"),
    ("Infinity delayed", lambda c: c.enqueue_at(NOW + 5, "t", {"x": [float("inf")]}), "inf"),
    ("int beyond 2**53", lambda c: c.enqueue("t", {"x": 2**60}), "2\\*\\*53"),
    ("non-string key", lambda c: c.enqueue("t", {1: "x"}), "not a string"),  # type: ignore[dict-item]
    ("not JSON", lambda c: c.enqueue("t", {"x": {1, 2}}), "not JSON"),
    ("huge payload", lambda c: c.enqueue("t", {"x": "a" * (16 * 1024 * 1024)}), "limit"),
    ("queue with colon", lambda c: c.enqueue("t", {}, queue="a:b"), "queue name"),
    ("queue with comma", lambda c: c.enqueue_in(5, "t", {}, queue="a,b"), "queue name"),
    ("queue star", lambda c: c.enqueue_at(NOW + 5, "t", {}, queue="*"), "queue name"),
    ("empty queue", lambda c: c.enqueue("t", {}, queue=""), "queue name"),
    ("queue with space", lambda c: c.enqueue_many([("t", {})], queue="a b"), "queue name"),
    ("empty task", lambda c: c.enqueue("", {}), "task name"),
    ("naive datetime", lambda c: c.enqueue_at(dt.datetime(2030, 1, 1), "t", {}), "aware datetime"),
    ("NaN when", lambda c: c.enqueue_at(float("nan"), "t", {}), "epoch seconds"),
    ("bool when", lambda c: c.enqueue_at(True, "t", {}), "epoch seconds"),
    ("str when", lambda c: c.enqueue_at("2030-01-01", "t", {}), "epoch seconds"),  # type: ignore[arg-type]
    ("negative delay", lambda c: c.enqueue_in(-1.0, "t", {}), "non-negative"),
    ("negative timedelta", lambda c: c.enqueue_in(dt.timedelta(seconds=-5), "t", {}), "non-negative"),
    ("infinite delay", lambda c: c.enqueue_in(float("inf"), "t", {}), "non-negative"),
    ("many: not pairs", lambda c: c.enqueue_many([("ok", {}), ("t",)]), "pairs"),  # type: ignore[list-item]
    ("many: one bad among good", lambda c: c.enqueue_many([("ok", {"i": 1}), ("t", {"x": float("nan")})]), "nan"),
    ("many: bad params", lambda c: c.enqueue_many([("ok", {}), ("t", [1])]), "params must be"),  # type: ignore[list-item]
]


@pytest.mark.parametrize("call, message", [pytest.param(f, m, id=i) for i, f, m in BAD_CALLS])
async def test_bad_input_raises_enqueue_error_and_writes_nothing(
        api: Client, r: Redis, call: Callable[[Client], Awaitable[Any]], message: str) -> None:
    with pytest.raises(EnqueueError, match=message):
        await call(api)
    assert await _keys(r) == []


async def test_payload_limit_counts_utf8_bytes(redis_url: str, r: Redis) -> None:
    client = Client(make_redis(RedisSettings(url=redis_url)), max_payload_bytes=1000)
    try:
        await client.enqueue("t", {"x": "a" * 900})  # under the limit
        with pytest.raises(EnqueueError, match="limit"):
            await client.enqueue("t", {"x": "é" * 600})  # 600 characters, 1200+ bytes
    finally:
        await client.close()


# -- queues -------------------------------------------------------------------------------------


async def test_queues_length_queued_delete_queue(api: Client, r: Redis) -> None:
    assert await api.queues() == []
    for i in range(5):
        await api.enqueue("t", {"i": i}, queue="b")
    await api.enqueue("t", {}, queue="a")
    assert await api.queues() == ["a", "b"]
    assert await api.length("b") == 5
    assert await api.length("missing") == 0
    assert await api.queued("b", 1, 2) == [{"class": "t", "queue": "b", "args": [{"i": 1}]},
                                           {"class": "t", "queue": "b", "args": [{"i": 2}]}]
    assert len(await api.queued("b")) == 5
    await r.rpush("resque:queue:b", "not json")
    assert (await api.queued("b", -1, -1)) == ["not json"]
    await api.delete_queue("b")
    assert await api.queues() == ["a"]
    assert await r.exists("resque:queue:b") == 0
    assert await api.length("a") == 1


async def test_delete_matches_exact_job_and_counts(api: Client, r: Redis) -> None:
    for _ in range(3):
        await api.enqueue("t", {"a": 1, "b": 2})
    await api.enqueue("t", {"b": 2, "a": 1})  # other key order: other bytes
    await api.enqueue("t")
    await api.enqueue("other", {"a": 1, "b": 2})
    assert await api.delete("default", "t", {"a": 1, "b": 2}, count=1) == 1
    assert await api.delete("default", "t", {"a": 1, "b": 2}) == 2
    assert await api.delete("default", "t", {"a": 1, "b": 2}) == 0
    assert await api.delete("default", "t") == 1  # no params = [{}]
    assert await api.delete("default", "t", {"b": 2, "a": 1}) == 1
    assert await api.queued("default") == [{"class": "other", "queue": "default", "args": [{"a": 1, "b": 2}]}]
    assert await api.delete_by_task("default", "other") == 1
    assert await api.length("default") == 0


# -- delayed ------------------------------------------------------------------------------------


async def test_delete_delayed_returns_seconds_and_cleans_buckets(api: Client, r: Redis) -> None:
    t1, t2 = 1_900_000_000, 1_900_000_060
    await api.enqueue_at(t1, "t", {"x": 1})
    await api.enqueue_at(t1, "keep", {"x": 1})  # same bucket, another job
    await api.enqueue_at(t2, "t", {"x": 1})
    await api.enqueue_at(t2 + 0.5, "t", {"x": 2})
    payload = encode_job("t", "default", [{"x": 1}])
    assert await api.scheduled_at("default", "t", {"x": 1}) == [t1, t2]
    assert await api.delete_delayed("default", "t", {"x": 1}) == [t1, t2]
    assert await r.exists(f"resque:timestamps:{payload}") == 0
    # t1 still holds "keep"; t2's list became empty and left the schedule
    assert await api.delayed_at(t1) == [{"class": "keep", "queue": "default", "args": [{"x": 1}]}]
    assert await r.exists(f"resque:delayed:{t2}") == 0
    assert await api.timestamps() == [t1, t2 + 1]
    assert await api.scheduled_at("default", "t", {"x": 1}) == []
    assert await api.delete_delayed("default", "t", {"x": 1}) == []
    assert await api.delete_delayed("default", "keep", {"x": 1}) == [t1]
    assert await api.timestamps() == [t2 + 1]
    assert await r.zrange("resque:delayed_queue_schedule", 0, -1) == [str(t2 + 1)]


async def test_timestamps_delayed_at_all_delayed(api: Client) -> None:
    assert await api.timestamps() == []
    assert await api.all_delayed() == {}
    await api.enqueue_at(1_900_000_100, "b", {"i": 1}, queue="q")
    await api.enqueue_at(1_900_000_000, "a", {"i": 0})
    await api.enqueue_at(1_900_000_000, "a", {"i": 0})  # an identical copy in the same second
    assert await api.timestamps() == [1_900_000_000, 1_900_000_100]  # epoch seconds, ascending
    assert await api.delayed_at(1_900_000_000) == [{"class": "a", "queue": "default", "args": [{"i": 0}]}] * 2
    assert await api.delayed_at(1_800_000_000) == []
    assert await api.all_delayed() == {
        1_900_000_000: [{"class": "a", "queue": "default", "args": [{"i": 0}]}] * 2,
        1_900_000_100: [{"class": "b", "queue": "q", "args": [{"i": 1}]}],
    }
    assert await api.scheduled_at("default", "a", {"i": 0}) == [1_900_000_000]
    assert await api.delayed_count() == 3


# -- locks --------------------------------------------------------------------------------------


async def test_locks_and_delete_lock(api: Client, r: Redis) -> None:
    assert await api.locks() == {}
    await r.set('resque:lock:t:default:[{"a":1}]', "1900000000")
    await r.set('resque:workerslock:t:default:[{}]', "1900000001")
    await r.set("resque:queue:default", "not a lock")
    await r.set("other:lock:t:default:x", "other namespace")
    assert await api.locks() == {'lock:t:default:[{"a":1}]': "1900000000", "workerslock:t:default:[{}]": "1900000001"}
    assert await api.delete_lock('lock:t:default:[{"a":1}]') == 1
    assert await api.delete_lock('lock:t:default:[{"a":1}]') == 0
    assert await api.delete_lock("resque:workerslock:t:default:[{}]") == 1  # the full key works too
    assert await api.locks() == {}
    assert await r.exists("other:lock:t:default:x") == 1


# -- workers ------------------------------------------------------------------------------------


def _working_on(worker: str, queue: str, payload: str, run_at: float) -> str:
    return json.dumps({"run_at": js_date(run_at), "queue": queue, "payload": json.loads(payload), "worker": worker},
                      separators=(",", ":"))


async def test_workers_working_on_all_working_on(api: Client, r: Redis) -> None:
    assert await api.workers() == {}
    assert await api.all_working_on() == {}
    job = encode_job("slow", "default", [{"s": 1}])
    # a Corral slot, a node-resque worker (host:pid) on two queues, an idle one
    await r.sadd("resque:workers", "n1-abc+0:default", "host:1234:default,mail", "n1-abc+1:*")
    await r.set("resque:worker:n1-abc+0:default", _working_on("n1-abc+0", "default", job, NOW - 5))
    await r.set("resque:worker:host:1234:default,mail", _working_on("host:1234", "mail", job, NOW - 9))
    assert await api.workers() == {"n1-abc+0": "default", "host:1234": "default,mail", "n1-abc+1": "*"}
    on = await api.working_on("n1-abc+0")
    assert on["payload"] == json.loads(job) and on["queue"] == "default" and on["worker"] == "n1-abc+0"
    assert (await api.working_on("host:1234"))["queue"] == "mail"
    assert await api.working_on("host:1234", "default,mail") == await api.working_on("host:1234")
    assert await api.working_on("n1-abc+1") is None
    assert await api.working_on("nobody") is None
    everything = await api.all_working_on()
    assert everything["n1-abc+1"] == "started"
    assert everything["n1-abc+0"]["run_at"] == js_date(NOW - 5)
    assert everything["host:1234"]["worker"] == "host:1234"


async def test_clean_old_workers(api: Client, r: Redis) -> None:
    job = encode_job("slow", "default", [{}])
    # a dead node-resque worker whose job started an hour ago
    await r.sadd("resque:workers", "deadhost:1:default")
    await r.set("resque:worker:deadhost:1:default", _working_on("deadhost:1", "default", job, NOW - 3600))
    await r.set("resque:worker:deadhost:1:default:started", int(NOW - 3600))
    await r.set("resque:worker:ping:deadhost:1", json.dumps({"time": int(NOW - 3600), "name": "deadhost:1"}))
    # a Corral slot of a live member (its node record lists it, as register.lua writes it), busy for an hour: kept
    redis_ms = int((await r.time())[0]) * 1000
    await r.zadd("resque:corral:members", {"live-1": redis_ms})
    await r.hset("resque:corral:node:live-1", "workers", "live-1:77+0:default")
    await r.sadd("resque:workers", "live-1:77+0:default")
    await r.set("resque:worker:live-1:77+0:default", _working_on("live-1:77+0", "default", job, NOW - 3600))
    # a worker of an unknown node whose job started 10 s ago: not old, kept
    await r.sadd("resque:workers", "young:2:default")
    await r.set("resque:worker:young:2:default", _working_on("young:2", "default", job, NOW - 10))

    removed = await api.clean_old_workers(600)
    assert set(removed) == {"deadhost:1"}
    assert removed["deadhost:1"]["payload"] == json.loads(job)
    assert await api.workers() == {"live-1:77+0": "default", "young:2": "default"}
    assert await r.exists("resque:worker:deadhost:1:default", "resque:worker:deadhost:1:default:started",
                          "resque:worker:ping:deadhost:1") == 0
    assert await api.clean_old_workers(600) == {}


async def test_clean_old_workers_keeps_a_live_idle_node_resque_worker(api: Client, r: Redis) -> None:
    await r.sadd("resque:workers", "nodehost:77:default")
    await r.set("resque:worker:nodehost:77:default:started", int(NOW - 30))
    await r.set("resque:worker:ping:nodehost:77",
                json.dumps({"time": int(NOW), "name": "nodehost:77", "queues": "default"}))
    assert await api.clean_old_workers(600) == {}
    assert await api.workers() == {"nodehost:77": "default"}


# -- failed -------------------------------------------------------------------------------------


async def _fail(r: Redis, task: str, params: dict[str, Any], *, queue: str = "default", worker: str = "n1+0") -> str:
    entry = encode_failed(worker=worker, queue=queue, payload_raw=encode_job(task, queue, [params]),
                          exception="ValueError", error=f"{task} failed", backtrace=["  File x.py, line 1"],
                          failed_at=NOW - 60)
    await r.rpush("resque:failed", entry)
    return entry


async def test_failed_count_failed_remove(api: Client, r: Redis) -> None:
    assert await api.failed_count() == 0
    assert await api.failed() == []
    e1 = await _fail(r, "a", {"i": 1.5})
    e2 = await _fail(r, "b", {"i": 2})
    node_entry = ('{"worker":"host:1","queue":"default","payload":{"class":"c","queue":"default","args":[{}]},'
                  '"exception":"Error","error":"x","backtrace":null,"failed_at":"Fri Dec 12 2014 22:01:16 GMT+0000 '
                  '(Coordinated Universal Time)"}')
    await r.rpush("resque:failed", node_entry)
    assert await api.failed_count() == 3
    got = await api.failed()
    assert [g["raw"] for g in got] == [e1, e2, node_entry]
    assert got[0]["payload"] == {"class": "a", "queue": "default", "args": [{"i": 1.5}]}
    assert got[0]["failed_at"] == int(NOW - 60)
    assert got[2]["failed_at"] == 1418421676.0
    assert [g["raw"] for g in await api.failed(1, 1)] == [e2]
    assert await api.remove_failed(got[1]) == 1  # a dict from failed(): removed by its raw bytes
    assert await api.remove_failed(got[1]) == 0
    assert await api.remove_failed(node_entry) == 1  # a raw string
    assert await api.remove_failed(decode_failed(e1)) == 1  # a FailedEntry
    assert await api.failed_count() == 0


async def test_retry_and_remove_failed(api: Client, r: Redis) -> None:
    await _fail(r, "a", {"i": 1.0, "s": "é"}, queue="mail")
    [entry] = await api.failed()
    assert await api.retry_and_remove_failed(entry) is True
    assert await api.failed_count() == 0
    assert await r.lrange("resque:queue:mail", 0, -1) == ['{"class":"a","queue":"mail","args":[{"i":1,"s":"é"}]}']
    assert "mail" in await api.queues()
    # a second retry of the same entry finds nothing and queues nothing
    assert await api.retry_and_remove_failed(entry) is False
    assert await api.length("mail") == 1
    # an entry without a job payload cannot be retried
    await r.rpush("resque:failed", '{"worker":"w","queue":"q","payload":"garbage","exception":"E","error":"e",'
                                   '"backtrace":null,"failed_at":"x"}')
    [bad] = await api.failed()
    with pytest.raises(EnqueueError, match="no job payload"):
        await api.retry_and_remove_failed(bad)
    assert await api.failed_count() == 1


async def test_retry_and_remove_failed_keeps_node_resque_numbers(api: Client, r: Redis) -> None:
    job = '{"class":"t","queue":"default","args":[{"b":100000000000000000000,"c":123456789012345680000,"d":1e+21}]}'
    entry = ('{"worker":"host:1","queue":"default","payload":' + job + ',"exception":"Error","error":"x",'
             '"backtrace":null,"failed_at":"Fri Dec 12 2014 22:01:16 GMT+0000 (Coordinated Universal Time)"}')
    await r.rpush("resque:failed", entry)
    assert await api.retry_and_remove_failed(entry) is True
    assert await r.lrange("resque:queue:default", 0, -1) == [job]
    assert await api.failed_count() == 0


# -- stats, leader, details ---------------------------------------------------------------------


async def test_stats(api: Client, r: Redis) -> None:
    assert await api.stats() == {}
    await r.set("resque:stat:processed", 7)
    await r.set("resque:stat:failed", 2)
    await r.set("resque:stat:processed:n1+0", 5)
    await r.set("other:stat:processed", 100)
    assert await api.stats() == {"processed": 7, "failed": 2, "processed:n1+0": 5}


async def test_leader(api: Client, r: Redis) -> None:
    assert await api.leader() is None
    assert await api.leader_info() is None
    # a Corral term: token <node>/<epoch>/<random> and the corral:leader hash
    await r.set("resque:resque_scheduler_leader_lock", "n1-abc/42/beef", px=5000)
    await r.hset("resque:corral:leader", mapping={"node": "n1-abc", "epoch": 42, "since": NOW, "token": "n1-abc/42/beef"})
    assert await api.leader() == "n1-abc"
    info = await api.leader_info()
    assert info is not None and info["epoch"] == 42 and info["since"] == NOW and 0 < info["ttl_ms"] <= 5000
    # a node-resque scheduler holding the lock (value = its name)
    await r.set("resque:resque_scheduler_leader_lock", "nodehost:4321", ex=180)
    assert await api.leader() == "nodehost:4321"
    assert (await api.leader_info())["epoch"] is None  # type: ignore[index]
    # a Corral term whose corral:leader record is not written yet (or is another term's): the token says who
    await r.set("resque:corral:leader_lock", "n2-def/43/cafe", px=5000)
    info = await api.leader_info()
    assert info is not None and (info["node"], info["epoch"], info["since"]) == ("n2-def", 43, None)


async def test_details(api: Client, r: Redis) -> None:
    await api.enqueue("t", {}, queue="a")
    await api.enqueue("t", {}, queue="a")
    await api.enqueue("t", {}, queue="b")
    await r.set("resque:stat:processed", 3)
    await r.sadd("resque:workers", "n1+0:a")
    await r.set("resque:resque_scheduler_leader_lock", "nodehost:1", ex=60)
    assert await api.details() == {
        "queues": {"a": {"length": 2}, "b": {"length": 1}},
        "workers": {"n1+0": "started"},
        "stats": {"processed": 3},
        "leader": "nodehost:1",
    }


# -- periodic -----------------------------------------------------------------------------------


async def test_enqueue_recurrent_job_resumes_from_now_without_back_fill(api: Client, r: Redis) -> None:
    await r.hset("resque:corral:periodic:sayHello", mapping={"last": 5, "paused": "1"})
    assert await api.enqueue_recurrent_job("sayHello") is True
    record = await r.hgetall("resque:corral:periodic:sayHello")
    # the slots missed during the pause are at or before `last` now: the leader never enqueues them
    redis_now = float((await r.time())[0])
    assert set(record) == {"last"} and redis_now - 1 <= float(record["last"]) <= redis_now + 1
    # resuming a running task changes nothing
    await r.hset("resque:corral:periodic:sayHello", "last", 7)
    assert await api.enqueue_recurrent_job("sayHello") is True
    assert await r.hgetall("resque:corral:periodic:sayHello") == {"last": "7"}


async def test_enqueue_recurrent_job_is_false_for_a_name_that_is_not_periodic(redis_url: str) -> None:
    async def run(params: dict[str, Any], ctx: Any) -> None: ...

    registry = Registry([Task(name="once", run=run), Task(name="tick", run=run, frequency=2.0)])
    async with await Client.connect(redis_url, registry=registry) as client:
        assert await client.enqueue_recurrent_job("once") is False
        assert await client.enqueue_recurrent_job("noSuchTask") is False  # no definition, never scheduled
        assert await client.enqueue_recurrent_job("tick") is True


async def test_stop_recurrent_job_pauses_and_removes_every_queued_instance(api: Client, r: Redis) -> None:
    await api.enqueue("sayHello")  # periodic jobs are [{}]
    await api.enqueue("sayHello")
    await api.enqueue("sayHello", {"other": "args"})  # every instance goes, whatever its args
    await api.enqueue("sayGoodbye")
    assert await api.stop_recurrent_job("sayHello") == 3
    assert await r.hget("resque:corral:periodic:sayHello", "paused") == "1"
    assert [j["class"] + json.dumps(j["args"]) for j in await api.queued("default")] == ["sayGoodbye[{}]"]
    assert await api.enqueue_recurrent_job("sayHello") is True
    assert await r.hget("resque:corral:periodic:sayHello", "paused") is None


async def test_stop_recurrent_job_counts_every_delayed_copy(api: Client, r: Redis) -> None:
    await api.enqueue("sayHello")
    await api.enqueue_at(1_900_000_000, "sayHello")
    await api.enqueue_at(1_900_000_000, "sayHello")  # same second, same bytes
    await api.enqueue_at(1_900_000_007, "sayHello")
    await api.enqueue_at(1_900_000_007, "sayHello", {"x": 1})  # other params: removed too
    await api.enqueue_at(1_900_000_007, "sayGoodbye")  # another task: kept
    assert await api.stop_recurrent_job("sayHello") == 5
    assert await api.all_delayed() == {1_900_000_007: [{"class": "sayGoodbye", "queue": "default", "args": [{}]}]}
    assert await r.keys("resque:timestamps:*sayHello*") == []


# -- the task catalogue (cluster/catalogue.py), published here as a node would -------------------


def _catalogue_registry(queue: str = "mail") -> Registry:
    async def run(params: dict[str, Any], ctx: Any) -> None: ...

    return Registry([Task(name="mailer", queue=queue, run=run),
                     Task(name="locked", queue="locks", run=run, plugins=[QueueLock]),
                     Task(name="tick", queue="other", frequency=5.0, run=run)])


async def _publish(r: Redis, node: str, registry: Registry, *, age_ms: int = 0, started: float = 1.0) -> Any:
    from cluster.catalogue_publish import CataloguePublisher

    pub = CataloguePublisher(redis=make_redis(RedisSettings(url=_url(r))), keys=K, node_id=node, registry=registry,
                             dead_after=8.0, started=started)
    await pub.publish()
    t = await r.time()
    await r.zadd("resque:corral:members", {node: int(t[0]) * 1000 + int(t[1]) // 1000 - age_ms})
    return pub


def _url(r: Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


async def test_catalogue_gives_queue_and_plugins_and_refuses_unknown_names(api: Client, r: Redis) -> None:
    from cluster.catalogue import UnknownTask

    assert await api.enqueue("mailer", {"n": 1}) is True  # nothing published: nothing to judge against
    assert await api.length("default") == 1
    await _publish(r, "n1", _catalogue_registry())
    await asyncio.sleep(api.catalogue.miss_interval)  # a miss re-reads at most this often
    assert await api.enqueue("mailer", {"n": 2}) is True  # a name not in the cached copy re-reads it
    assert await api.queued("mail") == [{"class": "mailer", "queue": "mail", "args": [{"n": 2}]}]
    assert [await api.enqueue("locked", {"a": 1}) for _ in range(2)] == [True, False]
    with pytest.raises(UnknownTask, match="did you mean 'mailer'"):
        await api.enqueue("mailr")
    assert await api.enqueue("mailr", unknown_ok=True) is True
    assert await api.enqueue_at(1_900_000_000, "mailer") == 1_900_000_000
    assert await api.all_delayed() == {1_900_000_000: [{"class": "mailer", "queue": "mail", "args": [{}]}]}
    assert await api.enqueue_many([("mailer", {"i": i}) for i in range(3)]) == 3
    assert await api.length("mail") == 4


async def test_catalogue_counts_only_live_nodes_and_newest_wins_a_conflict(api: Client, r: Redis) -> None:
    from cluster.catalogue import read_catalogue

    await _publish(r, "old", _catalogue_registry("qa"), started=1.0)
    await _publish(r, "new", _catalogue_registry("qb"), started=2.0)
    view = await read_catalogue(api.redis, K)
    info = view.find("mailer")
    assert info is not None and info.conflict and info.queue == "qb" and sorted(info.nodes) == ["new", "old"]
    assert [t.name for t in view.conflicts()] == ["mailer"]
    assert view.find("locked") is not None and not view.find("locked").conflict  # type: ignore[union-attr]
    # `new` stops heartbeating: past its dead_after it serves nothing
    t = await r.time()
    await r.zadd("resque:corral:members", {"new": int(t[0]) * 1000 - 9000})
    view = await read_catalogue(api.redis, K)
    assert view.nodes == ["old"] and view.find("mailer").queue == "qa" and not view.conflicts()  # type: ignore[union-attr]


async def test_publisher_republishes_after_data_loss_and_prunes_what_dead_nodes_left(api: Client, r: Redis) -> None:
    pub = await _publish(r, "n1", _catalogue_registry())
    await r.delete("resque:corral:catalogue", "resque:corral:taskdefs")  # Redis lost its data
    view = await pub.check()
    assert view.nodes == ["n1"] and sorted(view.tasks) == ["locked", "mailer", "tick"]
    # an entry of a node gone from the members, written long ago, and a definition nobody uses
    await r.hset("resque:corral:catalogue", "gone", json.dumps({"tasks": {"x": "feed"}, "at": 1, "dead_after": 8}))
    await r.hset("resque:corral:taskdefs", "feed", json.dumps({"name": "x"}))
    await pub.check()
    assert not await r.hexists("resque:corral:catalogue", "gone")
    assert await r.hexists("resque:corral:taskdefs", "feed")  # unused once: kept one more check
    await pub.check()
    assert not await r.hexists("resque:corral:taskdefs", "feed")
    assert await r.hlen("resque:corral:taskdefs") == 3
    await pub.unpublish()
    assert not await r.hexists("resque:corral:catalogue", "n1")
    await pub.redis.aclose()


async def test_stop_recurrent_job_uses_the_catalogue_queue(api: Client, r: Redis) -> None:
    await _publish(r, "n1", _catalogue_registry())
    await api.enqueue("tick", {"a": 1})
    await api.enqueue("tick")
    assert await api.length("other") == 2
    assert await api.stop_recurrent_job("tick") == 2
    assert await api.length("other") == 0
    assert await api.enqueue_recurrent_job("mailer") is False
    assert await api.enqueue_recurrent_job("tick") is True


async def test_clean_old_workers_keeps_idle_workers_of_a_live_node_with_a_2s_old_heartbeat(
        api: Client, r: Redis) -> None:
    # a live node between two heartbeats: heartbeat and pings 2 s old (node-resque-style age 1.5)
    t = await r.time()
    await r.zadd("resque:corral:members", {"n1-abc": int(t[0]) * 1000 - 2000})
    await r.hset("resque:corral:node:n1-abc", "workers", "n1-abc+0:default\nn1-abc+1:*")
    for wid, name in (("n1-abc+0:default", "n1-abc+0"), ("n1-abc+1:*", "n1-abc+1")):
        await r.sadd("resque:workers", wid)
        await r.set(f"resque:worker:ping:{name}", json.dumps({"time": int(NOW - 2), "name": name}))
    assert await api.clean_old_workers(1.5) == {}
    assert set(await api.workers()) == {"n1-abc+0", "n1-abc+1"}
    # once the node is dead (heartbeat past dead_after) its workers go
    await r.zadd("resque:corral:members", {"n1-abc": int(t[0]) * 1000 - 9000})
    assert set(await api.clean_old_workers(1.5)) == {"n1-abc+0", "n1-abc+1"}


async def test_a_failed_catalogue_refresh_keeps_the_copy_it_has(redis_factory: Any) -> None:
    server = redis_factory()
    url = server.url
    c = Client(make_redis(RedisSettings(url=url)), "resque")
    raw = Redis.from_url(url, decode_responses=True)
    try:
        await _publish(raw, "n1", _catalogue_registry())
        assert await c.enqueue("mailer") is True
        c.catalogue.max_age = 0  # every call would re-read
        server.pause()
        try:
            original = c.catalogue.redis
            c.catalogue.redis = make_redis(RedisSettings(url=url), socket_timeout=0.2)
            view = await c.catalogue.view()
            assert view.find("mailer") is not None  # the copy it had
        finally:
            server.resume()
            await c.catalogue.redis.aclose()
            c.catalogue.redis = original
    finally:
        await raw.aclose()
        await c.close()
