"""saq settings for `saq peer_saq.settings` (default logging: WARNING without -v)."""
import os

from _stamp import URL, record_async
from saq import Queue


async def noop(ctx):
    return None


async def stamp(ctx, *, i):
    await record_async(i)


queue = Queue.from_url(URL, name="bench")

settings = {
    "queue": queue,
    "functions": [noop, stamp],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),  # saq's default
}
