"""Tasks that misbehave (issue 12): whatever a task does, its job fails with a reason and every
other job still runs; the node neither stops nor loses nor doubles a job.

In-process nodes where the node survives by construction of the test; real `corral node`
processes where the old behaviour was the process exiting (sys.exit) or running on (SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster.client import Client
from node.worker import Slot
from tests.support import REPO_ROOT, http_get, wait_until
from tests.support.inproc import NodeFactory, wait_for
from tests.support.jobtasks import TASKS as JOB_TASKS
from tests.support.jobtasks import read_log
from tests.support.nodes import NodeCluster

TASKS = '''
import asyncio, json, os, sys, threading, time
from pathlib import Path
from cluster import Task, task, Retry


@task(name="echo")
async def echo(params, ctx):
    await ctx.client.redis.rpush("results", json.dumps(params))


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text")


@task(name="unprintable")
async def unprintable(params, ctx):
    raise Unprintable()


@task(name="cancelme")
async def cancelme(params, ctx):
    raise asyncio.CancelledError()


@task(name="cancelself")
async def cancelself(params, ctx):
    asyncio.current_task().cancel()
    await asyncio.sleep(1)


@task(name="stubborn", timeout=0.3)
async def stubborn(params, ctx):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not Path(params["release"]).exists():
        try:
            await asyncio.sleep(0.02)
        except BaseException:  # swallows the timeout's cancellation, as a bare `except:` does
            pass


def cancel_in_thread(params, ctx):
    raise asyncio.CancelledError()


cancelsync = Task(name="cancelsync", run=cancel_in_thread)


@task(name="retrying")
async def retrying(params, ctx):
    await ctx.client.redis.rpush("attempts", ctx.attempt)
    if ctx.attempt < 3:
        raise Retry(0)


def _wait_release(params):
    deadline = time.monotonic() + params.get("max", 20)
    while time.monotonic() < deadline and not Path(params["release"]).exists():
        time.sleep(0.02)


def stuck(params, ctx):
    Path(params["started"]).write_text(threading.current_thread().name)
    _wait_release(params)


stuck1 = Task(name="stuck1", run=stuck, timeout=1)
stuck05 = Task(name="stuck05", run=stuck, timeout=0.5)


def quick(params, ctx):
    Path(params["file"]).write_text(str(time.time()))


quick_task = Task(name="quick", run=quick, timeout=1)


def spin(params, ctx):
    Path(params["file"]).write_text(str(os.getpid()))
    while True:
        pass


spin_task = Task(name="spin", run=spin, cpu_bound=True, timeout=1)


def whoami(params, ctx):
    Path(params["file"]).write_text(str(os.getpid()))


whoami_task = Task(name="whoami", run=whoami, cpu_bound=True)


def die(params, ctx):
    os._exit(7)


die_task = Task(name="die", run=die, cpu_bound=True)
'''


async def _results(client: Client) -> list[Any]:
    return [json.loads(x) for x in await client.redis.lrange("results", 0, -1)]


async def _failed_by_task(client: Client) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in await client.failed(0, -1):
        out.setdefault(e["payload"]["class"], []).append(e)
    return out


async def _healthz(node: Any) -> tuple[int, Any]:
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{node.http_port}/healthz", 2.0)
    return status, json.loads(body)


async def test_a_task_raising_cancelled_error_fails_its_job_and_the_slot_goes_on(
        inproc_node: NodeFactory, client: Client) -> None:
    # issue 12: one such job stopped all slots of 2 nodes; 0 of 10 later good jobs ran; healthz 200
    nodes = [await inproc_node(TASKS, concurrency=2) for _ in range(2)]
    for name in ("cancelme", "cancelself", "cancelsync", "cancelme", "cancelself"):
        await client.enqueue(name, {})
    await wait_for(lambda: _count_failed(client, 5), timeout=10, what="5 cancelled jobs failed")
    for i in range(10):
        await client.enqueue("echo", {"i": i})
    await wait_for(lambda: _count_results(client, 10), timeout=10, what="10 good jobs ran after them")
    failed = await _failed_by_task(client)
    assert sorted(failed) == ["cancelme", "cancelself", "cancelsync"]
    for e in failed["cancelme"] + failed["cancelself"] + failed["cancelsync"]:
        assert e["exception"] == "JobCancelled"
        assert "CancelledError" in e["error"] and "not stopping" in e["error"]
    for node in nodes:
        assert all(not t.done() for t in node.pool._tasks), "every slot still runs"
        code, body = await _healthz(node)
        assert code == 200 and body["ok"]
        assert await client.redis.hlen(client.keys.inflight(node.node_id)) == 0
    assert await client.length("default") == 0


async def test_an_async_task_that_swallows_its_cancellation_still_ends_at_its_timeout(
        inproc_node: NodeFactory, client: Client, tmp_path: Path) -> None:
    node = await inproc_node(TASKS, concurrency=1)
    release = tmp_path / "release"
    try:
        await client.enqueue("stubborn", {"release": str(release)})
        await client.enqueue("echo", {"after": "stubborn"})
        await wait_for(lambda: _count_results(client, 1), timeout=10, what="the next job ran on the only slot")
        (entry,) = await client.failed(0, -1)
        assert entry["exception"] == "JobTimeout"
        assert len(node.executor.abandoned) == 1
        status = json.loads((await asyncio.to_thread(http_get, f"http://127.0.0.1:{node.http_port}/status"))[1])
        assert status["node"]["task_coroutines_abandoned"] == 1
    finally:
        release.touch()
    await wait_for(lambda: _true(not node.executor.abandoned), timeout=5, what="the abandoned coroutine ended")


async def test_a_crashed_slot_is_restarted_and_a_crash_loop_fails_healthz(
        inproc_node: NodeFactory, client: Client, monkeypatch: Any) -> None:
    node = await inproc_node(TASKS, concurrency=1)
    slot = node.pool.slots[0]
    real_fetch = Slot._fetch
    faults = {"left": 1}

    async def flaky_fetch(self: Slot, *a: Any) -> Any:
        if faults["left"] > 0:
            faults["left"] -= 1
            raise ValueError("injected: a bug in the slot loop")
        return await real_fetch(self, *a)

    monkeypatch.setattr(Slot, "_fetch", flaky_fetch)
    slot.wake.set()  # the parked slot fetches again now and meets the fault
    await wait_for(lambda: _true(slot.restarts >= 1), timeout=5, what="the slot restarted")
    await client.enqueue("echo", {"after": "restart"})
    await wait_for(lambda: _count_results(client, 1), timeout=5, what="the restarted slot ran a job")
    assert (await _healthz(node))[0] == 200
    status = json.loads((await asyncio.to_thread(http_get, f"http://127.0.0.1:{node.http_port}/status"))[1])
    assert status["node"]["workers"][0]["restarts"] >= 1
    # now it keeps crashing: /healthz must say so instead of answering 200 for a dead worker
    faults["left"] = 10**6
    slot.wake.set()
    await wait_for(lambda: _true(slot.crashes >= 3), timeout=10, what="three crashes in a row")
    code, body = await _healthz(node)
    assert code == 503 and slot.name in body["reason"] and "ValueError" in body["reason"]
    faults["left"] = 0
    await wait_for(lambda: _true(slot.crashes == 0), timeout=10, what="the slot recovered")
    assert (await _healthz(node))[0] == 200


async def test_an_error_without_text_is_named_as_itself_in_its_failed_entry(
        inproc_node: NodeFactory, client: Client) -> None:
    # one builder for every failed entry (node/perform.py): an exception whose __str__ raises no
    # longer fails the failure itself (its entry used to name the RuntimeError from __str__)
    await inproc_node(TASKS)
    await client.enqueue("unprintable", {})
    await wait_for(lambda: _count_failed(client, 1), timeout=5, what="the job failed")
    [entry] = await client.failed(0, -1)
    assert (entry["exception"], entry["error"], entry["payload"]["class"]) == ("Unprintable", "Unprintable()", "unprintable")
    await client.enqueue("echo", {"after": "unprintable"})
    await wait_for(lambda: _count_results(client, 1), timeout=5, what="the slot went on")


async def test_retry_signal_counts_attempts(inproc_node: NodeFactory, client: Client) -> None:
    # issue 14: ctx.attempt counts every run, including runs after `raise Retry(delay)`
    await inproc_node(TASKS, scheduler=True)
    await client.enqueue("retrying", {"k": 1})
    await wait_for(lambda: _len(client, "attempts", 3), timeout=15, what="three runs")
    assert [int(x) for x in await client.redis.lrange("attempts", 0, -1)] == [1, 2, 3]
    assert await client.failed_count() == 0


async def test_timed_out_threads_are_counted_and_later_jobs_still_run(
        inproc_node: NodeFactory, client: Client, tmp_path: Path) -> None:
    # issue 12: --threads 2, two jobs past timeout=1 sleeping 20 s: 4 later jobs failed JobTimeout
    # without ever running
    node = await inproc_node(TASKS, concurrency=6, threads=2)
    release = tmp_path / "release"
    try:
        for i in range(2):
            await client.enqueue("stuck1", {"started": str(tmp_path / f"s{i}"), "release": str(release)})
        await wait_for(lambda: _count_failed(client, 2), timeout=10, what="both stuck jobs timed out")
        assert {e["exception"] for e in await client.failed(0, -1)} == {"JobTimeout"}
        files = [tmp_path / f"q{i}" for i in range(4)]
        for f in files:
            await client.enqueue("quick", {"file": str(f)})
        await wait_for(lambda: _stat(client, "processed", 4), timeout=10, what="4 quick jobs done")
        assert all(f.exists() for f in files), "every later job ran"
        assert await client.failed_count() == 2, "no job failed that did not run"
        threads = node.executor.threads
        assert (threads.busy, threads.timed_out) == (0, 2)
        assert node.metrics_registry.get_sample_value("corral_task_threads", {"state": "timed_out"}) == 2
        status = json.loads((await asyncio.to_thread(http_get, f"http://127.0.0.1:{node.http_port}/status"))[1])
        assert status["node"]["task_threads"]["timed_out"] == 2
    finally:
        release.touch()
    await wait_for(lambda: _true(node.executor.threads.timed_out == 0), timeout=5, what="stuck threads freed")


async def test_past_the_timed_out_cap_jobs_wait_for_a_thread_without_a_clock(
        inproc_node: NodeFactory, client: Client, tmp_path: Path) -> None:
    node = await inproc_node(TASKS, concurrency=3, threads=1)
    release = tmp_path / "release"
    try:
        for i in range(2):  # 1 thread + 1 replacement: both end up timed out, the cap for --threads 1
            await client.enqueue("stuck05", {"started": str(tmp_path / f"s{i}"), "release": str(release)})
        await wait_for(lambda: _count_failed(client, 2), timeout=10, what="both stuck jobs timed out")
        # no sync job can start: liveness says so (a restart is the only way to free the threads)
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{node.http_port}/healthz", 2.0)
        assert status == 503 and "task threads are stuck" in json.loads(body)["reason"], (status, body)
        out = tmp_path / "quick"
        await client.enqueue("quick", {"file": str(out)})
        threads = node.executor.threads
        await wait_for(lambda: _true(threads.waiting == 1), timeout=5, what="the quick job waits for a thread")
        # it waits well past its own 1 s timeout and does not fail: its clock has not started
        await asyncio.sleep(1.5)
        assert not out.exists() and await client.failed_count() == 2 and threads.waiting == 1
        released = time.time()
        release.touch()
        await wait_for(lambda: _stat(client, "processed", 1), timeout=10, what="the quick job ran")
        assert float(out.read_text()) >= released
        assert await client.failed_count() == 2
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{node.http_port}/healthz", 2.0)
        assert status == 200, body
    finally:
        release.touch()


async def test_cpu_bound_task_is_killed_at_its_timeout_and_its_process_replaced(
        inproc_node: NodeFactory, client: Client, tmp_path: Path) -> None:
    node = await inproc_node(TASKS, processes=1)
    spin_pid_file, who, who2 = tmp_path / "spin", tmp_path / "who", tmp_path / "who2"
    await client.enqueue("spin", {"file": str(spin_pid_file)})
    await wait_for(lambda: _count_failed(client, 1), timeout=30, what="the spinning job timed out")
    assert (await client.failed(0, -1))[0]["exception"] == "JobTimeout"
    spin_pid = int(spin_pid_file.read_text())
    await wait_for(lambda: _true(not _alive(spin_pid)), timeout=5, what="the spinning process killed")
    await client.enqueue("whoami", {"file": str(who)})
    await wait_for(lambda: _stat(client, "processed", 1), timeout=30, what="the next cpu_bound job ran")
    assert int(who.read_text()) not in (spin_pid, os.getpid())
    # a process that dies under its job fails that job and is replaced too
    await client.enqueue("die", {})
    await wait_for(lambda: _count_failed(client, 2), timeout=30, what="the dying job failed")
    died = next(e for e in await client.failed(0, -1) if e["payload"]["class"] == "die")
    assert died["exception"] == "TaskProcessDied" and "code 7" in died["error"]
    await client.enqueue("whoami", {"file": str(who2)})
    await wait_for(lambda: _stat(client, "processed", 2), timeout=30, what="a job after the death ran")
    assert node.executor.processes.replaced == {"timeout": 1, "died": 1, "shutdown": 0}
    for reason, n in (("timeout", 1), ("died", 1)):
        assert node.metrics_registry.get_sample_value("corral_task_processes_replaced_total", {"reason": reason}) == n


# ---- real node processes ---------------------------------------------------------------------

EXIT_TASKS = '''
import os, sys, time
from cluster import Task, task


@task(name="exitAsync")
async def exit_async(params, ctx):
    sys.exit(3)


def exit_sync(params, ctx):
    sys.exit(0)


def interrupt_sync(params, ctx):
    raise KeyboardInterrupt


def exit_cpu(params, ctx):
    sys.exit(5)


exit_sync_task = Task(name="exitSync", run=exit_sync)
interrupt_task = Task(name="interruptSync", run=interrupt_sync)
exit_cpu_task = Task(name="exitCpu", run=exit_cpu, cpu_bound=True)


@task(name="ok")
async def ok(params, ctx):
    await ctx.client.redis.rpush("results", "ok")
'''


def _enqueue(url: str, jobs: list[tuple[str, dict[str, Any]]]) -> None:
    async def go() -> None:
        async with await Client.connect(url) as c:
            for name, params in jobs:
                await c.enqueue(name, params)

    asyncio.run(go())


def _sync_client_call(url: str, fn: Any) -> Any:
    async def go() -> Any:
        async with await Client.connect(url) as c:
            return await fn(c)

    return asyncio.run(go())


def test_sys_exit_and_keyboard_interrupt_from_tasks_fail_their_jobs(tmp_path: Path, redis_url: str) -> None:
    # issue 12: sys.exit() in a task (async, or sync in a thread) made the node exit silently
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.py").write_text(EXIT_TASKS)
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, scheduler=False)
    try:
        (node,) = cluster.start(1)
        _enqueue(redis_url, [("exitAsync", {}), ("exitSync", {}), ("interruptSync", {}), ("exitCpu", {}),
                             ("ok", {})])
        failed = wait_until(lambda: (n := _sync_client_call(redis_url, lambda c: c.failed(0, -1))) and len(n) == 4
                            and n, 30, message="4 failed entries")
        by = {e["payload"]["class"]: e for e in failed}
        assert by["exitAsync"]["exception"] == "SystemExit" and "SystemExit(3)" in by["exitAsync"]["error"]
        assert by["exitSync"]["exception"] == "SystemExit"
        assert by["interruptSync"]["exception"] == "KeyboardInterrupt"
        assert by["exitCpu"]["exception"] == "SystemExit" and "5" in by["exitCpu"]["error"]
        wait_until(lambda: _sync_client_call(redis_url, lambda c: c.redis.llen("results")) == 1, 10,
                   message="the good job ran")
        assert node.running and node.healthz()
        logged = [r for r in node.log_records() if r.get("event") == "job_failure"]
        assert len(logged) == 4
    finally:
        cluster.close()


def test_a_task_file_calling_sys_exit_at_import_is_a_boot_error_naming_it(tmp_path: Path) -> None:
    # issue 12: the node exited 0 without a word
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    bad = tasks / "bad.py"
    bad.write_text("import sys\n\nsys.exit(0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run([sys.executable, "-m", "node", "node", "--tasks-dir", str(tasks), "--redis-url",
                           "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=60, env=env,
                          cwd=tmp_path)
    assert proc.returncode != 0
    assert str(bad) + ":3" in proc.stderr and "SystemExit(0)" in proc.stderr, proc.stderr


LONG_SYNC = '''
import json, os, time
from cluster import Task

LOG_DIR = os.environ["JOBLOG_DIR"]


def record(kind, params):
    with open(os.path.join(LOG_DIR, f"{os.getpid()}.jsonl"), "a") as fh:
        fh.write(json.dumps({"kind": kind, "id": params["id"], "pid": os.getpid(), "t": time.time()}) + "\\n")


def long_sync(params, ctx):
    record("start", params)
    deadline = time.monotonic() + params["s"]
    while time.monotonic() < deadline and not os.path.exists(params["release"]):
        time.sleep(0.02)
        record("tick", params)
    record("end", params)


long_task = Task(name="longSync", run=long_sync)
'''


def test_sigterm_past_the_grace_never_runs_a_pushed_back_job_twice_at_once(tmp_path: Path, redis_url: str) -> None:
    # issue 12: pushed back at 2.1 s, but the old copy ran on to 11 s next to another node's copy
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.py").write_text(LONG_SYNC)
    logs = tmp_path / "joblog"
    logs.mkdir()
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, env={"JOBLOG_DIR": str(logs)},
                          extra_args=["--shutdown-timeout", "2"])
    try:
        (a,) = cluster.start(1)
        release = tmp_path / "release"  # the job runs until the test releases it (30 s at most)
        _enqueue(redis_url, [("longSync", {"id": "j", "s": 30, "release": str(release)})])
        wait_until(lambda: any(r["kind"] == "start" and r["pid"] == a.pid for r in read_log(logs)), 10,
                   message="the job started on node a")
        (b,) = cluster.start(1)
        a_pid = a.pid
        sent = time.monotonic()
        a.sigterm()
        wait_until(lambda: not a.running, 10, message="node a exited")
        exited_after = time.monotonic() - sent
        wait_until(lambda: any(r["kind"] == "start" and r["pid"] == b.pid for r in read_log(logs)), 10,
                   message="node b took the pushed-back job")
        release.touch()
        wait_until(lambda: any(r["kind"] == "end" for r in read_log(logs)), 20, message="the job finished")
        records = read_log(logs)
        mine = [r for r in records if r["pid"] == a_pid]
        theirs = [r for r in records if r["pid"] == b.pid]
        assert not [r for r in mine if r["kind"] == "end"], "node a's copy was stopped, never completed"
        assert [r["kind"] for r in theirs if r["kind"] != "tick"] == ["start", "end"], "node b ran it once"
        overlap = max(r["t"] for r in mine) - min(r["t"] for r in theirs)
        print(f"\nSIGTERM past the grace: node a exited after {exited_after:.2f} s; its copy's last sign of life "
              f"{-overlap * 1000:.0f} ms before node b's copy started")
        assert overlap < 0.1, f"node a's copy ran {overlap:.3f} s after node b's copy started"
        assert exited_after < 2 + 3, f"node a exited {exited_after:.1f} s after SIGTERM (grace 2 s)"
        assert a.returncode == 0
        events = [r.get("event") for r in a.log_records()]
        assert "job_pushed_back" in events and "node_exit" in events
    finally:
        cluster.close()


def test_identical_payloads_in_flight_on_a_killed_node_are_all_recovered(tmp_path: Path, redis_url: str) -> None:
    # issue 12: 5 identical payloads in flight on one node, kill -9: 4 recovered, 1 marked poison
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "jobs.py").write_text(JOB_TASKS)
    logs = tmp_path / "joblog"
    logs.mkdir()
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, env={"JOBLOG_DIR": str(logs)},
                          extra_args=["--heartbeat-interval", "0.3", "--dead-after", "1.5"])
    try:
        cluster.add("lead", scheduler=True, queues="other").wait_ready(20)
        cluster.wait_leader(15)
        victim = cluster.add("victim", scheduler=False, concurrency=5)
        victim.wait_ready(20)
        _enqueue(redis_url, [("work", {"id": "same", "s": 5})] * 5)
        wait_until(lambda: sum(r["kind"] == "start" and r["pid"] == victim.pid for r in read_log(logs)) == 5, 10,
                   message="5 identical jobs running on the victim")
        victim.kill()
        survivor = cluster.add("survivor", scheduler=False, concurrency=5)
        survivor.wait_ready(20)
        failed = lambda: _sync_client_call(redis_url, lambda c: c.failed_count())  # noqa: E731
        wait_until(lambda: failed() > 0 or sum(r["kind"] == "start" and r["pid"] == survivor.pid
                                               for r in read_log(logs)) == 5, 20, message="recovery")
        assert failed() == 0, "no identical copy was taken for a poison pill"
        assert sum(r["kind"] == "start" and r["pid"] == survivor.pid for r in read_log(logs)) == 5
    finally:
        cluster.close()


# ---- helpers ----------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def _true(value: bool) -> bool:
    return value


async def _count_failed(client: Client, n: int) -> bool:
    return await client.failed_count() >= n


async def _count_results(client: Client, n: int) -> bool:
    return int(await client.redis.llen("results")) >= n


async def _len(client: Client, key: str, n: int) -> bool:
    return int(await client.redis.llen(key)) >= n


async def _stat(client: Client, kind: str, n: int) -> bool:
    return int(await client.redis.get(client.keys.stat(kind)) or 0) >= n
