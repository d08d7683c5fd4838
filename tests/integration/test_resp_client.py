"""`cluster/resp.py`, the leader process's Redis client, against real Redis: every command it
offers answers what redis-py (as Corral builds it: decode_responses, surrogateescape) answers for
the same data, errors are redis-py's classes, and timeouts, pipelines, pub/sub and script reloads
behave as the leader's code expects of redis-py."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser

from cluster import redis_errors
from cluster.connection import make_redis
from cluster.redis_settings import RedisSettings
from cluster.resp import RespClient


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, RespClient]]:
    settings = RedisSettings(redis_url)
    py, resp = make_redis(settings), RespClient.from_settings(settings)
    await py.flushdb()
    try:
        yield py, resp
    finally:
        await resp.aclose()
        await py.flushdb()
        await py.aclose()


async def _fill(r: aioredis.Redis) -> None:
    await r.set("s", "v\udcff")  # invalid UTF-8 round-trips (surrogateescape)
    await r.hset("h", mapping={"a": "1", "b": "2"})
    await r.sadd("set", "x", "y")
    await r.zadd("z", {"m1": 1.5, "m2": 2})
    await r.rpush("l", "1", "2", "3")
    for i in range(30):
        await r.set(f"scan:{i}", i)


CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("get", ("s",), {}), ("get", ("missing",), {}),
    ("mget", (["s", "missing"],), {}), ("mget", ("s", "missing"), {}),
    ("exists", ("s", "h", "missing"), {}), ("type", ("h",), {}), ("type", ("missing",), {}),
    ("hget", ("h", "a"), {}), ("hget", ("h", "zz"), {}), ("hgetall", ("h",), {}), ("hgetall", ("missing",), {}),
    ("hmget", ("h", ["a", "zz"]), {}), ("smembers", ("set",), {}), ("scard", ("set",), {}),
    ("zrange", ("z", 0, -1), {}), ("zrange", ("z", 0, -1), {"withscores": True}),
    ("zrange", ("z", 0, -1), {"withscores": True, "score_cast_func": str}),
    ("lrange", ("l", 0, -1), {}), ("llen", ("l",), {}), ("publish", ("nobody-listens", "x"), {}),
    ("set", ("n", "1"), {"nx": True}), ("set", ("n", "2"), {"nx": True}), ("set", ("n", "3"), {"xx": True, "px": 5000}),
    ("set", ("e", "1"), {"ex": 10}), ("hdel", ("h", "b", "zz"), {}), ("hset", ("h2", "k", "v"), {}),
    ("delete", ("n", "e", "missing"), {}), ("ping", (), {}),
]


async def test_each_command_answers_as_redis_py(pair: tuple[aioredis.Redis, RespClient]) -> None:
    py, resp = pair
    answers: dict[str, list[Any]] = {}
    for name, client in (("redis-py", py), ("resp", resp)):
        await py.flushdb()
        await _fill(py)
        got = [await getattr(client, call)(*args, **kwargs) for call, args, kwargs in CALLS]
        got.append(sorted([k async for k in client.scan_iter(match="scan:*", count=7)]))
        answers[name] = got
    for (call, args, kwargs), want, have in zip(CALLS, answers["redis-py"], answers["resp"], strict=False):
        assert have == want and type(have) is type(want), (call, args, kwargs, want, have)
    assert answers["resp"][-1] == answers["redis-py"][-1] and len(answers["resp"][-1]) == 30
    s, us = await resp.time()
    assert isinstance(s, int) and isinstance(us, int) and abs(s - time.time()) < 5


@pytest.mark.parametrize("message", [
    "OOM command not allowed when used memory > 'maxmemory'.", "NOSCRIPT No matching script.",
    "READONLY You can't write against a read only replica.", "WRONGPASS invalid username-password pair",
    "NOAUTH Authentication required.", "NOPERM this user has no permissions", "LOADING Redis is loading",
    "EXECABORT Transaction discarded", "MASTERDOWN Link with MASTER is down",
    "ERR max number of clients reached", "ERR invalid password", "ERR unknown command 'FOO'",
    "WRONGTYPE Operation against a key holding the wrong kind of value", "BADKEY resque:queue:q holds a hash",
])
def test_error_replies_map_to_redis_pys_classes_and_texts(message: str) -> None:
    want = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    have = redis_errors.reply_error(message)
    assert isinstance(have, type(want)) and str(have) == str(want), (want, have)


async def test_pipeline_runs_all_then_raises_the_first_error(pair: tuple[aioredis.Redis, RespClient]) -> None:
    py, resp = pair
    await py.hset("h", "a", "1")
    async with resp.pipeline(transaction=False) as pipe:
        pipe.set("k", "1")
        pipe.execute_command("INCR", "h")  # WRONGTYPE
        pipe.set("k2", "2")
        with pytest.raises(redis_errors.ResponseError, match="WRONGTYPE"):
            await pipe.execute()
    assert await py.mget("k", "k2") == ["1", "2"]  # the commands around the error ran
    async with resp.pipeline(transaction=True) as pipe:
        pipe.set("t", "1").get("t").execute_command("WAIT", 0, 10)
        assert await pipe.execute() == [True, "1", 0]


async def test_transaction_refused_while_queueing_runs_nothing(pair: tuple[aioredis.Redis, RespClient]) -> None:
    py, resp = pair
    async with resp.pipeline(transaction=True) as pipe:
        pipe.set("t", "1")
        pipe.execute_command("NOSUCHCOMMAND")
        with pytest.raises(redis_errors.ResponseError):
            await pipe.execute()
    assert await py.get("t") is None
    assert await resp.ping() is True  # the connection is in step afterwards


async def test_script_is_loaded_again_after_script_flush(pair: tuple[aioredis.Redis, RespClient]) -> None:
    py, resp = pair
    script = resp.register_script("return redis.call('INCR', KEYS[1])")
    assert await script(keys=["c"]) == 1
    await py.script_flush()
    assert await script(keys=["c"]) == 2  # NOSCRIPT: loaded, then run once (not twice)
    assert await py.get("c") == "2"
    assert await script(keys=["c"], client=py) == 3  # a plugin passing a redis-py client


async def test_pubsub_delivers_and_a_lost_connection_raises(pair: tuple[aioredis.Redis, RespClient]) -> None:
    py, resp = pair
    sub = resp.pubsub(ignore_subscribe_messages=True)
    await sub.subscribe("chan-a", "chan-b")
    # a confirmation came (ignored: None), so Redis has registered both channels
    assert await sub.get_message(timeout=2.0) is None
    assert await py.publish("chan-b", "hello") == 1
    msg = None
    for _ in range(3):  # the second confirmation may come first
        msg = msg or await sub.get_message(timeout=2.0)
    assert msg == {"type": "message", "pattern": None, "channel": "chan-b", "data": "hello"}
    await py.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    with pytest.raises(redis_errors.ConnectionError):
        for _ in range(50):
            await sub.get_message(timeout=0.1)
    await sub.aclose()


async def test_a_server_that_never_answers_times_out_and_nothing_is_retried() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = RespClient.from_settings(RedisSettings(f"redis://127.0.0.1:{port}/0"), socket_timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(redis_errors.TimeoutError):
            await client.set("k", "v")
        took = time.monotonic() - t0
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(0.5)
            sent = conn.recv(4096)
        await client.aclose()
    assert 0.3 <= took < 2.0, took
    assert sent.count(b"SET") == 1, sent  # sent once, never again


async def test_acl_user_and_database_from_the_settings(redis_url: str) -> None:
    py = make_redis(RedisSettings(redis_url))
    await py.execute_command("ACL", "SETUSER", "resp-user", "on", ">resp-pass", "~*", "+@all")
    try:
        base = redis_url.rsplit("/", 1)[0].replace("redis://", "redis://resp-user:resp-pass@")
        resp = RespClient.from_settings(RedisSettings(f"{base}/3"))
        await resp.set("in-db-3", "1")
        assert await make_redis(RedisSettings(f"{redis_url.rsplit('/', 1)[0]}/3")).get("in-db-3") == "1"
        await resp.delete("in-db-3")
        await resp.aclose()
        wrong = RespClient.from_settings(RedisSettings(f"{base.replace('resp-pass', 'nope')}/3"))
        with pytest.raises(redis_errors.AuthenticationError):
            await wrong.get("x")
        await wrong.aclose()
    finally:
        await py.execute_command("ACL", "DELUSER", "resp-user")
        await py.aclose()
