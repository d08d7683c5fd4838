"""Corral side of the peer benchmark: `noop` does nothing; `stamp` records its start time (apps/_stamp.py)."""
import time

from _stamp import STARTS_DIR, record_local

from cluster import task


@task(name="noop", queue="bench")
async def noop(params, ctx):
    return None


@task(name="stamp", queue="bench")
async def stamp(params, ctx):
    started = time.time()
    if STARTS_DIR:
        record_local(params.get("i"), started)
        return
    await ctx.client.redis.rpush("bench:starts", f"{params.get('i')} {started!r}")
