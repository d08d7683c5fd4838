"""The dashboard's operations on `Client` (node/ui): actions on exact stored bytes (as the pages
showed them), paginated and filtered reads.

A layer of `cluster.client.Client`; use that class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .client_admin import AdminClient
from .errors import EnqueueError
from .scripts import run_script, source
from .wire import decode_failed


class DashboardClient(AdminClient):
    """Exact-bytes actions and paginated, filtered reads."""

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
        moved = await run_script(script, [self.keys.delayed(ts), self.keys.delayed(now), self.keys.timestamps(raw),
                                          self.keys.delayed_schedule],
                                 [raw, ts, now, self.keys.delayed_member(ts), self.keys.delayed_member(now),
                                  self.keys.delayed_channel])
        return bool(int(moved))

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
