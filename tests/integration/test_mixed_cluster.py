"""Mixed resque clusters (issue 15): Corral nodes beside real node-resque workers and scheduler
and a real pyres worker, on one Redis namespace. Nothing lost, nothing run twice, every side's
tools still work.

Real clients only: node-resque from tests/interop (npm, pinned), pyres 1.5 from its own venv
(`.tools/pyres-venv`, requirements/pyres.lock, made by scripts/install-test-deps.sh); Corral as
`corral node` processes. Missing pyres skips on a developer's machine and fails under CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from cluster import Client
from cluster.clock import SYSTEM_CLOCK
from cluster.election.base import Term
from cluster.keys import Keys
from cluster.observe import Observer
from cluster.recovery import Recovery
from cluster.task import Registry, Task
from cluster.wire import encode_job
from tests.integration import test_interop as interop
from tests.integration.test_interop import TASKS, NodeScript, Records, _host_port, queue_ops
from tests.support import REPO_ROOT, missing, wait_until, wait_until_async
from tests.support.nodes import NodeCluster, NodeProcess

NS = "resque"
PYRES_PYTHON = REPO_ROOT / ".tools" / "pyres-venv" / "bin" / "python"
WORKER_NAME = re.compile(r"^(?P<node>[^:]+):(?P<pid>\d+)\+(?P<slot>\d+)$")

MIXED_TASKS = TASKS + '''

from cluster import Task


def _flaky(params, ctx):
    _record("attempt", params, ctx)
    raise RuntimeError("flaky: " + json.dumps(params, sort_keys=True))


# Retry limit 2 = 3 attempts = node-resque's retryLimit 3 (tests/interop/worker.js)
flaky = Task(name="flaky", run=_flaky, plugins=["Retry"], plugin_options={"Retry": {"limit": 2, "delay": 0.1}})
'''


# -- fixtures -----------------------------------------------------------------------------------


# test_interop's fixtures; corral_nodes runs on the tasks_dir below
records = interop.records
corral_nodes = interop.corral_nodes
node_scripts = interop.node_scripts
client = interop.client
r = interop.r


@pytest.fixture
def tasks_dir(tmp_path: Path, records: Records) -> Path:
    return interop.write_tasks(tmp_path, records, MIXED_TASKS)


@pytest.fixture
def pyres_python() -> Path:
    if not PYRES_PYTHON.exists():
        missing(f"pyres is not installed in {PYRES_PYTHON.parent.parent} (scripts/install-test-deps.sh)")
    return PYRES_PYTHON


async def _workers(r: Redis) -> set[str]:
    return set(await r.smembers(f"{NS}:workers"))


# -- Corral workers look like resque workers ----------------------------------------------------


async def test_corral_workers_are_resque_shaped_and_come_back_after_a_foreign_cleanup(
        node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]], records: Records,
        client: Client, r: Redis) -> None:
    [node] = corral_nodes(1, concurrency=2, extra_args=["--heartbeat-interval", "0.5", "--dead-after", "3"])
    members = await _workers(r)
    assert len(members) == 2, members
    names = set()
    for m in members:
        host, pid, queues = m.split(":")  # what pyres and Ruby resque do
        assert queues == "default" and node.owns(host)
        name = f"{host}:{pid}"
        assert WORKER_NAME.match(name), name
        names.add(name)
    # node-resque splits them into the same names
    assert set(queue_ops(node_resque_dir, redis_url, [["workers"]])[0]) == names
    # Ruby resque's heartbeat hash: every worker, ISO 8601, fresh
    heartbeats = await r.hgetall(f"{NS}:workers:heartbeat")
    assert set(heartbeats) == members
    for value in heartbeats.values():
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", value), value

    # per-worker stats exist once a job ran
    await client.enqueue("record", {"n": 1})
    [done] = records.wait(1)
    await wait_until_async(lambda: _has(r, f"{NS}:stat:processed:{done['worker']}"), 5, message="per-worker stat")

    # node-resque's forceCleanWorker (what its cleanOldWorkers calls) removes a live Corral worker:
    # the node puts it back at its next heartbeat
    victim = sorted(names)[0]
    assert queue_ops(node_resque_dir, redis_url, [["forceCleanWorker", victim], ["workers"]])[1].get(victim) is None
    await wait_until_async(lambda: _contains(r, f"{victim}:default"), 5, message="the worker registered again")
    wait_until(lambda: any(x.get("event") == "workers_re_registered" for x in node.log_records()), 5,
               message="the node logged putting its worker back")
    await wait_until_async(lambda: _has(r, f"{NS}:worker:ping:{victim}"), 5, message="its ping back")

    # a graceful stop removes everything the workers wrote, stats included
    node.send_signal(signal.SIGTERM)
    assert node.wait_exit(30) == 0
    assert await _workers(r) == set()
    assert await r.hlen(f"{NS}:workers:heartbeat") == 0
    left = [k for k in await r.keys(f"{NS}:*") if any(n in k for n in names)]
    assert left == [], left


async def _has(r: Redis, key: str) -> bool:
    return bool(await r.exists(key))


async def _contains(r: Redis, member: str) -> bool:
    return bool(await r.sismember(f"{NS}:workers", member))


def test_pyres_worker_starts_and_works_beside_two_corral_nodes(
        pyres_python: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]], tmp_path: Path) -> None:
    nodes = corral_nodes(2)
    import redis as sync_redis

    raw = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    corral_workers = set(raw.smembers(f"{NS}:workers"))
    assert len(corral_workers) == 2
    jobs_dir = tmp_path / "pyres_jobs"
    jobs_dir.mkdir()
    out = tmp_path / "pyres_out.jsonl"
    (jobs_dir / "pyres_jobs.py").write_text(
        "import json\n\n\nclass Record:\n    queue = 'pyresq'\n\n    @staticmethod\n    def perform(params):\n"
        f"        with open({str(out)!r}, 'a') as fh:\n            fh.write(json.dumps(params) + '\\n')\n",
        encoding="utf-8")
    raw.sadd(f"{NS}:queues", "pyresq")
    for i in range(5):
        raw.rpush(f"{NS}:queue:pyresq", encode_job("pyres_jobs.Record", "pyresq", [{"n": i}]))
    host, port = _host_port(redis_url)
    proc = subprocess.run([str(pyres_python), str(REPO_ROOT / "tests" / "interop" / "pyres_worker.py"), host, port,
                           "pyresq", "5", "20"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(jobs_dir)}, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "started" and events[-1] == {"event": "end", "jobs": 5, "pruned_ok": True}
    ran = sorted(json.loads(line)["n"] for line in out.read_text().splitlines())
    assert ran == [0, 1, 2, 3, 4]
    # pyres' prune left the live Corral workers alone, and Corral still works
    assert corral_workers <= set(raw.smembers(f"{NS}:workers"))
    assert all(n.running for n in nodes)
    raw.close()


# -- Plugins are node-resque's ------------------------------------------------------------------


async def test_retry_across_sides_runs_exactly_the_configured_attempts(
        node_scripts: Callable[..., NodeScript], corral_nodes: Callable[..., list[NodeProcess]], records: Records,
        client: Client, r: Redis) -> None:
    """Corral `limit: 2` (retries) = node-resque `retryLimit: 3` (attempts): one counter for both.
    node-resque's worker runs the first attempts (Corral's leader serves another queue and
    promotes the retries), then Corral workers run the rest."""
    corral_nodes(1, queues="other")
    worker = node_scripts("worker.js", {"queues": ["default"], "name": "nr-retry", "seconds": 60, "timeout": 50,
                                        "retryLimit": 3, "retryDelay": 100, "expect": 8})
    worker.wait_event("started", 15)
    jobs = 8
    for i in range(jobs):
        await client.enqueue("flaky", {"i": i})
    worker.wait_event("end", 30)
    corral_nodes(1, queues="default")

    async def all_failed() -> bool:
        return await client.failed_count() >= jobs

    await wait_until_async(all_failed, 45, message=f"{jobs} failed entries")
    # settle: nothing queued or delayed is left to run again
    await wait_until_async(lambda: _drained(r), 10, message="queue and delayed schedule empty")
    corral_attempts = [x["params"]["i"] for x in records.all("attempt")]
    node_attempts = [e["args"][0]["i"] for e in worker.seen("attempt")]
    per_job = {i: corral_attempts.count(i) + node_attempts.count(i) for i in range(jobs)}
    assert per_job == {i: 3 for i in range(jobs)}, (per_job, corral_attempts, node_attempts)
    assert corral_attempts and node_attempts  # both sides ran attempts
    assert await client.failed_count() == jobs
    assert not await r.keys(f"{NS}:resque-retry:*")


async def _drained(r: Redis) -> bool:
    return await r.llen(f"{NS}:queue:default") == 0 and await r.zcard(f"{NS}:delayed_queue_schedule") == 0


# -- Foreign workers are first-class ------------------------------------------------------------


@pytest.mark.parametrize("policy", ["retry", "fail"])
async def test_node_resque_worker_killed_mid_job_is_handled_once_while_corral_leads(
        policy: str, node_scripts: Callable[..., NodeScript], node_cluster: NodeCluster,
        corral_nodes: Callable[..., list[NodeProcess]], records: Records, client: Client, r: Redis) -> None:
    # the Corral node serves another queue, so the node-resque worker surely takes the job
    corral_nodes(1, queues="other", extra_args=["--foreign-stuck-timeout", "3", "--foreign-stuck-jobs", policy])
    node_cluster.wait_leader(15)
    worker = node_scripts("worker.js", {"queues": ["default"], "name": "nr-victim", "seconds": 60, "timeout": 200})
    worker.wait_event("started", 15)
    await client.enqueue("slow", {"seconds": 1, "tag": "victim"})
    worker.wait_event("job", 15)
    worker.kill()  # SIGKILL mid-job: no untrack, its ping stops
    assert "nr-victim:default" in await _workers(r)
    # a live node-resque worker (pinging) on another queue must never be removed
    live = node_scripts("worker.js", {"queues": ["elsewhere"], "name": "nr-live", "seconds": 60, "timeout": 200})
    live.wait_event("started", 15)

    # the leader re-enqueues (or fails) the job; a Corral node on `default` then runs what is queued
    await wait_until_async(lambda: _lacks(r, "nr-victim:default"), 20, message="the dead worker removed")
    corral_nodes(1, queues="default")
    if policy == "retry":
        records.wait(1, kind="slow-end", timeout=20)
    await asyncio.sleep(3)  # a second clean or re-enqueue would show up within the stuck timeout
    if policy == "retry":
        assert [x["params"]["tag"] for x in records.all("slow-start")] == ["victim"]
        assert await client.failed_count() == 0
    else:
        assert records.all("slow-start") == []
        [entry] = await client.failed(0, 10)
        assert entry["worker"] == "nr-victim" and entry["backtrace"][1] == "corral#foreignCleanWorker"
        assert entry["payload"] == {"class": "slow", "queue": "default", "args": [{"seconds": 1, "tag": "victim"}]}
    assert await r.exists(f"{NS}:worker:ping:nr-victim", f"{NS}:worker:nr-victim:default") == 0
    assert "nr-live:elsewhere" in await _workers(r)


async def _lacks(r: Redis, member: str) -> bool:
    return not await r.sismember(f"{NS}:workers", member)


# -- Recovery exactly once across sides ---------------------------------------------------------


def _term(token: str) -> Term:
    return Term(node="test-leader", token=token, epoch=1, since=time.time(), deadline=time.monotonic() + 3600,
                clock=SYSTEM_CLOCK)


async def _recovery(r: Redis, registry: Registry | None = None) -> tuple[Recovery, Term]:
    token = "test-leader/1/x"
    # a term holds both locks: recovery fences on Corral's own, the foreign cleanup on the resque lock
    await r.set(Keys(NS).corral_lock, token)
    await r.set(Keys(NS).leader_lock, token)
    rec = Recovery(redis=r, keys=Keys(NS), clock=SYSTEM_CLOCK, observer=Observer(), registry=registry or Registry([]),
                   dead_after=1.0)
    return rec, _term(token)


async def test_corral_job_node_resque_already_retried_is_not_recovered_again(
        node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]], records: Records,
        client: Client, r: Redis) -> None:
    """A Corral node killed mid-job; node-resque's scheduler cleans its worker as stuck and
    re-enqueues the job (forceCleanWorker + retryStuckJobs, the calls its checkStuckWorkers
    makes); Corral's recovery of the dead node then must not enqueue it a second time."""
    [victim] = corral_nodes(1, scheduler=False)
    await client.enqueue("slow", {"seconds": 30, "tag": "once"})
    [started] = records.wait(1, kind="slow-start")
    victim.kill()
    name = started["worker"]
    results = queue_ops(node_resque_dir, redis_url, [["forceCleanWorker", name], ["retryStuckJobs"]])
    assert results[0]["worker"] == name  # node-resque failed it ...
    assert await r.llen(f"{NS}:queue:default") == 1  # ... and re-enqueued it
    assert await client.failed_count() == 0

    rec, term = await _recovery(r)
    await asyncio.sleep(1.1)  # past dead_after
    assert await rec.tick(term) == 0
    assert await r.llen(f"{NS}:queue:default") == 1  # still one copy
    assert await r.zcard(f"{NS}:corral:members") == 0  # the dead node's records are gone
    assert not [k for k in await r.keys(f"{NS}:corral:inflight:*")]


async def test_corral_recovery_leaves_nothing_for_a_foreign_cleaner(
        node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]], records: Records,
        client: Client, r: Redis) -> None:
    [victim] = corral_nodes(1, scheduler=False)
    await client.enqueue("slow", {"seconds": 30, "tag": "once"})
    [started] = records.wait(1, kind="slow-start")
    victim.kill()
    rec, term = await _recovery(r)
    await asyncio.sleep(1.1)
    assert await rec.tick(term) == 1
    # node-resque's stuck-worker check reads ping keys; Ruby's prune reads the heartbeat hash
    assert await r.keys(f"{NS}:worker:ping:*") == []
    assert await r.hlen(f"{NS}:workers:heartbeat") == 0
    assert await _workers(r) == set()
    assert queue_ops(node_resque_dir, redis_url, [["cleanOldWorkers", 0]]) == [{}]
    assert await r.llen(f"{NS}:queue:default") == 1 and await client.failed_count() == 0
    assert not [k for k in await r.keys(f"{NS}:stat:*:*") if started["worker"] in k]


# -- Issue 20.2: recovery deletes only the dead node's JobLock ----------------------------------


async def test_recovery_keeps_a_joblock_a_live_node_holds(r: Redis) -> None:
    """Node M holds the JobLock and runs the job; node N fetched a duplicate and died before its
    before_perform: recovering N must leave M's lock (and delete a lock N itself held)."""
    locked = Task(name="locked", run=lambda p, c: None, plugins=["JobLock"])
    registry = Registry([locked])
    keys = Keys(NS)
    payload = encode_job("locked", "default", [{"k": 1}])
    lock_key = keys.job_lock("locked", "default", '[{"k":1}]')
    other_payload = encode_job("locked", "default", [{"k": 2}])
    own_lock = keys.job_lock("locked", "default", '[{"k":2}]')
    await r.set(lock_key, f"{int(time.time()) + 3601}:m-aaaaaa:0.1", ex=3600)  # live node M holds it
    await r.set(own_lock, f"{int(time.time()) + 3601}:n-bbbbbb:1.1", ex=3600)  # dead node N held this one
    await r.zadd(keys.members, {"n-bbbbbb": 0})
    await r.hset(keys.inflight("n-bbbbbb"), mapping={"0": payload, "0:q": "default", "0:e": "0.7",
                                                     "1": other_payload, "1:q": "default", "1:e": "1.1"})
    await r.hset(keys.node("n-bbbbbb"), "workers", "n-bbbbbb:1+0:default\nn-bbbbbb:1+1:default")
    await r.sadd(keys.workers, "n-bbbbbb:1+0:default", "n-bbbbbb:1+1:default")
    rec, term = await _recovery(r, registry)
    assert await rec.tick(term) == 2
    assert await r.get(lock_key) is not None  # M's lock stays
    assert await r.get(own_lock) is None  # N's own lock went with it


# -- Corral-only bookkeeping stays bounded and correct ------------------------------------------


async def _qtimes_units(r: Redis, q: str) -> int:
    return sum(int(e.partition(":")[0]) for e in await r.lrange(f"{NS}:corral:qtimes:{q}", 0, -1))


async def test_qtimes_follow_the_queue_when_node_resque_consumes_corral_jobs(
        node_scripts: Callable[..., NodeScript], corral_nodes: Callable[..., list[NodeProcess]], client: Client,
        r: Redis) -> None:
    [node] = corral_nodes(1, queues="other", extra_args=["--metrics-refresh", "0.2"])
    for i in range(300):
        await client.enqueue("record", {"i": i}, queue="nrq")
    assert await _qtimes_units(r, "nrq") == 300
    first = node_scripts("worker.js", {"queues": ["nrq"], "name": "nr-a", "seconds": 60, "timeout": 20,
                                       "expect": 200})
    first.wait_event("end", 60)
    left = await r.llen(f"{NS}:queue:nrq")
    assert 0 < left <= 100

    async def in_step() -> bool:
        return await _qtimes_units(r, "nrq") == await r.llen(f"{NS}:queue:nrq")

    await wait_until_async(in_step, 10, message="qtimes trimmed to the jobs left")
    # the oldest job's age is the age of a job still queued, not of one node-resque took long ago
    age = node.metric("corral_oldest_job_age_seconds", {"queue": "nrq"})
    assert age is not None and age < 30
    rest = node_scripts("worker.js", {"queues": ["nrq"], "name": "nr-b", "seconds": 60, "timeout": 20,
                                      "expect": left})
    rest.wait_event("end", 60)
    await wait_until_async(lambda: _gone(r, f"{NS}:corral:qtimes:nrq"), 10, message="qtimes empty with the queue")


async def _gone(r: Redis, key: str) -> bool:
    return not await r.exists(key)


# -- Must show: 2,000 jobs, both producers, normal and delayed, each run exactly once ----------


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


@pytest.mark.parametrize("leader", ["corral", "node-resque"])
async def test_mixed_cluster_runs_2000_jobs_from_both_producers_exactly_once(
        leader: str, node_resque_dir: Path, redis_url: str, node_scripts: Callable[..., NodeScript],
        node_cluster: NodeCluster, corral_nodes: Callable[..., list[NodeProcess]], records: Records,
        client: Client, r: Redis) -> None:
    """2 Corral nodes + a node-resque worker + a node-resque scheduler on one namespace; 500 jobs
    each: Corral now, Corral delayed, node-resque now, node-resque delayed (1-3 s). Whoever
    leads (Corral, or node-resque's scheduler holding the lock from the start), every job runs
    exactly once, on either side."""
    if leader == "node-resque":
        sched = node_scripts("scheduler.js", {"name": "nr-leader", "seconds": 120, "timeout": 100})
        sched.wait_event("leader", 10)
        corral_nodes(2)
    else:
        corral_nodes(2)
        node_cluster.wait_leader(15)
        sched = node_scripts("scheduler.js", {"name": "nr-follower", "seconds": 120, "timeout": 100})
        sched.wait_event("started", 10)
    worker = node_scripts("worker.js", {"queues": ["default"], "name": "nr-mixed", "seconds": 120, "timeout": 50})
    worker.wait_event("started", 15)

    n = 500
    ids = {"corral-now": range(0, n), "corral-later": range(n, 2 * n), "nr-now": range(2 * n, 3 * n),
           "nr-later": range(3 * n, 4 * n)}
    now_ms = int(time.time() * 1000)
    for batch in _chunks(list(ids["nr-now"]), 250):
        assert queue_ops(node_resque_dir, redis_url, [["enqueue", "default", "record", [{"id": i}]] for i in batch])
    for batch in _chunks(list(ids["nr-later"]), 250):
        queue_ops(node_resque_dir, redis_url, [["enqueueAt", now_ms + 1000 + (i % 3) * 1000, "default", "record",
                                                [{"id": i}]] for i in batch])
    for i in ids["corral-now"]:
        await client.enqueue("record", {"id": i})
    for i in ids["corral-later"]:
        await client.enqueue_in(1 + i % 3, "record", {"id": i})

    def ran() -> list[int]:
        corral = [x["params"]["id"] for x in records.all("record")]
        node = [e["job"]["args"][0]["id"] for e in worker.seen("success")]
        return corral + node

    wait_until(lambda: len(ran()) >= 4 * n, 90, message=f"{4 * n} jobs run")
    await wait_until_async(lambda: _all_drained(r), 15, message="queue and delayed schedule empty")
    await asyncio.sleep(1.0)  # a late duplicate would show up now
    done = ran()
    assert sorted(done) == list(range(4 * n)), f"{len(done)} runs, {len(set(done))} distinct"
    corral_runs = len(records.all("record"))
    assert 0 < corral_runs < 4 * n  # both sides worked
    assert await client.failed_count() == 0
    promoted_by_node_resque = len(sched.seen("transferredJob"))
    if leader == "corral":
        assert promoted_by_node_resque == 0
    else:
        assert promoted_by_node_resque == 2 * n


async def _all_drained(r: Redis) -> bool:
    return (await r.llen(f"{NS}:queue:default") == 0 and await r.zcard(f"{NS}:delayed_queue_schedule") == 0
            and await r.llen(f"{NS}:corral:promoting") == 0)


async def test_corral_clean_old_workers_judges_node_resque_workers_by_their_own_pings(
        node_scripts: Callable[..., NodeScript], client: Client, r: Redis) -> None:
    worker = node_scripts("worker.js", {"queues": ["default"], "name": "nr-busy", "seconds": 30, "timeout": 200})
    worker.wait_event("started", 15)
    await client.enqueue("slow", {"seconds": 4})
    worker.wait_event("job", 15)
    await asyncio.sleep(1.5)  # its job started 1.5 s ago; it pings every 0.2 s meanwhile
    assert "nr-busy" not in await client.clean_old_workers(1.0)
    assert "nr-busy:default" in await _workers(r)
    worker.kill()
    await asyncio.sleep(1.5)
    removed = await client.clean_old_workers(1.0)
    assert removed["nr-busy"]["payload"]["class"] == "slow"
    assert "nr-busy:default" not in await _workers(r)


async def test_corral_node_killed_while_node_resque_leads_its_job_runs_once_more(
        node_scripts: Callable[..., NodeScript], node_cluster: NodeCluster,
        corral_nodes: Callable[..., list[NodeProcess]], records: Records, client: Client, r: Redis) -> None:
    """The issue's run: node-resque's scheduler leads (stuckWorkerTimeout 5 s, retryStuckJobs) and
    re-enqueues the job of a Corral node killed mid-job; when node-resque's scheduler stops and a
    Corral node leads, its recovery of the dead node must not enqueue the job again (it ran 3 times)."""
    sched = node_scripts("scheduler.js", {"name": "nr-leader", "seconds": 120, "timeout": 200,
                                          "stuckWorkerTimeout": 5000, "retryStuckJobs": True})
    sched.wait_event("leader", 10)
    fast = ["--heartbeat-interval", "0.5", "--dead-after", "3"]
    [victim] = corral_nodes(1, extra_args=fast)
    await client.enqueue("slow", {"seconds": 20, "tag": "once"})
    [started] = records.wait(1, kind="slow-start")
    victim.kill()
    cleaned = sched.wait_event("cleanStuckWorker", 20)
    assert cleaned["worker"] == started["worker"]
    corral_nodes(1, extra_args=fast)  # runs the re-enqueued copy (a short wait: it sleeps 20 s)
    wait_until(lambda: len(records.all("slow-start")) == 2, 20, message="the job re-run once")
    sched.finish()  # node-resque's scheduler releases the lock: a Corral node leads and recovers the dead one
    node_cluster.wait_leader(15)
    await wait_until_async(lambda: _no_member(r, victim), 15, message="the dead node recovered")
    await asyncio.sleep(1.0)
    assert len(records.all("slow-start")) == 2  # the killed run and the one re-run
    assert await r.llen(f"{NS}:queue:default") == 0
    assert await client.failed_count() == 0  # retryStuckJobs took its failed entry back


async def _no_member(r: Redis, node: NodeProcess) -> bool:
    return not any(node.owns(m) for m in await r.zrange(f"{NS}:corral:members", 0, -1))


async def test_corral_clean_old_workers_leaves_a_dead_nodes_workers_to_recovery(
        corral_nodes: Callable[..., list[NodeProcess]], records: Records, client: Client, r: Redis) -> None:
    """Corral's own cleanup must not take a dead node's worker record away from recovery: the
    record is what tells recovery a foreign cleaner did not handle the job."""
    [victim] = corral_nodes(1, scheduler=False)
    await client.enqueue("slow", {"seconds": 30, "tag": "kept"})
    [started] = records.wait(1, kind="slow-start")
    victim.kill()
    await asyncio.sleep(1.1)
    assert started["worker"] not in await client.clean_old_workers(0.5)
    rec, term = await _recovery(r)
    assert await rec.tick(term) == 1
    assert await r.llen(f"{NS}:queue:default") == 1


async def test_foreign_duty_judges_each_client_by_its_own_signal(r: Redis) -> None:
    """Ruby resque's records as Ruby writes them (no Ruby on the test machine): a worker whose
    `workers:heartbeat` entry is stale is removed and its job failed; one with a fresh heartbeat
    and an old job is kept; a pyres-style worker that writes no liveness at all is never judged."""
    from cluster.foreign import ForeignWorkers
    from cluster.membership import ruby_time

    now = time.time()
    job = {"queue": "default", "run_at": ruby_time(now - 7200),
           "payload": {"class": "Report", "args": [{"id": 1}]}}
    await r.sadd(f"{NS}:workers", "rb-dead:11:default", "rb-live:12:default", "pyhost:13:default")
    await r.hset(f"{NS}:workers:heartbeat", mapping={"rb-dead:11:default": ruby_time(now - 600),
                                                     "rb-live:12:default": ruby_time(now - 5)})
    for wid in ("rb-dead:11:default", "rb-live:12:default", "pyhost:13:default"):
        await r.set(f"{NS}:worker:{wid}", json.dumps(job))
        name = wid.rsplit(":", 1)[0]  # what each client's untrack removes besides the record
        for key in (f"worker:{wid}:started", f"stat:processed:{name}", f"stat:failed:{wid}", f"worker:{name}"):
            await r.set(f"{NS}:{key}", "1")
    _rec, term = await _recovery(r)  # sets the leader lock the duty's fenced script checks
    duty = ForeignWorkers(redis=r, keys=Keys(NS), clock=SYSTEM_CLOCK, observer=Observer(), stuck_timeout=300)
    assert await duty.tick(term) == 1
    assert await _workers(r) == {"rb-live:12:default", "pyhost:13:default"}
    assert await r.hkeys(f"{NS}:workers:heartbeat") == ["rb-live:12:default"]
    [entry] = [json.loads(e) for e in await r.lrange(f"{NS}:failed", 0, -1)]
    assert entry["worker"] == "rb-dead:11" and entry["payload"] == job["payload"]
    assert not await r.keys(f"{NS}:*rb-dead*"), "the removed worker's keys"
    assert len(await r.keys(f"{NS}:*rb-live*")) == 5
    assert await duty.tick(term) == 0  # exactly once
