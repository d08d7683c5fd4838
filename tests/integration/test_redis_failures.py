"""What counts as "Redis failed" (`cluster.aio.REDIS_FAILURES`): lost links and timeouts are retried,
a programming error never is. uvloop reports I/O on a transport the peer reset as a RuntimeError;
Corral's connection classes (`cluster/connection.py`) turn exactly that one into redis-py's
ConnectionError, so retry loops need not catch RuntimeError at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
import redis.exceptions
import uvloop
from redis.asyncio.connection import Connection

from cluster.aio import REDIS_FAILURES
from cluster.clock import SYSTEM_CLOCK
from cluster.connection import (
    RedisSettings,
    SentinelTcpConnection,
    TcpConnection,
    _ResetIsConnectionError,
    make_redis,
    transport_reset,
)
from cluster.keys import Keys
from cluster.membership import Membership
from cluster.observe import Observer


class _UncheckedWrite(Connection):
    """redis-py as it was before it checked `transport.is_closing()` ahead of a write (5.x, within
    Corral's `redis>=5.0`): a write on a reset transport reaches uvloop, which raises RuntimeError."""

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        assert self._writer is not None
        self._writer.writelines(command)
        await self._writer.drain()


class _Converted(_ResetIsConnectionError, _UncheckedWrite):
    pass


def _write_after_reset(redis_url: str, connection_class: type[Connection]) -> BaseException:
    """Connect under uvloop, reset the transport under the connection, then send a command."""

    async def main() -> BaseException:
        host, port = redis_url.split("//")[1].split("/")[0].rsplit(":", 1)
        conn = connection_class(host=host, port=int(port))
        await conn.connect()
        assert conn._writer is not None
        conn._writer.transport.abort()  # the peer's RST: uvloop closes the handle
        await asyncio.sleep(0.01)
        try:
            await conn.send_packed_command(conn.pack_command("PING"), check_health=False)
        except BaseException as e:
            return e
        finally:
            await conn.disconnect(nowait=True)
        raise AssertionError("a write on a reset transport succeeded")

    return uvloop.run(main())


def test_runtime_error_is_not_a_redis_failure() -> None:
    assert not any(issubclass(RuntimeError, kind) for kind in REDIS_FAILURES)
    assert issubclass(redis.exceptions.ConnectionError, REDIS_FAILURES)


def test_uvloops_reset_error_becomes_a_connection_error(redis_url: str) -> None:
    raw = _write_after_reset(redis_url, _UncheckedWrite)
    # the emulation is faithful: without the conversion, uvloop's own RuntimeError comes out
    assert type(raw) is RuntimeError and transport_reset(raw), raw
    converted = _write_after_reset(redis_url, _Converted)
    assert isinstance(converted, redis.exceptions.ConnectionError), repr(converted)
    assert converted.__cause__ is not None and transport_reset(converted.__cause__)
    assert not transport_reset(RuntimeError("dictionary changed size during iteration"))


def test_every_redis_client_corral_makes_converts_it() -> None:
    plain = make_redis(RedisSettings(url="redis://127.0.0.1:1/0"))
    assert plain.connection_pool.connection_class is TcpConnection
    tls = make_redis(RedisSettings(url="rediss://127.0.0.1:1/0"))
    unix = make_redis(RedisSettings(url="unix:///tmp/nothing.sock"))
    sentinel = make_redis(RedisSettings(sentinels=("127.0.0.1:1",), sentinel_master="m"))
    assert sentinel.connection_pool.connection_class is SentinelTcpConnection
    for r in (plain, tls, unix, sentinel):
        assert issubclass(r.connection_pool.connection_class, _ResetIsConnectionError), r.connection_pool


async def test_a_retry_loop_retries_a_lost_link_but_not_a_bug() -> None:
    calls: list[str] = []

    async def heartbeat() -> bool:
        calls.append("beat")
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("Connection reset by peer")
        raise RuntimeError("a bug in the heartbeat")

    m = Membership(redis=make_redis(RedisSettings(url="redis://127.0.0.1:1/0")), keys=Keys(), clock=SYSTEM_CLOCK,
                   observer=Observer(), node_id="n1", info={}, workers=[], interval=0.01)
    m.heartbeat = heartbeat  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug in the heartbeat"):
        async with asyncio.timeout(5):
            await m.run()
    assert calls == ["beat", "beat"], "the lost link is retried, the bug ends the loop"
    assert m.last_error is not None and "ConnectionError" in m.last_error


