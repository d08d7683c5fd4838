"""arq worker settings: `python -m peer_arq` runs the worker (arq.worker.run_worker) with logging at WARNING,
the equivalent of Corral's --log-level warning (the `arq` CLI has no log-level flag and logs every job at INFO)."""
import logging
import os

from _stamp import URL, record_async
from arq.connections import RedisSettings


async def noop(ctx):
    return None


async def stamp(ctx, i):
    await record_async(i)


class WorkerSettings:
    functions = [noop, stamp]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))  # arq's default


if __name__ == "__main__":
    from arq.worker import run_worker

    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)  # type: ignore[arg-type]
