#!/usr/bin/env python3
"""`corral node` with experimental monkeypatches, to price profile findings before anyone edits
product code. Bench-only: nothing here is imported by the product.

    BENCH_PATCHES=notimeout,plugins python bench/patched_node.py node --redis-url ... (same args as corral)

Each patch is the smallest stand-in for a proposed product change (see bench/RESULTS.md):
- notimeout: the node's main Redis client without socket_timeout (redis-py 8 then skips one
  asyncio.wait_for Task per send and one asyncio.timeout per read); the election connection keeps
  its short timeout. Product change: one deadline per fetch (asyncio.timeout around the script
  call) instead of a per-socket-operation timeout on the workers' pool.
- plugins: Task.plugin_instances() cached per task (today it re-resolves and re-instantiates the
  plugin list on every job).
- report: WorkerPool.report() (two labelled gauge sets, twice per job) replaced by a no-op. Product
  change: a collector that reads pool.busy at scrape time.
- metrics: NodeMetrics.job_finished() with the labelled children cached per (queue, task).
- jsdate: js_date() memoised per whole second in the worker (one call per fetch today).
- chainwake: a slot that fetched a job wakes one more idle slot of its queue, so a burst fans out
  to every slot in a few round trips instead of one slot plus the others' poll timers (0.5 s).
- wakeall: the producer's wake-up wakes every idle slot serving the queue (the cruder alternative).
- rawfetch: the workers' fetch/ack EVALSHA goes over a minimal RESP connection pool (asyncio
  Protocol + hiredis.Reader, the command packed in one bytes join) instead of redis-py's
  Script/execute_command/pool/retry/timeout layers; every other call stays on redis-py. Product
  change: a thin worker connection for the one hot command (see bench/fetchpath.py).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from cluster.rawconn import pack


def patch_notimeout() -> None:
    import dataclasses

    import node.runtime as rt

    orig = rt.make_redis

    def make_redis(settings: Any, *, socket_timeout: float | None = None, max_connections: int | None = None) -> Any:
        if socket_timeout is None:  # the main client; the election client passes its own timeout
            settings = dataclasses.replace(settings, socket_timeout=None)
        return orig(settings, socket_timeout=socket_timeout, max_connections=max_connections)

    rt.make_redis = make_redis


def patch_plugins() -> None:
    from cluster.task import Task

    orig = Task.plugin_instances
    cache: dict[int, Any] = {}

    def plugin_instances(self: Task) -> Any:
        v = cache.get(id(self))
        if v is None:
            v = cache[id(self)] = orig(self)
        return v

    Task.plugin_instances = plugin_instances  # type: ignore[method-assign]


def patch_report() -> None:
    from node.worker import WorkerPool

    WorkerPool.report = lambda self: None  # type: ignore[method-assign]


def patch_metrics() -> None:
    from node.metrics import NodeMetrics

    def job_finished(self: Any, queue: str, task: str, seconds: float, ok: bool) -> None:
        cache = self.__dict__.setdefault("_bench_children", {})
        key = (queue, task, ok)
        pair = cache.get(key)
        if pair is None:
            pair = cache[key] = ((self.processed if ok else self.failed).labels(queue, task),
                                 self.duration.labels(queue, task))
        pair[0].inc()
        pair[1].observe(seconds)

    NodeMetrics.job_finished = job_finished  # type: ignore[method-assign]


def patch_jsdate() -> None:
    import node.worker as w

    orig = w.js_date
    memo: dict[int, str] = {}

    def js_date(epoch: float) -> str:
        sec = int(epoch)
        v = memo.get(sec)
        if v is None:
            memo.clear()
            v = memo[sec] = orig(sec)
        return v

    w.js_date = js_date


def patch_chainwake() -> None:
    from node.worker import Slot

    orig = Slot._fetch

    async def _fetch(self: Slot, *args: Any, **kw: Any) -> Any:
        res = await orig(self, *args, **kw)
        if res[1] is not None and res[2] is not None:
            self.pool.on_wake(res[1])
        return res

    Slot._fetch = _fetch  # type: ignore[method-assign]


def patch_wakeall() -> None:
    from node.worker import WorkerPool

    def on_wake(self: WorkerPool, queue: str) -> None:
        self.active_queues.add(queue)
        for s in self.slots:
            if s.idle and (s.spec == queue or s.spec == "*"):
                s.wake.set()

    WorkerPool.on_wake = on_wake  # type: ignore[method-assign]


class _RawConn:
    """One RESP connection; one command in flight at a time (like a redis-py pooled connection)."""

    def __init__(self) -> None:
        import asyncio

        import hiredis

        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.waiter: asyncio.Future[Any] | None = None
        self.transport: Any = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        reply = self.reader.gets()
        if reply is not False and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def eof_received(self) -> None:
        return None

    def pause_writing(self) -> None:
        return None

    def resume_writing(self) -> None:
        return None

    async def call(self, packed: bytes) -> Any:
        import asyncio

        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(packed)
        return await self.waiter


class _RawFetchScripts:
    def __init__(self, inner: Any, redis: Any) -> None:
        import hashlib

        from cluster.scripts import source

        kw = redis.connection_pool.connection_kwargs
        self.inner = inner
        self.host, self.port, self.db = kw.get("host", "127.0.0.1"), int(kw.get("port", 6379)), int(kw.get("db", 0))
        self.free: list[_RawConn] = []
        self.src = source("fetch")
        self.sha = hashlib.sha1(self.src.encode()).hexdigest()

    async def _connect(self) -> _RawConn:
        import asyncio

        _, conn = await asyncio.get_running_loop().create_connection(_RawConn, self.host, self.port)
        if self.db:
            await conn.call(pack(["SELECT", self.db]))
        return conn

    async def run(self, name: str, keys: list[Any], args: list[Any], client: Any = None) -> Any:
        if name != "fetch" or client is not None:
            return await self.inner.run(name, keys, args, client=client)
        from redis.exceptions import ResponseError

        conn = self.free.pop() if self.free else await self._connect()
        try:
            cmd = pack(["EVALSHA", self.sha, len(keys), *keys, *args])
            res = await conn.call(cmd)
            if isinstance(res, Exception) and str(res).startswith("NOSCRIPT"):
                await conn.call(pack(["SCRIPT", "LOAD", self.src]))
                res = await conn.call(cmd)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        if not conn.closed:
            self.free.append(conn)
        if isinstance(res, Exception):
            raise ResponseError(str(res))
        return res


def patch_rawfetch() -> None:
    from node.worker import WorkerPool

    orig = WorkerPool.__init__

    def __init__(self: WorkerPool, **kw: Any) -> None:
        orig(self, **kw)
        self.scripts = _RawFetchScripts(self.scripts, self.redis)  # type: ignore[assignment]

    WorkerPool.__init__ = __init__  # type: ignore[method-assign]


PATCHES = {"rawfetch": patch_rawfetch, "notimeout": patch_notimeout, "plugins": patch_plugins, "report": patch_report,
           "metrics": patch_metrics, "jsdate": patch_jsdate, "chainwake": patch_chainwake, "wakeall": patch_wakeall}


def main() -> int:
    names = [p for p in os.environ.get("BENCH_PATCHES", "").split(",") if p]
    for name in names:
        try:
            PATCHES[name]()
        except (AttributeError, ImportError, KeyError) as e:  # the product moved: say so, run unpatched
            print(f"{time.strftime('%H:%M:%S')} bench patch {name!r} not applied: {e!r}", file=sys.stderr)
    from node.cli import main as corral_main

    return corral_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
