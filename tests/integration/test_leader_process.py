"""The leader process (`leader_process = true`, the default of `corral node`): the election and
the leader duties run in a child of the node, so a task thread holding the GIL cannot make
promotions and periodic claims late (docs/FAULTS.md F13b), while a frozen node still gives up
leadership (F2, F13).

Real node processes on the session Redis. The GIL is held the way a C extension that does not
release it holds it: a sync task calls `usleep` through `ctypes.PyDLL` (PyDLL keeps the GIL for
the whole call), so the node's own loop is frozen for exactly that long.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path

import redis

from cluster.wire import encode_job
from tests.support import wait_until
from tests.support.nodes import NodeCluster, NodeProcess

HOLD_TASKS = '''
import ctypes
from cluster import Task, task

_libc = ctypes.PyDLL(None)


@task(name="hold", queue="hold")
def hold(params, ctx):
    _libc.usleep(int(params["s"] * 1e6))  # the GIL stays held for the whole call


async def _pulse(params, ctx):
    pass


# claimed ten times a second by the leader; no node works the `pulses` queue
pulse = Task(name="pulse", queue="pulses", frequency=0.1, run=_pulse)
'''


def _tasks(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "hold.py").write_text(HOLD_TASKS)
    return d


def _pulse_lateness(node: NodeProcess) -> list[tuple[float, float]]:
    """(slot, lateness in s) of each `pulse` slot the node's leader process claimed."""
    return [(float(r["slot"]), float(r["lateness_ms"]) / 1000) for r in node.log_records()
            if r.get("event") == "periodic_enqueued" and r.get("task") == "pulse"]


def _leader_events(node: NodeProcess) -> list[str]:
    return [str(r["event"]) for r in node.log_records()
            if r.get("event") in ("leader_acquired", "leader_stepped_down", "leader_released")]


def test_task_holding_the_gil_does_not_delay_the_leader(node_cluster: NodeCluster, redis_url: str,
                                                        tmp_path: Path) -> None:
    """The leader's only task thread holds the GIL 0.5 s of every 0.55 s for 6 s: its node's loop is
    frozen most of that time, yet the periodic slots (every 0.1 s) are claimed on time and
    leadership never moves. With `--no-leader-process` the same run fails: slots median 1.0 s,
    max 2.2 s late (measured), as the leader's loop waits for the GIL with the node's."""
    tasks = _tasks(tmp_path)
    a = node_cluster.add("a", tasks_dir=tasks, queues="hold", extra_args=["--threads", "1"]).wait_ready()
    wait_until(a.is_leader, 10, 0.05, message="node a to lead")
    b = node_cluster.add("b", tasks_dir=tasks, queues="default").wait_ready()
    status = a.status()["node"]
    assert status["leader_process"]["pid"] not in (None, a.pid), status
    r = redis.Redis.from_url(redis_url)
    t0 = time.time() + 0.5
    r.rpush("resque:queue:hold", *[encode_job("hold", "hold", [{"s": 0.5}]) for _ in range(11)])
    r.sadd("resque:queues", "hold")
    r.publish("corral:wake", "hold")
    wait_until(lambda: r.llen("resque:queue:hold") == 0 and not a.status()["node"]["workers"][0]["busy"],
               20, 0.1, message="the hold jobs to finish")
    t1 = time.time() - 0.5
    late = [x for slot, x in _pulse_lateness(a) if t0 <= slot <= t1]
    print(f"\nGIL held 0.5 s per job x 11: {len(late)} slots, lateness median "
          f"{statistics.median(late) * 1000:.1f} ms, max {max(late) * 1000:.1f} ms")
    assert len(late) >= 0.8 * (t1 - t0) / 0.1, f"slots missing: {len(late)} in {t1 - t0:.1f} s"
    assert statistics.median(late) < 0.05, late
    assert sorted(late)[int(len(late) * 0.9)] < 0.15, late
    assert _leader_events(a) == ["leader_acquired"], _leader_events(a)
    assert not b.is_leader()


def test_frozen_node_gives_up_leadership_through_its_leader_process(node_cluster: NodeCluster) -> None:
    """SIGSTOP freezes the node, not its leader process: the leader process sees the node's pings
    stop and releases the lock after the stall limit (0.8 s here), so the other node leads at
    once, long before the 5 s lease would expire; after SIGCONT the frozen node says it follows
    and a new leader process of its own is a candidate again."""
    a = node_cluster.add("a", extra_args=["--loop-stall-limit", "0.8"]).wait_ready()
    wait_until(a.is_leader, 10, 0.05, message="node a to lead")
    b = node_cluster.add("b").wait_ready()
    child = a.status()["node"]["leader_process"]["pid"]
    t_stop = time.monotonic()
    os.kill(a.pid, signal.SIGSTOP)  # the node alone (`a.stop()` would freeze its leader process too)
    try:
        wait_until(b.is_leader, 5, 0.02, message="b to lead while a is frozen")
        took = time.monotonic() - t_stop
        assert took < 2.5, f"b led {took:.2f} s after a froze (stall limit 0.8 s; the lease alone is 5 s)"
        wait_until(lambda: not _alive(child), 5, 0.05, message="a's leader process to exit")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_until(lambda: not a.is_leader(), 1.0, 0.02, message="a to report is_leader false after SIGCONT")
    wait_until(lambda: a.status()["node"]["leader_process"]["pid"] not in (None, child), 10, 0.1,
               message="a to start a new leader process")
    assert a.status()["node"]["leader_process"]["restarts"] == 1
    assert b.is_leader() and not a.is_leader()
    print(f"\nfrozen leader: successor led {took:.3f} s after SIGSTOP")


def test_leader_process_killed_is_replaced(node_cluster: NodeCluster) -> None:
    """kill -9 of the leader process alone: the node starts another one, and the cluster has a
    leader again within the lease (the lock expires; the new candidate or the other node takes it)."""
    a = node_cluster.add("a").wait_ready()
    wait_until(a.is_leader, 10, 0.05, message="node a to lead")
    b = node_cluster.add("b").wait_ready()
    child = a.status()["node"]["leader_process"]["pid"]
    os.kill(child, signal.SIGKILL)
    wait_until(lambda: not a.is_leader(), 2, 0.02, message="a to stop saying it leads")
    wait_until(lambda: a.status()["node"]["leader_process"]["pid"] not in (None, child), 15, 0.1,
               message="a new leader process on a")
    node_cluster.wait_leader(timeout=8)
    assert a.running and b.running


def test_node_killed_takes_its_leader_process_with_it(node_cluster: NodeCluster) -> None:
    """kill -9 of the node: its leader process must not live on as an orphan candidate (it exits
    on the parent-death signal and releases the lock on the way, so the other node leads at once)."""
    a = node_cluster.add("a").wait_ready()
    wait_until(a.is_leader, 10, 0.05, message="node a to lead")
    b = node_cluster.add("b").wait_ready()
    child = a.status()["node"]["leader_process"]["pid"]
    os.kill(a.pid, signal.SIGKILL)  # the node alone (`a.kill()` would kill its leader process too)
    wait_until(lambda: not _alive(child), 5, 0.05, message="the orphaned leader process to exit")
    wait_until(b.is_leader, 5, 0.05, message="b to lead")


POOL_TASKS = '''
import os, time
from cluster import Task


def _sit(params, ctx):
    with open(params["pidfile"], "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)


sit = Task(name="sit", run=_sit, cpu_bound=True)
'''


def test_node_killed_takes_its_pool_workers_with_it(node_cluster: NodeCluster, redis_url: str,
                                                    tmp_path: Path) -> None:
    """kill -9 of a node while a `cpu_bound` job runs in its process pool: the pool worker must not
    run on as an orphan (the job is recovered and run again elsewhere; an orphan would run it twice
    at once and hold a CPU)."""
    tasks = tmp_path / "pool_tasks"
    tasks.mkdir()
    (tasks / "sit.py").write_text(POOL_TASKS)
    a = node_cluster.add("a", tasks_dir=tasks, queues="default").wait_ready()
    pidfile = tmp_path / "worker.pid"
    r = redis.Redis.from_url(redis_url)
    r.rpush("resque:queue:default", encode_job("sit", "default", [{"pidfile": str(pidfile)}]))
    r.sadd("resque:queues", "default")
    r.publish("corral:wake", "default")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, 0.05,
               message="the cpu_bound job to start in a pool worker")
    worker = int(pidfile.read_text())
    assert worker != a.pid and _alive(worker)
    os.kill(a.pid, signal.SIGKILL)  # the node alone
    try:
        wait_until(lambda: not _alive(worker), 5, 0.05, message="the pool worker to die with its node")
    finally:
        if _alive(worker):  # the orphan this test made: end it, by its pid
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


GUARD_TASKS = '''
from cluster import Task


async def _later(params, ctx):
    pass


# QueueLock is a guard: enqueue.lua / unstage.lua apply it, no plugin code runs while promoting
later = Task(name="later", queue="later", run=_later, plugins=["QueueLock"])
'''

HOOK_TASKS = '''
import asyncio.sslproto

from cluster import Plugin, Task


class CountPromotions(Plugin):
    """A user plugin written against redis-py (`incr` is not a command the leader's own client has)."""
    name = "CountPromotions"
    has_enqueue_hooks = True

    async def before_enqueue(self, ctx):
        await ctx.redis.incr("test:promoted-through-hook")
        await ctx.redis.set("test:asyncio-tls", str(asyncio.sslproto.ssl is not None))
        return True


async def _later(params, ctx):
    pass


later = Task(name="later", queue="later", run=_later, plugins=[CountPromotions()])
'''


def _lead_with(node_cluster: NodeCluster, tmp_path: Path, tasks: str) -> int:
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "later.py").write_text(tasks)
    a = node_cluster.add("a", tasks_dir=d, queues="none").wait_ready()
    wait_until(a.is_leader, 10, 0.05, message="node a to lead")
    child = a.leader_process_pid()
    assert child is not None
    return child


def _promote_one(redis_url: str) -> redis.Redis:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.delete("test:promoted-through-hook", "test:asyncio-tls")
    due = int(time.time()) + 1
    r.rpush(f"resque:delayed:{due}", encode_job("later", "later", [{}]))
    r.zadd("resque:delayed_queue_schedule", {str(due): due})
    wait_until(lambda: r.llen("resque:queue:later") == 1, 10, 0.05, message="the delayed job to be promoted")
    return r


def _openssl_mapped(pid: int) -> list[str]:
    return [ln for ln in Path(f"/proc/{pid}/maps").read_text().splitlines() if "libssl" in ln or "libcrypto" in ln]


def test_leader_process_on_plain_redis_runs_without_redis_py_or_openssl(
        node_cluster: NodeCluster, redis_url: str, tmp_path: Path) -> None:
    """With plain-TCP Redis the leader process speaks RESP itself (cluster/resp.py): OpenSSL's
    libraries are not even mapped into it (redis-py and the ssl module stay out, ≈ 17 MB of RSS),
    before and after it promotes a delayed job of a task with a guard plugin (QueueLock)."""
    child = _lead_with(node_cluster, tmp_path, GUARD_TASKS)
    assert _openssl_mapped(child) == []
    _promote_one(redis_url)
    assert _openssl_mapped(child) == []  # redis-py (which imports ssl) never came in


def test_leader_process_serves_enqueue_hooks_redis_py_and_asyncio_tls(
        node_cluster: NodeCluster, redis_url: str, tmp_path: Path) -> None:
    """A task whose enqueue plugin runs its own code while the leader promotes: the plugin gets a
    redis-py client as `ctx.redis` (built when first needed) and asyncio with TLS (the leader
    process keeps the ssl module when such a plugin is loaded)."""
    _lead_with(node_cluster, tmp_path, HOOK_TASKS)
    r = _promote_one(redis_url)
    assert r.get("test:promoted-through-hook") == "1"
    assert r.get("test:asyncio-tls") == "True"
