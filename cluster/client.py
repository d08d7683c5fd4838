"""`Client`: enqueue jobs and inspect or manage queues, delayed jobs, workers and failures.

    client = await Client.connect("redis://127.0.0.1:6379/0", namespace="resque")
    await client.enqueue("sendWelcomeEmail", {"to": "evan@example.com"})
    await client.enqueue_in(10.0, "sendWelcomeEmail", {"to": "evan@example.com"})
    print(await client.details())
    await client.close()

Params are one JSON object; the job's resque args are `[params]` (actionhero). Options are
keyword-only. Tasks are looked up in the registry given (if any), then in the catalogue the live
nodes publish (`cluster/catalogue.py`): enqueue without a queue uses the task's queue, the task's
enqueue plugins run here, and a name no live node serves is refused (`UnknownTask`, with close
names) unless `unknown_ok=True`. Every timestamp is epoch seconds. Matching by params (`delete`,
`delete_delayed`, `scheduled_at`) compares exact bytes, so build params in the same key order
as the enqueuer did.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio.client import Redis

from .catalogue import CatalogueCache
from .client_dashboard import DashboardClient
from .clock import SYSTEM_CLOCK, Clock
from .connection import RedisSettings, close_redis, make_redis
from .enqueue_calls import HORIZON_SECONDS as HORIZON_SECONDS  # re-exported: callers import them from here
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
    registry_plan,
)
from .enqueue_calls import bucket as bucket
from .enqueue_calls import job_args as _args
from .errors import EnqueueError
from .keys import Keys
from .plugins import EnqueueGuard, Plugin, PluginContext, enqueue_checks, guard_script_args
from .rawconn import FastScript, Prepared, RawConnection
from .scripts import Scripts, source
from .task import Registry
from .wire import encode_job


class Client(DashboardClient):
    """Enqueue and inspect. Use `await Client.connect(url)` or wrap an existing redis client.

    This class holds the connection, enqueueing and what matches jobs by their params; what it
    reads and manages comes from `AdminClient` (cluster/client_admin.py), the dashboard's
    operations from `DashboardClient` (cluster/client_dashboard.py)."""

    def __init__(self, redis: Redis, namespace: str = "resque", *, registry: Registry | None = None,
                 clock: Clock = SYSTEM_CLOCK, max_payload_bytes: int = MAX_PAYLOAD_BYTES, fast: bool = True) -> None:
        self.redis = redis
        self.keys = Keys(namespace)
        self.scripts = Scripts(redis)
        # enqueue / enqueue_at over cluster/rawconn.py (same server and credentials as `redis`;
        # plain TCP only): a quarter of redis-py's CPU per call. fast=False keeps redis-py.
        raw = RawConnection.from_redis(redis) if fast else None
        self._fast_enqueue = FastScript(raw, source("enqueue")) if raw else None
        self._fast_enqueue_at = FastScript(raw, source("enqueue_at")) if raw else None
        self._prepared: dict[str, Prepared] = {}  # queue -> its enqueue call, packed but for the payloads
        self.registry = registry
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes
        # the live nodes' task catalogue, re-read every 2 s (sooner for a name not seen yet)
        self.catalogue = CatalogueCache(redis, self.keys)
        self._resume = redis.register_script(source("periodic_resume"))
        self._drop_delayed = redis.register_script(source("delayed_drop"))

    @classmethod
    async def connect(cls, url: str = "redis://127.0.0.1:6379/0", namespace: str = "resque", *,
                      registry: Registry | None = None, settings: RedisSettings | None = None) -> Client:
        """Connect and check Redis answers. ``async with await Client.connect(url) as client: ...``"""
        redis = make_redis(settings or RedisSettings(url=url))
        client = cls(redis, namespace, registry=registry)
        try:
            await redis.ping()
        except Exception:
            await redis.aclose()
            raise
        return client

    async def close(self) -> None:
        if self._fast_enqueue is not None:
            self._fast_enqueue.close()
        await close_redis(self.redis)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- enqueue -------------------------------------------------------------------------

    async def _resolve(self, task: str, queue: str | None, unknown_ok: bool) -> Plan:
        """The queue to use and the enqueue plugins to run, or UnknownTask."""
        plan = registry_plan(task, queue, self.registry)
        if plan is not None:
            return plan
        hit = self.catalogue.cached(task)
        info, view = hit if hit is not None else await self.catalogue.find(task)
        return catalogue_plan(task, queue, unknown_ok, info, view)

    def _payload(self, task: str, queue: str, args: list[Any]) -> str:
        return checked_payload(task, queue, args, self.max_payload_bytes)

    async def _enqueue_guards(self, plugins: list[Plugin], task: str, queue: str, args: list[Any],
                              payload: str) -> tuple[bool, list[EnqueueGuard]]:
        """Run the enqueue hooks that cannot be guards; collect the guards (QueueLock, ...) that
        the enqueue script checks and applies with the push. (False, []) if a hook refused."""
        if not plugins:
            return True, []
        ctx = PluginContext(self.redis, self.keys, self.scripts, task, queue, args, payload, client=self)
        return await enqueue_checks(plugins, ctx)

    def _enqueue_keys(self, q: str) -> list[str]:
        return enqueue_keys(self.keys, q)

    async def enqueue(self, task: str, params: dict[str, Any] | None = None, *, queue: str | None = None,
                      raw_args: Sequence[Any] | None = None, unknown_ok: bool = False) -> bool:
        """Queue a job now (on the task's queue unless `queue`). Returns False when an enqueue
        plugin (QueueLock, ...) refused it; raises UnknownTask for a name no live node serves."""
        q, plugins = await self._resolve(task, queue, unknown_ok)
        args = _args(params, raw_args)
        payload = self._payload(task, q, args)
        if plugins:
            return await self.enqueue_with_plugins(plugins, task, q, args, payload)
        await self._push(q, payload)
        return True

    async def enqueue_with_plugins(self, plugins: list[Plugin], task: str, q: str, args: list[Any],
                                   payload: str) -> bool:
        """The rest of an enqueue whose task has enqueue plugins (`SyncClient` hands it over here):
        the hooks, then the push, guarded when a hook is a guard. False when a hook refused."""
        ok, guards = await self._enqueue_guards(plugins, task, q, args, payload)
        if not ok:
            return False
        if guards:  # QueueLock / DelayQueueLock checked and applied with the push, atomically (issue 20.1)
            gkeys, gargs = guard_script_args(guards)
            return int(await self.scripts.run("enqueue_guarded", [*self._enqueue_keys(q), *gkeys],
                                              [*self._enqueue_argv(q, payload), *gargs])) >= 0
        await self._push(q, payload)
        return True

    async def _push(self, q: str, payload: str) -> None:
        if self._fast_enqueue is not None:  # the hot path: one EVALSHA packed but for the payload
            prepared = self._prepared.get(q) or self._prepared_enqueue(q)
            await prepared.run_one(payload)
        else:
            await self.scripts.run("enqueue", self._enqueue_keys(q), self._enqueue_argv(q, payload))

    def _enqueue_argv(self, q: str, payload: str) -> list[str]:
        return [*enqueue_head(self.keys, q), payload]

    def _prepared_enqueue(self, q: str) -> Prepared:
        p = self._prepared.get(q)
        if p is None:
            assert self._fast_enqueue is not None
            if len(self._prepared) > 1000:  # many short-lived queue names
                self._prepared.clear()
            p = self._prepared[q] = Prepared(self._fast_enqueue, self._enqueue_keys(q), enqueue_head(self.keys, q))
        return p

    async def enqueue_many(self, jobs: Iterable[tuple[str, dict[str, Any] | None]], *, queue: str | None = None,
                           batch_size: int = 5000, unknown_ok: bool = False) -> int:
        """Queue many jobs, one script call per queue and batch, pipelined. Returns how many were queued."""
        by_queue: dict[str, list[str]] = {}
        resolved: dict[str, tuple[str, list[Plugin]]] = {}
        count_guarded = 0
        for item in jobs:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise EnqueueError(f"enqueue_many takes (task, params) pairs, got {item!r}")
            task, params = item
            if task not in resolved:
                resolved[task] = await self._resolve(task, queue, unknown_ok)
            q, plugins = resolved[task]
            if plugins:  # enqueue plugins: one guarded enqueue each (the hook and the push are one step)
                count_guarded += await self.enqueue(task, params, queue=q, unknown_ok=True)
                continue
            by_queue.setdefault(q, []).append(self._payload(task, q, _args(params, None)))
        count = count_guarded
        if self._fast_enqueue is not None:  # chunks pipelined on the raw connection, packed once per queue
            calls = [self._prepared_enqueue(q).run(payloads[i : i + batch_size])
                     for q, payloads in by_queue.items() for i in range(0, len(payloads), batch_size)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            return count + sum(len(p) for p in by_queue.values())
        async with self.redis.pipeline(transaction=False) as pipe:
            for q, payloads in by_queue.items():
                for i in range(0, len(payloads), batch_size):
                    chunk = payloads[i : i + batch_size]
                    await self.scripts.run("enqueue", self._enqueue_keys(q),
                                           [*enqueue_head(self.keys, q), *chunk],
                                           client=pipe)
                    count += len(chunk)
            await pipe.execute()
        return count

    async def enqueue_at(self, when: float | dt.datetime, task: str, params: dict[str, Any] | None = None, *,
                         queue: str | None = None, raw_args: Sequence[Any] | None = None,
                         unknown_ok: bool = False) -> int:
        """Schedule a job from `when` on (epoch seconds or aware datetime). Returns its due second.
        Enqueue plugins run when the leader promotes it."""
        ts = due_second(when, self.clock.time())
        q, _plugins = await self._resolve(task, queue, unknown_ok)
        payload = self._payload(task, q, _args(params, raw_args))
        keys, argv = enqueue_at_call(self.keys, ts, payload)
        if self._fast_enqueue_at is not None:
            await self._fast_enqueue_at.run(keys, argv)
        else:
            await self.scripts.run("enqueue_at", keys, argv)
        return ts

    async def enqueue_in(self, delay: float | dt.timedelta, task: str, params: dict[str, Any] | None = None, *,
                         queue: str | None = None, raw_args: Sequence[Any] | None = None,
                         unknown_ok: bool = False) -> int:
        """Schedule a job `delay` seconds (or a timedelta) from now. Returns its due second."""
        return await self.enqueue_at(self.clock.time() + delay_seconds(delay), task, params, queue=queue, raw_args=raw_args,
                                     unknown_ok=unknown_ok)

    # ---- by params: the exact bytes enqueue wrote -------------------------------------------

    async def delete(self, q: str, task: str, params: dict[str, Any] | None = None, count: int = 0) -> int:
        """Remove queued copies of one exact job (count 0 = all). Returns how many were removed."""
        payload = encode_job(task, q, _args(params, None))
        return int(await self.redis.lrem(self.keys.queue(q), count, payload))

    async def delete_delayed(self, q: str, task: str, params: dict[str, Any] | None = None) -> list[int]:
        """Remove every delayed copy of one exact job; returns the seconds it was scheduled at."""
        return (await self._delete_delayed(q, task, params))[0]

    async def _delete_delayed(self, q: str, task: str, params: dict[str, Any] | None) -> tuple[list[int], int]:
        payload = encode_job(task, q, _args(params, None))
        out = await self.scripts.run("delete_delayed", [self.keys.timestamps(payload), self.keys.delayed_schedule],
                                     [payload, self.keys.namespace + ":"])
        return sorted(int(x) for x in out[1:]), int(out[0])

    async def scheduled_at(self, q: str, task: str, params: dict[str, Any] | None = None) -> list[int]:
        payload = encode_job(task, q, _args(params, None))
        members = await self.redis.smembers(self.keys.timestamps(payload))
        return sorted(int(str(m).split(":", 1)[1]) for m in members)

    async def run_periodic_now(self, task: str, queue: str | None = None) -> bool:
        """One extra run of a periodic task now, outside its schedule (its slots are unaffected)."""
        return await self.enqueue(task, {}, queue=queue)  # None: the task's own queue (registry or catalogue)
