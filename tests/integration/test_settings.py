"""Connection settings against real Redis: one parsed URL feeds every connection.

- `redis://h:p/0?db=3`: redis-py (enqueue) and the fast fetch path (rawconn) both use database 3
  (`?db=` wins over the path, as in redis-py); a node never runs another database's job.
- `?password=` in the URL authenticates the fast path too; the password never shows in the
  node's start log line or in the redacted URL.
- A password given as a flag (visible in `ps`) is warned about once the node connected; one from
  `--redis-password-file` (or `CORRAL_REDIS_PASSWORD`) is not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cluster.client import Client
from cluster.connection import RedisSettings, make_redis
from cluster.rawconn import FastScript, RawConnection
from tests.support.inproc import NodeFactory, wait_for
from tests.support.nodes import NodeCluster, NodeProcess
from tests.support.servers import RedisServer

TASKS = '''
from cluster import task


@task(name="mark")
async def mark(params, ctx):
    await ctx.client.redis.rpush("ran", params["id"])
'''

PASSWORD = "q-Secret-Pw-4f1e"


async def test_db_in_the_query_is_the_database_every_connection_uses(inproc_node: NodeFactory,
                                                                       redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    url = f"{base}/0?db=3"
    db0, db3 = Redis.from_url(f"{base}/0", decode_responses=True), Redis.from_url(f"{base}/3", decode_responses=True)
    try:
        await db3.flushdb()
        async with await Client.connect(f"{base}/0") as c0:
            await c0.enqueue("mark", {"id": "from-db0"})
        async with await Client.connect(url) as c3:  # redis-py reads ?db=3
            await c3.enqueue("mark", {"id": "from-db3"})
        assert await db3.llen("resque:queue:default") == 1
        await inproc_node(TASKS, redis_url=url)
        await wait_for(lambda: _contains(db3, "from-db3"), 10, what="the db-3 job ran")
        await asyncio.sleep(0.5)  # a few more polls: the fast path would have popped db 0's job by now
        assert await db3.lrange("ran", 0, -1) == ["from-db3"]
        assert await db0.llen("resque:queue:default") == 1, "the node ran a job of another database"
        assert await db0.llen("ran") == 0
    finally:
        await db3.flushdb()
        await db0.aclose()
        await db3.aclose()


async def _contains(r: Redis, item: str) -> bool:
    return item in await r.lrange("ran", 0, -1)


async def test_fast_path_and_redis_py_agree_on_db_and_query_password(
        redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(requirepass=PASSWORD)
    settings = RedisSettings(url=f"redis://127.0.0.1:{server.port}/0?db=5&password={PASSWORD}")
    admin = Redis(host="127.0.0.1", port=server.port, password=PASSWORD, db=5, decode_responses=True)
    await admin.set("where", "db5")
    py = make_redis(settings)
    fast = FastScript(RawConnection.from_settings(settings), "return redis.call('GET', KEYS[1])")
    try:
        assert await py.get("where") == "db5"
        assert await fast.run(["where"], []) == "db5"
    finally:
        fast.close()
        await py.aclose()
        await admin.aclose()
    assert PASSWORD not in settings.redacted_url() and "password=***" in settings.redacted_url()


async def test_the_start_log_line_shows_no_password(redis_factory: Callable[..., RedisServer],
                                                    inproc_node: NodeFactory,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = redis_factory(requirepass=PASSWORD)
    caplog.set_level(logging.INFO)
    await inproc_node(TASKS, redis_url=f"redis://127.0.0.1:{server.port}/0?password={PASSWORD}")
    started = [r for r in caplog.records if getattr(r, "event", None) == "node_started"]
    assert started and "password=***" in str(vars(started[0]))
    assert all(PASSWORD not in r.getMessage() + str(vars(r)) for r in caplog.records)


def test_a_password_on_the_command_line_is_warned_about(redis_factory: Callable[..., RedisServer],
                                                        node_cluster: NodeCluster, tmp_path: Path) -> None:
    server = redis_factory(requirepass=PASSWORD)
    url = f"redis://127.0.0.1:{server.port}/0"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    flag = node_cluster.add("flag", redis_url=url, tasks_dir=tasks, extra_args=["--redis-password", PASSWORD])
    by_file = node_cluster.add("file", redis_url=url, tasks_dir=tasks,
                               extra_args=["--redis-password-file", str(pw_file)])
    for n in (flag, by_file):
        n.wait_ready(30)
        n.sigterm()
        n.wait_exit(20)

    def events(n: NodeProcess) -> list[str]:
        return [json.loads(ln).get("event", "") for ln in n.log_path.read_text().splitlines() if ln.startswith("{")]

    assert "secret_on_command_line" in events(flag)
    assert "secret_on_command_line" not in events(by_file) and "node_started" in events(by_file)
