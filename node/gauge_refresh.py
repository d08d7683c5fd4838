"""The reads behind the cluster-wide gauges (node/metrics.py `ClusterGauges`): every
`metrics_refresh` seconds one pass over Redis for queue lengths and oldest ages, delayed and failed
counts, live members and the scheduler lag, so that a scrape reads memory only.

A key of the wrong type is reported (bad keys) and counted as empty; a Redis failure counts a
`corral_redis_errors_total{where="metrics"}`; either way the gauges go stale visibly
(`corral_cluster_gauges_age_seconds`) instead of ending the node.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from redis.asyncio.client import Redis

from cluster.activequeues import ActiveQueues
from cluster.aio import REDIS_FAILURES
from cluster.badkeys import BadKeys
from cluster.clock import Clock
from cluster.keys import Keys
from cluster.redis_errors import ResponseError
from cluster.scripts import Scripts

from .metrics import NodeMetrics
from .worker import WorkerPool

log = logging.getLogger("corral.node")


async def read_queue_stats(scripts: Scripts, active: ActiveQueues, bad: BadKeys) -> tuple[dict[str, int], dict[str, str]]:
    """(length of every queue in `queues`, qtimes head of every non-empty one), in one script;
    if `queues` is not a set, the names the `*` workers found by SCAN."""
    keys = active.keys
    prefixes = [keys.queue(""), keys.qtimes(""), "all"]
    res = await scripts.run("queue_stats", [keys.queues], prefixes)
    if res[4]:
        bad.report(keys.queues, str(res[4]), where="metrics", expected="set")
        res = await scripts.run("queue_stats", [keys.queues], [*prefixes, *await active.scan_names()])
    bad.report_lines(res[3], where="metrics")
    names = [str(q) for q in res[0]]
    lengths = {q: int(n) for q, n in zip(names, res[1], strict=True)}
    heads = {q: str(h) for q, h in zip(names, res[2], strict=True) if h}
    return lengths, heads


class GaugeRefresher:
    def __init__(self, *, redis: Redis, keys: Keys, pool: WorkerPool, metrics: NodeMetrics, clock: Clock,
                 dead_after: float, interval: float) -> None:
        self.redis, self.keys, self.pool, self.metrics, self.clock = redis, keys, pool, metrics, clock
        self.dead_after, self.interval = dead_after, interval
        self.scripts = Scripts(redis)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except REDIS_FAILURES:
                self.metrics.redis_error("metrics")
            except Exception:  # data no one expected must not end the node: the gauges go stale, visibly
                log.exception("metrics: refreshing the cluster-wide gauges failed", extra={"event": "gauges_failed"})
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """Read everything first, then publish it in one step: a scrape between two of these reads
        saw a queue's new length beside its old (absent) oldest age."""
        lengths, heads = await read_queue_stats(self.pool.scripts, self.pool.active_queues, self.pool.bad_keys)
        tss, failed, now, members = await self._read_counts()
        if heads:
            heads = await self._trimmed_heads(list(heads))
        delayed = await self._delayed_total(tss)
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        oldest: dict[str, float] = {}
        for q, length in lengths.items():
            if length > 0:
                head = heads.get(q)
                stamp = head.partition(":")[2] if head else ""
                oldest[q] = max(0.0, (now_ms - float(stamp)) / 1000) if _is_number(stamp) else 0.0
        # scheduler lag, cluster-wide: how overdue the earliest delayed second is, on Redis' clock
        lag = max(0.0, now_ms / 1000 - float(tss[0])) if tss else 0.0
        c = self.metrics.cluster
        c.queue_lengths, c.oldest_age, c.delayed, c.failed = lengths, oldest, delayed, int(failed)
        self.metrics.lag.set(lag if lag > 1.0 else 0.0)
        c.members = sum(1 for _m, s in members if now_ms - float(s) < self.dead_after * 1000)
        c.refreshed_mono = self.clock.monotonic()

    async def _read_counts(self) -> tuple[list[Any], Any, Any, Any]:
        """(delayed seconds, failed count, Redis TIME, members with their heartbeats), one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(self.keys.delayed_schedule, 0, 999)
            pipe.llen(self.keys.failed)
            pipe.time()
            pipe.zrange(self.keys.members, 0, -1, withscores=True)
            tss, failed, now, members = await pipe.execute(raise_on_error=False)
        for key, got in ((self.keys.delayed_schedule, tss), (self.keys.failed, failed)):
            if isinstance(got, ResponseError):  # a key of the wrong type: reported, counted as empty
                self.pool.bad_keys.report(key, str(await self.redis.type(key)), where="metrics")
        tss = [] if isinstance(tss, ResponseError) else [t for t in tss if _is_number(t)]  # not "garbage"
        failed = 0 if isinstance(failed, ResponseError) else failed
        for got in (now, members):
            if isinstance(got, Exception):
                raise got
        return tss, failed, now, members

    async def _trimmed_heads(self, queues: list[str]) -> dict[str, str]:
        """Each queue's qtimes head, trimming what other clients' pops left behind
        (cluster/scripts/qtimes_head.lua)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                await self.scripts.run("qtimes_head", [self.keys.queue(q), self.keys.qtimes(q)], [1000], client=pipe)
            trimmed = await pipe.execute(raise_on_error=False)
        return {q: str(h) for q, h in zip(queues, trimmed, strict=True) if isinstance(h, str | bytes) and h}

    async def _delayed_total(self, tss: list[Any]) -> int:
        if not tss:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for ts in tss:
                pipe.llen(self.keys.delayed(int(float(ts))))
            return sum(int(n) for n in await pipe.execute(raise_on_error=False) if not isinstance(n, ResponseError))


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
