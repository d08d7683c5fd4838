"""A node's side of the task catalogue (`cluster/catalogue.py`): publish its tasks at boot, keep
its entry there while it runs (written again if Redis lost it, or if a pause got it pruned),
prune what dead nodes left, report definition conflicts, remove the entry at shutdown.

    publisher = CataloguePublisher(redis=redis, keys=keys, node_id=node_id, registry=registry,
                                   dead_after=8.0, started=clock.time())
    await publisher.publish()          # before the node registers as a member
    tg.create_task(publisher.run())    # every `interval` seconds: check, prune, report
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .aio import REDIS_FAILURES
from .catalogue import CatalogueView, describe, differences, read_catalogue, variants
from .keys import Keys
from .task import Registry

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.catalogue")

PRUNE_GRACE_MS = 60_000  # an entry written this recently is never pruned (its node may not be a member yet)


class CataloguePublisher:
    """A node's side: publish its tasks at boot, keep the entry there, remove it at shutdown,
    and report definition conflicts it sees (`on_conflicts(view)` after every check)."""

    def __init__(self, *, redis: Redis, keys: Keys, node_id: str, registry: Registry, dead_after: float,
                 started: float, interval: float = 5.0,
                 on_conflicts: Callable[[CatalogueView], object] | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id
        self.defs = {t.name: describe(t) for t in registry}
        self.entry = json.dumps({"tasks": {n: d["hash"] for n, d in sorted(self.defs.items())},
                                 "dead_after": dead_after, "started": started, "at": 0})
        self.interval = interval
        self.on_conflicts = on_conflicts
        self.view: CatalogueView | None = None
        self._reported: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        self._unused_before: set[str] = set()
        self._defs: dict[str, dict[str, Any]] = {}

    def _entry(self, now_ms: int) -> str:
        e = json.loads(self.entry)
        e["at"] = now_ms
        return json.dumps(e, sort_keys=True)

    async def publish(self) -> None:
        t = await self.redis.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            if self.defs:
                pipe.hset(self.keys.taskdefs, mapping={d["hash"]: json.dumps(d, sort_keys=True)
                                                       for d in self.defs.values()})
            pipe.hset(self.keys.catalogue, self.node_id, self._entry(int(t[0]) * 1000 + int(t[1]) // 1000))
            await pipe.execute()

    async def unpublish(self) -> None:
        await self.redis.hdel(self.keys.catalogue, self.node_id)

    async def check(self) -> CatalogueView:
        """Publish again if our entry (or a definition) went missing (Redis lost its data, or we
        were pruned as dead during a pause), prune what dead nodes left, read the live view."""
        # one snapshot (MULTI): a node publishing meanwhile shows both its entry and its definitions
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.zrange(self.keys.members, 0, -1)
            pipe.hgetall(self.keys.catalogue)
            pipe.hkeys(self.keys.taskdefs)
            now, members, entries, hashes = await pipe.execute()
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        ours = {d["hash"] for d in self.defs.values()}
        if self.node_id not in entries or not ours <= set(map(str, hashes)):
            await self.publish()
        await self._prune(now_ms, set(map(str, members)), entries, set(map(str, hashes)))
        self.view = await read_catalogue(self.redis, self.keys, self._defs)
        self._report(self.view)
        return self.view

    async def _prune(self, now_ms: int, members: set[str], entries: dict[Any, Any], hashes: set[str]) -> None:
        gone, used = [], {d["hash"] for d in self.defs.values()}
        for node, raw in entries.items():
            try:
                e = json.loads(raw)
                at, tasks = float(e.get("at", 0)), dict(e["tasks"])
            except (ValueError, KeyError, TypeError, AttributeError):
                gone.append(str(node))
                continue
            if str(node) not in members and now_ms - at > PRUNE_GRACE_MS:
                gone.append(str(node))
            else:
                used |= set(map(str, tasks.values()))
        if gone:
            await self.redis.hdel(self.keys.catalogue, *gone)
        # a definition goes only when no entry used it in two checks in a row, so one that a
        # booting node publishes right after our snapshot is not taken from under it
        unused = hashes - used
        stale = sorted(unused & self._unused_before)
        self._unused_before = unused
        if stale:
            await self.redis.hdel(self.keys.taskdefs, *stale)

    def _report(self, view: CatalogueView) -> None:
        for t in view.conflicts():
            key = (t.name, frozenset(t.nodes.items()))
            if key in self._reported:
                continue
            self._reported.add(key)
            log.warning("catalogue: task %r is defined differently by live nodes", t.name, extra={
                "event": "task_definition_conflict", "task": t.name,
                "variants": json.dumps(variants(t), sort_keys=True),
                "differences": json.dumps(differences(t), sort_keys=True, default=str)})
        if self.on_conflicts is not None:
            self.on_conflicts(view)

    async def run(self) -> None:
        """Started once the node is a member: the first check at once (so `/status` has a view)."""
        while True:
            try:
                await self.check()
            except REDIS_FAILURES as e:
                log.debug("catalogue: check failed: %r", e)
            await asyncio.sleep(self.interval)
