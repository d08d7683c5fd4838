"""A minimal RESP client for the hot paths: one EVALSHA per job fetched or enqueued.

redis-py's generic path (Script wrapper, command dispatch, pool, retry wrapper, a Task per send
on Python 3.11, re-encoding every argument) cost ~200 µs of CPU per call here; this one writes
the packed command straight to an asyncio transport and parses the reply with hiredis (~40 µs).
It is used only for plain TCP connections (redis://, with or without AUTH); TLS, unix sockets
and Sentinel keep redis-py. Errors are redis-py's own classes, so callers handle both paths
alike: error replies through redis-py's parser (OOM → OutOfMemoryError, READONLY →
ReadOnlyError, ...); a refused or timed-out connect is a ConnectionError whose message says
"connecting" (the command was never sent); a connection lost or a reply not read in time after
sending is a ConnectionError / TimeoutError (the outcome is unknown). Nothing is retried: a
retried non-idempotent script could run twice.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import TYPE_CHECKING, Any

import hiredis

from .redis_errors import ConnectionError as RedisConnectionError
from .redis_errors import NoScriptError
from .redis_errors import TimeoutError as RedisTimeoutError
from .redis_errors import reply_error as _error
from .redis_settings import RedisSettings
from .scripts import script_sha

if TYPE_CHECKING:
    from redis.asyncio import Redis


def pack(parts: list[Any]) -> bytes:
    return b"*%d\r\n" % len(parts) + pack_bulk(parts)


def pack_bulk(parts: list[Any]) -> bytes:
    """The bulk strings of a command, without its array header."""
    out = []
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogateescape")
        out += [b"$%d\r\n" % len(b), b, b"\r\n"]
    return b"".join(out)


class _Conn(asyncio.Protocol):
    """One connection, auto-pipelined: the commands sent during one loop iteration go out in one
    write, and replies are handed back in order (Redis answers a connection's commands in the
    order they came). A busy node's slots thus share a few syscalls instead of two each.

    Timeouts: each call with one records its deadline beside its waiter, and one watchdog timer per
    connection, armed at the earliest deadline pending, expires what is overdue: a timer per call
    (arm, then cancel) cost more than the rest of the client's side of a call."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()  # loop time, per waiter (inf: none)
        self.out: list[bytes] = []
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = math.inf  # when the watchdog fires (inf: not armed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters, deadlines = self.waiters, self.deadlines
        while (reply := self.reader.gets()) is not False:
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self.close()
                return
            waiter = waiters.popleft()
            deadlines.popleft()
            if not waiter.done():  # a caller that timed out or was cancelled: its reply is dropped
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        err = RedisConnectionError(f"Redis connection lost: {exc!r}")
        self.deadlines.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(err)

    def _flush(self) -> None:
        if self.out and not self.closed:
            self.transport.write(self.out[0] if len(self.out) == 1 else b"".join(self.out))
        self.out.clear()

    def send(self, packed: bytes, timeout: float | None = None) -> asyncio.Future[Any]:
        """Queue one packed command; the future gets its raw reply (a hiredis.ReplyError is a
        value, not raised). `timeout` bounds the wait: when it passes, the future gets
        TimeoutError and the connection is closed (Redis is stalled or unreachable, and every
        call behind it would wait too)."""
        loop = self.loop
        if self.closed or loop is None:
            raise RedisConnectionError("Redis connection closed")
        waiter = loop.create_future()
        waiters = self.waiters
        waiters.append(waiter)
        if timeout:
            deadline = loop.time() + timeout
            self.deadlines.append(deadline)
            if deadline < self._watch_at:
                self._arm(deadline)
        else:
            self.deadlines.append(math.inf)
        if self.out:  # a flush is already scheduled for this loop iteration
            self.out.append(packed)
        elif len(waiters) == 1:  # nothing in flight: no one to batch with, send now
            self.transport.write(packed)
        else:  # replies pending: batch with the other calls made during this iteration
            self.out.append(packed)
            loop.call_soon(self._flush)
        return waiter

    async def call(self, packed: bytes, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (one watchdog per connection)
        """Send one packed command and await its reply, raising an error reply as redis-py's class."""
        reply = await self.send(packed, timeout)
        if isinstance(reply, hiredis.ReplyError):
            raise _error(str(reply))
        return reply

    def _arm(self, when: float) -> None:
        assert self.loop is not None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = when
        self._watchdog = self.loop.call_at(when, self._watch)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._watch_at = math.inf

    def _watch(self) -> None:
        """Expire the first overdue call (the connection is closed with it, failing the others);
        otherwise re-arm at the earliest deadline still pending."""
        self._watchdog, self._watch_at = None, math.inf
        if self.closed or self.loop is None:
            return
        now = self.loop.time()
        earliest = math.inf
        for waiter, deadline in zip(self.waiters, self.deadlines, strict=True):
            if deadline <= now and not waiter.done():
                waiter.set_exception(TimeoutError())
                self.close()
                return
            if deadline < earliest and not waiter.done():
                earliest = deadline
        if earliest < math.inf:
            self._arm(earliest)

    def close(self) -> None:
        self._disarm()
        if self.transport is not None and not self.closed:
            self.transport.abort()  # pending calls fail at once (connection_lost), nothing half-sent lingers
        self.closed = True


def supported(settings: RedisSettings) -> bool:
    """Plain TCP only; everything else stays on redis-py."""
    return settings.target().scheme == "redis" and not settings.sentinels and not settings.tls_ca_file


class RawConnection:
    """One auto-pipelined connection to one Redis for EVALSHA calls, reconnected on demand."""

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float | None = 5.0, connect_timeout: float | None = 2.0) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.conn: _Conn | None = None
        self._connecting: asyncio.Future[_Conn] | None = None

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RawConnection:
        """Server, database and credentials from the same parsed target redis-py's clients use."""
        t = settings.target()
        if t.scheme != "redis" or t.host is None or t.port is None:
            raise ValueError(f"the fast path serves plain redis:// only, not {t.scheme}://")
        return cls(t.host, t.port, db=t.db, username=t.username, password=t.password,
                   timeout=settings.socket_timeout, connect_timeout=settings.connect_timeout)

    @classmethod
    def from_redis(cls, redis: Redis) -> RawConnection | None:
        """The same server, database, credentials and timeouts as a plain-TCP redis-py client;
        None for TLS, unix sockets, Sentinel or credential providers (they keep redis-py)."""
        from redis.asyncio.connection import Connection, ConnectionPool

        from .connection import TcpConnection

        pool = redis.connection_pool
        if type(pool) is not ConnectionPool or pool.connection_class not in (Connection, TcpConnection):
            return None
        kw = pool.connection_kwargs
        if kw.get("credential_provider") is not None or kw.get("protocol") not in (None, 2, "2"):
            return None
        return cls(kw.get("host") or "127.0.0.1", int(kw.get("port") or 6379), db=int(kw.get("db") or 0),
                   username=kw.get("username"), password=kw.get("password"), timeout=kw.get("socket_timeout"),
                   connect_timeout=kw.get("socket_connect_timeout"))

    async def _connect(self, protocol: type[_Conn] | None = None) -> _Conn:
        """A new connection, authenticated and on its database (`protocol`: a `_Conn` subclass)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(protocol or _Conn, self.host, self.port)
        except (OSError, TimeoutError) as e:
            raise RedisConnectionError(f"Error connecting to {self.host}:{self.port}: {e!r}") from e
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.password is not None:
                    auth = ["AUTH", self.username, self.password] if self.username else ["AUTH", self.password]
                    await conn.call(pack(auth))
                if self.db:
                    await conn.call(pack(["SELECT", self.db]))
        except BaseException:
            conn.close()
            raise
        return conn

    async def _get(self) -> _Conn:
        """The pool's one connection, (re)connected on demand; concurrent callers share one attempt."""
        conn = self.conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            fut = self._connecting = asyncio.ensure_future(self._connect())
            fut.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, fut: asyncio.Future[_Conn]) -> None:
        self._connecting = None
        if not fut.cancelled() and fut.exception() is None:
            self.conn = fut.result()

    async def evalsha(self, sha: str, source: str, keys: list[str], args: list[Any]) -> Any:
        return await self.evalsha_packed(pack(["EVALSHA", sha, len(keys), *keys, *args]), source)

    async def evalsha_packed(self, cmd: bytes, source: str) -> Any:
        """An EVALSHA packed by the caller (Prepared), loading `source` on NOSCRIPT."""
        conn = self.conn
        if conn is None or conn.closed:
            conn = await self._get()
        try:
            return await conn.call(cmd, self.timeout)
        except NoScriptError:
            await conn.call(pack(["SCRIPT", "LOAD", source]), self.timeout)
            return await conn.call(cmd, self.timeout)
        except TimeoutError as e:  # the connection was closed: a late reply can never be mistaken
            raise RedisTimeoutError(f"Timeout reading from {self.host}:{self.port}") from e

    async def call(self, cmd: bytes, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (the connection's watchdog)
        """One packed command; its reply, or redis-py's exception (TimeoutError after `timeout`,
        default the connection's)."""
        conn = self.conn
        if conn is None or conn.closed:
            conn = await self._get()
        try:
            return await conn.call(cmd, self.timeout if timeout is None else timeout)
        except TimeoutError as e:
            raise RedisTimeoutError(f"Timeout reading from {self.host}:{self.port}") from e

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class FastScript:
    """``await FastScript(connection_or_settings, source).run(keys, args)``: EVALSHA with NOSCRIPT reload."""

    def __init__(self, conn: RawConnection | RedisSettings, source: str) -> None:
        self.conn = conn if isinstance(conn, RawConnection) else RawConnection.from_settings(conn)
        self.source = source
        self.sha = script_sha(source)

    async def run(self, keys: list[str], args: list[Any]) -> Any:
        return await self.conn.evalsha(self.sha, self.source, keys, args)

    def close(self) -> None:
        self.conn.close()


class PackedEvalsha:
    """An EVALSHA whose keys and leading arguments are packed once: `with_tail(tail)` is the whole
    command with the arguments that vary (a chunk of payloads), `one(payload)` the one-payload
    shape of a single enqueue, packed with the least work. Also `SyncClient`'s per-queue call."""

    def __init__(self, sha: str, keys: list[str], args: list[Any]) -> None:
        parts = ["EVALSHA", sha, len(keys), *keys, *args]
        self.n = len(parts)
        self.body = pack_bulk(parts)
        self.one_head = b"*%d\r\n" % (self.n + 1) + self.body

    def with_tail(self, tail: list[Any]) -> bytes:
        return b"*%d\r\n" % (self.n + len(tail)) + self.body + pack_bulk(tail)

    def one(self, payload: str) -> bytes:
        b = payload.encode("utf-8", "surrogateescape")
        return b"".join((self.one_head, b"$%d\r\n" % len(b), b, b"\r\n"))


class Prepared(PackedEvalsha):
    """A `PackedEvalsha` of a script run on its raw connection: enqueue's per-queue call shape."""

    def __init__(self, script: FastScript, keys: list[str], args: list[Any]) -> None:
        super().__init__(script.sha, keys, args)
        self.script = script

    async def run(self, tail: list[Any]) -> Any:
        return await self.script.conn.evalsha_packed(self.with_tail(tail), self.script.source)

    async def run_one(self, payload: str) -> Any:
        return await self.script.conn.evalsha_packed(self.one(payload), self.script.source)
