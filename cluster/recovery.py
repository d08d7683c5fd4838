"""Dead-node recovery, leader only: a node whose heartbeat is older than `dead_after` (Redis
clock) has its in-flight jobs returned to the head of their queues (at-least-once), its worker
records, pings and the JobLocks of those jobs removed, in one fenced script per node. A job that
was in flight on a dying node more than `max_recoveries` times is a poison pill: it goes to the
failed list instead of killing another node.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from .aio import wait_event
from .clock import Clock
from .election.base import Term
from .keys import Keys
from .leader import fenced
from .observe import Observer
from .plugins import JobLock
from .scripts import Scripts
from .task import Registry
from .wire import decode_job, js_date, js_dumps

log = logging.getLogger("corral.recovery")


class Recovery:
    name = "recovery"

    def __init__(self, *, redis: Redis, keys: Keys, clock: Clock, observer: Observer, registry: Registry,
                 dead_after: float = 8.0, interval: float = 1.0, max_recoveries: int = 3, audit: bool = False,
                 self_id: str | None = None, start_grace: float = 0.0) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)
        self.clock = clock
        self.observer = observer
        self.registry = registry
        self.dead_after = dead_after
        self.interval = interval
        self.max_recoveries = max_recoveries
        self.audit = audit
        self.self_id = self_id
        self.start_grace = start_grace

    async def run(self, term: Term) -> None:
        # A new term may follow an outage that stopped every heartbeat (Redis down, READONLY, OOM):
        # give live nodes one heartbeat round to show up before judging anyone dead.
        if await wait_event(term.lost, self.start_grace):
            return
        while not term.lost.is_set():
            await self.tick(term)
            await wait_event(term.lost, self.interval)

    async def tick(self, term: Term) -> int:
        t = await self.redis.time()
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        dead = await self.redis.zrangebyscore(self.keys.members, "-inf", now_ms - int(self.dead_after * 1000))
        total = 0
        for node in dead:
            if str(node) != self.self_id:  # the leader is alive by definition: it is running this
                total += await self.recover_node(term, str(node))
        return total

    def _lock_keys(self, payload: str, queue: str) -> list[str]:
        try:
            job = decode_job(payload)
        except Exception:
            return []
        t = self.registry.find(job.task)
        if t is None or not any(isinstance(p, JobLock) for p in t.plugin_instances()):
            return []
        return [self.keys.job_lock(job.task, queue, js_dumps(job.args, strict=False))]

    async def recover_node(self, term: Term, node: str) -> int:
        inflight = {str(k): str(v) for k, v in (await self.redis.hgetall(self.keys.inflight(node))).items()}
        workers_raw = str(await self.redis.hget(self.keys.node(node), "workers") or "")
        members = [w for w in workers_raw.split("\n") if w]
        extra: list[str] = []
        for m in members:
            name = m.rpartition(":")[0]
            extra += [self.keys.worker(m), self.keys.worker_started(m), self.keys.worker_ping(name)]
        for field, payload in inflight.items():
            if ":" not in field and f"{field}:q" in inflight:
                extra += self._lock_keys(payload, inflight[f"{field}:q"])
        now = self.clock.time()
        res = await fenced(
            self.scripts, "recover",
            [self.keys.corral_lock, self.keys.audit, self.keys.members, self.keys.inflight(node), self.keys.node(node),
             self.keys.workers, self.keys.recovered, self.keys.failed, self.keys.queues, *extra],
            [node, int(self.dead_after * 1000), self.max_recoveries, self.keys.namespace + ":", js_date(now),
             self.keys.wake_channel, *members],
            term, self.observer, self.audit,
        )
        if res[0] != "OK":
            return 0
        recovered, poisoned = int(res[1]), int(res[2])
        self.observer.jobs_recovered(recovered, poisoned)
        log.warning("recovery: node declared dead, its jobs returned to their queues", extra={
            "event": "node_recovered", "dead_node": node, "recovered": recovered, "poisoned": poisoned,
            "detail": res[3]})
        return recovered
