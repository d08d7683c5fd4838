"""Processed/failed history for the dashboard's chart, kept in Redis so every node shows the same
hour and a restart loses nothing.

Every node (and `corral web`) samples resque's cluster-wide counters `stat:processed` and
`stat:failed` once per 10 s bucket into the `corral:history` zset (score = Redis time). The sample
is one script that first checks `corral:history:last`, so whichever process comes first in a
bucket writes it and the others do nothing: one sample per bucket cluster-wide, whatever the node
count, and no change to the job path (node-resque and Ruby workers' jobs count too). The zset is
trimmed to the last hour in the same script. Rates are differences between consecutive samples.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from redis.asyncio.client import Redis

from cluster.aio import REDIS_FAILURES
from cluster.keys import Keys
from cluster.redis_errors import ResponseError
from cluster.scripts import run_script

log = logging.getLogger("corral.ui")

STEP = 10.0  # seconds per sample
KEEP = 3600.0  # one hour

# KEYS[1] corral:history  KEYS[2] corral:history:last  KEYS[3] stat:processed  KEYS[4] stat:failed
# ARGV[1] step seconds  ARGV[2] seconds kept.  Returns 1 if this call wrote the bucket's sample.
SAMPLE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local step = tonumber(ARGV[1])
local b = math.floor(now / step)
local last = tonumber(redis.call('GET', KEYS[2]) or '') or -1
if b <= last then return 0 end
redis.call('SET', KEYS[2], b, 'EX', math.floor(tonumber(ARGV[2])))
local p = math.floor(tonumber(redis.call('GET', KEYS[3]) or '') or 0)
local f = math.floor(tonumber(redis.call('GET', KEYS[4]) or '') or 0)
redis.call('ZADD', KEYS[1], string.format('%.3f', now), b .. ':' .. p .. ':' .. f)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.3f', now - tonumber(ARGV[2]) - step))
return 1
"""


class HistoryRecorder:
    """Runs on every node: one sample per bucket, cluster-wide."""

    def __init__(self, redis: Redis, keys: Keys, step: float = STEP, keep: float = KEEP) -> None:
        self.redis = redis
        self.keys = keys
        self.step = step
        self.keep = keep
        self.script = redis.register_script(SAMPLE_LUA)

    async def sample(self) -> bool:
        k = self.keys
        wrote = await run_script(self.script, [k.history, k.history_last, k.stat_processed, k.stat_failed],
                                 [self.step, self.keep])
        return bool(int(wrote))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.sample()
            except ResponseError as e:  # a key of the wrong type: said, not fatal, tried again next bucket
                log.warning("ui: history sample refused: %s", e, extra={"event": "ui_history_failed"})
            except REDIS_FAILURES as e:  # Redis away: the node's own checks report that
                log.debug("ui: history sample failed: %r", e)
            # early in the next bucket, spread over a second so nodes don't all call at once
            now = loop.time()
            await asyncio.sleep(self.step - (now % self.step) + random.uniform(0.05, 1.0))


class HistoryReader:
    """The dashboard's copy of the history: read incrementally (only samples newer than the
    newest one held), so a refresh costs one small ZRANGEBYSCORE."""

    def __init__(self, keys: Keys, keep: float = KEEP, step: float = STEP) -> None:
        self.keys = keys
        self.keep = keep
        self.step = step
        self.samples: list[tuple[float, int, int, int]] = []  # (time, bucket, processed, failed)

    def due(self, now: float) -> bool:
        """Can a sample newer than the newest held exist yet? Samples are one per aligned bucket,
        so not before the next bucket boundary: between two, a refresh skips the read."""
        if not self.samples:
            return True
        return now >= (self.samples[-1][1] + 1) * self.step

    def query(self) -> tuple[str, str, str]:
        """The ZRANGEBYSCORE bounds to read next (exclusive of the newest sample held)."""
        lo = f"({self.samples[-1][0]!r}" if self.samples else "-inf"
        return self.keys.history, lo, "+inf"

    def add(self, rows: list[Any], now: float) -> None:
        seen = {s[1] for s in self.samples[-5:]}
        for member, score in rows:
            try:
                b, p, f = (int(x) for x in str(member).split(":"))
            except ValueError:
                continue
            if b not in seen:
                self.samples.append((float(score), b, p, f))
        self.samples.sort()
        cutoff = now - self.keep - self.step
        while self.samples and self.samples[0][0] < cutoff:
            self.samples.pop(0)

    def rates(self) -> list[list[float | None]]:
        """[[time, processed/s, failed/s], ...]; a gap (a bucket nobody sampled) gives None rates,
        a counter reset (stats cleared) gives 0 rather than a negative rate."""
        out: list[list[float | None]] = []
        for (t0, b0, p0, f0), (t1, b1, p1, f1) in zip(self.samples, self.samples[1:], strict=False):
            dt = t1 - t0
            if dt <= 0:
                continue
            if b1 - b0 > 3:
                out.append([round(t1, 3), None, None])
                continue
            out.append([round(t1, 3), round(max(0, p1 - p0) / dt, 3), round(max(0, f1 - f0) / dt, 3)])
        return out
