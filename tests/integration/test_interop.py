"""Corral and the real npm node-resque on one Redis namespace (docs/INTERFACE.md §5).

Node.js runs small scripts from tests/interop (node-resque pinned in its package.json), each
given the Redis host, port and namespace as arguments, bounded in time and exiting by itself:

- `queue.js`: a list of `Queue` calls, their results printed as JSON;
- `worker.js`: a node-resque `Worker` with jobs `record`, `boom`, `slow`, one JSON line per job;
- `scheduler.js`: a node-resque `Scheduler`, one JSON line per event (leader, transferredJob).

Corral runs as real `corral node` processes (`node_cluster`) with a tasks dir of the same task
names; each Corral task appends a JSON line to a file.
"""

from __future__ import annotations

import asyncio
import json
import queue as queue_mod
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from cluster import Client
from cluster.wire import encode_job, parse_date
from tests.support import wait_until, wait_until_async
from tests.support.nodes import NodeCluster, NodeProcess

NS = "resque"
FAILED_KEYS = ["worker", "queue", "payload", "exception", "error", "backtrace", "failed_at"]

# Params that differ between Python's and JavaScript's JSON spelling (docs/INTERFACE.md §5).
TRICKY_PARAMS: list[dict[str, Any] | None] = [
    {"to": "evan@example.com"},
    {"n": 1.0, "sum": 0.1 + 0.2, "tiny": 1e-7, "big": 1e21, "neg0": -0.0, "safe": 2**53 - 1},
    {"s": "Zoë 日本 😀 </script> a\u2028b", "ctl": "\n\t\u0001\u007f"},
    {"nested": {"z": [], "a": {}, "m": [1, [2, {"k": None}]]}, "t": True},
    None,  # [{}]: what periodic tasks enqueue
]

TASKS = '''
import asyncio, json, time
from cluster import task

OUT = __OUT__


def _record(kind, params, ctx):
    line = {"kind": kind, "task": ctx.task, "queue": ctx.queue, "params": params, "args": ctx.args,
            "raw": ctx.job.raw, "worker": ctx.worker, "at": time.time()}
    with open(OUT, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, ensure_ascii=False) + "\\n")


@task(name="record")
async def record(params, ctx):
    _record("record", params, ctx)


@task(name="boom")
async def boom(params, ctx):
    raise ValueError("boom: " + json.dumps(params, sort_keys=True))


@task(name="slow")
async def slow(params, ctx):
    _record("slow-start", params, ctx)
    await asyncio.sleep(params.get("seconds", 3))
    _record("slow-end", params, ctx)
'''


# -- Node scripts -------------------------------------------------------------------------------


def _host_port(redis_url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", str(parts.port or 6379)


def _argv(interop: Path, script: str, redis_url: str, arg: Any, namespace: str = NS) -> list[str]:
    node = shutil.which("node")
    assert node is not None  # node_resque_dir skipped (or failed under CI) otherwise
    return [node, str(interop / script), *_host_port(redis_url), namespace, json.dumps(arg)]


def queue_ops(interop: Path, redis_url: str, ops: list[list[Any]], namespace: str = NS) -> list[Any]:
    """Run node-resque Queue calls in order; their results."""
    proc = subprocess.run(_argv(interop, "queue.js", redis_url, ops, namespace), cwd=interop, capture_output=True,
                          text=True, encoding="utf-8", timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"queue.js exited {proc.returncode}: {proc.stderr}"
    result: list[Any] = json.loads(proc.stdout)
    return result


def run_worker(interop: Path, redis_url: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Run node-resque's Worker until it finished `expect` jobs (or `seconds`); its events."""
    timeout = options.get("seconds", 15) + 15
    proc = subprocess.run(_argv(interop, "worker.js", redis_url, options), cwd=interop, capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"worker.js exited {proc.returncode}: {proc.stderr}"
    return [json.loads(line) for line in proc.stdout.split("\n") if line.startswith("{")]  # not splitlines: U+2028


class NodeScript:
    """A long-running script (scheduler.js, worker.js) read line by line while it runs.

        sched = NodeScript(argv, cwd); sched.wait_event("leader", 10); events = sched.finish()
    """

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8")
        self.events: list[dict[str, Any]] = []
        self._lines: queue_mod.Queue[dict[str, Any] | None] = queue_mod.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def _drain(self, timeout: float) -> bool:
        """Move lines read so far into `events`; False once the script's output ended."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue_mod.Empty:
            return True
        if item is None:
            self._lines.put(None)
            return False
        self.events.append(item)
        return True

    def seen(self, event: str) -> list[dict[str, Any]]:
        """The events of this kind printed so far (no waiting)."""
        while True:
            try:
                item = self._lines.get_nowait()
            except queue_mod.Empty:
                break
            if item is None:
                self._lines.put(None)
                break
            self.events.append(item)
        return [e for e in self.events if e["event"] == event]

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if e["event"] == event]
            if found:
                return found[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._drain(min(remaining, 0.2)):
                found = [e for e in self.events if e["event"] == event]
                if found:
                    return found[0]
                raise AssertionError(f"no {event!r} event within {timeout}s; events: {self.events}; "
                                     f"stderr: {self._stderr()}")

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read()

    def finish(self, timeout: float = 20) -> list[dict[str, Any]]:
        """Close stdin (the script ends itself), wait for its exit; every event."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout)
        while self._drain(5):
            pass
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}: {self._stderr()}"
        return self.events

    def kill(self) -> None:
        """Kill it (by its own pid) if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def node_scripts(node_resque_dir: Path, redis_url: str) -> Iterator[Callable[..., NodeScript]]:
    """`node_scripts("scheduler.js", {...})` starts a script; every one is killed (by pid) after."""
    started: list[NodeScript] = []

    def start(script: str, options: dict[str, Any]) -> NodeScript:
        s = NodeScript(_argv(node_resque_dir, script, redis_url, {"stdin": True, **options}), node_resque_dir)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


# -- Corral side --------------------------------------------------------------------------------


class Records:
    """What Corral's tasks appended to their output file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = [json.loads(line) for line in self.path.read_text(encoding="utf-8").split("\n") if line]
        return [x for x in lines if kind is None or x["kind"] == kind]

    def wait(self, n: int, kind: str = "record", timeout: float = 20) -> list[dict[str, Any]]:
        return wait_until(lambda: len(self.all(kind)) >= n and self.all(kind), timeout,
                          message=f"{n} {kind!r} records from Corral tasks")


@pytest.fixture
def records(tmp_path: Path) -> Records:
    return Records(tmp_path / "out.jsonl")


def write_tasks(tmp_path: Path, records: Records, source: str = TASKS) -> Path:
    """A tasks dir holding `source` (with `__OUT__` = the records file)."""
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "interop_tasks.py").write_text(source.replace("__OUT__", repr(str(records.path))), encoding="utf-8")
    return d


@pytest.fixture
def tasks_dir(tmp_path: Path, records: Records) -> Path:
    return write_tasks(tmp_path, records)


@pytest.fixture
def corral_nodes(node_cluster: NodeCluster, tasks_dir: Path) -> Callable[..., list[NodeProcess]]:
    """`corral_nodes(n, queues="default", **kw)`: n ready `corral node`s on the interop tasks."""

    def start(n: int = 1, *, queues: str = "default", **kwargs: Any) -> list[NodeProcess]:
        extra = ["--poll-interval", "0.1", *kwargs.pop("extra_args", [])]
        return node_cluster.start(n, tasks_dir=tasks_dir, queues=queues, extra_args=extra, **kwargs)

    return start


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    c = await Client.connect(redis_url, namespace=NS)
    yield c
    await c.close()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[Redis]:
    raw = Redis.from_url(redis_url, decode_responses=True)
    yield raw
    await raw.aclose()


def _args_for(params: dict[str, Any] | None) -> list[Any]:
    return [params if params is not None else {}]


# -- node-resque enqueues, Corral runs ----------------------------------------------------------


async def test_jobs_enqueued_by_node_resque_run_on_corral(
        node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]], records: Records,
        client: Client, r: Redis) -> None:
    now_ms = int(time.time() * 1000)
    at_ms = now_ms + 1700
    immediate = [[{"to": "é@example.com", "n": 1.0, "f": 0.5}], [1, "two", None], [{"i": 3}]]
    ops: list[list[Any]] = [["enqueue", "default", "record", args] for args in immediate]
    ops += [["enqueueAt", at_ms, "default", "record", [{"when": "at"}]],
            ["enqueueIn", 1000, "default", "record", [{"when": "in"}]]]
    ops += [["encode", "default", "record", args] for args in [*immediate, [{"when": "at"}], [{"when": "in"}]]]
    ops += [["scheduledAt", "default", "record", [{"when": "at"}]]]
    results = queue_ops(node_resque_dir, redis_url, ops)
    assert results[:5] == [True, True, True, True, True]
    encoded = results[5:10]
    at_second = results[10][0]
    assert at_second == round(at_ms / 1000)  # node-resque buckets with Math.round (ms → s)

    corral_nodes(1)  # one node: its worker runs them, its leader promotes the delayed two
    done = records.wait(5)
    assert sorted(x["raw"] for x in done) == sorted(encoded)  # the exact bytes node-resque wrote
    by_raw = {x["raw"]: x for x in done}
    first = by_raw[encoded[0]]
    assert first["params"] == {"to": "é@example.com", "n": 1, "f": 0.5} and first["queue"] == "default"
    positional = by_raw[encoded[1]]
    assert positional["args"] == [1, "two", None] and positional["params"] == {}  # args other than [params]
    # the delayed job never ran before its bucket second
    assert by_raw[encoded[3]]["at"] >= at_second - 0.05

    async def drained() -> bool:
        return (await client.length("default") == 0 and await r.zcard(f"{NS}:delayed_queue_schedule") == 0
                and not await r.keys(f"{NS}:timestamps:*") and not await r.keys(f"{NS}:delayed:*"))

    await wait_until_async(drained, 10, message="queues and delayed schedule empty")
    assert (await client.stats())["processed"] == 5
    assert await client.failed_count() == 0


async def test_ruby_resque_jobs_run_on_corral(
        corral_nodes: Callable[..., list[NodeProcess]], records: Records, client: Client, r: Redis) -> None:
    """Key orders Ruby resque and resque-scheduler write (docs/INTERFACE.md §5) run too, bytes kept."""
    ruby = ['{"class":"record","args":[{"from":"ruby"}]}',
            '{"class":"record","args":[{"from":"scheduler"}],"queue":"default"}',
            '{"args":[7],"queue":"default","class":"record"}']
    await r.sadd(f"{NS}:queues", "default")
    await r.rpush(f"{NS}:queue:default", *ruby)
    corral_nodes(1)
    done = records.wait(3)
    assert sorted(x["raw"] for x in done) == sorted(ruby)
    assert {json.dumps(x["args"]) for x in done} == {'[{"from": "ruby"}]', '[{"from": "scheduler"}]', "[7]"}


HOSTILE_ENTRIES = [
    pytest.param('{"class":"nosuchtask","queue":"default","args":[12345678901234567890]}', id="integer-beyond-2**53"),
    pytest.param('{"class":"nosuchtask","queue":"default","args":[NaN,-Infinity]}', id="NaN-literal"),
    pytest.param('{"class":"boom","args":[{"deep":[[[[[[]]]]]]}]}', id="ruby-order-failing-task"),
    pytest.param("not json at all", id="not-JSON"),
    pytest.param("[1,2]", id="JSON-array"),
    pytest.param('{"class":"nosuchtask","queue":"default","args":[{"\\u00b2":1}]}', id="non-ASCII-digit-key"),
    pytest.param('{"class":"nosuchtask","queue":"default","args":[{"\\ud800":1}]}', id="lone-surrogate-key"),
]


@pytest.mark.parametrize("hostile", HOSTILE_ENTRIES)
async def test_entries_other_producers_wrote_fail_the_job_never_the_node(
        hostile: str, node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]],
        records: Records, client: Client, r: Redis) -> None:
    good = '{"class":"record","queue":"default","args":[{"after":"hostile"}]}'
    await r.sadd(f"{NS}:queues", "default")
    await r.rpush(f"{NS}:queue:default", hostile, good)
    [node] = corral_nodes(1)
    records.wait(1, timeout=8)  # the job behind it still runs
    await wait_until_async(lambda: _eq(client.failed_count(), 1), 5, message="one failed entry")
    [entry] = await client.failed()
    assert list(json.loads(entry["raw"])) == FAILED_KEYS
    entry["raw"].encode("utf-8")  # storable as it is
    # node-resque parses the entry and can remove it
    assert queue_ops(node_resque_dir, redis_url, [["failed", 0, 0], ["removeFailedAt", 0]])[1] == 1
    assert node.readyz()[0] == 200
    assert node.terminate(timeout=10) == 0


# -- Corral enqueues, node-resque runs ----------------------------------------------------------


async def test_jobs_enqueued_by_corral_run_on_node_resque_worker(
        node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]],
        node_scripts: Callable[..., NodeScript], node_cluster: NodeCluster, client: Client, r: Redis) -> None:
    # A Corral leader that serves another queue: it promotes delayed jobs, node-resque runs them.
    [leader] = corral_nodes(1, queues="corral-only")
    node_cluster.wait_leader(10)
    token = await r.get(f"{NS}:resque_scheduler_leader_lock")
    assert token is not None and leader.owns(token.split("/", 1)[0])

    # node-resque's Scheduler polls every 100 ms on the same namespace: it must never lead
    sched = node_scripts("scheduler.js", {"name": "nr-scheduler", "seconds": 40, "timeout": 100})
    sched.wait_event("started", 10)

    payloads = []
    for params in TRICKY_PARAMS:
        assert await client.enqueue("record", params) is True
        payloads.append(encode_job("record", "default", _args_for(params)))
    assert await client.enqueue_many([("record", {"many": 1}), ("record", {"many": 2.0})]) == 2
    payloads += [encode_job("record", "default", [{"many": 1}]), encode_job("record", "default", [{"many": 2}])]
    await client.enqueue_in(1.0, "record", {"delayed": "in"})
    await client.enqueue_at(time.time() + 1.5, "record", {"delayed": "at"})
    payloads += [encode_job("record", "default", [{"delayed": "in"}]), encode_job("record", "default", [{"delayed": "at"}])]

    events = run_worker(node_resque_dir, redis_url, {"queues": ["default"], "expect": len(payloads), "seconds": 20})
    success = [e for e in events if e["event"] == "success"]
    assert [e for e in events if e["event"] in ("failure", "error")] == []
    assert len(success) == len(payloads), events
    # node-resque parsed exactly the jobs Corral wrote
    assert sorted(json.dumps(e["job"], sort_keys=True) for e in success) == \
        sorted(json.dumps(json.loads(p), sort_keys=True) for p in payloads)

    end = sched.finish()
    summary = [e for e in end if e["event"] == "end"][-1]
    assert summary["leader"] == 0 and summary["transferred"] == 0, end
    assert summary["lock"] == token  # the Corral term held the lock throughout (same token)
    assert leader.is_leader()


async def test_node_resque_scheduler_holding_the_lock_promotes_and_corral_leads_its_own_duties(
        node_scripts: Callable[..., NodeScript], corral_nodes: Callable[..., list[NodeProcess]],
        node_cluster: NodeCluster, records: Records, client: Client, r: Redis) -> None:
    # Roles (docs/DESIGN.md "Mixed clusters: roles"): node-resque's lock goes with delayed
    # promotion, Corral's own lock with Corral's duties (tests/integration/test_election_mixed.py).
    sched = node_scripts("scheduler.js", {"name": "nr-leader", "seconds": 60, "timeout": 100})
    sched.wait_event("leader", 10)
    assert await r.get(f"{NS}:resque_scheduler_leader_lock") == "nr-leader"

    nodes = corral_nodes(2)
    corral = node_cluster.wait_leader(10)
    deadline = time.monotonic() + 3.0  # several Corral renew periods: node-resque keeps its lock
    while time.monotonic() < deadline:
        assert [n for n in nodes if n.leader()["is_leader"]] == [corral]
        assert await r.get(f"{NS}:resque_scheduler_leader_lock") == "nr-leader"
        await asyncio.sleep(0.1)
    info = await client.leader_info()
    assert info is not None and info["node"] == corral.reported_id and info["scheduler"] == "nr-leader"

    # node-resque promotes the delayed job; a Corral worker runs it
    await client.enqueue_in(0.5, "record", {"promoted_by": "node-resque"})
    [done] = records.wait(1)
    assert done["params"] == {"promoted_by": "node-resque"}
    # the job can run before scheduler.js's line about it is read
    transferred = wait_until(lambda: sched.seen("transferredJob"), 5, message="node-resque's transferredJob")
    assert [e["job"]["args"] for e in transferred] == [[{"promoted_by": "node-resque"}]]

    # node-resque's scheduler stops (releases its lock): Corral's leader takes it over
    end = [e for e in sched.finish() if e["event"] == "end"][-1]
    assert end["leader"] == 1 and end["lock"] == "nr-leader"
    deadline = time.monotonic() + 3.0
    while (await client.leader_info() or {}).get("scheduler") != corral.reported_id:
        assert time.monotonic() < deadline, "Corral's leader did not take node-resque's lock"
        await asyncio.sleep(0.05)


# -- byte matching: del, delDelayed, scheduledAt ------------------------------------------------


async def test_node_resque_del_deldelayed_scheduledat_match_corral_jobs(
        node_resque_dir: Path, redis_url: str, client: Client, r: Redis) -> None:
    t1, t2 = int(time.time()) + 3600, int(time.time()) + 7200
    for params in TRICKY_PARAMS:
        await client.enqueue("record", params)
        await client.enqueue("record", params)
        assert await client.enqueue_at(t1, "record", params) == t1
        assert await client.enqueue_in(t2 - time.time() - 0.5, "record", params) == t2
    raw_queue = await r.lrange(f"{NS}:queue:default", 0, -1)

    ops: list[list[Any]] = []
    for params in TRICKY_PARAMS:
        args = _args_for(params)
        ops += [["encode", "default", "record", args], ["scheduledAt", "default", "record", args],
                ["del", "default", "record", args], ["delDelayed", "default", "record", args]]
    ops += [["length", "default"]]
    results = queue_ops(node_resque_dir, redis_url, ops)
    for i, params in enumerate(TRICKY_PARAMS):
        encoded, scheduled, deleted, del_delayed = results[4 * i: 4 * i + 4]
        assert encoded == encode_job("record", "default", _args_for(params))  # payload bytes identical
        assert encoded in raw_queue
        assert sorted(scheduled) == [t1, t2], params
        assert deleted == 2, params
        assert sorted(del_delayed) == [t1, t2], params
    assert results[-1] == 0
    assert await r.llen(f"{NS}:delayed:{t1}") == 0 and await r.llen(f"{NS}:delayed:{t2}") == 0
    assert not await r.keys(f"{NS}:timestamps:*")


async def test_corral_delete_and_delete_delayed_match_node_resque_jobs(
        node_resque_dir: Path, redis_url: str, client: Client, r: Redis) -> None:
    t1 = int(time.time()) + 3600
    ops: list[list[Any]] = []
    for params in TRICKY_PARAMS:
        args = _args_for(params)
        ops += [["enqueue", "default", "record", args], ["enqueue", "default", "record", args],
                ["enqueueAt", t1 * 1000, "default", "record", args]]
    queue_ops(node_resque_dir, redis_url, ops)
    for params in TRICKY_PARAMS:
        assert await client.scheduled_at("default", "record", params) == [t1], params
        assert await client.delete("default", "record", params) == 2, params
        assert await client.delete_delayed("default", "record", params) == [t1], params
    assert await client.length("default") == 0
    assert await client.timestamps() == []  # Corral also cleaned the emptied bucket
    assert not await r.keys(f"{NS}:timestamps:*")


# -- failed entries both ways -------------------------------------------------------------------


async def test_node_resque_reads_and_removes_corral_failed_entries(
        node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]], client: Client,
        r: Redis) -> None:
    failing = [p for p in TRICKY_PARAMS if p is not None][:3]
    for params in failing:
        await client.enqueue("boom", params)
    [node] = corral_nodes(1)
    await wait_until_async(lambda: _eq(client.failed_count(), len(failing)), 20, message="3 failed entries")
    node.terminate()  # nothing may consume the retried job below
    corral_entries = await r.lrange(f"{NS}:failed", 0, -1)

    results = queue_ops(node_resque_dir, redis_url, [["failedCount"], ["failed", 0, -1]])
    assert results[0] == len(failing)
    parsed = results[1]
    for entry, raw, params in zip(parsed, corral_entries, failing, strict=True):
        assert list(entry) == FAILED_KEYS
        assert entry["payload"] == json.loads(encode_job("boom", "default", [params]))
        assert entry["queue"] == "default" and node.owns(entry["worker"].split(":", 1)[0])
        assert entry["exception"] == "ValueError" and entry["error"].startswith("boom: ")
        assert isinstance(entry["backtrace"], list) and entry["backtrace"]
        assert abs(parse_date(entry["failed_at"]) - time.time()) < 120  # type: ignore[operator]
        assert entry == json.loads(raw)

    # removeFailed LREMs JSON.stringify(JSON.parse(raw)): it finds Corral's entry only if those bytes are identical
    results = queue_ops(node_resque_dir, redis_url, [
        ["removeFailedAt", 0], ["retryAndRemoveFailedAt", 0], ["failedCount"]])
    assert results == [1, True, 1]
    assert await r.lrange(f"{NS}:failed", 0, -1) == [corral_entries[2]]
    # node-resque re-enqueued the job with the bytes Corral originally wrote
    assert await r.lrange(f"{NS}:queue:default", 0, -1) == [encode_job("boom", "default", [failing[1]])]


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_corral_reads_and_removes_node_resque_failed_entries(
        node_resque_dir: Path, redis_url: str, client: Client, r: Redis) -> None:
    failing = [p for p in TRICKY_PARAMS if p is not None][:3]
    queue_ops(node_resque_dir, redis_url, [["enqueue", "default", "boom", [p]] for p in failing])
    events = run_worker(node_resque_dir, redis_url, {"queues": ["default"], "expect": 3, "name": "nr-worker"})
    assert len([e for e in events if e["event"] == "failure"]) == 3, events
    node_entries = await r.lrange(f"{NS}:failed", 0, -1)

    assert await client.failed_count() == 3
    entries = await client.failed()
    for entry, raw, params in zip(entries, node_entries, failing, strict=True):
        assert entry["raw"] == raw
        assert entry["worker"] == "nr-worker" and entry["queue"] == "default"
        assert entry["payload"] == json.loads(encode_job("boom", "default", [params]))
        assert entry["exception"] == "Error" and entry["error"].startswith("boom: ")
        assert isinstance(entry["backtrace"], list) and entry["backtrace"]
        assert abs(entry["failed_at"] - time.time()) < 120  # JS Date.toString() parsed

    assert await client.remove_failed(entries[0]) == 1
    assert await client.retry_and_remove_failed(entries[1]) is True
    assert await r.lrange(f"{NS}:failed", 0, -1) == [node_entries[2]]
    assert await r.lrange(f"{NS}:queue:default", 0, -1) == [encode_job("boom", "default", [failing[1]])]
    # and node-resque still reads what is left
    assert queue_ops(node_resque_dir, redis_url, [["failedCount"], ["removeFailedAt", 0], ["failedCount"]]) == [1, 1, 0]


# -- node-resque sees Corral's workers ----------------------------------------------------------


async def test_node_resque_lists_corral_workers_and_what_they_work_on(
        node_resque_dir: Path, redis_url: str, corral_nodes: Callable[..., list[NodeProcess]], records: Records,
        client: Client, r: Redis) -> None:
    [node] = corral_nodes(1, concurrency=2)
    await client.enqueue("slow", {"seconds": 4})
    [started] = records.wait(1, kind="slow-start")
    busy = started["worker"]

    results = queue_ops(node_resque_dir, redis_url, [["workers"], ["allWorkingOn"], ["workingOn", busy, "default"]])
    workers, working, working_on = results
    slots = {name for name in workers if node.owns(name.split(":", 1)[0])}
    assert len(slots) == 2 and busy in slots, workers
    assert all(workers[name] == "default" for name in slots)
    record = working[busy]
    assert record["worker"] == busy and record["queue"] == "default"
    assert record["payload"] == {"class": "slow", "queue": "default", "args": [{"seconds": 4}]}
    assert abs(parse_date(record["run_at"]) - time.time()) < 30  # type: ignore[operator]
    [idle] = slots - {busy}
    assert working[idle] == "started"
    assert json.loads(working_on) == record
    # Corral's own view agrees
    assert (await client.all_working_on())[busy]["payload"] == record["payload"]

    # Corral writes node-resque's liveness pings, so a node-resque scheduler never force-cleans it
    for name in slots:
        ping = json.loads(await r.get(f"{NS}:worker:ping:{name}") or "null")
        assert ping["name"] == name and ping["queues"] == "default" and abs(ping["time"] - time.time()) < 60

    records.wait(1, kind="slow-end")
    await wait_until_async(lambda: _eq(client.working_on(busy), None), 10, message="the working-on record cleared")
    assert queue_ops(node_resque_dir, redis_url, [["allWorkingOn"]])[0][busy] == "started"
