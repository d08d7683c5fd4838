"""`SyncClient`: enqueue from sync code (Flask, Django, scripts), with blocking sockets.

    from cluster import SyncClient

    client = SyncClient.connect("redis://127.0.0.1:6379/0")     # once, at import or app start
    client.enqueue("sendWelcomeEmail", {"to": "evan@example.com"})   # from any thread
    client.enqueue_in(60, "remind", {"id": 7})
    client.close()

The same semantics, errors and bytes in Redis as the async `Client` (cluster/client.py): the same
checks, payload, keys and Lua scripts (enqueue.lua, enqueue_at.lua), queue resolution from the
registry given or the live nodes' catalogue (re-read every 2 s, sooner on a miss), `UnknownTask`
with close names. The shared rules are in cluster/enqueue_calls.py.

Each call takes a connection of its own thread from a small pool (cluster/syncconn.py: no event
loop, one `sendall` and one `recv` per call), so one client serves a threaded web server; it is
fork-safe (gunicorn's pre-fork: a child opens its own connections). Nothing is retried but a
call Redis answered NOSCRIPT (it did not run): a timeout or a lost connection after sending
raises redis-py's TimeoutError / ConnectionError, and the job may or may not be queued.

Tasks with enqueue plugins (QueueLock, DelayQueueLock, a plugin with a `before_enqueue` hook):
their hooks are coroutines, so those enqueues run on an async `Client` driven by a private event
loop in one background thread, started at the first such call and closed with this client. Every
other call stays on the blocking sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from .aio import REDIS_FAILURES
from .catalogue import CatalogueCopy, CatalogueView, TaskInfo, add_definitions, build_view, live_entries, wanted_definitions
from .client import Client
from .clock import SYSTEM_CLOCK, Clock
from .connection import RedisSettings, make_redis
from .enqueue_calls import (
    MAX_PAYLOAD_BYTES,
    Plan,
    catalogue_plan,
    checked_payload,
    delay_seconds,
    due_second,
    enqueue_at_call,
    enqueue_head,
    enqueue_keys,
    job_args,
    registry_plan,
)
from .errors import ConfigError, EnqueueError
from .keys import Keys
from .plugins import Plugin
from .rawconn import PackedEvalsha, pack
from .redis_errors import NoScriptError, ResponseError
from .scripts import script_sha, source
from .syncconn import SyncConnection, SyncPool, fork_count
from .task import Registry

T = TypeVar("T")


class _Script:
    """A script's sha and its SCRIPT LOAD, packed once."""

    def __init__(self, name: str) -> None:
        text = source(name)
        self.sha = script_sha(text)
        self.load = pack(["SCRIPT", "LOAD", text])


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


def _raise_first_error(replies: list[Any]) -> None:
    for r in replies:
        if isinstance(r, ResponseError):
            raise r


class SyncCatalogueCache(CatalogueCopy):
    """The catalogue copy of cluster/catalogue.py (same reads, same freshness), read over blocking
    connections; one thread re-reads it while the others wait."""

    def __init__(self, pool: SyncPool, keys: Keys, *, clock: Clock = SYSTEM_CLOCK, max_age: float = 2.0,
                 miss_interval: float = 0.2) -> None:
        super().__init__(clock=clock, max_age=max_age, miss_interval=miss_interval)
        self.pool = pool
        self.keys = keys
        self._lock = threading.Lock()

    def _read(self, conn: SyncConnection) -> CatalogueView:
        k = self.keys
        replies = conn.pipeline([pack(["TIME"]), pack(["ZRANGE", k.members, 0, -1, "WITHSCORES"]),
                                 pack(["HGETALL", k.catalogue])])
        _raise_first_error(replies)
        now, members, entries = replies
        live = live_entries(now, _pairs(members), dict(_pairs(entries)))
        wanted = wanted_definitions(live, self._defs)
        if wanted:
            add_definitions(self._defs, wanted, conn.call(pack(["HMGET", k.taskdefs, *wanted])))
        return build_view(live, self._defs)

    def view(self, *, max_age: float | None = None) -> CatalogueView:
        age = self.max_age if max_age is None else max_age
        if self._stale(age):
            with self._lock:
                if self._stale(age):
                    try:
                        return self._read_done(self.pool.run(self._read))
                    except REDIS_FAILURES:
                        if (kept := self._read_failed()) is None:
                            raise
                        return kept
        assert self._view is not None
        return self._view

    def find(self, name: str) -> tuple[TaskInfo | None, CatalogueView]:
        view = self.view()
        info = view.find(name)
        if info is None:
            view = self.view(max_age=self.miss_interval)
            info = view.find(name)
        return info, view


class _AsyncSide:
    """An async `Client` on a private event loop in one daemon thread, for the enqueues whose
    plugins have (async) enqueue hooks. Started on first need, closed with the `SyncClient`;
    forgotten (not closed: its thread did not survive the fork) in a forked child."""

    def __init__(self, make: Callable[[], Client]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._forks = fork_count()

    def _forget_after_fork(self) -> None:
        """In a forked child: the loop's thread is gone; forget it, with a fresh lock (a thread gone
        with the fork may have held it)."""
        if self._forks != fork_count():
            self._lock = threading.Lock()
            self._loop = self._thread = self._client = None
            self._forks = fork_count()

    def run(self, call: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        self._forget_after_fork()
        with self._lock:
            if self._loop is None:
                self._start()
            loop, client = self._loop, self._client
        assert loop is not None and client is not None
        return asyncio.run_coroutine_threadsafe(call(client), loop).result()

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="corral-sync-client-plugins", daemon=True)
        thread.start()
        self._loop, self._thread, self._client = loop, thread, self._make()

    def close(self) -> None:
        self._forget_after_fork()
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = None
            if loop is None or thread is None or client is None:
                return
        try:
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()


class SyncClient:
    """Enqueue jobs from sync code: `SyncClient.connect(url)` or `SyncClient(RedisSettings(...))`.
    One client per process serves every thread; use it as a context manager or `close()` it."""

    def __init__(self, settings: RedisSettings | None = None, namespace: str = "resque", *,
                 registry: Registry | None = None, clock: Clock = SYSTEM_CLOCK,
                 max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.settings = settings or RedisSettings()
        self.keys = Keys(namespace)
        self.registry = registry
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes
        self._pool = SyncPool(self.settings)  # parses the target: a bad URL is a ConfigError here
        self._enqueue = _Script("enqueue")
        self._enqueue_at = _Script("enqueue_at")
        self._packed: dict[str, PackedEvalsha] = {}  # queue -> its enqueue call, packed but for the payloads
        # the live nodes' task catalogue, re-read every 2 s (sooner for a name not seen yet)
        self.catalogue = SyncCatalogueCache(self._pool, self.keys, clock=clock)
        self._async = _AsyncSide(lambda: Client(make_redis(self.settings), namespace, registry=registry,
                                                clock=clock, max_payload_bytes=max_payload_bytes))

    @classmethod
    def connect(cls, url: str | None = None, namespace: str = "resque", *, settings: RedisSettings | None = None,
                registry: Registry | None = None, **redis_options: Any) -> SyncClient:
        """Connect and check Redis answers. `redis_options` are `RedisSettings` fields
        (password, username, socket_timeout, connect_timeout, tls_ca_file, sentinels, ...)."""
        if settings is not None and (url is not None or redis_options):
            raise ConfigError("SyncClient.connect takes either settings= or a url and Redis options, not both")
        if settings is None:
            known = {f.name for f in dataclasses.fields(RedisSettings)} - {"url"}
            unknown = sorted(set(redis_options) - known)
            if unknown:
                raise ConfigError(f"unknown Redis option(s) {unknown}; known: {sorted(known)}")
            settings = RedisSettings(url=url or RedisSettings.url, **redis_options)
        client = cls(settings, namespace, registry=registry)
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
        return client

    def ping(self) -> None:
        self._pool.run(lambda c: c.call(pack(["PING"])))

    def close(self) -> None:
        """Close the connections (in a forked child: only its own) and the plugin loop, if started."""
        try:
            self._async.close()
        finally:
            self._pool.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- enqueue -------------------------------------------------------------------------

    def _resolve(self, task: str, queue: str | None, unknown_ok: bool) -> Plan:
        plan = registry_plan(task, queue, self.registry)
        if plan is not None:
            return plan
        hit = self.catalogue.cached(task)
        info, view = hit if hit is not None else self.catalogue.find(task)
        return catalogue_plan(task, queue, unknown_ok, info, view)

    def _packed_enqueue(self, q: str) -> PackedEvalsha:
        p = self._packed.get(q)
        if p is None:
            if len(self._packed) > 1000:  # many short-lived queue names
                self._packed.clear()
            p = self._packed[q] = PackedEvalsha(self._enqueue.sha, enqueue_keys(self.keys, q),
                                                enqueue_head(self.keys, q))
        return p

    def enqueue(self, task: str, params: dict[str, Any] | None = None, *, queue: str | None = None,
                raw_args: Sequence[Any] | None = None, unknown_ok: bool = False) -> bool:
        """Queue a job now (on the task's queue unless `queue`). Returns False when an enqueue
        plugin (QueueLock, ...) refused it; raises UnknownTask for a name no live node serves."""
        q, plugins = self._resolve(task, queue, unknown_ok)
        args = job_args(params, raw_args)
        payload = checked_payload(task, q, args, self.max_payload_bytes)
        if plugins:
            return self._with_plugins(plugins, task, q, args, payload)
        self._pool.evalsha((self._packed.get(q) or self._packed_enqueue(q)).one(payload), self._enqueue.load)
        return True

    def _with_plugins(self, plugins: list[Plugin], task: str, q: str, args: list[Any], payload: str) -> bool:
        return self._async.run(lambda c: c.enqueue_with_plugins(plugins, task, q, args, payload))

    def enqueue_many(self, jobs: Iterable[tuple[str, dict[str, Any] | None]], *, queue: str | None = None,
                     batch_size: int = 5000, unknown_ok: bool = False) -> int:
        """Queue many jobs, one script call per queue and batch, pipelined. Returns how many were queued."""
        by_queue: dict[str, list[str]] = {}
        resolved: dict[str, Plan] = {}
        count = 0
        for item in jobs:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise EnqueueError(f"enqueue_many takes (task, params) pairs, got {item!r}")
            task, params = item
            if task not in resolved:
                resolved[task] = self._resolve(task, queue, unknown_ok)
            q, plugins = resolved[task]
            if plugins:  # enqueue plugins: one guarded enqueue each (the hook and the push are one step)
                args = job_args(params, None)
                count += self._with_plugins(plugins, task, q, args, checked_payload(task, q, args,
                                                                                    self.max_payload_bytes))
                continue
            by_queue.setdefault(q, []).append(checked_payload(task, q, job_args(params, None), self.max_payload_bytes))
        cmds = [self._packed_enqueue(q).with_tail(payloads[i : i + batch_size])
                for q, payloads in by_queue.items() for i in range(0, len(payloads), batch_size)]
        if cmds:
            self._pool.run(lambda conn: self._run_chunks(conn, cmds))
        return count + sum(len(p) for p in by_queue.values())

    def _run_chunks(self, conn: SyncConnection, cmds: list[bytes]) -> None:
        """The chunks pipelined; those answered NOSCRIPT (they did not run) once more after SCRIPT
        LOAD. Every chunk is sent before an error is raised (the first), as the async client does."""
        replies = conn.pipeline(cmds)
        again = [cmd for cmd, r in zip(cmds, replies, strict=True) if isinstance(r, NoScriptError)]
        if again:
            conn.call(self._enqueue.load)
            replies = [r for r in replies if not isinstance(r, NoScriptError)] + conn.pipeline(again)
        _raise_first_error(replies)

    def enqueue_at(self, when: float | dt.datetime, task: str, params: dict[str, Any] | None = None, *,
                   queue: str | None = None, raw_args: Sequence[Any] | None = None, unknown_ok: bool = False) -> int:
        """Schedule a job from `when` on (epoch seconds or aware datetime). Returns its due second.
        Enqueue plugins run when the leader promotes it."""
        ts = due_second(when, self.clock.time())
        q, _plugins = self._resolve(task, queue, unknown_ok)
        payload = checked_payload(task, q, job_args(params, raw_args), self.max_payload_bytes)
        keys, argv = enqueue_at_call(self.keys, ts, payload)
        self._pool.evalsha(pack(["EVALSHA", self._enqueue_at.sha, len(keys), *keys, *argv]), self._enqueue_at.load)
        return ts

    def enqueue_in(self, delay: float | dt.timedelta, task: str, params: dict[str, Any] | None = None, *,
                   queue: str | None = None, raw_args: Sequence[Any] | None = None, unknown_ok: bool = False) -> int:
        """Schedule a job `delay` seconds (or a timedelta) from now. Returns its due second."""
        return self.enqueue_at(self.clock.time() + delay_seconds(delay), task, params, queue=queue,
                               raw_args=raw_args, unknown_ok=unknown_ok)

    def length(self, q: str) -> int:
        """Jobs in a queue."""
        return int(self._pool.run(lambda c: c.call(pack(["LLEN", self.keys.queue(q)]))))
