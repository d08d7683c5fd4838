"""Workers against real Redis: results, failures with reasons, plugins, executors, graceful stop."""

from __future__ import annotations

import asyncio
import json
import os
import time

from cluster.client import Client
from cluster.wire import encode_job, js_dumps
from tests.support.inproc import NodeFactory, results, wait_for

TASKS = '''
import asyncio, json, os, threading, time
from cluster import Task, task, Retry


@task(name="echo")
async def echo(params, ctx):
    await ctx.client.redis.rpush("results", json.dumps({"params": params, "args": ctx.args, "worker": ctx.worker}))


@task(name="boom")
async def boom(params, ctx):
    raise ValueError("boom: " + str(params.get("n")))


@task(name="slow", timeout=0.2)
async def slow(params, ctx):
    await asyncio.sleep(5)


@task(name="sleepy")
async def sleepy(params, ctx):
    await ctx.client.redis.rpush("started", params["id"])
    await asyncio.sleep(params["seconds"])
    await ctx.client.redis.rpush("results", params["id"])


def in_thread(params, ctx):
    with open(params["file"], "w") as fh:
        fh.write(threading.current_thread().name)


sync_task = Task(name="inThread", run=in_thread)


def heavy(params, ctx):
    with open(params["file"], "w") as fh:
        fh.write(str(os.getpid()))


cpu = Task(name="heavy", run=heavy, cpu_bound=True)


async def flaky(params, ctx):
    await ctx.client.redis.rpush("attempts", str(ctx.attempt))
    raise RuntimeError("flaky")


retrying = Task(name="flaky", run=flaky, plugins=["Retry"], plugin_options={"Retry": {"limit": 2, "delay": 0}})


async def swallowed(params, ctx):
    raise RuntimeError("ignored")


noop = Task(name="swallowed", run=swallowed, plugins=["Noop"])


@task(name="again")
async def again(params, ctx):
    n = await ctx.client.redis.incr("again")
    if n == 1:
        raise Retry(0)
    await ctx.client.redis.rpush("results", "again-done")


async def locked(params, ctx):
    await ctx.client.redis.rpush("started", "x")
    await asyncio.sleep(0.3)


joblocked = Task(name="locked", run=locked, plugins=["JobLock"], plugin_options={"JobLock": {"re_enqueue": False}})
relocked = Task(name="relocked", run=locked, plugins=["JobLock"], plugin_options={"JobLock": {"enqueue_timeout": 30}})


async def locked_again(params, ctx):
    if await ctx.client.redis.incr("locked_again") == 1:
        raise Retry(0)
    await ctx.client.redis.rpush("results", "locked-again-done")


lockretry = Task(name="lockedAgain", run=locked_again, plugins=["JobLock", "Retry"],
                 plugin_options={"JobLock": {"enqueue_timeout": 30}})
queuelocked = Task(name="qlocked", run=echo.run, plugins=["QueueLock"])
delaylocked = Task(name="dlocked", run=echo.run, plugins=["DelayQueueLock"])
'''


async def test_job_runs_with_params_and_counts(inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node(TASKS)
    assert await client.enqueue("echo", {"to": "evan@example.com", "n": 1.5})
    await wait_for(lambda: _len(client, "results", 1), what="echo ran")
    out = json.loads((await results(client.redis))[0])
    assert out["params"] == {"to": "evan@example.com", "n": 1.5}
    assert out["args"] == [{"to": "evan@example.com", "n": 1.5}]
    assert out["worker"].startswith(node.node_id + ":")
    await wait_for(lambda: _stat(client, "processed", 1), what="stat:processed = 1")
    assert node.metrics.processed.labels("default", "echo")._value.get() == 1
    assert await client.length("default") == 0
    assert await client.redis.hlen(client.keys.inflight(node.node_id)) == 0


async def test_failures_land_in_failed_list_with_reasons_and_worker_goes_on(
        inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node(TASKS)
    await client.enqueue("boom", {"n": 7})
    await client.enqueue("slow")
    await client.enqueue("noSuchTask", {"a": 1}, unknown_ok=True)  # a worker must still fail it
    await client.redis.rpush(client.keys.queue("default"), "this is {not json")
    await client.redis.rpush(client.keys.queue("default"), '{"class": 5, "args": []}')
    await client.enqueue("echo", {"after": True})
    await wait_for(lambda: _failed(client, 5), what="5 failed entries")
    await wait_for(lambda: _len(client, "results", 1), what="the worker went on to the next job")
    entries = await client.failed()
    by_exc = {e["exception"]: e for e in entries}
    assert set(by_exc) == {"ValueError", "JobTimeout", "TaskNotFound", "JobDecodeError"}
    assert by_exc["ValueError"]["error"] == "boom: 7"
    assert isinstance(by_exc["ValueError"]["backtrace"], list) and by_exc["ValueError"]["backtrace"]
    assert by_exc["ValueError"]["payload"] == {"class": "boom", "queue": "default", "args": [{"n": 7}]}
    assert "0.2" in by_exc["JobTimeout"]["error"]
    assert "noSuchTask" in by_exc["TaskNotFound"]["error"]
    raw_first = entries[0]["raw"]
    assert list(json.loads(raw_first)) == ["worker", "queue", "payload", "exception", "error", "backtrace",
                                           "failed_at"]
    decode_errors = [e for e in entries if e["exception"] == "JobDecodeError"]
    assert len(decode_errors) == 2
    assert "this is {not json" in [e["payload"] for e in decode_errors]
    assert await client.failed_count() == 5
    assert int(await client.redis.get(client.keys.stat("failed")) or 0) == 5
    assert node.metrics.failed.labels("default", "boom")._value.get() == 1


async def test_sync_task_runs_in_a_thread_and_cpu_bound_in_another_process(
        inproc_node: NodeFactory, client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await inproc_node(TASKS)
    tfile, pfile = tmp_path / "thread.txt", tmp_path / "pid.txt"
    await client.enqueue("inThread", {"file": str(tfile)})
    await client.enqueue("heavy", {"file": str(pfile)})
    await wait_for(lambda: _stat(client, "processed", 2), timeout=30, what="both jobs done")
    assert tfile.read_text().startswith("corral-task")
    assert int(pfile.read_text()) != os.getpid()


async def test_retry_plugin_retries_limit_times_then_fails(inproc_node: NodeFactory, client: Client) -> None:
    await inproc_node(TASKS, scheduler=True)
    await client.enqueue("flaky", {"k": 1})
    await wait_for(lambda: _failed(client, 1), timeout=20, what="flaky failed for good")
    attempts = [int(x) for x in await client.redis.lrange("attempts", 0, -1)]
    assert attempts == [1, 2, 3]  # first run + 2 retries
    assert await client.failed_count() == 1
    assert int(await client.redis.get(client.keys.stat("failed")) or 0) == 3
    assert await client.redis.exists(client.keys.retry_counter("flaky", '[{"k":1}]')) == 0


async def test_noop_swallows_and_retry_signal_reruns(inproc_node: NodeFactory, client: Client) -> None:
    await inproc_node(TASKS, scheduler=True)
    await client.enqueue("swallowed")
    await client.enqueue("again")
    await wait_for(lambda: _len(client, "results", 1), timeout=10, what="again ran twice")
    assert await client.failed_count() == 0
    assert int(await client.redis.get("again") or 0) == 2


async def test_queue_lock_and_delay_queue_lock_refuse_enqueues(client: Client, inproc_node: NodeFactory) -> None:
    node = await inproc_node(TASKS, queues=("other",))
    c = node.client  # the node's client knows the tasks and their plugins
    assert await c.enqueue("qlocked", {"a": 1}) is True
    assert await c.enqueue("qlocked", {"a": 1}) is False
    assert await c.enqueue("qlocked", {"a": 2}) is True
    assert await client.length("default") == 2
    await c.enqueue_in(60, "dlocked", {"b": 1})
    assert await c.enqueue("dlocked", {"b": 1}) is False
    assert await c.enqueue("dlocked", {"b": 2}) is True


async def test_job_lock_keeps_one_copy_running(inproc_node: NodeFactory, client: Client) -> None:
    await inproc_node(TASKS, concurrency=3)
    for _ in range(3):
        await client.enqueue("locked")
    await wait_for(lambda: _stat(client, "processed", 1), what="one locked job done")
    await asyncio.sleep(0.3)
    assert await client.redis.llen("started") == 1
    assert await client.locks() == {}


async def test_job_lock_requeues_a_blocked_copy_with_its_own_bytes(inproc_node: NodeFactory, client: Client) -> None:
    # JobLock's re-enqueue goes through the worker's one re-enqueue (node/perform.py run_again):
    # the same payload bytes, delayed by enqueue_timeout, no stats, no failed entry, not run
    await inproc_node(TASKS)
    params = {"k": 1}
    await client.redis.set(client.keys.job_lock("relocked", "default", js_dumps([params])), "9999999999:other:1")
    t0 = time.time()
    await client.enqueue("relocked", params)
    await wait_for(lambda: _scheduled(client, "relocked", params), what="the blocked copy scheduled again")
    [due] = await client.scheduled_at("default", "relocked", params)  # exact bytes: no corral_attempt field
    assert t0 + 29 <= due <= time.time() + 31
    assert await client.length("default") == 0 and await client.redis.llen("started") == 0
    assert await client.failed_count() == 0 and not await client.redis.get(client.keys.stat("processed"))


async def test_a_retry_signal_releases_the_job_lock_of_its_run(inproc_node: NodeFactory, client: Client) -> None:
    # A run that ends with Retry is over: its JobLock goes (after-perform hooks run, as node-resque
    # runs afterPerform whatever the outcome), so the re-run is not refused by its own lock and
    # queued again for enqueue_timeout (30 s here); the Retry plugin counts it neither way.
    await inproc_node(TASKS)
    await client.enqueue("lockedAgain", {"k": 2})
    await wait_for(lambda: _len(client, "results", 1), timeout=10, what="the re-run after Retry(0)")
    assert await results(client.redis) == ["locked-again-done"]
    assert int(await client.redis.get("locked_again")) == 2
    assert await client.locks() == {}
    assert await client.failed_count() == 0


async def test_graceful_stop_pushes_back_unfinished_jobs(inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node(TASKS, concurrency=2, shutdown_timeout=0.3)
    await client.enqueue("sleepy", {"id": "short", "seconds": 0.05})
    await client.enqueue("sleepy", {"id": "long", "seconds": 30})
    await wait_for(lambda: _len(client, "started", 2), what="both jobs started")
    node.request_stop()
    await wait_for(lambda: _len(client, "default", 1, queue=True), timeout=5, what="long job pushed back")
    assert await results(client.redis) == ["short"]
    assert await client.queued("default") == [
        {"class": "sleepy", "queue": "default", "args": [{"id": "long", "seconds": 30}]}]
    await wait_for(lambda: _no_member(client, node.node_id), what="node deregistered")
    assert await client.redis.exists(client.keys.inflight(node.node_id)) == 0
    assert await client.workers() == {}


async def test_idle_worker_picks_up_within_milliseconds(inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node(TASKS, poll_interval=1.0)
    await asyncio.sleep(0.1)  # let every slot go idle on its wake event
    loop = asyncio.get_running_loop()
    samples = []
    for i in range(20):
        t0 = loop.time()
        await client.enqueue("echo", {"i": i})
        await wait_for(lambda i=i: _len(client, "results", i + 1), interval=0.001, what=f"job {i}")
        samples.append(loop.time() - t0)
    samples.sort()
    assert samples[10] < 0.05, f"median pickup {samples[10] * 1000:.1f} ms: the poll interval is 1 s"
    assert node.pool.poll_interval == 1.0


async def test_foreign_producer_jobs_are_found_by_polling(inproc_node: NodeFactory, client: Client) -> None:
    await inproc_node(TASKS, poll_interval=0.1)
    await client.redis.sadd(client.keys.queues, "default")
    await client.redis.rpush(client.keys.queue("default"), encode_job("echo", "default", [{"from": "node-resque"}]))
    await wait_for(lambda: _len(client, "results", 1), timeout=2, what="a job queued without a wake-up")


async def _len(client: Client, key: str, n: int, queue: bool = False) -> bool:
    k = client.keys.queue(key) if queue else key
    return int(await client.redis.llen(k)) >= n


async def _stat(client: Client, kind: str, n: int) -> bool:
    return int(await client.redis.get(client.keys.stat(kind)) or 0) >= n


async def _failed(client: Client, n: int) -> bool:
    return await client.failed_count() >= n


async def _scheduled(client: Client, task: str, params: dict[str, int]) -> bool:
    return bool(await client.scheduled_at("default", task, params))


async def _no_member(client: Client, node_id: str) -> bool:
    return node_id not in await client.members()
