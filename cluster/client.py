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
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis

from .catalogue import CatalogueCache, TaskInfo, UnknownTask
from .clock import SYSTEM_CLOCK, Clock
from .connection import RedisSettings, close_redis, make_redis
from .election.base import LOCK_DELAY_PREFIX
from .errors import EnqueueError
from .keys import Keys
from .plugins import EnqueueGuard, Plugin, PluginContext, enqueue_checks, guard_script_args
from .rawconn import FastScript, Prepared, RawPool
from .scripts import Scripts, source
from .task import Registry, Task
from .wire import FailedEntry, decode_failed, decode_job, encode_job, js_dumps

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024


def _args(params: Any, raw_args: Sequence[Any] | None) -> list[Any]:
    if raw_args is not None:
        if not isinstance(raw_args, list | tuple):
            raise EnqueueError(f"raw_args must be a list, got {type(raw_args).__name__}")
        return list(raw_args)
    if params is None:
        return [{}]
    if not isinstance(params, dict):
        raise EnqueueError(f"params must be a JSON object (dict), got {type(params).__name__}")
    return [params]


def _epoch(when: float | int | dt.datetime) -> float:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise EnqueueError("enqueue_at needs an aware datetime (with tzinfo) or epoch seconds")
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise EnqueueError(f"when must be epoch seconds or a datetime, got {when!r}")
    return float(when)


def bucket(epoch: float) -> int:
    """The delayed second a job is filed under: rounded up, so a job never runs early."""
    return math.ceil(epoch)


class Client:
    """Enqueue and inspect. Use `await Client.connect(url)` or wrap an existing redis client."""

    def __init__(self, redis: Redis, namespace: str = "resque", *, registry: Registry | None = None,
                 clock: Clock = SYSTEM_CLOCK, max_payload_bytes: int = MAX_PAYLOAD_BYTES, fast: bool = True) -> None:
        self.redis = redis
        self.keys = Keys(namespace)
        self.scripts = Scripts(redis)
        # enqueue / enqueue_at over cluster/rawconn.py (same server and credentials as `redis`;
        # plain TCP only): a quarter of redis-py's CPU per call. fast=False keeps redis-py.
        raw = RawPool.from_redis(redis) if fast else None
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

    async def task_info(self, task: str) -> Task | TaskInfo | None:
        """The definition producers follow: the registry's task, else the live catalogue's."""
        t = self.registry.find(task) if self.registry else None
        if t is not None:
            return t
        info, _view = await self.catalogue.find(task)
        return info

    async def _resolve(self, task: str, queue: str | None, unknown_ok: bool) -> tuple[str, list[Plugin]]:
        """The queue to use and the enqueue plugins to run, or UnknownTask."""
        if not isinstance(task, str) or not task:
            raise EnqueueError(f"task name must be a non-empty string, got {task!r}")
        t = self.registry.find(task) if self.registry else None
        if t is not None:
            return t.queue if queue is None else queue, [p for p in t.plugin_instances() if p.has_enqueue_hooks]
        info, view = await self.catalogue.find(task)
        if info is not None:
            return info.queue if queue is None else queue, info.enqueue_plugins()
        # No live Corral node publishes anything: there is nothing to judge the name against, and
        # a queue must take work while its workers are down (a deploy, an outage).
        if not unknown_ok and view.nodes:
            raise UnknownTask(task, view.close_names(task), len(view.nodes))
        return "default" if queue is None else queue, []

    def _payload(self, task: str, queue: str, args: list[Any]) -> str:
        payload = encode_job(task, queue, args)
        limit = self.max_payload_bytes
        if len(payload) * 4 > limit and (size := len(payload.encode(errors="surrogateescape"))) > limit:
            raise EnqueueError(f"job payload for {task!r} is {size} bytes; the limit is {self.max_payload_bytes}")
        return payload

    async def _enqueue_guards(self, plugins: list[Plugin], task: str, queue: str, args: list[Any],
                              payload: str) -> tuple[bool, list[EnqueueGuard]]:
        """Run the enqueue hooks that cannot be guards; collect the guards (QueueLock, ...) that
        the enqueue script checks and applies with the push. (False, []) if a hook refused."""
        if not plugins:
            return True, []
        ctx = PluginContext(self.redis, self.keys, self.scripts, task, queue, args, payload, client=self)
        return await enqueue_checks(plugins, ctx)

    def _enqueue_keys(self, q: str) -> list[str]:
        k = self.keys
        return [k.queues, k.queue(q), k.qtimes(q), k.idle(q), k.idle("*")]

    async def enqueue(self, task: str, params: dict[str, Any] | None = None, *, queue: str | None = None,
                      raw_args: Sequence[Any] | None = None, unknown_ok: bool = False) -> bool:
        """Queue a job now (on the task's queue unless `queue`). Returns False when an enqueue
        plugin (QueueLock, ...) refused it; raises UnknownTask for a name no live node serves."""
        q, plugins = await self._resolve(task, queue, unknown_ok)
        args = _args(params, raw_args)
        payload = self._payload(task, q, args)
        ok, guards = await self._enqueue_guards(plugins, task, q, args, payload)
        if not ok:
            return False
        keys, argv = self._enqueue_keys(q), [q, self.keys.wake_channel, self.keys.node_wake_prefix, payload]
        if guards:  # QueueLock / DelayQueueLock checked and applied with the push, atomically (issue 20.1)
            gkeys, gargs = guard_script_args(guards)
            return int(await self.scripts.run("enqueue_guarded", [*keys, *gkeys], [*argv, *gargs])) >= 0
        if self._fast_enqueue is not None:
            await self._prepared_enqueue(q).run([payload])
        else:
            await self.scripts.run("enqueue", keys, argv)
        return True

    def _prepared_enqueue(self, q: str) -> Prepared:
        p = self._prepared.get(q)
        if p is None:
            assert self._fast_enqueue is not None
            if len(self._prepared) > 1000:  # many short-lived queue names
                self._prepared.clear()
            p = self._prepared[q] = Prepared(self._fast_enqueue, self._enqueue_keys(q),
                                             [q, self.keys.wake_channel, self.keys.node_wake_prefix])
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
                                           [q, self.keys.wake_channel, self.keys.node_wake_prefix, *chunk],
                                           client=pipe)
                    count += len(chunk)
            await pipe.execute()
        return count

    async def enqueue_at(self, when: float | dt.datetime, task: str, params: dict[str, Any] | None = None, *,
                         queue: str | None = None, raw_args: Sequence[Any] | None = None,
                         unknown_ok: bool = False) -> int:
        """Schedule a job from `when` on (epoch seconds or aware datetime). Returns its due second.
        Enqueue plugins run when the leader promotes it."""
        ts = bucket(_epoch(when))
        q, _plugins = await self._resolve(task, queue, unknown_ok)
        payload = self._payload(task, q, _args(params, raw_args))
        keys = [self.keys.delayed_schedule, self.keys.delayed(ts), self.keys.timestamps(payload)]
        argv = [ts, payload, self.keys.delayed_member(ts), self.keys.delayed_channel]
        if self._fast_enqueue_at is not None:
            await self._fast_enqueue_at.run(keys, argv)
        else:
            await self.scripts.run("enqueue_at", keys, argv)
        return ts

    async def enqueue_in(self, delay: float | dt.timedelta, task: str, params: dict[str, Any] | None = None, *,
                         queue: str | None = None, raw_args: Sequence[Any] | None = None,
                         unknown_ok: bool = False) -> int:
        """Schedule a job `delay` seconds (or a timedelta) from now. Returns its due second."""
        if isinstance(delay, dt.timedelta):
            delay = delay.total_seconds()
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise EnqueueError(f"delay must be a non-negative number of seconds, got {delay!r}")
        return await self.enqueue_at(self.clock.time() + delay, task, params, queue=queue, raw_args=raw_args,
                                     unknown_ok=unknown_ok)

    # ---- queues ----------------------------------------------------------------------------

    async def queues(self) -> list[str]:
        return sorted(map(str, await self.redis.smembers(self.keys.queues)))

    async def length(self, q: str) -> int:
        return int(await self.redis.llen(self.keys.queue(q)))

    @staticmethod
    def _parse(raw: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    async def queued(self, q: str, start: int = 0, stop: int = -1) -> list[Any]:
        """Jobs in a queue (parsed JSON; entries that are not JSON come back as strings)."""
        return [self._parse(str(r)) for r in await self.redis.lrange(self.keys.queue(q), start, stop)]

    async def delete_queue(self, q: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.queue(q), self.keys.qtimes(q))
            pipe.srem(self.keys.queues, q)
            await pipe.execute()

    async def delete(self, q: str, task: str, params: dict[str, Any] | None = None, count: int = 0) -> int:
        """Remove queued copies of one exact job (count 0 = all). Returns how many were removed."""
        payload = encode_job(task, q, _args(params, None))
        return int(await self.redis.lrem(self.keys.queue(q), count, payload))

    async def delete_by_task(self, q: str, task: str) -> int:
        """Remove every queued job of a task, whatever its params."""
        removed = 0
        for item in await self.redis.lrange(self.keys.queue(q), 0, -1):
            raw = str(item)
            try:
                if decode_job(raw).task == task:
                    removed += int(await self.redis.lrem(self.keys.queue(q), 1, raw))
            except Exception:
                continue
        return removed

    # ---- delayed ---------------------------------------------------------------------------

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

    async def timestamps(self) -> list[int]:
        return [int(float(str(x))) for x in await self.redis.zrange(self.keys.delayed_schedule, 0, -1)]

    async def delayed_at(self, ts: int) -> list[Any]:
        return [self._parse(str(r)) for r in await self.redis.lrange(self.keys.delayed(int(ts)), 0, -1)]

    async def all_delayed(self) -> dict[int, list[Any]]:
        out: dict[int, list[Any]] = {}
        for ts in await self.timestamps():
            out[ts] = await self.delayed_at(ts)
        return out

    async def delayed_count(self) -> int:
        """Number of delayed jobs (sums the due-second lists: identical copies count each)."""
        tss = await self.timestamps()
        if not tss:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for ts in tss:
                pipe.llen(self.keys.delayed(ts))
            return sum(int(n) for n in await pipe.execute())

    # ---- locks -----------------------------------------------------------------------------

    async def locks(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for pattern in self.keys.lock_patterns():
            async for key in self.redis.scan_iter(match=pattern, count=500):
                val = await self.redis.get(key)
                if val is not None:
                    out[self.keys.strip(str(key))] = str(val)
        return out

    async def delete_lock(self, key: str) -> int:
        full = key if key.startswith(self.keys.namespace + ":") else f"{self.keys.namespace}:{key}"
        return int(await self.redis.delete(full))

    # ---- workers ---------------------------------------------------------------------------

    async def workers(self) -> dict[str, str]:
        """Worker name -> the queues it serves (comma-joined), from the resque `workers` set."""
        out: dict[str, str] = {}
        for item in await self.redis.smembers(self.keys.workers):
            member = str(item)
            name, _, queues = member.rpartition(":")
            out[name or member] = queues
        return out

    async def working_on(self, worker: str, queues: str | None = None) -> Any:
        """What a worker runs now: `{run_at, queue, payload, worker}` or None."""
        if queues is None:
            queues = (await self.workers()).get(worker)
            if queues is None:
                return None
        raw = await self.redis.get(self.keys.worker(f"{worker}:{queues}"))
        return None if raw is None else self._parse(str(raw))

    async def all_working_on(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        workers = await self.workers()
        if not workers:
            return out
        names = list(workers)
        raws = await self.redis.mget([self.keys.worker(f"{n}:{workers[n]}") for n in names])
        for n, raw in zip(names, raws, strict=True):
            out[n] = "started" if raw is None else self._parse(str(raw))
        return out

    async def live_worker_ids(self, dead_after: float = 8.0) -> set[str]:
        """`<name>:<queues>` of every worker of a live Corral node (heartbeat younger than the
        node's own `dead_after` as it publishes it in the catalogue, else `dead_after`)."""
        members = await self.members()
        published: dict[str, float] = {}
        for node, raw in (await self.redis.hgetall(self.keys.catalogue)).items():
            try:
                published[str(node)] = float(json.loads(raw)["dead_after"])
            except (ValueError, KeyError, TypeError):
                continue
        live = [m for m, age in members.items() if age < published.get(m, dead_after)]
        if not live:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in live:
                pipe.hget(self.keys.node(m), "workers")
            rows = await pipe.execute()
        return {w for row in rows if row for w in str(row).split("\n") if w}

    async def clean_old_workers(self, age_seconds: float, *, dead_after: float = 8.0) -> dict[str, Any]:
        """Remove the records of workers that are gone; returns them with what they were working on.

        A worker of a live Corral node is never removed, whatever `age_seconds` (its liveness is
        its node's heartbeat), nor one of a dead node still listed as a member (recovery's to
        remove, with its in-flight jobs). Any other worker (a dead node's, node-resque's, Ruby's) is removed
        when its own liveness ping, or the start of the job it records, is older than `age_seconds`
        (node-resque's rule), or when it has neither."""
        removed: dict[str, Any] = {}
        live = await self.live_worker_ids(dead_after)
        # a dead member's workers are left too: the leader's recovery removes them together with
        # its in-flight jobs (recover.lua skips a job whose worker record another cleaner removed)
        members = set(await self.members())
        now = self.clock.time()
        from .foreign import last_seen as foreign_last_seen
        from .membership import node_of_worker
        from .wire import parse_date

        for name, queues in (await self.workers()).items():
            wid = f"{name}:{queues}"
            if wid in live or node_of_worker(name) in members:
                continue
            record = await self.working_on(name, queues)
            # a worker that writes its own liveness (node-resque ping, Ruby heartbeat) is judged by
            # it, not by how long its job runs (cluster/foreign.py); others by the later of their
            # job's start and their liveness ping
            seen = await foreign_last_seen(self.redis, self.keys, wid)
            if seen is None:
                started = parse_date(record.get("run_at")) if isinstance(record, dict) else None
                ping = await self.redis.get(self.keys.worker_ping(name))
                try:
                    pinged = float(json.loads(str(ping))["time"]) if ping else None
                except (ValueError, KeyError, TypeError):
                    pinged = None
                seen = max((x for x in (started, pinged) if x is not None), default=None)
            if seen is None or now - seen > age_seconds:
                await self.redis.delete(self.keys.worker(wid), self.keys.worker_started(wid), self.keys.worker_ping(name))
                await self.redis.srem(self.keys.workers, wid)
                removed[name] = record
        return removed

    # ---- failed ----------------------------------------------------------------------------

    async def failed_count(self) -> int:
        return int(await self.redis.llen(self.keys.failed))

    async def failed(self, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Failed entries as dicts; each keeps `raw` (the stored bytes) for removal."""
        return [decode_failed(str(r)).to_dict() for r in await self.redis.lrange(self.keys.failed, start, stop)]

    @staticmethod
    def _raw_entry(entry: dict[str, Any] | FailedEntry | str) -> str:
        if isinstance(entry, str):
            return entry
        if isinstance(entry, FailedEntry):
            return entry.raw
        raw = entry.get("raw")
        if isinstance(raw, str):
            return raw
        return js_dumps({k: entry.get(k) for k in ("worker", "queue", "payload", "exception", "error", "backtrace",
                                                    "failed_at")})

    async def remove_failed(self, entry: dict[str, Any] | FailedEntry | str) -> int:
        return int(await self.redis.lrem(self.keys.failed, 1, self._raw_entry(entry)))

    async def retry_and_remove_failed(self, entry: dict[str, Any] | FailedEntry | str) -> bool:
        """Queue the failed job again (exact original bytes where known) and remove the entry."""
        raw = self._raw_entry(entry)
        fe = decode_failed(raw)
        payload = fe.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("class"), str):
            raise EnqueueError("this failed entry has no job payload to retry")
        q = payload.get("queue") or fe.queue or "default"
        job = encode_job(payload["class"], q, payload.get("args") or [], strict=False)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self.keys.failed, 1, raw)
            pipe.sadd(self.keys.queues, q)
            pipe.rpush(self.keys.queue(q), job)
            pipe.rpush(self.keys.qtimes(q), f"1:{int(self.clock.time() * 1000)}")
            pipe.publish(self.keys.wake_channel, q)
            removed, *_ = await pipe.execute()
        if not removed:
            # Someone removed it meanwhile: take our copy back out rather than double it.
            await self.redis.lrem(self.keys.queue(q), -1, job)
            return False
        return True

    # ---- stats, leader, cluster -------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        async for key in self.redis.scan_iter(match=self.keys.stat("*"), count=500):
            val = await self.redis.get(key)
            if val is not None:
                out[self.keys.strip(str(key)).split(":", 1)[1]] = int(val)
        return out

    async def leader(self) -> str | None:
        """The leader's node id (a node-resque scheduler's name if one holds the lock), or None."""
        info = await self.leader_info()
        return info["node"] if info else None

    async def leader_info(self) -> dict[str, Any] | None:
        """Corral's leader (its lock and `corral:leader`); with no Corral leader, whoever holds
        node-resque's lock (a node-resque scheduler's name). `scheduler` names the holder of
        node-resque's lock: who promotes delayed jobs."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.corral_lock)
            pipe.hgetall(self.keys.leader)
            pipe.pttl(self.keys.corral_lock)
            pipe.get(self.keys.leader_lock)
            pipe.pttl(self.keys.leader_lock)
            token, info, pttl, resque, resque_pttl = await pipe.execute()
        if token is None:
            token, pttl = resque, resque_pttl
        if token is None or token.startswith(LOCK_DELAY_PREFIX):  # a new Redis run's lock-delay: no leader yet
            return None
        scheduler = None if resque is None else (info.get("node") if info and info.get("token") == resque else resque)
        if info and info.get("token") == token:
            return {"node": info["node"], "epoch": int(info["epoch"]), "since": float(info["since"]),
                    "ttl_ms": int(pttl), "scheduler": scheduler}
        return {"node": token, "epoch": None, "since": None, "ttl_ms": int(pttl), "scheduler": scheduler}

    async def members(self) -> dict[str, float]:
        """Node id -> heartbeat age in seconds (Redis clock), every registered node."""
        t = await self.redis.time()
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        rows: Any = await self.redis.zrange(self.keys.members, 0, -1, withscores=True)
        return {str(m): max(0.0, (now_ms - float(s)) / 1000) for m, s in rows}

    async def live_members(self, dead_after: float = 8.0) -> list[str]:
        return sorted(m for m, age in (await self.members()).items() if age < dead_after)

    async def node_info(self, node_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.node(node_id), "info")
        return None if raw is None else dict(json.loads(raw))

    async def details(self) -> dict[str, Any]:
        queues = await self.queues()
        lengths = {}
        if queues:
            async with self.redis.pipeline(transaction=False) as pipe:
                for q in queues:
                    pipe.llen(self.keys.queue(q))
                lengths = dict(zip(queues, await pipe.execute(), strict=True))
        return {
            "queues": {q: {"length": int(n)} for q, n in lengths.items()},
            "workers": await self.all_working_on(),
            "stats": await self.stats(),
            "leader": await self.leader(),
        }

    # ---- periodic ----------------------------------------------------------------------------

    async def _periodic_task(self, task: str) -> tuple[bool | None, str]:
        """(is it periodic: True/False, None when no definition is known; its queue)."""
        t = await self.task_info(task)
        if t is None:
            return None, "default"
        return t.periodic, t.queue

    async def enqueue_recurrent_job(self, task: str) -> bool:
        """Resume a periodic task's schedule from its next occurrence: the occurrences missed while it
        was stopped are not back-filled. Returns True (the schedule runs), False for a name that is
        not a periodic task (its definition says so, or, with none published, no leader ever
        scheduled it)."""
        periodic, _q = await self._periodic_task(task)
        if periodic is False or (periodic is None and not await self.redis.exists(self.keys.periodic(task))):
            return False
        await self._resume(keys=[self.keys.periodic(task)])
        return True

    async def stop_recurrent_job(self, task: str, queue: str | None = None) -> int:
        """Pause a periodic task and remove every queued and delayed instance of it, whatever its
        args. Looks in `queue`, else the task's queue (registry, then catalogue). Returns how many
        instances were removed."""
        periodic, q = await self._periodic_task(task)
        if periodic is not False:
            await self.redis.hset(self.keys.periodic(task), "paused", "1")
        # delayed first: a copy promoted while we scan lands in the queue, which is cleared next
        removed = await self.delete_delayed_by_task(task)
        for name in dict.fromkeys([queue or q, q]):
            removed += await self.delete_by_task(name, task)
        return removed

    async def delete_delayed_by_task(self, task: str) -> int:
        """Remove every delayed job of a task, whatever its params and queue. Returns how many."""
        removed = 0
        for ts in await self.timestamps():
            key = self.keys.delayed(ts)
            mine = []
            for item in dict.fromkeys(map(str, await self.redis.lrange(key, 0, -1))):
                try:
                    if decode_job(item).task == task:
                        mine.append(item)
                except Exception:  # not a job: not ours to judge here
                    continue
            if mine:
                removed += int(await self._drop_delayed(
                    keys=[key, self.keys.delayed_schedule],
                    args=[ts, self.keys.timestamps(""), self.keys.delayed_member(ts), *mine]))
        return removed

    # ---- dashboard (node/ui): exact-bytes actions, paginated and filtered reads -------------------

    async def delete_raw(self, q: str, raw: str) -> int:
        """Remove one queued job given its exact stored bytes (as `queued_raw` returns them)."""
        return int(await self.redis.lrem(self.keys.queue(q), 1, raw))

    async def queued_raw(self, q: str, start: int, stop: int) -> list[str]:
        return [str(r) for r in await self.redis.lrange(self.keys.queue(q), start, stop)]

    async def delete_delayed_raw(self, raw: str) -> list[int]:
        """Remove every delayed copy of one job given its exact stored bytes; returns its seconds."""
        out = await self.scripts.run("delete_delayed", [self.keys.timestamps(raw), self.keys.delayed_schedule],
                                     [raw, self.keys.namespace + ":"])
        return sorted(int(x) for x in out[1:])

    async def delayed_page(self, start: int, count: int, per_second: int = 50) -> list[tuple[int, int, list[str]]]:
        """Due seconds `start`.. (oldest first), each with its job count and its first `per_second`
        jobs (exact bytes)."""
        tss = [int(float(str(x))) for x in
               await self.redis.zrange(self.keys.delayed_schedule, start, start + max(count, 1) - 1)]
        if not tss:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for ts in tss:
                pipe.llen(self.keys.delayed(ts))
                pipe.lrange(self.keys.delayed(ts), 0, per_second - 1)
            res = await pipe.execute()
        return [(ts, int(res[2 * i]), [str(r) for r in res[2 * i + 1]]) for i, ts in enumerate(tss)]

    async def run_delayed_now(self, ts: int, raw: str) -> bool:
        """Make one delayed copy of a job (exact bytes, filed under second `ts`) due now: the leader
        promotes it at once through its usual path. False if it was promoted or deleted meanwhile."""
        ts = int(ts)
        now = min(ts, int(self.clock.time()))
        script = self.redis.register_script(source("delayed_run_now"))
        moved = await script(keys=[self.keys.delayed(ts), self.keys.delayed(now), self.keys.timestamps(raw),
                                   self.keys.delayed_schedule],
                             args=[raw, ts, now, self.keys.delayed_member(ts), self.keys.delayed_member(now),
                                   self.keys.delayed_channel])
        return bool(int(moved))

    async def run_periodic_now(self, task: str, queue: str | None = None) -> bool:
        """One extra run of a periodic task now, outside its schedule (its slots are unaffected)."""
        return await self.enqueue(task, {}, queue=queue)  # None: the task's own queue (registry or catalogue)

    async def periodic_state(self, tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each periodic task's record: last claimed slot (epoch seconds or None) and paused."""
        if not tasks:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for t in tasks:
                pipe.hmget(self.keys.periodic(t), ["last", "paused"])
            res = await pipe.execute()
        return {t: {"last": float(last) if last is not None else None, "paused": paused is not None}
                for t, (last, paused) in zip(tasks, res, strict=True)}

    async def locks_with_ttl(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Plugin locks (QueueLock, JobLock): key without namespace, value and TTL in seconds (-1 = none);
        at most `limit`, found by SCAN."""
        keys: list[str] = []
        for pattern in self.keys.lock_patterns():
            async for key in self.redis.scan_iter(match=pattern, count=1000):
                keys.append(str(key))
                if len(keys) >= limit:
                    break
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            res = await pipe.execute()
        out = []
        for i, key in enumerate(keys):
            val, pttl = res[2 * i], int(res[2 * i + 1])
            if val is not None:
                out.append({"key": self.keys.strip(key), "value": str(val), "ttl": pttl / 1000 if pttl >= 0 else -1})
        return sorted(out, key=lambda x: x["key"])

    @staticmethod
    def failed_matches(entry: dict[str, Any], task: str | None, queue: str | None, error: str | None) -> bool:
        """Filter of the failed list: exact task and queue, `error` a case-insensitive substring of
        the exception class or message."""
        payload = entry.get("payload")
        name = payload.get("class") if isinstance(payload, dict) else None
        if task and name != task:
            return False
        q = entry.get("queue") or (payload.get("queue") if isinstance(payload, dict) else None)
        if queue and q != queue:
            return False
        if error:
            text = f"{entry.get('exception') or ''}: {entry.get('error') or ''}".lower()
            if error.lower() not in text:
                return False
        return True

    async def failed_filtered(self, *, task: str | None = None, queue: str | None = None, error: str | None = None,
                              start: int = 0, count: int = 50, scan_limit: int = 100_000,
                              chunk: int = 1000) -> dict[str, Any]:
        """Failed entries matching a filter, in stored order: `entries` = matches `start`..`start+count`
        (each with its `index` in the list), `matched` = matches seen, `scanned` = entries read (at
        most `scan_limit`), `total` = the list's length."""
        total = await self.failed_count()
        entries: list[dict[str, Any]] = []
        matched = scanned = 0
        for lo in range(0, min(total, scan_limit), chunk):
            raws = await self.redis.lrange(self.keys.failed, lo, min(lo + chunk, scan_limit) - 1)
            if not raws:
                break
            for j, r in enumerate(raws):
                scanned += 1
                e = decode_failed(str(r)).to_dict()
                if self.failed_matches(e, task, queue, error):
                    if start <= matched < start + count:
                        entries.append(dict(e, index=lo + j))
                    matched += 1
        return {"entries": entries, "matched": matched, "scanned": scanned, "total": total}

    async def retry_failed_matching(self, *, task: str | None = None, queue: str | None = None,
                                    error: str | None = None, limit: int = 10_000) -> int:
        """`retry_and_remove_failed` for every entry matching the filter (at most `limit`)."""
        found = await self.failed_filtered(task=task, queue=queue, error=error, count=limit)
        n = 0
        for e in found["entries"]:
            try:
                n += int(await self.retry_and_remove_failed(e))
            except EnqueueError:
                continue  # no job payload to retry: left in the list
        return n

    async def remove_failed_matching(self, *, task: str | None = None, queue: str | None = None,
                                     error: str | None = None, limit: int = 10_000) -> int:
        """`remove_failed` for every entry matching the filter (at most `limit`)."""
        found = await self.failed_filtered(task=task, queue=queue, error=error, count=limit)
        n = 0
        for e in found["entries"]:
            n += await self.remove_failed(e)
        return n
