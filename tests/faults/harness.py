"""Fault-cell harness (docs/FAULTS.md §2): one Redis, three audited `corral node`s (optionally each
behind its own TCP proxy), producers that record every enqueue's outcome, an audit-stream
collector, a bounded drain and the checker (`tests/faults/checker.py`) at the end of each cell.

    cell = Cell("F6", tmp_path, CellConfig(concurrency=4)).start()
    producer = cell.producer(rate=50, duration=lambda rng: rng.uniform(0.1, 2.0)).start()
    leader = cell.leader()
    cell.fault(Fault("sigterm", time.time(), node=leader.reported_id, old_epoch=cell.epoch(leader), graceful=True))
    leader.sigterm()
    producer.stop()
    report = cell.finish(Bounds(handoff=0.5))     # drains, checks, prints the table, asserts
    cell.close()

With `CellConfig(election="zookeeper")` the cell also starts its own standalone ZooKeeper and
the nodes elect through it (F14), each through its own TcpProxy with `zookeeper_proxied`
(`cell.zk_proxy(node).blackhole()`).

Everything runs on loopback; every wait is bounded; only processes the cell started are
signalled, by pid. Times are this host's wall clock (see the checker's docstring). The same
class drives the pytest cells (`test_matrix.py`) and the soak run (`soak.py`); it needs no
pytest fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from cluster.client import Client, bucket
from cluster.keys import Keys
from tests.faults.checker import (
    AuditRecord,
    Bounds,
    Enqueue,
    Execution,
    Fault,
    History,
    LeaderEvent,
    PeriodicSpec,
    Report,
    check,
    parse_audit,
)
from tests.faults.hostlag import HostLag
from tests.support import wait_until
from tests.support.nodes import NodeCluster, NodeProcess
from tests.support.proxy import TcpProxy
from tests.support.servers import ZOOKEEPER_JAR, RedisServer, ServerError, ZooKeeperServer, find_binary

__all__ = ["Cell", "CellConfig", "Producer", "lock_key", "redis_binary", "skipped_jobs", "task_source",
           "zookeeper_java"]

NAMESPACE = "cell"
REDIS_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def redis_binary() -> str | None:
    return find_binary("redis-server", *REDIS_CANDIDATES)


def zookeeper_java() -> str | None:
    """The `java` that runs the cell's own ZooKeeper, or None when java or the jar is missing."""
    java = find_binary("java", "/usr/bin/java")
    return java if java is not None and Path(ZOOKEEPER_JAR).exists() else None


# ---- the task file every node loads ----------------------------------------------------------

_TASKS_HEAD = '''
"""Fault-cell tasks: every execution is appended to $CELL_LOG_DIR/<pid>.jsonl (never Redis)."""
import asyncio
import json
import os
import threading
import time

from cluster import Task

_fh = None
_lock = threading.Lock()  # sync tasks (`spin`) write from the node's thread pool


def lock_key(task, params):
    """A JobLock task's lock key as the checker names it (one queue: task + args)."""
    return task + ":" + json.dumps(params, sort_keys=True)


def _rec(ev, task, params, ctx, **extra):
    global _fh
    line = json.dumps({"ev": ev, "task": task, "id": (params or {}).get("id"), "exec": ctx.execution_id,
                       "node": ctx.node_id, "pid": os.getpid(), "t": time.time(), "m": time.monotonic(),
                       **extra}) + "\\n"
    with _lock:
        if _fh is None:
            _fh = open(os.path.join(os.environ["CELL_LOG_DIR"], f"{os.getpid()}.jsonl"), "a", buffering=1)
        _fh.write(line)


async def _sleeper(task, params, ctx, **extra):
    _rec("start", task, params, ctx, s=params.get("s", 0), **extra)
    try:
        await asyncio.sleep(float(params.get("s", 0)))
    except asyncio.CancelledError:
        _rec("end", task, params, ctx, outcome="cancelled", **extra)
        raise
    _rec("end", task, params, ctx, outcome="ok", **extra)


async def _job(params, ctx):
    await _sleeper("job", params, ctx)


job = Task(name="job", run=_job)
'''

_TASKS_PLUGINS = '''

async def _locked(params, ctx):
    await _sleeper("locked", params, ctx, key=lock_key("locked", params))


async def _hooked(params, ctx):
    await _sleeper("hooked", params, ctx)


# {lock, s}: every copy of one lock has the same args, so JobLock must run them one at a time
# (a blocked copy is re-enqueued 1 s later); {id, s}, enqueued delayed: staged at promotion and
# queued through its enqueue guards (issue 20.1).
locked = Task(name="locked", run=_locked, plugins=["JobLock"])
hooked = Task(name="hooked", run=_hooked, plugins=["QueueLock", "DelayQueueLock"])
'''

_TASKS_TICK = '''

async def _tick(params, ctx):
    _rec("run", "tick", None, ctx, outcome="ok")


tick = Task(name="tick", run=_tick, frequency=TICK_FREQUENCY)
'''

_TASKS_PULSE = '''

async def _pulse(params, ctx):
    _rec("run", "pulse", None, ctx, outcome="ok")


pulse = Task(name="pulse", run=_pulse, frequency=0.1, missed="skip")
'''

_TASKS_BEAT = '''

async def _beat(params, ctx):
    _rec("run", "beat", None, ctx, outcome="ok")


# Its queue has no worker: the occurrences are claimed (what is measured), never run.
beat = Task(name="beat", run=_beat, frequency=0.1, queue="parked")
'''

_TASKS_BLOCK = '''

async def _block(params, ctx):
    # F13: block this node's event loop (a coroutine calling a blocking function), once: a
    # redelivered copy (the blocked node is declared dead and its jobs recovered) returns at once.
    first = not os.path.exists(params["once"])
    open(params["once"], "a").close()
    _rec("start", "block", params, ctx, s=params["s"] if first else 0)
    if first:
        time.sleep(float(params["s"]))
    _rec("end", "block", params, ctx, outcome="ok")


block = Task(name="block", run=_block)
'''

_TASKS_SPIN = '''

def _spin(params, ctx):
    # F13b: a sync task (the node runs it in its thread pool) spinning a pure-Python loop for
    # `s` seconds of wall time, or until the wall time `until`, whichever comes first: the GIL
    # is contended by bytecode, as real CPU-bound sync jobs do, not released in C code.
    _rec("start", "spin", params, ctx, s=params["s"])
    end = time.monotonic() + max(0.0, min(float(params["s"]), float(params.get("until", 1e18)) - time.time()))
    n = 0
    while time.monotonic() < end:
        for i in range(500):
            n += i * i
    _rec("end", "spin", params, ctx, outcome="ok")


spin = Task(name="spin", run=_spin)
'''

PULSE = PeriodicSpec(0.1, "skip", count_runs=False)
BEAT = PeriodicSpec(0.1, "catch_up", count_runs=False)
PERIODIC_TASKS = ("tick", "pulse", "beat")


def task_source(*, tick: bool = True, tick_frequency: float = 1.0, pulse: bool = False, beat: bool = False,
                block: bool = False, spin: bool = False, plugins: bool = False) -> str:
    """The task file: `job` ({id, s}: sleeps s seconds), optionally `tick` (every
    `tick_frequency` s, catch-up), `pulse` (0.1 s, skip missed: times a failover's first write to
    0.1 s), `beat` (0.1 s, catch-up, on a queue no worker serves: many slots to measure, no jobs
    to run), `block`, `spin` ({id, s, until}: a sync pure-Python CPU loop in a pool thread) and,
    with `plugins`, `locked` (JobLock) and `hooked` (QueueLock + DelayQueueLock)."""
    tick_src = _TASKS_TICK.replace("TICK_FREQUENCY", repr(float(tick_frequency)))
    return _TASKS_HEAD + (tick_src if tick else "") + (_TASKS_PULSE if pulse else "") + (
        _TASKS_BEAT if beat else "") + (_TASKS_BLOCK if block else "") + (_TASKS_SPIN if spin else "") + (
        _TASKS_PLUGINS if plugins else "")


# what the task file's `lock_key` gives, for the producer's records
def lock_key(task: str, params: dict[str, Any]) -> str:
    return task + ":" + json.dumps(params, sort_keys=True)


HOOKED_TASKS = frozenset({"hooked"})  # the task file's tasks with an enqueue plugin


# ---- producer ---------------------------------------------------------------------------------


def classify(exc: BaseException) -> str:
    """`fail` when the enqueue certainly never reached Redis (refused connection, connect
    timeout, LOADING, an error reply), else `info` (sent, outcome unknown)."""
    if isinstance(exc, redis.exceptions.BusyLoadingError | redis.exceptions.ResponseError):
        return "fail"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError) \
            and "connecting" in str(exc).lower():
        return "fail"
    return "info"


def _async_client(url: str, timeout: float) -> aredis.Redis:
    # No retries: a retried non-idempotent script would blur the history (one invoke, two writes).
    return aredis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=0.5,
                                 retry=AsyncRetry(NoBackoff(), 0))


class Producer:
    """Enqueues uniquely identified `job`s at `rate` per second in a thread, recording every
    invoke -> ok / fail / refused / info. `duration(rng)` gives each job's run time; `delay(rng)`
    (optional) returns seconds from now for a delayed enqueue or None for an immediate one.

    With the plugin tasks loaded (`CellConfig.plugins`), a fraction `locked` of the enqueues are
    copies of `locked` (JobLock) on one of `locks` keys (args {lock, s: `lock_run`}: identical
    per key, so copies contend), and a fraction `hooked` are `hooked` jobs (QueueLock +
    DelayQueueLock) enqueued delayed by `delay` (1-10 s when it says immediate or is None)."""

    def __init__(self, url: str, prefix: str, *, rate: float, seed: int = 0,
                 duration: Callable[[random.Random], float] = lambda rng: 0.0,
                 delay: Callable[[random.Random], float | None] | None = None, timeout: float = 2.0,
                 sink: list[Enqueue] | None = None, locked: float = 0.0, hooked: float = 0.0, locks: int = 2,
                 lock_run: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix
        self.rate = rate
        self.rng = random.Random(seed)
        self.duration = duration
        self.delay = delay
        self.timeout = timeout
        self.records: list[Enqueue] = sink if sink is not None else []
        self.locked = locked
        self.hooked = hooked
        self.locks = locks
        self.lock_run = lock_run
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name=f"producer-{prefix}",
                                        daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> list[Enqueue]:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"producer {self.prefix} did not stop within {timeout}s")
        return self.records

    def acknowledged(self) -> int:
        return sum(1 for e in list(self.records) if e.outcome == "ok")

    async def _run(self) -> None:
        client = Client(_async_client(self.url, self.timeout), NAMESPACE)
        period = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                await self.one(client)
                next_at += period
                pause = next_at - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                else:
                    next_at = time.monotonic()  # fell behind (Redis stalled): no burst afterwards
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def one(self, client: Client) -> None:
        self.count += 1
        job_id = f"{self.prefix}-{self.count}"
        params: dict[str, Any] = {"id": job_id, "s": round(self.duration(self.rng), 3)}
        delay = self.delay(self.rng) if self.delay else None
        task, key = "job", None
        pick = self.rng.random() if self.locked or self.hooked else 1.0  # other cells' job streams unchanged
        if pick < self.locked:
            task, delay = "locked", None
            params = {"lock": f"L{self.rng.randrange(self.locks)}", "s": self.lock_run}
            key = lock_key(task, params)
        elif pick < self.locked + self.hooked:
            task = "hooked"
            if delay is None:
                delay = self.rng.uniform(1.0, 10.0)
        t0 = time.time()
        due = None
        try:
            if delay is None:
                queued = await client.enqueue(task, params, queue="default")
            else:
                when = t0 + delay
                due = float(bucket(when))
                queued = bool(await client.enqueue_at(when, task, params, queue="default"))
            outcome = "ok" if queued else "refused"
        except Exception as e:  # every outcome is recorded, none is fatal
            outcome = classify(e)
        self.records.append(Enqueue(job_id, outcome, t0, time.time(), due=due, task=task, key=key))


# ---- audit collector --------------------------------------------------------------------------


class AuditCollector:
    """Copies the audit stream out of Redis every `interval` s, so a cell that wipes Redis
    (F7c) keeps what was written before; `read_aof_copy` recovers the last writes before a kill."""

    def __init__(self, server: RedisServer, key: str, interval: float = 0.05) -> None:
        self.server = server
        self.key = key
        self.interval = interval
        self.entries: dict[str, dict[str, str]] = {}
        self.last_id = "0-0"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-collector", daemon=True)

    def start(self) -> AuditCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.server.port, decode_responses=True, socket_timeout=1.0,
                           socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))

    def add(self, entries: Iterable[tuple[str, dict[str, str]]]) -> None:
        with self._lock:
            for i, f in entries:
                self.entries.setdefault(str(i), dict(f))
                if _seq(str(i)) > _seq(self.last_id):
                    self.last_id = str(i)

    def poll(self, client: redis.Redis) -> None:
        while True:
            batch = cast(list[tuple[str, dict[str, str]]], client.xrange(self.key, min=f"({self.last_id}", count=5000))
            self.add(batch)
            if len(batch) < 5000:
                return

    def _run(self) -> None:
        client = self._client()
        try:
            while not self._stop.is_set():
                with contextlib.suppress(redis.RedisError, OSError):
                    self.poll(client)
                self._stop.wait(self.interval)
        finally:
            client.close()

    def final(self) -> list[AuditRecord]:
        with contextlib.suppress(redis.RedisError, OSError), self._client() as c:
            self.poll(c)
        with self._lock:
            return parse_audit(list(self.entries.items()))


def _seq(stream_id: str) -> tuple[int, int]:
    ms, _, n = stream_id.partition("-")
    return int(ms), int(n or 0)


# ---- the cell ---------------------------------------------------------------------------------


@dataclass
class CellConfig:
    """Topology and timing. Defaults are docs/FAULTS.md §1's (lease 5 s, renew 1 s, renew timeout 0.5 s,
    margin 1.5 s, heartbeat 2 s, dead after 8 s) so the matrix's absolute bounds apply as written."""

    nodes: int = 3
    lease: float = 5.0
    renew: float = 1.0
    renew_timeout: float = 0.5
    margin: float = 1.5
    heartbeat: float = 2.0
    dead_after: float = 8.0
    shutdown_timeout: float = 3.0
    concurrency: int = 2
    poll_interval: float = 0.2
    tick: bool = True
    tick_frequency: float = 1.0
    pulse: bool = False
    beat: bool = False
    block: bool = False
    spin: bool = False  # the sync CPU-bound `spin` task (F13b)
    plugins: bool = False  # the JobLock task `locked` and the QueueLock + DelayQueueLock task `hooked`
    per_node_queue: bool = False  # each node also serves "only-<node>" (to run a job on one node)
    clock_seam: bool = False  # --clock-offset-file per node (F9)
    proxied: bool = False  # each node reaches Redis through its own TcpProxy
    # "zookeeper": the cell starts its own ZooKeeper and the nodes run `--election zookeeper`
    # (F14); with `zookeeper_proxied` each node reaches it through its own TcpProxy (`zk_proxy`).
    election: str = "redis"
    zookeeper_session_timeout: float = 6.0
    zookeeper_proxied: bool = False
    redis_options: dict[str, Any] = field(default_factory=lambda: {"appendonly": True, "appendfsync": "always"})
    redis_env: dict[str, str] = field(default_factory=dict)  # extra environment of redis-server (F9b: LD_PRELOAD)
    extra_args: tuple[str, ...] = ()
    audit_interval: float = 0.05  # how often the harness copies the audit stream (F18: rarely)


class Cell:
    def __init__(self, name: str, workdir: Path, config: CellConfig | None = None) -> None:
        self.name = name
        self.workdir = workdir
        self.config = config or CellConfig()
        self.keys = Keys(NAMESPACE)
        self.log_dir = workdir / "joblog"
        self.tasks_dir = workdir / "tasks"
        self.enqueues: list[Enqueue] = []
        self.faults: list[Fault] = []
        self.producers: list[Producer] = []
        self.extra_audit: list[AuditRecord] = []
        self.server: RedisServer | None = None
        self.zookeeper: ZooKeeperServer | None = None
        self.zk_proxies: dict[str, TcpProxy] = {}
        self.nodes: NodeCluster | None = None
        self.collector: AuditCollector | None = None
        self.report: Report | None = None
        self.problems: list[str] = []
        self.claims: list[LeaderEvent] = []  # answers "I lead" seen by `resume_probing`
        self.hostlag: HostLag | None = None  # how late this host wakes a process (lateness bounds)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Cell:
        binary = redis_binary()
        if binary is None:
            raise ServerError("redis-server is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.tasks_dir.mkdir(exist_ok=True)
        cfg = self.config
        source = task_source(tick=cfg.tick, tick_frequency=cfg.tick_frequency, pulse=cfg.pulse, beat=cfg.beat,
                             block=cfg.block, spin=cfg.spin, plugins=cfg.plugins)
        (self.tasks_dir / "cell_tasks.py").write_text(source)
        if cfg.election == "zookeeper":
            java = zookeeper_java()
            if java is None:
                raise ServerError(f"ZooKeeper is not installed (need java and {ZOOKEEPER_JAR})")
            self.zookeeper = ZooKeeperServer(self.workdir / "zookeeper", java=java).start(timeout)
        self.server = RedisServer(self.workdir / "redis", options=dict(cfg.redis_options), binary=binary)
        if cfg.redis_env:
            self.server.env = {**os.environ, **cfg.redis_env}
        self.server.start()
        self.collector = AuditCollector(self.server, self.keys.audit, cfg.audit_interval).start()
        self.hostlag = HostLag(self.workdir / "hostlag.txt").start()
        self.nodes = NodeCluster(self.workdir / "nodes", redis_url=self.server.url)
        for i in range(1, cfg.nodes + 1):
            self.add_node(f"n{i}")
        for node in self.nodes.nodes:
            node.wait_ready(timeout)
        self.leader(timeout)
        return self

    def node_args(self, node_id: str) -> list[str]:
        cfg = self.config
        args = ["--audit", "--lease", str(cfg.lease), "--renew-period", str(cfg.renew),
                "--renew-timeout", str(cfg.renew_timeout), "--lease-margin", str(cfg.margin),
                "--heartbeat-interval", str(cfg.heartbeat), "--dead-after", str(cfg.dead_after),
                "--shutdown-timeout", str(cfg.shutdown_timeout), "--poll-interval", str(cfg.poll_interval),
                "--threads", "2", "--processes", "1", *cfg.extra_args]
        if cfg.clock_seam:
            args += ["--clock-offset-file", str(self.clock_file(node_id))]
        if cfg.election == "zookeeper":
            args += ["--zookeeper-session-timeout", str(cfg.zookeeper_session_timeout)]
        return args

    def add_node(self, node_id: str) -> NodeProcess:
        assert self.nodes is not None
        cfg = self.config
        queues = "default" + (f",only-{node_id}" if cfg.per_node_queue else "")
        election: dict[str, Any] = {}
        if cfg.election != "redis":
            assert self.zookeeper is not None, "the cell's ZooKeeper is not started"
            hosts = self.zookeeper.hosts
            if cfg.zookeeper_proxied:
                proxy = TcpProxy(self.zookeeper.port, name=f"zk-{node_id}").start()
                self.zk_proxies[node_id] = proxy
                hosts = f"127.0.0.1:{proxy.port}"
            election = {"election": cfg.election, "zookeeper_hosts": hosts}
        return self.nodes.add(node_id, proxied=cfg.proxied, namespace=NAMESPACE, tasks_dir=self.tasks_dir,
                              queues=queues, concurrency=cfg.concurrency, extra_args=self.node_args(node_id),
                              env={"CELL_LOG_DIR": str(self.log_dir)}, **election)

    def close(self) -> None:
        for p in self.producers:
            with contextlib.suppress(AssertionError):
                p.stop()
        if self.collector is not None:
            self.collector.stop()
        if self.hostlag is not None:
            self.hostlag.stop()
        if self.nodes is not None:
            self.nodes.close()
        for proxy in self.zk_proxies.values():
            proxy.close()
        if self.zookeeper is not None:
            self.zookeeper.kill()
        if self.server is not None:
            self.server.kill()

    def __enter__(self) -> Cell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- access ---------------------------------------------------------------------------------

    @property
    def redis_server(self) -> RedisServer:
        assert self.server is not None, "cell not started"
        return self.server

    @property
    def cluster(self) -> NodeCluster:
        assert self.nodes is not None, "cell not started"
        return self.nodes

    def zk_proxy(self, node: NodeProcess) -> TcpProxy:
        """The proxy between `node` and the cell's ZooKeeper (`zookeeper_proxied`)."""
        return self.zk_proxies[node.node_id]

    def client(self) -> redis.Redis:
        """A synchronous no-retry client for this cell's Redis (close it)."""
        return self.redis_server.client(decode_responses=True)

    def leader(self, timeout: float = 15.0, *, exclude: Iterable[NodeProcess] = ()) -> NodeProcess:
        """Exactly one running node says it leads (bounded wait)."""
        skip = {n.node_id for n in exclude}

        def one() -> NodeProcess | None:
            found = [n for n in self.cluster.running() if n.node_id not in skip and n.is_leader(timeout=0.5)]
            return found[0] if len(found) == 1 else None

        found = wait_until(one, timeout, 0.05, message="exactly one leader")
        assert found is not None
        return found

    @staticmethod
    def epoch(node: NodeProcess) -> int:
        view = node.leader()
        assert view["is_leader"], f"{node} does not lead: {view}"
        return int(view["epoch"])

    def audit(self) -> list[AuditRecord]:
        assert self.collector is not None
        merged = {r.id: r for r in [*self.extra_audit, *self.collector.final()]}
        return sorted(merged.values(), key=lambda r: r.seq)

    def first_record(self, newer_than: int, timeout: float, *, after: float = 0.0) -> AuditRecord:
        """The first accepted leader write of an epoch above `newer_than` (bounded wait)."""
        def find() -> AuditRecord | None:
            return next((r for r in self.audit() if r.epoch > newer_than and r.t >= after), None)

        found = wait_until(find, timeout, 0.02, message=f"a leader write with an epoch above {newer_than}")
        assert found is not None
        return found

    def lateness_allowance(self, window: tuple[float, float], p: float = 99) -> float:
        """What the host added to any process's wake-ups in `window` (wall time) at percentile `p`:
        add it to a lateness bound tuned on a quiet machine (see tests/faults/hostlag.py)."""
        return self.hostlag.percentile(p, window) if self.hostlag is not None else 0.0

    def fault(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    # -- load -------------------------------------------------------------------------------------

    def producer(self, prefix: str = "p", *, rate: float = 50.0, seed: int = 0,
                 duration: Callable[[random.Random], float] = lambda rng: 0.0,
                 delay: Callable[[random.Random], float | None] | None = None, timeout: float = 2.0,
                 locked: float = 0.0, hooked: float = 0.0) -> Producer:
        """A producer recording into this cell (`locked` / `hooked`: see `Producer`; they need
        `CellConfig.plugins`)."""
        assert self.config.plugins or not (locked or hooked), "the plugin tasks need CellConfig(plugins=True)"
        p = Producer(self.redis_server.url, f"{self.name}-{prefix}", rate=rate, seed=seed, duration=duration,
                     delay=delay, timeout=timeout, sink=self.enqueues, locked=locked, hooked=hooked)
        self.producers.append(p)
        return p

    def enqueue(self, jobs: Sequence[tuple[str, dict[str, Any]]], *, queue: str = "default",
                at: Sequence[float] | None = None) -> None:
        """Enqueue (task, params with a unique "id") now, or at the epoch seconds `at`; recorded."""
        async def go() -> None:
            client = Client(_async_client(self.redis_server.url, 2.0), NAMESPACE)
            try:
                for i, (task, params) in enumerate(jobs):
                    t0 = time.time()
                    due = None
                    try:
                        if at is None:
                            queued = await client.enqueue(task, params, queue=queue)
                        else:
                            due = float(bucket(at[i]))
                            queued = bool(await client.enqueue_at(at[i], task, params, queue=queue))
                        outcome = "ok" if queued else "refused"  # refused: an enqueue plugin said no
                    except Exception as e:
                        outcome = classify(e)
                    self.enqueues.append(Enqueue(str(params["id"]), outcome, t0, time.time(), due=due, task=task))
            finally:
                await client.close()

        asyncio.run(go())

    # -- observation ------------------------------------------------------------------------------

    def inflight(self) -> dict[str, list[str]]:
        """Job ids recorded in flight in Redis, per node id (periodic occurrences excluded)."""
        out: dict[str, list[str]] = {}
        with self.client() as c:
            for key in c.scan_iter(match=self.keys.inflight("*"), count=1000):
                node = str(key).rpartition(":")[2]
                ids = [job_id for f, v in c.hgetall(key).items() if ":" not in f and (job_id := _job_name(v))]
                if ids:
                    out[node] = ids
        return out

    def executions(self, *, acks: bool = False) -> list[Execution]:
        """Every job run; with `acks`, each marked when its node logged its late ack refused."""
        return read_executions(self.log_dir, refused_acks(self.cluster.nodes) if acks else frozenset())

    def leader_events(self) -> list[LeaderEvent]:
        return sorted(leader_events(self.cluster.nodes) + self.claims, key=lambda e: e.t)

    def resume_probing(self, node: NodeProcess, epoch: int, *, seconds: float = 1.5) -> float:
        """SIGCONT a stopped `node` with a /leader and a /metrics request already waiting on its
        socket (the kernel accepts them while it is stopped), then keep asking both for `seconds`.
        Every answer that says it leads becomes a `claimed` event for the checker (docs/FAULTS.md F2: after
        SIGCONT it must not report itself leader before its lease check). Returns the resume stamp,
        taken before SIGCONT (the frozen fault's `t_end`)."""
        resumed: list[float] = []

        def ask(path: str) -> None:
            while not resumed or time.time() < resumed[0] + seconds:
                sent = time.time()
                try:
                    status, body = node.get(path, timeout=seconds + 5.0)
                except OSError:
                    time.sleep(0.02)
                    continue
                claim = _claims_leadership(path, status, body)
                if claim is not None:
                    t = max(sent, resumed[0]) if resumed else sent
                    self.claims.append(LeaderEvent(node=node.reported_id, kind="claimed", t=t,
                                                   epoch=claim or epoch, reason=f"GET {path}"))
                time.sleep(0.02)

        askers = [threading.Thread(target=ask, args=(p,), daemon=True) for p in ("/leader", "/metrics")]
        for t in askers:
            t.start()
        time.sleep(0.3)  # both requests sent and queued on the stopped node's socket
        resumed.append(time.time())
        node.cont()
        for t in askers:
            t.join(seconds + 10.0)
        return resumed[0]

    def shift_clock(self, node: NodeProcess, seconds: float, timeout: float = 5.0) -> float:
        """F9 seam: set `node`'s wall-clock offset; returns when it logged the jump (wall time)."""
        path = self.clock_file(node.node_id)
        path.write_text(f"{seconds}\n")
        before = len([r for r in node.log_records() if r.get("event") == "clock_jump"])
        t = time.time()
        node.send_signal(signal.SIGUSR1)
        wait_until(lambda: len([r for r in node.log_records() if r.get("event") == "clock_jump"]) > before,
                   timeout, 0.02, message=f"{node.node_id} to apply the clock offset {seconds}")
        return t

    def clock_file(self, node_id: str) -> Path:
        return self.workdir / f"clock-{node_id}.txt"

    def pending(self) -> list[str]:
        """What keeps the cell from being drained (empty = drained): non-periodic jobs queued, in
        flight, staged or delayed, and members whose heartbeat is stale (not yet recovered)."""
        periodic = set(PERIODIC_TASKS)
        out: list[str] = []
        k = self.keys
        with self.client() as c:
            for q in sorted(c.smembers(k.queues)):
                jobs = [p for p in c.lrange(k.queue(q), 0, -1) if _task(p) not in periodic]
                if jobs:
                    out.append(f"queue {q}: {len(jobs)}")
            for key in c.scan_iter(match=k.inflight("*"), count=1000):
                jobs = [v for f, v in c.hgetall(key).items() if ":" not in f and _task(v) not in periodic]
                if jobs:
                    out.append(f"{key}: {len(jobs)}")
            if c.zcard(k.delayed_schedule):
                out.append(f"delayed seconds: {c.zcard(k.delayed_schedule)}")
            if c.llen(k.promoting):
                out.append(f"promoting: {c.llen(k.promoting)}")
            sec, usec = c.time()
            now_ms = int(sec) * 1000 + int(usec) // 1000
            for member, score in c.zrange(k.members, 0, -1, withscores=True):
                if now_ms - score > self.config.dead_after * 1000:
                    out.append(f"stale member {member} ({(now_ms - score) / 1000:.1f}s)")
        return out

    def drain(self, timeout: float | None = None) -> float:
        """Bounded wait (default 2 x (dead_after + lease), docs/FAULTS.md §3) until `pending()` is empty and
        every acknowledged job has a finished execution, or `pending()` stayed empty for 2 s (what
        has not run by then is nowhere in Redis: the checker reports it lost); returns the seconds
        waited."""
        cfg = self.config
        limit = timeout if timeout is not None else 2 * (cfg.dead_after + cfg.lease)
        t0 = time.monotonic()
        empty_since: list[float] = []

        def drained() -> bool:
            if self.pending():
                empty_since.clear()
                return False
            if not empty_since:
                empty_since.append(time.monotonic())
            runs = self.executions()
            done = {x.id for x in runs if x.outcome in ("ok", "error")}
            copies = Counter(x.key for x in runs if x.key is not None and x.outcome in ("ok", "error"))
            acked = Counter(e.key for e in self.enqueues if e.outcome == "ok" and e.key is not None)
            if all(e.id in done for e in self.enqueues if e.outcome == "ok" and e.key is None) \
                    and all(copies[k] >= n for k, n in acked.items()):
                return True
            return time.monotonic() - empty_since[0] >= 2.0

        wait_until(drained, limit, 0.1, message=f"{self.name}: queues, in-flight lists and stale members drained "
                   "and every acknowledged job run", ignore=(redis.RedisError, OSError))
        return time.monotonic() - t0

    # -- the end of a cell --------------------------------------------------------------------------

    def history(self, *, window: tuple[float, float] | None = None, settle: float = 15.0,
                lateness_window: tuple[float, float] | None = None) -> History:
        audit = self.audit()
        time.sleep(0.3)  # executions of the last claimed periodic slots
        specs = {}
        if self.config.tick:
            specs["tick"] = PeriodicSpec(self.config.tick_frequency, "catch_up")
        if self.config.pulse:
            specs["pulse"] = PULSE
        if self.config.beat:
            specs["beat"] = BEAT
        return History(enqueues=list(self.enqueues), executions=self.executions(acks=True), audit=audit,
                       leader_events=self.leader_events(), faults=list(self.faults), periodic=specs,
                       window=window, settle=settle, lateness_window=lateness_window,
                       enqueue_hooks=HOOKED_TASKS if self.config.plugins else frozenset(),
                       dropped=dropped_promotions(self.cluster.nodes))

    def finish(self, bounds: Bounds, *, drain: bool = True, drain_timeout: float | None = None,
               window: tuple[float, float] | None = None, settle: float = 15.0, check_bounds: bool = True,
               lateness_window: tuple[float, float] | None = None) -> Report:
        """Stop the producers, drain (bounded), run the checker, print and save the table, and
        assert the bounds (or only record the violations in `self.problems`, with
        `check_bounds=False`). Returns the report for cell-specific assertions."""
        for p in self.producers:
            p.stop()
        problems: list[str] = []
        if drain:
            try:
                waited = self.drain(drain_timeout)
                print(f"\n{self.name}: drained in {waited:.1f}s")
            except AssertionError as e:
                problems.append(f"not drained: {e}; pending: {self.pending_safe()}")
        h = self.history(window=window, settle=settle, lateness_window=lateness_window)
        report = check(h)
        self.report = report
        self.save(h, report)
        problems += report.violations(bounds)
        self.problems = problems
        table = report.table()
        print(f"\n== {self.name} ==\n{table}")
        if problems:
            print(f"{self.name}: violations: {problems}")
        if check_bounds:
            assert not problems, self.describe(problems)
        return report

    def describe(self, problems: Sequence[str]) -> str:
        table = self.report.table() if self.report else ""
        return f"{self.name}: " + "; ".join(problems) + f"\n{table}\nartifacts: {self.workdir}"

    def pending_safe(self) -> list[str]:
        try:
            return self.pending()
        except (redis.RedisError, OSError) as e:
            return [f"(Redis unreachable: {e!r})"]

    def save(self, h: History, report: Report) -> None:
        """The cell's artifacts next to the node logs: audit stream, leader events, history, table."""
        out = self.workdir / "artifacts"
        out.mkdir(exist_ok=True)
        (out / "report.txt").write_text(report.table() + "\n")
        with open(out / "audit.jsonl", "w") as fh:
            for r in h.audit:
                fh.write(json.dumps(r.__dict__) + "\n")
        with open(out / "leader_events.jsonl", "w") as fh:
            for e in h.leader_events:
                fh.write(json.dumps(e.__dict__) + "\n")
        with open(out / "enqueues.jsonl", "w") as fh:
            for q in h.enqueues:
                fh.write(json.dumps(q.__dict__) + "\n")
        with open(out / "faults.jsonl", "w") as fh:
            for f in h.faults:
                fh.write(json.dumps(f.__dict__) + "\n")
        target = os.environ.get("CORRAL_FAULT_ARTIFACTS")
        if target:
            dest = Path(target) / f"{self.name}-{int(time.time())}"
            shutil.copytree(self.workdir, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.aof", "*.rdb"))

    # -- Redis faults ---------------------------------------------------------------------------------

    def kill_redis(self) -> float:
        """SIGKILL redis-server; returns the wall time of the kill."""
        t = time.time()
        self.redis_server.kill()
        return t

    def start_redis(self, *, wipe: bool = False, timeout: float = 15.0) -> float:
        """Start the killed server on the same port (emptied first with `wipe`, after keeping the
        audit stream it had persisted); returns when it answered PING (accepting connections)."""
        server = self.redis_server
        if wipe:
            self.extra_audit += self.read_persisted_audit()
            server.wipe_data()
        server.start(timeout)
        return time.time()

    def read_persisted_audit(self) -> list[AuditRecord]:
        """The audit stream as the (stopped) server's data files hold it: a copy of them served by
        a scratch redis-server on another port."""
        server = self.redis_server
        assert not server.running
        scratch = self.workdir / f"scratch-{int(time.time() * 1000)}"
        shutil.copytree(server.data_dir, scratch / "data")
        binary = redis_binary()
        assert binary is not None
        copy = RedisServer(scratch, options=dict(self.config.redis_options), binary=binary)
        try:
            copy.start()
            with copy.client(decode_responses=True) as c:
                return parse_audit(c.xrange(self.keys.audit))
        finally:
            copy.kill()


def _task(payload: str) -> str | None:
    try:
        job = json.loads(payload)
    except ValueError:
        return None
    return job.get("class") if isinstance(job, dict) else None


def _job_id(payload: str) -> str | None:
    try:
        job = json.loads(payload)
        args = job.get("args") or [{}]
        value = args[0].get("id") if isinstance(args[0], dict) else None
    except (ValueError, AttributeError, IndexError):
        return None
    return str(value) if value is not None else None


def _job_name(payload: str) -> str | None:
    """The job's id, or for a copy of the JobLock task `locked` its lock key (copies share args)."""
    job_id = _job_id(payload)
    if job_id is not None or _task(payload) != "locked":
        return job_id
    with contextlib.suppress(ValueError, AttributeError, IndexError, TypeError):
        return lock_key("locked", json.loads(payload)["args"][0])
    return None


def skipped_jobs(nodes: Iterable[NodeProcess], task: str) -> int:
    """How many fetched jobs of `task` a before_perform hook skipped (`job_skipped`: JobLock held)."""
    return sum(1 for node in nodes for r in node.log_records()
               if r.get("event") == "job_skipped" and r.get("task") == task)


def _claims_leadership(path: str, status: int, body: bytes) -> int | None:
    """None unless the answer says "this node leads"; then the epoch it names (0 if none)."""
    if status != 200:
        return None
    if path == "/leader":
        view = json.loads(body)
        return int(view.get("epoch") or 0) if view.get("is_leader") else None
    lines = body.decode(errors="replace").splitlines()
    if "corral_is_leader 1.0" not in lines:
        return None
    epoch = next((ln.split()[1] for ln in lines if ln.startswith("corral_leader_epoch ")), "0")
    return int(float(epoch))


def refused_acks(nodes: Iterable[NodeProcess]) -> set[str]:
    """"<node>/<execution id>" of every run whose ack its node logged as refused (`ack_lost`)."""
    return {f"{r.get('node')}/{r.get('execution_id')}" for node in nodes for r in node.log_records()
            if r.get("event") == "ack_lost"}


def read_executions(log_dir: Path, refused: set[str] | frozenset[str] = frozenset()) -> list[Execution]:
    """Executions from every per-process JSONL file (a torn last line of a killed process skipped).

    Execution ids are unique per node process only (a per-slot counter), so a run is keyed by
    (node, execution id) and reported as "<node>/<execution id>"; `refused` marks the runs whose
    late ack was refused (`refused_acks`)."""
    starts: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    out: list[Execution] = []
    for path in sorted(log_dir.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            key = f"{r['node']}/{r['exec']}"
            if r["ev"] == "run":  # periodic occurrences: one record
                out.append(Execution(id=r["id"], task=r["task"], execution_id=key, node=r["node"], pid=r["pid"],
                                     start=r["t"], end=r["t"], outcome=r.get("outcome", "ok")))
            elif r["ev"] == "start":
                starts[key] = r
            elif r["ev"] == "end":
                ends[key] = r
    for exec_id, s in starts.items():
        e = ends.get(exec_id)
        out.append(Execution(id=s["id"], task=s["task"], execution_id=exec_id, node=s["node"], pid=s["pid"],
                             start=s["t"], end=e["t"] if e else None, outcome=e.get("outcome") if e else None,
                             planned=s.get("s"), ack_refused=exec_id in refused, key=s.get("key"),
                             m_start=s.get("m"), m_end=e.get("m") if e else None))
    return sorted(out, key=lambda x: x.start)


def dropped_promotions(nodes: Iterable[NodeProcess]) -> list[tuple[str, float]]:
    """(job id, wall time) of each promoted job an enqueue plugin dropped (`promotion_dropped`)."""
    out = []
    for node in nodes:
        for r in node.log_records():
            if r.get("event") == "promotion_dropped":
                job_id = _job_id(str(r.get("payload", "")))
                out.append((job_id or str(r.get("payload", ""))[:80], float(r["ts"])))
    return sorted(out, key=lambda d: d[1])


_EVENTS = {"leader_acquired": "acquired", "leader_stepped_down": "stepped_down", "leader_released": "released",
           "node_stopping": "stopping", "stale_write_rejected": "stale_rejected"}


def leader_events(nodes: Iterable[NodeProcess]) -> list[LeaderEvent]:
    out = []
    for node in nodes:
        for r in node.log_records():
            kind = _EVENTS.get(str(r.get("event")))
            if kind is None:
                continue
            epoch = r.get("epoch")
            out.append(LeaderEvent(node=str(r.get("node")), kind=kind, t=float(r["ts"]),
                                   epoch=int(epoch) if epoch is not None else None, reason=str(r.get("reason", ""))))
    return sorted(out, key=lambda e: e.t)


def whole_seconds_ahead(n: int, *, lead: float = 2.0) -> list[float]:
    """`n` consecutive whole epoch seconds starting at least `lead` seconds from now."""
    first = math.ceil(time.time() + lead)
    return [float(first + i) for i in range(n)]
