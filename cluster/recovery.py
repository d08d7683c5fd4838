"""Dead-node recovery, leader only: a node whose heartbeat is older than `dead_after` (Redis
clock) has its in-flight jobs returned to the head of their queues (at-least-once), its worker
records, pings and the JobLocks of those jobs removed, in one fenced script per node. A job that
was in flight on a dying node more than `max_recoveries` times is a poison pill: it goes to the
failed list instead of killing another node; counts are per execution (a copy carries its
own), so identical payloads in flight together are each recovered once.

Who is dead, judged by the leader, confirmed inside the script (no heartbeat since):
- **time**: the heartbeat is older than `dead_after` on Redis' clock, and the leader has seen
  it unchanged for `start_grace` (a new leader after an outage, or a Redis clock stepped forward,
  gives live nodes a heartbeat round first);
- **silent**: the leader has seen the heartbeat unchanged for `dead_after` on its own monotonic
  clock, whatever Redis' clock says: a step back of Redis' clock, which makes the last heartbeat
  look young for the size of the step, delays recovery by at most `dead_after`.
- **orphan**: an in-flight hash whose node is not a member (older versions recorded fetches of an
  evicted node; fetch.lua now refuses them) found by a SCAN at the start of each term and every
  `sweep_every` seconds, unchanged for `dead_after`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .aio import wait_event
from .badkeys import BadKeys
from .clock import Clock
from .election.base import Term
from .keys import Keys
from .leader import fenced
from .observe import Observer
from .part import ClusterPart
from .plugins import JobLock
from .redis_errors import ResponseError
from .task import Registry
from .wire import decode_job, js_date, js_dumps

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.recovery")


@dataclass
class Seen:
    score: str  # the heartbeat as Redis spells it ("" = not a member: an orphaned in-flight hash)
    since: float  # leader monotonic time it was first seen with this value


class Recovery(ClusterPart):
    name = "recovery"

    def __init__(self, *, redis: Redis, keys: Keys, clock: Clock, observer: Observer, registry: Registry,
                 dead_after: float = 8.0, interval: float = 1.0, max_recoveries: int = 3, audit: bool = False,
                 self_id: str | None = None, start_grace: float = 0.0, sweep_every: float = 60.0) -> None:
        super().__init__(redis, keys, clock, observer)
        self.registry = registry
        self.dead_after = dead_after
        self.interval = interval
        self.max_recoveries = max_recoveries
        self.audit = audit
        self.self_id = self_id
        self.start_grace = start_grace
        self.sweep_every = sweep_every
        self.bad_keys = BadKeys(keys, observer)
        self.seen: dict[str, Seen] = {}
        self._swept_at: float | None = None
        self.orphans: set[str] = set()  # in-flight hashes of non-members found by the last sweep

    async def run(self, term: Term) -> None:
        # What was seen in an earlier term is stale: every node is watched afresh (a new term may
        # follow an outage that stopped every heartbeat: Redis down, READONLY, OOM).
        self.seen.clear()
        self._swept_at = None
        while not term.lost.is_set():
            await self.tick(term)
            await wait_event(term.lost, self.interval)

    def _watch(self, node: str, score: str, mono: float) -> Seen:
        s = self.seen.get(node)
        if s is None or s.score != score:
            s = self.seen[node] = Seen(score, mono)
        return s

    async def tick(self, term: Term) -> int:
        t = await self.redis.time()
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        mono = self.clock.monotonic()
        dead_ms = int(self.dead_after * 1000)
        members = await self.redis.zrange(self.keys.members, 0, -1, withscores=True, score_cast_func=str)
        current = {str(m[0]): str(m[1]) for m in members}
        if self._swept_at is None or mono - self._swept_at >= self.sweep_every:
            self._swept_at = mono
            self.orphans = {n for n in await self._inflight_nodes() if n not in current}
        for node in self.orphans:
            current.setdefault(node, "")
        for node in [n for n in self.seen if n not in current]:
            del self.seen[node]
        total = 0
        for node, score in current.items():
            if node == self.self_id:  # the leader is alive by definition: it is running this
                continue
            s = self._watch(node, score, mono)
            watched = mono - s.since
            if not score:
                # a not-member's in-flight hash: no heartbeat to judge by, only our own watching
                if watched >= self.dead_after:
                    total += await self.recover_node(term, node, score, "silent")
            elif watched >= self.dead_after:
                total += await self.recover_node(term, node, score, "silent")
            elif now_ms - float(score) >= dead_ms and watched >= self.start_grace:
                total += await self.recover_node(term, node, score, "time")
        return total

    async def _inflight_nodes(self) -> list[str]:
        prefix = self.keys.inflight("")
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        return [str(k)[len(prefix):] async for k in self.redis.scan_iter(match=pattern, count=1000)]

    def _lock_keys(self, payload: str, queue: str) -> list[str]:
        try:
            job = decode_job(payload)
        except Exception:
            return []
        t = self.registry.find(job.task)
        if t is None or not any(isinstance(p, JobLock) for p in t.plugin_instances()):
            return []
        return [self.keys.job_lock(job.task, queue, js_dumps(job.args, strict=False))]

    async def recover_node(self, term: Term, node: str, observed: str = "", reason: str = "time") -> int:
        """Recover `node` if its heartbeat is still `observed` ("" = not a member); see the module doc."""
        try:
            raw = await self.redis.hgetall(self.keys.inflight(node))
        except ResponseError:  # not a hash: recover.lua reports it and writes nothing
            raw = {}
        inflight = {str(k): str(v) for k, v in raw.items()}
        workers_raw = str(await self.redis.hget(self.keys.node(node), "workers") or "")
        members = [w for w in workers_raw.split("\n") if w]
        extra: list[str] = []
        for m in members:
            name, _, queues = m.rpartition(":")
            extra += self.keys.worker_keys(name, queues).all()
        for field, payload in inflight.items():
            if ":" not in field and f"{field}:q" in inflight:
                extra += self._lock_keys(payload, inflight[f"{field}:q"])
        now = self.clock.time()
        res = await fenced(
            self.scripts, "recover",
            [self.keys.corral_lock, self.keys.audit, self.keys.members, self.keys.inflight(node), self.keys.node(node),
             self.keys.workers, self.keys.recovered, self.keys.failed, self.keys.queues, *extra],
            [node, int(self.dead_after * 1000), self.max_recoveries, self.keys.namespace + ":", js_date(now),
             self.keys.wake_channel, observed, reason, *members],
            term, self.observer, self.audit,
        )
        if res[0] == "BADKEY":
            key, _, type_ = str(res[1]).partition("\t")
            self.bad_keys.report(key, type_, where="recovery")
            return 0
        if res[0] != "OK":
            return 0
        self.seen.pop(node, None)
        self.orphans.discard(node)
        self.bad_keys.report_lines(res[4], where="recovery")
        recovered, poisoned = int(res[1]), int(res[2])
        self.observer.jobs_recovered(recovered, poisoned)
        log.warning("recovery: node declared dead, its jobs returned to their queues", extra={
            "event": "node_recovered", "dead_node": node, "recovered": recovered, "poisoned": poisoned,
            "detail": res[3]})
        return recovered
