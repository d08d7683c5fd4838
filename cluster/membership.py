"""Membership: every node heartbeats into `corral:members` (score = Redis time, ms) with a
unique id per process start, so the leader can tell dead nodes from live ones on one clock.

A node that finds itself evicted (declared dead during a partition or a pause) registers its
workers again; the jobs it was running were already returned to their queues, and its late
acks are refused by execution id (fetch.lua), so the redelivered copies stay intact.

Worker names follow resque's `host:pid` (the `workers` set holds `host:pid:queues`, which
pyres, Ruby resque and node-resque all split on ':'): host = the node id (unique per process
start, never the bare hostname, so Ruby's and pyres' same-host pruning by `ps` leaves Corral
workers alone), pid = `<pid>+<slot>` (node-resque's multiWorker spelling). Every heartbeat
refreshes the liveness signals other clients read (node-resque's `worker:ping:<name>`, Ruby's
`workers:heartbeat` hash) and puts back any worker record another client's cleanup removed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .aio import REDIS_FAILURES
from .clock import Clock
from .keys import Keys
from .observe import Observer
from .part import ClusterPart

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.membership")


def worker_name(node_id: str, slot: int, pid: int) -> str:
    """The resque name of one worker slot: `<node id>:<pid>+<slot>`."""
    if ":" in node_id:
        raise ValueError(f"node id {node_id!r} must not contain ':' (resque splits worker names on it)")
    return f"{node_id}:{pid}+{slot}"


def node_of_worker(name: str) -> str:
    """The node id (host part) of a worker name or `workers` member."""
    return name.split(":", 1)[0]


def ruby_time(t: float) -> str:
    """Ruby's `Time#iso8601` in UTC, what Ruby resque writes into `workers:heartbeat`."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class Membership(ClusterPart):
    def __init__(self, *, redis: Redis, keys: Keys, clock: Clock, observer: Observer, node_id: str,
                 info: dict[str, Any], workers: list[tuple[str, str]], interval: float = 2.0,
                 ping_ttl: float = 60.0) -> None:
        super().__init__(redis, keys, clock, observer)
        self.node_id = node_id
        self.info = info
        self.workers = workers  # (name, queues joined by ",")
        self.interval = interval
        self.ping_ttl = ping_ttl
        self.last_ok_mono: float | None = None
        self.last_error: str | None = None

    @property
    def members(self) -> list[str]:
        return [f"{name}:{queues}" for name, queues in self.workers]

    async def register(self) -> None:
        await self.scripts.run("register", [self.keys.workers, self.keys.node(self.node_id)],
                               ["\n".join(self.members), *self.members])
        await self.heartbeat()

    async def heartbeat(self) -> bool:
        """One heartbeat; returns False if this node had been evicted (and re-registers it)."""
        now = self.clock.time()
        pings = [json.dumps({"time": int(now), "name": name, "queues": queues}) for name, queues in self.workers]
        was, _ms, back = await self.scripts.run(
            "heartbeat",
            [self.keys.members, self.keys.node(self.node_id), self.keys.workers, self.keys.workers_heartbeat,
             *[self.keys.worker_ping(n) for n, _ in self.workers]],
            [self.node_id, json.dumps(self.info), int(self.ping_ttl * 1000), ruby_time(now), *pings, *self.members],
        )
        self.last_ok_mono = self.clock.monotonic()
        self.last_error = None
        self.observer.heartbeat_ok()
        if int(back) and int(was):
            log.warning("membership: %d worker record(s) had been removed by another client's cleanup while this "
                        "node is alive; registered again", int(back), extra={"event": "workers_re_registered"})
        if not int(was):
            await self.scripts.run("register", [self.keys.workers, self.keys.node(self.node_id)],
                                   ["\n".join(self.members), *self.members])
            return False
        return True

    async def run(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            try:
                if not await self.heartbeat():
                    log.warning("membership: this node had been declared dead; registered again",
                                extra={"event": "re_registered"})
                delay = self.interval
            except REDIS_FAILURES as e:
                self.last_error = repr(e)
                self.observer.redis_error("heartbeat")
                log.warning("membership: heartbeat failed: %r", e, extra={"event": "heartbeat_failed"})
                # retry soon: after a Redis restart the first command on a pooled connection fails,
                # and a whole interval's wait would keep the node unregistered that much longer
                delay = min(self.interval, 0.25)

    def age(self) -> float | None:
        return None if self.last_ok_mono is None else self.clock.monotonic() - self.last_ok_mono

    async def deregister(self) -> int:
        keys: list[str] = []
        for name, queues in self.workers:
            keys += self.keys.worker_keys(name, queues).all()
        left = await self.scripts.run(
            "deregister",
            [self.keys.members, self.keys.node(self.node_id), self.keys.inflight(self.node_id), self.keys.workers,
             self.keys.workers_heartbeat, *keys],
            [self.node_id, *self.members],
        )
        return int(left)

