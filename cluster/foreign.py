"""Stale workers of other resque clients, leader only: what node-resque's scheduler does for its
own workers (`checkStuckWorkers` + `forceCleanWorker`, and `retryStuckJobs` when asked), done by
Corral's leader for every foreign worker, so a node-resque (or Ruby, pyres) worker killed
mid-job is cleaned up and its job failed or re-run exactly once while Corral leads.

A worker is foreign when its host part (`host:pid:queues`) is no Corral node; Corral's own are
judged by membership (cluster/recovery.py). Liveness comes from the worker's own signals:
node-resque's `worker:ping:<name>` (`{"time": s}`, every poll `timeout`) and Ruby resque's
`workers:heartbeat` hash (ISO 8601, every 60 s); the newest counts. A worker that writes neither
(pyres, old Ruby) is never removed: there is nothing to judge it by (Ruby's prune spares such
workers too). A worker silent for more than `stuck_timeout` seconds is stale; one fenced script
re-checks that its signals and working-on record are still exactly the ones judged, then removes
its records and fails its job (`policy="fail"`, node-resque's default) or returns it to the head
of its queue (`policy="retry"`, node-resque's `retryStuckJobs: true`).

The failed entry is node-resque's forceCleanWorker entry but with `corral#foreignCleanWorker`
as `backtrace[1]`: a node-resque scheduler's `retryStuckJobs` re-enqueues only entries marked
`queue#forceCleanWorker`, so a job Corral failed is not re-run by it behind Corral's back.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .aio import wait_event
from .clock import Clock
from .election.base import Term
from .keys import Keys
from .leader import fenced
from .membership import node_of_worker
from .observe import Observer
from .part import ClusterPart
from .wire import encode_job, js_date, parse_date

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.foreign")

POLICIES = ("fail", "retry")


@dataclass(frozen=True)
class ForeignWorker:
    wid: str  # the `workers` member, "<name>:<queues>"
    name: str  # node-resque's split: the first two ':' parts
    queues: str
    ping: str  # raw values as read ("" = absent): the script compares them
    heartbeat: str
    working_on: str

    def last_seen(self) -> float | None:
        """Epoch seconds of the newest liveness signal, None if the worker writes none."""
        seen: list[float] = []
        try:
            t = json.loads(self.ping)["time"] if self.ping else None
            if isinstance(t, int | float) and not isinstance(t, bool):
                seen.append(float(t))
        except (ValueError, TypeError, KeyError):
            pass
        if self.heartbeat:
            t2 = parse_date(self.heartbeat)
            if t2 is not None:
                seen.append(t2)
        return max(seen) if seen else None


def split_worker(wid: str) -> tuple[str, str]:
    """(name, queues) the way node-resque's `Queue.workers()` splits a `workers` member."""
    parts = wid.split(":")
    if len(parts) == 1:
        return wid, ""
    if len(parts) == 2:
        return parts[0], parts[1]
    return f"{parts[0]}:{parts[1]}", ":".join(parts[2:])


async def last_seen(redis: Redis, keys: Keys, wid: str) -> float | None:
    """Epoch seconds of a worker's newest own liveness signal (ping, Ruby heartbeat), or None."""
    name, queues = split_worker(wid)
    ping = await redis.get(keys.worker_ping(name))
    hb = await redis.hget(keys.workers_heartbeat, wid)
    return ForeignWorker(wid, name, queues, str(ping or ""), str(hb or ""), "").last_seen()


class ForeignWorkers(ClusterPart):
    name = "foreign"

    def __init__(self, *, redis: Redis, keys: Keys, clock: Clock, observer: Observer, stuck_timeout: float = 3600.0,
                 policy: str = "fail", interval: float | None = None, audit: bool = False,
                 node_id: str = "corral") -> None:
        if policy not in POLICIES:
            raise ValueError(f"foreign stuck-job policy must be one of {POLICIES}, got {policy!r}")
        if stuck_timeout <= 0:
            raise ValueError(f"stuck_timeout must be positive seconds, got {stuck_timeout!r}")
        super().__init__(redis, keys, clock, observer)
        self.stuck_timeout = stuck_timeout
        self.policy = policy
        self.interval = interval if interval is not None else max(0.5, min(5.0, stuck_timeout / 4))
        self.audit = audit
        self.node_id = node_id

    async def run(self, term: Term) -> None:
        while not term.lost.is_set():
            await self.tick(term)
            await wait_event(term.lost, self.interval)

    async def _corral_nodes(self) -> set[str]:
        return {str(m) for m in await self.redis.zrange(self.keys.members, 0, -1)}

    async def foreign_workers(self) -> list[ForeignWorker]:
        """Every registered worker that belongs to no Corral node, with its liveness values."""
        corral = await self._corral_nodes()
        out = []
        for wid in sorted(map(str, await self.redis.smembers(self.keys.workers))):
            host = node_of_worker(wid)
            if host in corral or await self.redis.exists(self.keys.node(host)):
                continue  # a Corral node's worker: membership and recovery judge it
            name, queues = split_worker(wid)
            ping, working = await self.redis.mget(self.keys.worker_ping(name), self.keys.worker(wid))
            hb = await self.redis.hget(self.keys.workers_heartbeat, wid)
            out.append(ForeignWorker(wid, name, queues, str(ping or ""), str(hb or ""), str(working or "")))
        return out

    async def tick(self, term: Term) -> int:
        """Clean every stale foreign worker; returns how many were removed."""
        t = await self.redis.time()
        now = int(t[0]) + int(t[1]) / 1e6  # Redis' clock, as the pings are compared in node-resque
        cleaned = 0
        for w in await self.foreign_workers():
            seen = w.last_seen()
            if seen is None or now - seen <= self.stuck_timeout:
                continue
            if await self.clean(term, w, now - seen):
                cleaned += 1
        return cleaned

    def _job(self, w: ForeignWorker) -> tuple[str, str, str]:
        """(failed entry, payload to re-enqueue or "", queue) for the job the worker was on."""
        if not w.working_on:
            return "", "", ""
        record: Any
        try:
            record = json.loads(w.working_on)
        except ValueError:
            record = None
        record = record if isinstance(record, dict) else {}
        queue = record.get("queue") if isinstance(record.get("queue"), str) else ""
        payload_obj = record.get("payload")
        payload = ""
        if isinstance(payload_obj, dict) and isinstance(payload_obj.get("class"), str) and queue:
            args = payload_obj.get("args")
            try:  # node-resque's exact bytes, as its retryAndRemoveFailed would enqueue them
                payload = encode_job(payload_obj["class"], queue, args if isinstance(args, list) else [],
                                     strict=False)
            except Exception:
                payload = ""
        message = "Worker Timeout (killed manually)"
        entry = json.dumps({
            "worker": w.name, "queue": queue, "payload": payload_obj if payload_obj is not None else {},
            "exception": message, "error": message,
            "backtrace": [f"killed by corral leader {self.node_id} on {socket.gethostname()} at "
                          f"{js_date(self.clock.time())}", "corral#foreignCleanWorker", "corral"],
            "failed_at": js_date(self.clock.time())}, ensure_ascii=False, separators=(",", ":"))
        return entry, payload, queue

    async def clean(self, term: Term, w: ForeignWorker, silent_for: float) -> bool:
        entry, payload, queue = self._job(w)
        k, wk = self.keys, self.keys.worker_keys(w.name, w.queues)
        res = await fenced(
            self.scripts, "foreign_clean",
            [k.leader_lock, k.audit, k.workers, k.workers_heartbeat, wk.record, wk.ping,
             k.stat_failed, k.failed, k.queues, k.queue(queue or "_"), k.qtimes(queue or "_"),
             k.worker(w.name),  # node-resque's record under the bare name, besides resque's ones
             *(key for key in wk.all() if key not in (wk.record, wk.ping))],
            [w.wid, w.ping, w.heartbeat, w.working_on, self.policy, entry, payload, queue, k.wake_channel],
            term, self.observer, self.audit,
        )
        if res[0] != "OK":
            return False
        outcome = str(res[1])
        if outcome == "retried":
            self.observer.jobs_recovered(1, 0)
        log.warning("foreign: stale worker of another resque client removed", extra={
            "event": "foreign_worker_cleaned", "worker": w.wid, "silent_s": round(silent_for, 1), "job": outcome})
        return True
