"""A minimal RESP client for the workers' hot path: one EVALSHA of `fetch.lua` per job.

redis-py's generic path (Script wrapper, command dispatch, pool, retry wrapper, a Task per send
on Python 3.11, re-encoding every argument) cost ~200 µs of CPU per call here; this one writes
the packed command straight to an asyncio transport and parses the reply with hiredis (~40 µs).
It is used only for plain TCP connections (redis://, with or without AUTH); TLS, unix sockets
and Sentinel keep redis-py. Errors map onto what the callers already handle: connection
problems are `ConnectionError` (an OSError), Redis error replies are `redis.exceptions.ResponseError`.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ResponseError

from .connection import RedisSettings


def pack(parts: list[Any]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogateescape")
        out += [b"$%d\r\n" % len(b), b, b"\r\n"]
    return b"".join(out)


class _Conn(asyncio.Protocol):
    """One connection, one command in flight (like a pooled redis-py connection)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.waiter: asyncio.Future[Any] | None = None
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        reply = self.reader.gets()
        if reply is not False and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"Redis connection lost: {exc!r}"))

    async def call(self, packed: bytes) -> Any:
        if self.closed or self.transport is None:
            raise ConnectionError("Redis connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(packed)
        reply = await self.waiter
        if isinstance(reply, Exception):
            raise ResponseError(str(reply))
        return reply

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True


def supported(settings: RedisSettings) -> bool:
    """Plain TCP only; everything else stays on redis-py."""
    return settings.url.startswith("redis://") and not settings.sentinels and not settings.tls_ca_file


class FastScript:
    """``await FastScript(settings, source).run(keys, args)``: EVALSHA with NOSCRIPT reload."""

    def __init__(self, settings: RedisSettings, source: str) -> None:
        parts = urlsplit(settings.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int((parts.path or "/0").lstrip("/") or 0)
        self.username = settings.username or (unquote(parts.username) if parts.username else None)
        self.password = settings.password or (unquote(parts.password) if parts.password else None)
        self.timeout = settings.socket_timeout
        self.connect_timeout = settings.connect_timeout
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.free: list[_Conn] = []

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
        try:
            if self.password is not None:
                auth = ["AUTH", self.username, self.password] if self.username else ["AUTH", self.password]
                await conn.call(pack(auth))
            if self.db:
                await conn.call(pack(["SELECT", self.db]))
        except BaseException:
            conn.close()
            raise
        return conn

    async def run(self, keys: list[str], args: list[Any]) -> Any:
        conn = self.free.pop() if self.free else await self._connect()
        try:
            async with asyncio.timeout(self.timeout):
                cmd = pack(["EVALSHA", self.sha, len(keys), *keys, *args])
                try:
                    res = await conn.call(cmd)
                except ResponseError as e:
                    if not str(e).startswith("NOSCRIPT"):
                        raise
                    await conn.call(pack(["SCRIPT", "LOAD", self.source]))
                    res = await conn.call(cmd)
        except ResponseError:
            self.free.append(conn)  # the connection is fine; the command failed
            raise
        except BaseException:
            conn.close()  # a reply may still arrive: never reuse this connection
            raise
        if not conn.closed:
            self.free.append(conn)
        return res

    def close(self) -> None:
        for c in self.free:
            c.close()
        self.free.clear()
