"""The queue list of `*` workers: the non-empty queues, read in one script per poll interval
(`queue_stats.lua`, mode "active").

Fetching from every name in `queues` made each fetch of a `*` slot pay for every empty queue
(5,000 empty names: draining 5.6x slower). The script returns only the non-empty ones;
a producer's wake-up naming a queue not listed adds it at once (`add`), so a job on a queue that
was empty at the last read does not wait for the next one.

If `queues` itself is not a set (someone wrote a string there), it is reported once and the
queue names are found by SCAN instead (`<ns>:queue:*`, at most every `scan_every` seconds), so
`*` workers keep serving every queue.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import TYPE_CHECKING, Any

from .badkeys import BadKeys
from .keys import Keys
from .scripts import Scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis


class ActiveQueues:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts, bad: BadKeys, *, scan_every: float = 5.0) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self.bad = bad
        self.scan_every = scan_every
        self.names: list[str] = []
        self._scanned: list[str] = []
        self._scanned_at: float | None = None
        self._lock = asyncio.Lock()
        self.read_at: float | None = None
        self.read_cost = 0.0  # seconds the last read took

    async def current(self, max_age: float) -> list[str]:
        """The list, read again when older than `max_age`, or than 20 reads' time: with many queue
        names a read costs milliseconds, and re-reading keeps under 5 % of a worker's time."""
        now = asyncio.get_running_loop().time()
        if self.read_at is None or now - self.read_at > max(max_age, 20 * self.read_cost):
            await self.read()
        return self.names

    def add(self, queue: str) -> None:
        """A producer announced a job on `queue`: list it until the next read says otherwise."""
        i = bisect.bisect_left(self.names, queue)
        if i == len(self.names) or self.names[i] != queue:
            self.names.insert(i, queue)

    async def read(self) -> list[str]:
        async with self._lock:  # slots whose cache went stale together share one read
            loop = asyncio.get_running_loop()
            if self.read_at is not None and loop.time() - self.read_at < 0.01:
                return self.names  # another slot read it while this one waited for the lock
            t0 = loop.time()
            prefixes = [self.keys.queue(""), self.keys.qtimes(""), "active"]
            res = await self.scripts.run("queue_stats", [self.keys.queues], prefixes)
            if res[4]:
                self.bad.report(self.keys.queues, str(res[4]), where="worker", expected="set")
                res = await self.scripts.run("queue_stats", [self.keys.queues], [*prefixes, *await self.scan_names()])
            self.bad.report_lines(res[3], where="worker")
            self.names = [str(q) for q in res[0]]
            self.read_at = loop.time()
            self.read_cost = self.read_at - t0
            return self.names

    async def scan_names(self) -> list[str]:
        """The queue names found by SCAN `<ns>:queue:*` (cached `scan_every` seconds)."""
        loop = asyncio.get_running_loop()
        if self._scanned_at is None or loop.time() - self._scanned_at >= self.scan_every:
            prefix = self.keys.queue("")
            found: set[str] = set()
            async for key in self.redis.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
                found.add(_text(key)[len(prefix):])
            self._scanned = sorted(found)
            self._scanned_at = loop.time()
        return self._scanned


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


def _text(v: Any) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
