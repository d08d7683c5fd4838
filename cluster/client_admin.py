"""What `Client` reads and manages in Redis besides enqueueing: task definitions, queues, delayed
jobs, plugin locks, workers, failed jobs, stats, the leader and the members, periodic tasks.

A layer of `cluster.client.Client`; use that class.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio.client import Redis
from redis.commands.core import AsyncScript

from .catalogue import CatalogueCache, TaskInfo
from .clock import Clock
from .election.base import LOCK_DELAY_PREFIX, lock_holder
from .errors import EnqueueError
from .keys import Keys
from .scripts import Scripts, run_script
from .task import Registry, Task
from .wire import FailedEntry, decode_failed, decode_job, encode_job, js_dumps


class AdminClient:
    """Inspection and management, on the state `Client` sets up."""

    # set by Client.__init__ (cluster/client.py)
    redis: Redis
    keys: Keys
    scripts: Scripts
    clock: Clock
    registry: Registry | None
    catalogue: CatalogueCache
    _resume: AsyncScript
    _drop_delayed: AsyncScript

    async def task_info(self, task: str) -> Task | TaskInfo | None:
        """The definition producers follow: the registry's task, else the live catalogue's."""
        t = self.registry.find(task) if self.registry else None
        if t is not None:
            return t
        info, _view = await self.catalogue.find(task)
        return info


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
        raw = await self.redis.get(self.keys.worker_keys(worker, queues).record)
        return None if raw is None else self._parse(str(raw))

    async def all_working_on(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        workers = await self.workers()
        if not workers:
            return out
        names = list(workers)
        raws = await self.redis.mget([self.keys.worker_keys(n, workers[n]).record for n in names])
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
            wk = self.keys.worker_keys(name, queues)
            wid = wk.wid
            if wid in live or node_of_worker(name) in members:
                continue
            record = await self.working_on(name, queues)
            # a worker that writes its own liveness (node-resque ping, Ruby heartbeat) is judged by
            # it, not by how long its job runs (cluster/foreign.py); others by the later of their
            # job's start and their liveness ping
            seen = await foreign_last_seen(self.redis, self.keys, wid)
            if seen is None:
                started = parse_date(record.get("run_at")) if isinstance(record, dict) else None
                ping = await self.redis.get(wk.ping)
                try:
                    pinged = float(json.loads(str(ping))["time"]) if ping else None
                except (ValueError, KeyError, TypeError):
                    pinged = None
                seen = max((x for x in (started, pinged) if x is not None), default=None)
            if seen is None or now - seen > age_seconds:
                await self.redis.delete(wk.record, wk.started, wk.ping)
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
        node, epoch, since = lock_holder(token, info)
        return {"node": node, "epoch": epoch, "since": since, "ttl_ms": int(pttl), "scheduler": scheduler}

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
        await run_script(self._resume, [self.keys.periodic(task)], [])
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
                removed += int(await run_script(
                    self._drop_delayed, [key, self.keys.delayed_schedule],
                    [ts, self.keys.timestamps(""), self.keys.delayed_member(ts), *mine]))
        return removed
