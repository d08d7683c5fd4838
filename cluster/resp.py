"""A Redis client for the leader process: the part of redis-py's asyncio `Redis` API that the
elector and the leader duties call, over `cluster/rawconn.py`'s auto-pipelined connections.

Why: redis-py costs ≈ 11 MB of RSS per process before any call. The leader process
(`node/leader/boot.py`) uses this client for plain-TCP Redis (redis://, the default); TLS, unix
sockets, Sentinel and ZooKeeper elections keep redis-py (`node/leader/duties.py` decides), as do
enqueue plugins run while promoting (their hooks are user code written against redis-py).

Replies are shaped as redis-py shapes them with `decode_responses=True` (str, `set` → True/None,
`hgetall` → dict, `zrange(withscores=True)` → pairs, `time` → (s, µs)); errors are redis-py's
classes (`cluster/redis_errors.py`). A command waits at most the client's socket timeout, and
nothing is retried (a retried script could run twice), as with the redis-py clients Corral builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import hiredis

from .rawconn import RawConnection, _Conn, pack
from .redis_errors import ConnectionError as RedisConnectionError
from .redis_errors import NoScriptError, reply_error
from .redis_errors import TimeoutError as RedisTimeoutError
from .redis_settings import RedisSettings
from .scripts import script_sha

Shape = Callable[[Any], Any] | None


def _ok(reply: Any) -> bool | None:
    return True if reply == "OK" else None


def _pairs(reply: list[Any]) -> dict[Any, Any]:
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _flat(keys: str | Iterable[str], args: tuple[Any, ...]) -> list[Any]:
    """redis-py's `mget(keys, *args)` / `hmget(name, keys, *args)`: one name or a list, then more."""
    return [keys, *args] if isinstance(keys, str | bytes) else [*keys, *args]


class _Commands:
    """The commands, each as (arguments, how its reply is shaped); the client awaits them, a
    pipeline queues them."""

    def _command(self, args: list[Any], shape: Shape = None) -> Any:
        raise NotImplementedError

    def execute_command(self, *args: Any) -> Any:
        return self._command(list(args))

    def ping(self) -> Any:
        return self._command(["PING"], lambda r: r == "PONG")

    def get(self, name: str) -> Any:
        return self._command(["GET", name])

    def set(self, name: str, value: Any, ex: float | None = None, px: int | None = None, nx: bool = False,
            xx: bool = False) -> Any:
        args = ["SET", name, value]
        if ex is not None:
            args += ["EX", int(ex)]
        if px is not None:
            args += ["PX", int(px)]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        return self._command(args, _ok)

    def mget(self, keys: str | Iterable[str], *args: str) -> Any:
        return self._command(["MGET", *_flat(keys, args)])

    def delete(self, *names: str) -> Any:
        return self._command(["DEL", *names])

    def exists(self, *names: str) -> Any:
        return self._command(["EXISTS", *names])

    def type(self, name: str) -> Any:
        return self._command(["TYPE", name])

    def time(self) -> Any:
        return self._command(["TIME"], lambda r: (int(r[0]), int(r[1])))

    def hget(self, name: str, key: str) -> Any:
        return self._command(["HGET", name, key])

    def hgetall(self, name: str) -> Any:
        return self._command(["HGETALL", name], _pairs)

    def hmget(self, name: str, keys: str | Iterable[str], *args: str) -> Any:
        return self._command(["HMGET", name, *_flat(keys, args)])

    def hdel(self, name: str, *keys: str) -> Any:
        return self._command(["HDEL", name, *keys])

    def hset(self, name: str, key: str | None = None, value: Any = None,
             mapping: dict[str, Any] | None = None) -> Any:
        args: list[Any] = ["HSET", name]
        if key is not None:
            args += [key, value]
        for k, v in (mapping or {}).items():
            args += [k, v]
        return self._command(args)

    def smembers(self, name: str) -> Any:
        return self._command(["SMEMBERS", name], set)

    def scard(self, name: str) -> Any:
        return self._command(["SCARD", name])

    def zrange(self, name: str, start: int, end: int, withscores: bool = False,
               score_cast_func: Callable[[Any], Any] = float) -> Any:
        if not withscores:
            return self._command(["ZRANGE", name, start, end])
        return self._command(["ZRANGE", name, start, end, "WITHSCORES"],
                             lambda r: [(m, score_cast_func(s)) for m, s in zip(r[::2], r[1::2], strict=True)])

    def lrange(self, name: str, start: int, end: int) -> Any:
        return self._command(["LRANGE", name, start, end])

    def llen(self, name: str) -> Any:
        return self._command(["LLEN", name])

    def publish(self, channel: str, message: Any) -> Any:
        return self._command(["PUBLISH", channel, message])

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self._command(["EVALSHA", sha, numkeys, *keys_and_args])

    def script_load(self, script: str) -> Any:
        return self._command(["SCRIPT", "LOAD", script])


class RespClient(_Commands):
    """``RespClient.from_settings(settings)``: one auto-pipelined connection, (re)connected on demand."""

    def __init__(self, conn: RawConnection) -> None:
        self.conn = conn
        self._pubsubs: set[RespPubSub] = set()

    @classmethod
    def from_settings(cls, settings: RedisSettings, *, socket_timeout: float | None = None) -> RespClient:
        conn = RawConnection.from_settings(settings)
        if socket_timeout is not None:
            conn.timeout = socket_timeout
        return cls(conn)

    async def _run(self, args: list[Any], shape: Shape) -> Any:
        reply = await self.conn.call(pack(args))
        return reply if shape is None else shape(reply)

    def _command(self, args: list[Any], shape: Shape = None) -> Any:
        return self._run(args, shape)

    async def scan_iter(self, match: str | None = None, count: int | None = None) -> AsyncIterator[str]:
        cursor = "0"
        extra = (["MATCH", match] if match is not None else []) + (["COUNT", count] if count is not None else [])
        while True:
            cursor, keys = await self._run(["SCAN", cursor, *extra], None)
            for k in keys:
                yield k
            if cursor == "0":
                return

    def register_script(self, script: str) -> RespScript:
        return RespScript(self, script)

    def pipeline(self, transaction: bool = True) -> RespPipeline:
        return RespPipeline(self.conn, transaction)

    def pubsub(self, ignore_subscribe_messages: bool = False) -> RespPubSub:
        return RespPubSub(self, ignore_subscribe_messages)

    async def aclose(self) -> None:
        for p in list(self._pubsubs):
            await p.aclose()
        self.conn.close()


class RespScript:
    """redis-py's `AsyncScript` shape: ``await script(keys=[...], args=[...])``, EVALSHA with the
    script loaded again on NOSCRIPT (Redis restarted or flushed its scripts: it did not run)."""

    def __init__(self, client: RespClient, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = script_sha(script)

    async def __call__(self, keys: list[Any] | None = None, args: list[Any] | None = None,
                       client: Any = None) -> Any:
        keys, args = keys or [], args or []
        target = client or self.client
        if isinstance(target, RespClient):
            return await target.conn.evalsha(self.sha, self.script, keys, args)
        try:  # another client (a plugin passing its redis-py `ctx.redis`)
            return await target.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await target.script_load(self.script)
            return await target.evalsha(self.sha, len(keys), *keys, *args)


class RespPipeline(_Commands):
    """Commands queued, then sent in one write by `execute()` (in MULTI/EXEC when `transaction`);
    the replies come back in order, shaped, and the first error reply is raised after all ran."""

    def __init__(self, conn: RawConnection, transaction: bool) -> None:
        self.conn = conn
        self.transaction = transaction
        self.queued: list[tuple[list[Any], Shape]] = []

    async def __aenter__(self) -> RespPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.queued.clear()

    def _command(self, args: list[Any], shape: Shape = None) -> RespPipeline:
        self.queued.append((args, shape))
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        queued, self.queued = self.queued, []
        if not queued:
            return []
        conn = self.conn.conn
        if conn is None or conn.closed:
            conn = await self.conn._get()
        cmds = [pack(args) for args, _ in queued]
        if self.transaction:
            cmds = [pack(["MULTI"]), *cmds, pack(["EXEC"])]
        waiters = [conn.send(c, self.conn.timeout) for c in cmds]
        try:
            replies = await asyncio.gather(*waiters)
        except TimeoutError as e:
            raise RedisTimeoutError(f"Timeout reading from {self.conn.host}:{self.conn.port}") from e
        if self.transaction:
            for r in replies[:-1]:
                if isinstance(r, hiredis.ReplyError):  # refused while queueing: EXEC aborts them all
                    raise reply_error(str(r))
            replies = replies[-1]
            if isinstance(replies, hiredis.ReplyError):
                raise reply_error(str(replies))
        out: list[Any] = []
        for (_, shape), reply in zip(queued, replies, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                out.append(reply_error(str(reply)))
            else:
                out.append(reply if shape is None else shape(reply))
        if raise_on_error:
            for r in out:
                if isinstance(r, Exception):
                    raise r
        return out


class _SubConn(_Conn):
    """A connection in subscribe mode: replies nobody waits for (the messages) are queued."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: asyncio.Queue[Any] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self.waiters:
                self.deadlines.popleft()
                waiter = self.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(reply)
            else:
                self.messages.put_nowait(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.messages.put_nowait(RedisConnectionError(f"Redis connection lost: {exc!r}"))


class RespPubSub:
    """redis-py's `PubSub` shape for SUBSCRIBE: ``await p.subscribe(ch)``, then
    ``await p.get_message(timeout=1.0)`` → a message dict or None; a lost connection raises."""

    def __init__(self, client: RespClient, ignore_subscribe_messages: bool) -> None:
        self.client = client
        self.ignore_subscribe_messages = ignore_subscribe_messages
        self.sub: _SubConn | None = None

    async def subscribe(self, *channels: str) -> None:
        if self.sub is None or self.sub.closed:
            sub = await self.client.conn._connect(_SubConn)
            assert isinstance(sub, _SubConn)
            self.sub = sub
            self.client._pubsubs.add(self)
        self.sub.transport.write(pack(["SUBSCRIBE", *channels]))

    async def get_message(self, ignore_subscribe_messages: bool = False, timeout: float = 0.0) -> dict[str, Any] | None:  # noqa: ASYNC109 (redis-py's signature)
        if self.sub is None:
            raise RedisConnectionError("pubsub connection not set: subscribe first")
        try:
            async with asyncio.timeout(timeout):
                reply = await self.sub.messages.get()
        except TimeoutError:
            return None
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(str(reply))
        kind = reply[0]
        if kind == "pmessage":
            return {"type": kind, "pattern": reply[1], "channel": reply[2], "data": reply[3]}
        if kind != "message" and (ignore_subscribe_messages or self.ignore_subscribe_messages):
            return None
        return {"type": kind, "pattern": None, "channel": reply[1], "data": reply[2]}

    async def aclose(self) -> None:
        self.client._pubsubs.discard(self)
        if self.sub is not None:
            self.sub.close()
            self.sub = None
