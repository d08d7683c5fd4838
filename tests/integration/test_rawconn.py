"""`cluster/rawconn.py`, the thin RESP path of the workers' fetch and the client's enqueue, against
real redis-servers: it must write what redis-py would, and fail the way redis-py fails (same
exception classes, "connecting" only when nothing was sent), so every caller handles both paths.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from cluster import Client
from cluster.connection import RedisSettings, make_redis
from cluster.keys import Keys
from cluster.rawconn import FastScript, RawConnection
from cluster.wire import encode_job
from tests.support import free_port
from tests.support.proxy import TcpProxy
from tests.support.servers import RedisServer

K = Keys("resque")


async def test_client_enqueue_takes_the_raw_path_and_writes_the_resque_layout(redis_url: str) -> None:
    client = await Client.connect(redis_url)
    look = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client._fast_enqueue is not None, "a plain redis:// client should use the raw path"
        await client.enqueue("add", {"a": 1}, queue="math")
        ts = await client.enqueue_at(2_000_000_000, "add", {"a": 2}, queue="math")
        assert await look.lrange(K.queue("math"), 0, -1) == [encode_job("add", "math", [{"a": 1}])]
        assert await look.smembers(K.queues) == {"math"}
        assert await look.zrange(K.delayed_schedule, 0, -1) == [str(ts)]
        assert await look.lrange(K.delayed(ts), 0, -1) == [encode_job("add", "math", [{"a": 2}])]
    finally:
        await client.close()
        await look.aclose()


async def test_raw_path_reloads_a_flushed_script_cache(redis_url: str) -> None:
    client = await Client.connect(redis_url)
    look = Redis.from_url(redis_url, decode_responses=True)
    try:
        await client.enqueue("a", {}, queue="q")
        await look.script_flush()  # Redis restarted empty, or SCRIPT FLUSH: NOSCRIPT on the next call
        await client.enqueue("b", {}, queue="q")
        assert await look.llen(K.queue("q")) == 2
    finally:
        await client.close()
        await look.aclose()


def test_from_redis_only_for_plain_tcp(redis_url: str, tmp_path: Any) -> None:
    plain = Redis.from_url(redis_url.replace("/0", "/3") if redis_url.endswith("/0") else redis_url,
                           username="u", password="p", socket_timeout=1.5)
    raw = RawConnection.from_redis(plain)
    assert raw is not None
    assert (raw.username, raw.password, raw.timeout) == ("u", "p", 1.5)
    assert RawConnection.from_redis(Redis.from_url(f"unix://{tmp_path}/redis.sock")) is None
    assert RawConnection.from_redis(Redis.from_url("rediss://127.0.0.1:6379/0")) is None
    sentinel = Sentinel([("127.0.0.1", 26379)])  # type: ignore[no-untyped-call]
    assert RawConnection.from_redis(sentinel.master_for("mymaster")) is None
    assert Client(plain, fast=False)._fast_enqueue is None


async def test_error_replies_keep_redis_py_classes(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(maxmemory="4mb", maxmemory_policy="noeviction")
    client = await Client.connect(server.url)
    try:
        big = "x" * 500_000
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(20):
                await client.enqueue("fill", {"i": i, "pad": big}, queue="q")
        # the connection survives an error reply and serves the next call
        await client.redis.flushall()
        await client.enqueue("small", {}, queue="q")
    finally:
        await client.close()


async def test_auth_and_db_selection(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(requirepass="s3cret")
    url = server.url_for(5)
    client = await Client.connect(url)
    try:
        assert client._fast_enqueue is not None
        await client.enqueue("t", {}, queue="q")
        look = make_redis(RedisSettings(url=url))
        assert await look.llen(K.queue("q")) == 1
        await look.aclose()
    finally:
        await client.close()
    wrong = RawConnection.from_settings(RedisSettings(url=url.replace("s3cret", "nope")))
    with pytest.raises(redis.exceptions.AuthenticationError):
        await FastScript(wrong, "return 1").run([], [])


async def test_connection_failures_say_whether_anything_was_sent(redis_url: str, tcp_proxy: Callable[..., TcpProxy]) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = tcp_proxy(port)
    host, pport = proxy.address
    raw = RawConnection(host, pport, timeout=0.3, connect_timeout=0.3)
    script = FastScript(raw, "return 7")
    assert script.sha == hashlib.sha1(b"return 7").hexdigest()
    assert await script.run([], []) == 7

    proxy.blackhole()  # sent, never answered: outcome unknown, not "connecting"
    with pytest.raises(redis.exceptions.TimeoutError) as timeout:
        await script.run([], [])
    assert "connecting" not in str(timeout.value).lower()
    assert raw.conn is None or raw.conn.closed, "a timed-out connection must not be reused"

    proxy.reset()  # accepted, then RST: a ConnectionError, and it keeps nothing broken
    with pytest.raises(redis.exceptions.ConnectionError):
        await script.run([], [])
    assert raw.conn is None or raw.conn.closed

    proxy.pass_through()
    assert await script.run([], []) == 7
    raw.close()

    closed_port = free_port()  # a port nobody listens on: refused, certainly never sent
    with pytest.raises(redis.exceptions.ConnectionError) as refused:
        await FastScript(RawConnection("127.0.0.1", closed_port, connect_timeout=0.3), "return 7").run([], [])
    assert "connecting" in str(refused.value).lower()


async def test_each_call_times_out_at_its_own_deadline(redis_url: str, tcp_proxy: Callable[..., TcpProxy]) -> None:
    """One watchdog per connection, armed at the earliest pending deadline: a call sent while it is
    armed for an earlier call still gets its whole timeout (and does time out), and calls that are
    answered never trip it however long the connection lives."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = tcp_proxy(port)
    host, pport = proxy.address
    loop = asyncio.get_running_loop()
    answered = FastScript(RawConnection(host, pport, timeout=0.3, connect_timeout=0.4), "return 7")
    try:
        end = loop.time() + 1.0  # over 3 timeouts' worth of answered calls
        while loop.time() < end:
            assert await answered.run([], []) == 7
    finally:
        answered.close()

    raw = RawConnection(host, pport, timeout=0.4, connect_timeout=0.4)
    script = FastScript(raw, "return 7")
    try:
        assert await script.run([], []) == 7  # its deadline arms the watchdog, 0.4 s from now
        await asyncio.sleep(0.1)
        proxy.blackhole()
        sent = loop.time()
        with pytest.raises(redis.exceptions.TimeoutError):
            await asyncio.wait_for(script.run([], []), 3.0)  # never expired at all: asyncio's TimeoutError
        assert loop.time() - sent >= 0.4 - 0.01, "expired at the earlier call's deadline, not its own"
    finally:
        raw.close()
