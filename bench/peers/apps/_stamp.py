"""Shared by the worker-side app modules: where a `stamp` job records its start time.

`stamp(i)` RPUSHes "<i> <time.time()>" to `bench:starts` on the benchmark's Redis (BENCH_REDIS_URL),
the same record Corral's `stamp` task writes; the harness turns it into pickup / lateness figures."""

import os
import time

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_sync: "redis.Redis | None" = None
_sync_pid = 0
_async: "object | None" = None


def record_sync(i: int) -> None:
    """Sync tasks (RQ, Celery, dramatiq). A client per process (forked children make their own)."""
    global _sync, _sync_pid
    started = time.time()
    if _sync is None or _sync_pid != os.getpid():
        _sync, _sync_pid = redis.Redis.from_url(URL), os.getpid()
    _sync.rpush("bench:starts", f"{i} {started!r}")


async def record_async(i: int) -> None:
    """Async tasks (arq, saq, taskiq)."""
    global _async
    import redis.asyncio as aredis

    started = time.time()
    if _async is None:
        _async = aredis.Redis.from_url(URL)
    await _async.rpush("bench:starts", f"{i} {started!r}")  # type: ignore[attr-defined]
