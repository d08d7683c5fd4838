"""What one ack+fetch round trip costs on the client side: the node's redis-py path against a thin
one, on the same Redis, same script, same keys and arguments (recorded from the product's own
`Slot._fetch`), no task work at all. Used by `python bench/run.py --only experiments`.

Modes:
- redis-py: `Scripts.run("fetch", ...)` on a client built like the node's (`make_redis`, 5 s socket
  timeout, decode_responses, pool of slots + 64 connections).
- redis-py, no socket timeout: the same client without `socket_timeout`.
- raw RESP: one asyncio connection per slot, the EVALSHA packed by hand (constant parts encoded
  once), replies parsed by hiredis. The floor a thin worker connection could reach.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any

import hiredis

from cluster.client import Client
from cluster.clock import SYSTEM_CLOCK
from cluster.connection import RedisSettings, make_redis
from cluster.keys import Keys
from cluster.observe import Observer
from cluster.scripts import Scripts, source
from cluster.task import Registry

NEW, OLD = "NEWEXECID000000", "OLDEXECID000000"


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], list[Any]]] = []

    async def run(self, name: str, keys: list[Any], args: list[Any], client: Any = None) -> Any:
        self.calls.append((name, list(keys), list(args)))
        return ["NONE", None, None, None]


async def record_fetch_calls(redis: Any, ns: str, queue: str, slots: int) -> list[tuple[list[str], list[str], list[str]]]:
    """(keys, args without ack, args with ack) per slot, exactly as the product builds them."""
    import node.worker as w

    pool = w.WorkerPool(redis=redis, keys=Keys(ns), registry=Registry(), executor=None,  # type: ignore[arg-type]
                        client=None, node_id="fetchpath", queue_specs=[queue],  # type: ignore[arg-type]
                        concurrency=slots, clock=SYSTEM_CLOCK, observer=Observer())
    rec = _Recorder()
    pool.scripts = rec  # type: ignore[assignment]
    orig = w.secrets.token_hex
    w.secrets.token_hex = lambda n=None: NEW  # type: ignore[assignment]
    try:
        out = []
        for s in pool.slots:
            await s._fetch(None, True)
            await s._fetch((OLD, w.Outcome("ok")), True)
            (_, k1, a1), (_, _k2, a2) = rec.calls[-2:]
            out.append(([str(x) for x in k1], [str(x) for x in a1], [str(x) for x in a2]))
    finally:
        w.secrets.token_hex = orig  # type: ignore[assignment]
    return out


def _subst(args: list[str], new: str, old: str) -> list[str]:
    return [new if a == NEW else old if a == OLD else a for a in args]


async def _redis_py(url: str, calls: list[Any], sock_timeout: float | None) -> int:
    redis = make_redis(RedisSettings(url=url, socket_timeout=sock_timeout) if sock_timeout else
                       _no_timeout(url), max_connections=len(calls) + 64)
    scripts = Scripts(redis)
    done = 0

    async def slot(keys: list[str], a1: list[str], a2: list[str]) -> None:
        nonlocal done
        prev = None
        while True:
            new = secrets.token_hex(8)
            args = _subst(a1, new, "") if prev is None else _subst(a2, new, prev)
            res = await scripts.run("fetch", keys, args)
            if not res[2]:
                return
            done += 1
            prev = new

    try:
        await asyncio.gather(*(slot(*c) for c in calls))
    finally:
        await redis.aclose()
    return done


def _no_timeout(url: str) -> RedisSettings:
    import dataclasses

    return dataclasses.replace(RedisSettings(url=url), socket_timeout=None)  # type: ignore[arg-type]


class _Resp(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.waiter: asyncio.Future[Any] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        reply = self.reader.gets()
        if reply is not False and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(reply)

    async def call(self, packed: bytes) -> Any:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(packed)
        return await self.waiter


def _bulk(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return b"$%d\r\n%s\r\n" % (len(b), b)


async def _raw(host: str, port: int, calls: list[Any], sha: str) -> int:
    loop = asyncio.get_running_loop()
    done = 0

    async def slot(keys: list[str], a1: list[str], a2: list[str]) -> None:
        nonlocal done
        _, proto = await loop.create_connection(_Resp, host, port)
        head = [b"EVALSHA", sha.encode(), str(len(keys)).encode()]
        parts = [_bulk(x.decode()) for x in head] + [_bulk(k) for k in keys]
        n = len(head) + len(keys) + len(a1)
        prefix = b"*%d\r\n" % n + b"".join(parts)
        # constant argument encodings, computed once; only the exec ids change per call
        enc1 = [None if a in (NEW, OLD) else _bulk(a) for a in a1]
        enc2 = [None if a in (NEW, OLD) else _bulk(a) for a in a2]
        prev = None
        try:
            while True:
                new = secrets.token_hex(8)
                if prev is None:
                    body = b"".join(e if e is not None else _bulk(new if a == NEW else "")
                                    for e, a in zip(enc1, a1, strict=True))
                else:
                    body = b"".join(e if e is not None else _bulk(new if a == NEW else prev)
                                    for e, a in zip(enc2, a2, strict=True))
                res = await proto.call(prefix + body)
                if isinstance(res, Exception):
                    raise res
                if not res[2]:
                    return
                done += 1
                prev = new
        finally:
            if proto.transport is not None:
                proto.transport.close()

    await asyncio.gather(*(slot(*c) for c in calls))
    return done


async def measure(url: str, host: str, port: int, redis_pid: int, n: int, slots: int,
                  cpu: Any) -> dict[str, Any]:
    """jobs/s and client CPU µs per job for each mode; `cpu(pid)` returns CPU seconds of a process."""
    ns, queue = "resque", "bench"
    admin = make_redis(RedisSettings(url=url))
    try:
        calls = await record_fetch_calls(admin, ns, queue, slots)
        sha = str(await admin.script_load(source("fetch")))
        out: dict[str, Any] = {}
        for mode in ("redis-py", "redis-py, no socket timeout", "raw RESP"):
            await admin.flushall()
            await Client(admin, ns).enqueue_many([("noop", None)] * n, queue=queue)
            me0, r0, t0 = cpu(os.getpid()), cpu(redis_pid), time.perf_counter()
            if mode == "raw RESP":
                done = await _raw(host, port, calls, sha)
            else:
                done = await _redis_py(url, calls, 5.0 if mode == "redis-py" else None)
            secs = time.perf_counter() - t0
            me1, r1 = cpu(os.getpid()), cpu(redis_pid)
            out[mode] = {"jobs": done, "jobs_per_s": done / secs, "client_cpu_us_per_job": 1e6 * (me1 - me0) / done,
                         "redis_cpu_us_per_job": 1e6 * (r1 - r0) / done, "seconds": secs}
        return out
    finally:
        await admin.aclose()
