"""The minimal Redis ACL of docs/REDIS_ACL.md (`node.acl.acl_rule`), exactly, against a real Redis:

- a user with exactly that ACL runs a 2-node cluster through every path that talks to Redis:
  plain, delayed and periodic jobs, Retry and failure, JobLock/QueueLock, a node killed mid-job
  (recovery by the leader), a SIGTERM push-back, the audit stream, and the `corral` client
  commands; Redis' ACL LOG stays empty (no command, key or channel refused);
- every command in Corral's Lua scripts is in the ACL (unit check on the sources);
- a user missing one permission (`-time`) stops the node at boot with one line naming it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from cluster.client import Client
from cluster.redis_settings import RedisSettings
from node.acl import COMMANDS, PROBES, acl_rule
from tests.support import REPO_ROOT, free_port, wait_until
from tests.support.nodes import NodeCluster
from tests.support.servers import RedisServer

ADMIN_PW = "acl-Admin-Pw-5e1"
USER, USER_PW = "corral", "acl-User-Pw-8c2"
TASKS = '''
import asyncio
from cluster import Retry, Task, task


@task(name="mark")
async def mark(params, ctx):
    await ctx.client.redis.rpush("resque:test:marks", str(params.get("id")))


@task(name="slow")
async def slow(params, ctx):
    await ctx.client.redis.rpush("resque:test:slow", str(params.get("id")))
    await asyncio.sleep(params.get("s", 30))


async def _again(params, ctx):
    if await ctx.client.redis.set("resque:test:again", "1", nx=True):  # the first run asks to run again
        raise Retry(0.2)
    await ctx.client.redis.rpush("resque:test:marks", "again")


again = Task(name="again", run=_again)


async def _fail(params, ctx):
    raise ValueError("always")


failing = Task(name="failing", run=_fail, plugins=["Retry"], plugin_options={"Retry": {"limit": 1, "delay": 0.1}})
locked = Task(name="locked", run=mark.run, plugins=["JobLock", "QueueLock", "DelayQueueLock"])


async def _tick(params, ctx):
    await ctx.client.redis.incr("resque:test:ticks")


tick = Task(name="tick", run=_tick, frequency=0.5)
'''


def test_every_script_command_is_in_the_acl() -> None:
    used = set()
    # the scripts, and any Lua kept inline in Python (node/ui/history.py)
    sources = [*(REPO_ROOT / "cluster" / "scripts").glob("*.lua"), *(REPO_ROOT / "cluster").rglob("*.py"),
               *(REPO_ROOT / "node").rglob("*.py")]
    for src in sources:
        used |= {c.lower() for c in re.findall(r"redis\.p?call\(\s*['\"](\w+)", src.read_text())}
    assert used, "no script commands found"
    assert not used - set(PROBES), f"commands used by scripts but missing from node/acl.py: {used - set(PROBES)}"
    doc = (REPO_ROOT / "docs" / "REDIS_ACL.md").read_text()
    assert acl_rule() in doc, "docs/REDIS_ACL.md does not show node.acl.acl_rule()"


def _corral(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    e.update(env, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=60, env=e,
                          cwd=REPO_ROOT, stdin=subprocess.DEVNULL)


def test_a_cluster_runs_with_exactly_the_documented_acl(redis_factory: Callable[..., RedisServer],
                                                        node_cluster: NodeCluster, tmp_path: Path) -> None:
    server = redis_factory(requirepass=ADMIN_PW, user=[f"{USER} on >{USER_PW} {acl_rule('resque')}"])
    admin = redis.Redis(host="127.0.0.1", port=server.port, password=ADMIN_PW, decode_responses=True)
    admin.acl_log_reset()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "acl_tasks.py").write_text(TASKS)
    url = f"redis://127.0.0.1:{server.port}/0"
    env = {"CORRAL_REDIS_USERNAME": USER, "CORRAL_REDIS_PASSWORD": USER_PW}
    fast = ["--heartbeat-interval", "0.3", "--dead-after", "1.5", "--poll-interval", "0.1", "--shutdown-timeout", "0.5"]
    a = node_cluster.add("a", redis_url=url, tasks_dir=tasks, queues="default,default", env=env,
                         extra_args=[*fast, "--audit"])
    b = node_cluster.add("b", redis_url=url, tasks_dir=tasks, queues="default", env=env, extra_args=fast)
    a.wait_ready(30)
    b.wait_ready(30)
    node_cluster.wait_leader(15)
    settings = RedisSettings(url=url, username=USER, password=USER_PW)

    async def produce() -> None:
        async with await Client.connect(settings=settings) as c:
            for i in range(5):
                await c.enqueue("mark", {"id": i})
            await c.enqueue_in(0.3, "mark", {"id": "delayed"})
            await c.enqueue("again", {})
            await c.enqueue("failing", {})
            await c.enqueue("locked", {"id": "locked"})
            await c.enqueue("slow", {"id": "s1", "s": 30})

    asyncio.run(produce())
    want = {"0", "1", "2", "3", "4", "delayed", "again", "locked"}
    wait_until(lambda: want <= set(admin.lrange("resque:test:marks", 0, -1)), 15, message="the jobs ran")
    wait_until(lambda: admin.llen("resque:failed") == 1, 15, message="the failing job failed after its retry")
    wait_until(lambda: int(admin.get("resque:test:ticks") or 0) >= 2, 10, message="the periodic task fired")
    wait_until(lambda: admin.llen("resque:test:slow") == 1, 10, message="the slow job started")
    victim = next(n for n in (a, b) if any(w["busy"] for w in n.status()["node"]["workers"]))
    other = b if victim is a else a
    victim.kill()  # its in-flight job is recovered by the leader
    # a new leader (lease 5 s) declares the node dead (1.5 s) and returns its job
    wait_until(lambda: admin.llen("resque:test:slow") == 2, 40, message="the killed node's job was recovered")
    for args in (["status"], ["failed", "list"], ["failed", "retry", "0"], ["enqueue", "mark", "--in", "1"]):
        out = _corral(*args, env={**env, "CORRAL_REDIS_URL": url})
        assert out.returncode == 0, (args, out.stderr)
    other.sigterm()  # pushes the running slow job back
    assert other.wait_exit(20) == 0
    assert admin.llen("resque:queue:default") >= 1, "the running job was pushed back"
    denied = admin.acl_log()
    assert not denied, f"refused with the documented ACL: {[(d['reason'], d['object']) for d in denied][:5]}"
    admin.close()


def test_a_missing_permission_is_one_line_naming_it(redis_factory: Callable[..., RedisServer],
                                                    tmp_path: Path) -> None:
    server = redis_factory(requirepass=ADMIN_PW, user=[f"{USER} on >{USER_PW} {acl_rule('resque')} -time"])
    (tmp_path / "tasks").mkdir()
    t0 = time.monotonic()
    out = _corral("node", "--redis-url", f"redis://127.0.0.1:{server.port}/0", "--tasks-dir", str(tmp_path / "tasks"),
                  "--http-port", str(free_port()), env={"CORRAL_REDIS_USERNAME": USER, "CORRAL_REDIS_PASSWORD": USER_PW})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[-1].startswith("corral: error: the Redis user may not run 1 command(s) Corral needs: time (NOPERM")
    assert [ln for ln in lines if "error" in ln] == [lines[-1]], out.stderr
    assert time.monotonic() - t0 < 20
    assert "subscribe" in COMMANDS
