"""Corral side of the peer benchmark: `noop` does nothing; `stamp` records its start time."""
import time

from cluster import task


@task(name="noop", queue="bench")
async def noop(params, ctx):
    return None


@task(name="stamp", queue="bench")
async def stamp(params, ctx):
    started = time.time()
    await ctx.client.redis.rpush("bench:starts", f"{params.get('i')} {started!r}")
