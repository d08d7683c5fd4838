"""`cluster.scripts.run_script`: how Corral runs its Lua scripts on a redis-py client (in place of
redis-py's `AsyncScript.__call__`, which imports redis-py's cluster client on every call), against
real Redis: EVALSHA, loaded again after SCRIPT FLUSH and run once, in a pipeline (which loads its
scripts itself), on another client, and without loading `redis.asyncio.cluster`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cluster.connection import make_redis
from cluster.redis_settings import RedisSettings
from cluster.resp import RespClient
from cluster.scripts import Scripts, run_script

ROOT = Path(__file__).resolve().parents[2]
INCR = "return redis.call('INCR', KEYS[1]) + (ARGV[1] or 0)"


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = make_redis(RedisSettings(redis_url))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


async def test_runs_and_is_loaded_again_after_script_flush(r: aioredis.Redis) -> None:
    script = r.register_script(INCR)
    assert await run_script(script, ["c"], []) == 1
    await r.script_flush()
    assert await run_script(script, ["c"], [10]) == 12  # NOSCRIPT: loaded, then run once (not twice)
    assert await r.get("c") == "2"


async def test_in_a_pipeline_the_pipeline_loads_the_script(r: aioredis.Redis) -> None:
    script = r.register_script(INCR)
    await r.script_flush()
    pipe = r.pipeline(transaction=True)
    await run_script(script, ["c"], [], client=pipe)
    await run_script(script, ["c"], [], client=pipe)
    assert await pipe.execute() == [1, 2]


async def test_on_another_client_and_a_resp_script(r: aioredis.Redis, redis_url: str) -> None:
    other = make_redis(RedisSettings(redis_url))
    resp = RespClient.from_settings(RedisSettings(redis_url))
    try:
        assert await run_script(r.register_script(INCR), ["c"], [], client=other) == 1
        assert await run_script(resp.register_script(INCR), ["c"], []) == 2  # called as it is
    finally:
        await other.aclose()
        await resp.aclose()


async def test_scripts_run_goes_through_it(r: aioredis.Redis) -> None:
    scripts = Scripts(r)
    await r.set("lock", "mine")
    await r.script_flush()
    assert await scripts.run("compare_and_delete", ["lock"], ["theirs"]) == 0
    assert await scripts.run("compare_and_delete", ["lock"], ["mine"]) == 1
    assert await r.exists("lock") == 0


def test_running_scripts_loads_no_redis_cluster_client(redis_url: str) -> None:
    code = ("import asyncio, sys\nimport node.cli\n"
            "from cluster.connection import make_redis\nfrom cluster.redis_settings import RedisSettings\n"
            "from cluster.scripts import Scripts, run_script\n"
            "async def main():\n"
            f"    r = make_redis(RedisSettings({redis_url!r}))\n"
            "    await run_script(r.register_script('return 1'), [], [])\n"
            "    await Scripts(r).run('compare_and_delete', ['corral-test:lock'], ['x'])\n"
            "    await r.aclose()\n"
            "asyncio.run(main())\nprint(sorted(m for m in sys.modules if m in ('redis.cluster', 'redis.asyncio.cluster')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
