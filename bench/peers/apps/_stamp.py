"""Shared by the worker-side app modules: where a `stamp` job records its start time.

`stamp(i)` records "<i> <time.time()>". With BENCH_STARTS_DIR set (the harness's default) the line is
appended to `<dir>/<pid>.starts` with one unbuffered write (a few µs, no I/O the job waits on), so the
recording does not delay the jobs started after it; otherwise it is RPUSHed to `bench:starts` on the
benchmark's Redis (BENCH_REDIS_URL) through the library's client, as before (`--starts redis`). Corral's
and node-resque's `stamp` tasks do the same."""

import os
import time

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
STARTS_DIR = os.environ.get("BENCH_STARTS_DIR")
_sync: "redis.Redis | None" = None
_sync_pid = 0
_async: "object | None" = None
_fd = -1
_fd_pid = 0


def record_local(i: int, started: float) -> None:
    """One O_APPEND write per start: atomic for a line this short, and a forked child opens its own file."""
    global _fd, _fd_pid
    if _fd < 0 or _fd_pid != os.getpid():
        _fd = os.open(os.path.join(STARTS_DIR or ".", f"{os.getpid()}.starts"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o644)
        _fd_pid = os.getpid()
    os.write(_fd, f"{i} {started!r}\n".encode())


def record_sync(i: int) -> None:
    """Sync tasks (RQ, Celery, dramatiq). A client per process (forked children make their own)."""
    global _sync, _sync_pid
    started = time.time()
    if STARTS_DIR:
        record_local(i, started)
        return
    if _sync is None or _sync_pid != os.getpid():
        _sync, _sync_pid = redis.Redis.from_url(URL), os.getpid()
    _sync.rpush("bench:starts", f"{i} {started!r}")


async def record_async(i: int) -> None:
    """Async tasks (arq, saq, taskiq)."""
    global _async
    import redis.asyncio as aredis

    started = time.time()
    if STARTS_DIR:
        record_local(i, started)
        return
    if _async is None:
        _async = aredis.Redis.from_url(URL)
    await _async.rpush("bench:starts", f"{i} {started!r}")  # type: ignore[attr-defined]
