#!/usr/bin/env python3
"""One contender, one phase of the peer benchmark. Started by bench/peers/run.py under the contender's
interpreter (the main environment for Corral and node-resque, a venv for the Python peers), on a Redis the
harness has just flushed; writes one JSON object to --out.

    driver.py --contender arq --phase drain1 --jobs 20000 --redis-url redis://127.0.0.1:PORT/0 --out f.json

Phases:
  drain1   enqueue N no-op jobs one call at a time (timed), then start 1 worker process and time the drain
  drain2   enqueue N no-op jobs with the batch API (timed) where the library has one, else with its single
           enqueue call (untimed; async clients 50 at a time), then start 2 worker processes and time the drain
  pickup   1 idle worker process; 200 `stamp` jobs enqueued 10 ms apart; start - enqueue, per job
  delayed  1 worker process (+ the library's scheduler); 200 `stamp` jobs due over one second; start - due

The driver starts its worker processes in its own process group (the harness kills that group, by the
driver's pid, if the phase overruns) and stops them itself (SIGTERM, then SIGKILL) before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
BIN = Path(sys.executable).parent
QUEUE = "bench"
STARTS = "bench:starts"
sys.path.insert(0, str(APPS))  # the app modules (peer_rq, peer_celery, ...) the clients import

# ---- process helpers ----------------------------------------------------------------------------------

CHILDREN: list[subprocess.Popen[bytes]] = []
HZ = os.sysconf("SC_CLK_TCK")


def proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds incl. reaped children) for every process on the machine."""
    out: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d)] = (int(f[1]), (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / HZ)
    return out


def descendants(roots: list[int], table: dict[int, tuple[int, float]] | None = None) -> list[int]:
    table = table if table is not None else proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    seen: list[int] = []
    stack = [r for r in roots if r in table]
    while stack:
        p = stack.pop()
        seen.append(p)
        stack.extend(kids.get(p, []))
    return seen


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds used by the worker processes and all their descendants (forked work-horses and pool
    children included: a reaped child's time is in its parent's cutime/cstime)."""
    table = proc_table()
    return sum(table[p][1] for p in descendants(roots, table))


def pid_cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(f[11]) + int(f[12])) / HZ


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path = APPS) -> subprocess.Popen[bytes]:
    fh = open(log, "ab")
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    fh.close()
    CHILDREN.append(p)
    return p


def stop_all(grace: float = 10.0) -> None:
    """SIGTERM the workers we started, wait, then SIGKILL them and whatever they forked, by pid."""
    live = [p for p in CHILDREN if p.poll() is None]
    if not live:
        return
    family = descendants([p.pid for p in live])
    for p in live:
        with contextlib.suppress(OSError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
    for pid in descendants(family):  # still alive: kill them (only pids that were in our tree)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


def base_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["BENCH_REDIS_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(APPS), env.get("PYTHONPATH", "")) if x)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


# ---- contenders -----------------------------------------------------------------------------------------

class Contender:
    """How one library is driven through its documented API. `remaining(n)` = jobs of the n not yet done,
    read from the library's own bookkeeping (exact at the end; see each class)."""

    name = ""
    has_batch = False
    batch_api = ""
    delayed_api = ""
    due_rounding = "exact"  # how the library stores a due time: exact | ceil | floor | round (to whole seconds)
    async_client = True  # enqueue() awaits I/O (False: a blocking client)

    def __init__(self, url: str, logdir: Path, starts_dir: Path | None = None) -> None:
        self.url = url
        self.logdir = logdir
        self.env = base_env(url)
        self.starts_dir = starts_dir  # None: `stamp` RPUSHes to bench:starts through the library's client
        if starts_dir is not None:
            self.env["BENCH_STARTS_DIR"] = str(starts_dir)

    async def setup(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self) -> None:
        raise NotImplementedError

    async def enqueue_sequential(self, n: int) -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            await self.enqueue()
        return time.perf_counter() - t0, time.process_time() - c0

    async def enqueue_batch(self, n: int) -> None:
        raise NotImplementedError

    async def prefill(self, n: int) -> None:
        """Untimed: queue n no-op jobs before a drain, with the library's single enqueue call. Async clients
        send 50 at a time (the jobs are the same; only the harness waits less)."""
        if not self.async_client:
            await self.enqueue_sequential(n)
            return
        for k in range(0, n, 50):
            await asyncio.gather(*(self.enqueue() for _ in range(min(50, n - k))))

    async def stamp(self, i: int) -> None:
        raise NotImplementedError

    async def stamp_at(self, due: float, i: int) -> None:
        raise NotImplementedError

    async def send_spaced(self, n: int, spacing: float) -> dict[int, float]:
        sent: dict[int, float] = {}
        t0 = time.perf_counter()
        for i in range(n):
            sent[i] = time.time()
            await self.stamp(i)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * spacing - time.perf_counter()))
        return sent

    async def schedule(self, dues: list[float]) -> None:
        for i, due in enumerate(dues):
            await self.stamp_at(due, i)

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        """argv of each process to start; `nprocs` = processes that execute jobs."""
        raise NotImplementedError

    def config(self, nprocs: int) -> str:
        raise NotImplementedError

    async def remaining(self, r: Any, n: int) -> int:
        raise NotImplementedError

    async def failed(self, r: Any) -> int | None:
        return None

    def delayed_extras(self) -> dict[str, Any]:
        """What the library itself reports about the delayed phase (read before its workers stop)."""
        return {}

    def effective_due(self, due: float) -> float:
        return {"exact": due, "ceil": math.ceil(due), "floor": math.floor(due),
                "round": math.floor(due + 0.5)}[self.due_rounding]


class Corral(Contender):
    name = "corral"
    has_batch = True
    batch_api = "Client.enqueue_many"
    delayed_api = "Client.enqueue_at (filed under the ceiling second)"
    due_rounding = "ceil"
    concurrency: int | None = None  # None: `corral node` at its defaults (no --concurrency)

    def __init__(self, url: str, logdir: Path, starts_dir: Path | None = None) -> None:
        super().__init__(url, logdir, starts_dir)
        src = os.environ.get("BENCH_CORRAL_SRC")
        if src:
            sys.path.insert(0, src)
            self.env["PYTHONPATH"] = src + os.pathsep + self.env["PYTHONPATH"]
        self.ports: list[int] = []

    async def setup(self) -> None:
        from cluster import Client

        self.client = await Client.connect(self.url, "resque")

    async def close(self) -> None:
        await self.client.close()

    async def enqueue(self) -> None:
        await self.client.enqueue("noop", None, queue=QUEUE)

    async def enqueue_batch(self, n: int) -> None:
        await self.client.enqueue_many([("noop", None)] * n, queue=QUEUE)

    async def stamp(self, i: int) -> None:
        await self.client.enqueue("stamp", {"i": i}, queue=QUEUE)

    async def stamp_at(self, due: float, i: int) -> None:
        await self.client.enqueue_at(due, "stamp", {"i": i}, queue=QUEUE)

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        import socket

        exe = BIN / "corral"
        launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "node"]
        out = []
        for k in range(nprocs):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.ports.append(port)
            out.append([*launcher, "node", "--redis-url", self.url, "--tasks-dir", str(APPS / "corral_tasks"),
                        "--queues", QUEUE, *(["--concurrency", str(self.concurrency)] if self.concurrency else []),
                        "--log-level", "warning",
                        "--http-port", str(port), "--node-id", f"peer{k + 1}", "--shutdown-timeout", "5"])
        return out

    def config(self, nprocs: int) -> str:
        flag = f" --concurrency {self.concurrency}" if self.concurrency else ""
        return (f"{nprocs} x `corral node --queues {QUEUE}{flag} --log-level warning` "
                "(asyncio + uvloop; every node also runs the leader election, heartbeats, metrics and HTTP)")

    def delayed_extras(self) -> dict[str, Any]:
        """The leader's own promotion lateness (`corral_scheduler_lateness_seconds`: Redis' clock at the
        promotion - the due second, per job), so a start's lateness splits into promotion + pickup."""
        import urllib.request

        buckets: dict[float, float] = {}
        for port in self.ports:
            with contextlib.suppress(OSError):
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                for line in text.splitlines():
                    if line.startswith("corral_scheduler_lateness_seconds_bucket"):
                        le = float(line.split('le="', 1)[1].split('"', 1)[0])
                        buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
        if not buckets:
            return {}
        return {"promotion_lateness_jobs_within_ms": {f"{1000 * le:g}": c for le, c in sorted(buckets.items())
                                                      if le <= 0.1 or math.isinf(le)}}

    async def remaining(self, r: Any, n: int) -> int:
        return n - int(await r.get("resque:stat:processed") or 0)

    async def failed(self, r: Any) -> int | None:
        return int(await r.get("resque:stat:failed") or 0)


class CorralTuned(Corral):
    name = "corral-tuned"
    concurrency = int(os.environ.get("BENCH_CORRAL_CONCURRENCY", "128"))


class NodeResque(Contender):
    name = "node-resque"
    delayed_api = "queue.enqueueAt(ms) + a Scheduler (rounds to the nearest second)"
    due_rounding = "round"

    def __init__(self, url: str, logdir: Path, starts_dir: Path | None = None) -> None:
        super().__init__(url, logdir, starts_dir)
        self.env["NODE_PATH"] = os.environ.get("BENCH_NODE_PATH", str(HERE.parent.parent / "tests/interop/node_modules"))
        self.script = str(HERE / "node_resque.js")

    async def node(self, *args: str, limit: float = 600) -> dict[str, Any]:
        p = await asyncio.create_subprocess_exec("node", self.script, *args, env=self.env, cwd=str(HERE),
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(p.communicate(), limit)
        except TimeoutError:
            p.kill()
            raise
        if p.returncode != 0:
            raise RuntimeError(f"node {args[0]} exited {p.returncode}: {err.decode()[-1500:]}")
        return dict(json.loads(out.decode().strip().splitlines()[-1]))

    async def enqueue_sequential(self, n: int) -> tuple[float, float]:
        r = await self.node("enqueue", "--n", str(n))
        return float(r["seconds"]), float(r["client_cpu_s"])

    async def prefill(self, n: int) -> None:
        await self.node("enqueue", "--n", str(n), "--concurrency", "50")

    async def stamp(self, i: int) -> None:
        await self.node("stamp", "--i", str(i))

    async def send_spaced(self, n: int, spacing: float) -> dict[int, float]:
        r = await self.node("pickup", "--n", str(n), "--spacing", str(int(spacing * 1000)))
        return {int(k): float(v) for k, v in r["sent"].items()}

    async def schedule(self, dues: list[float]) -> None:
        await self.node("delayed", "--dues", ",".join(f"{d:.6f}" for d in dues))

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        return [["node", self.script, "worker", *(["--scheduler"] if delayed else [])] for _ in range(nprocs)]

    def config(self, nprocs: int) -> str:
        return (f"{nprocs} x node process with one `Worker` (defaults: one job at a time, idle poll `timeout` "
                "5000 ms); the delayed phase adds a `Scheduler` (defaults: poll 5000 ms) in that process")

    async def remaining(self, r: Any, n: int) -> int:
        return n - int(await r.get("resque:stat:processed") or 0)

    async def failed(self, r: Any) -> int | None:
        return int(await r.get("resque:stat:failed") or 0)


class Arq(Contender):
    name = "arq"
    delayed_api = "enqueue_job(..., _defer_until=datetime)"

    async def setup(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.pool = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self) -> None:
        await self.pool.enqueue_job("noop")

    async def stamp(self, i: int) -> None:
        await self.pool.enqueue_job("stamp", i)

    async def stamp_at(self, due: float, i: int) -> None:
        await self.pool.enqueue_job("stamp", i, _defer_until=utc(due))

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        return [[sys.executable, "-m", "peer_arq"] for _ in range(nprocs)]

    def config(self, nprocs: int) -> str:
        return (f"{nprocs} x arq worker (`arq.worker.run_worker`, logging WARNING), defaults: max_jobs 10, "
                "poll_delay 0.5 s")

    async def remaining(self, r: Any, n: int) -> int:
        return int(await r.zcard("arq:queue"))  # a job leaves the queue zset when it finishes


class Saq(Contender):
    name = "saq"
    delayed_api = "queue.enqueue(..., scheduled=int epoch seconds)"
    due_rounding = "ceil"

    async def setup(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.url, name=QUEUE)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self) -> None:
        await self.queue.enqueue("noop")

    async def stamp(self, i: int) -> None:
        await self.queue.enqueue("stamp", i=i)

    async def stamp_at(self, due: float, i: int) -> None:
        await self.queue.enqueue("stamp", i=i, scheduled=math.ceil(due))

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        return [[str(BIN / "saq"), "peer_saq.settings"] for _ in range(nprocs)]

    def config(self, nprocs: int) -> str:
        return f"{nprocs} x `saq peer_saq.settings` (defaults: concurrency 10, schedule poll 1 s, logging WARNING)"

    async def remaining(self, r: Any, n: int) -> int:
        return int(await self.queue.count("incomplete"))  # zset; a job leaves it when it finishes


class Rq(Contender):
    async_client = False
    has_batch = True
    batch_api = "Queue.enqueue_many(Queue.prepare_data(...))"
    delayed_api = "Queue.enqueue_at(datetime) + `rq worker --with-scheduler` (stored as whole seconds, floor)"
    due_rounding = "floor"
    worker_class = "rq.worker.Worker"

    async def setup(self) -> None:
        import peer_rq
        from redis import Redis
        from rq import Queue

        self.jobs = peer_rq
        self.conn = Redis.from_url(self.url)
        self.queue = Queue(QUEUE, connection=self.conn)
        self.Queue = Queue

    async def close(self) -> None:
        self.conn.close()

    async def enqueue(self) -> None:
        self.queue.enqueue(self.jobs.noop)

    async def enqueue_batch(self, n: int) -> None:
        self.queue.enqueue_many([self.Queue.prepare_data(self.jobs.noop) for _ in range(n)])

    async def stamp(self, i: int) -> None:
        self.queue.enqueue(self.jobs.stamp, i)

    async def stamp_at(self, due: float, i: int) -> None:
        self.queue.enqueue_at(utc(due), self.jobs.stamp, i)

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        return [[str(BIN / "rq"), "worker", QUEUE, "--url", self.url, "--worker-class", self.worker_class,
                 "--logging_level", "WARNING", *(["--with-scheduler"] if delayed else [])] for _ in range(nprocs)]

    def config(self, nprocs: int) -> str:
        return f"{nprocs} x `rq worker --worker-class {self.worker_class} --logging_level WARNING` (one job at a time)"

    async def remaining(self, r: Any, n: int) -> int:
        done = int(await r.zcard(self.queue.finished_job_registry.key))
        return n - done

    async def failed(self, r: Any) -> int | None:
        return int(await r.zcard(self.queue.failed_job_registry.key))


class RqSimple(Rq):
    name = "rq-simple"
    worker_class = "rq.worker.SimpleWorker"


class RqFork(Rq):
    name = "rq-fork"
    worker_class = "rq.worker.Worker"

    def config(self, nprocs: int) -> str:
        return super().config(nprocs) + ", a forked work-horse per job"


class Celery(Contender):
    async_client = False
    name = "celery"
    delayed_api = "task.apply_async(eta=datetime) (held by the worker until due)"

    async def setup(self) -> None:
        import peer_celery

        self.app = peer_celery

    async def close(self) -> None:
        self.app.app.close()

    async def enqueue(self) -> None:
        self.app.noop.delay()

    async def stamp(self, i: int) -> None:
        self.app.stamp.delay(i)

    async def stamp_at(self, due: float, i: int) -> None:
        self.app.stamp.apply_async((i,), eta=utc(due))

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        return [[str(BIN / "celery"), "-A", "peer_celery", "worker", "-Q", QUEUE, "--concurrency", str(nprocs),
                 "--loglevel", "WARNING", "-n", "peer@%h"]]

    def config(self, nprocs: int) -> str:
        return (f"1 x `celery worker --concurrency {nprocs}` (prefork pool of {nprocs} child process"
                f"{'es' if nprocs > 1 else ''} + the parent; defaults otherwise: prefetch multiplier 4, early ack)")

    async def remaining(self, r: Any, n: int) -> int:
        # Queue list + kombu's unacked hash (a prefetched message stays there until acked, which with the
        # default early ack is just before the task runs).
        return int(await r.llen(QUEUE)) + int(await r.hlen("unacked"))


class Taskiq(Contender):
    name = "taskiq"
    delayed_api = "task.schedule_by_time(ListRedisScheduleSource, datetime) + `taskiq scheduler --update-interval 1`"

    async def setup(self) -> None:
        import peer_taskiq

        self.app = peer_taskiq
        await self.app.broker.startup()  # documented client start-up: declares the stream's consumer group
        await self.app.source.startup()

    async def close(self) -> None:
        await self.app.broker.shutdown()
        await self.app.source.shutdown()

    async def enqueue(self) -> None:
        await self.app.noop.kiq()

    async def stamp(self, i: int) -> None:
        await self.app.stamp.kiq(i)

    async def stamp_at(self, due: float, i: int) -> None:
        await self.app.stamp.schedule_by_time(self.app.source, utc(due), i)

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        out = [[str(BIN / "taskiq"), "worker", "peer_taskiq:broker", "--workers", str(nprocs), "--log-level", "WARNING"]]
        if delayed:
            out.append([str(BIN / "taskiq"), "scheduler", "peer_taskiq:scheduler", "--update-interval", "1",
                        "--log-level", "WARNING"])
        return out

    def config(self, nprocs: int) -> str:
        return (f"1 x `taskiq worker --workers {nprocs}` (a manager + {nprocs} worker process"
                f"{'es' if nprocs > 1 else ''}; defaults: max-async-tasks 100, ack when saved) on RedisStreamBroker")

    async def remaining(self, r: Any, n: int) -> int:
        for g in await r.xinfo_groups(QUEUE):
            g = {(k.decode() if isinstance(k, bytes) else k): v for k, v in g.items()}
            lag = g.get("lag")
            if lag is None:
                lag = int(await r.xlen(QUEUE)) - int(g.get("entries-read") or 0)
            return int(g["pending"]) + int(lag)
        return n


class Dramatiq(Contender):
    async_client = False
    name = "dramatiq"
    delayed_api = "actor.send_with_options(delay=ms)"

    async def setup(self) -> None:
        import peer_dramatiq

        self.app = peer_dramatiq

    async def close(self) -> None:
        self.app.broker.close()

    async def enqueue(self) -> None:
        self.app.noop.send()

    async def stamp(self, i: int) -> None:
        self.app.stamp.send(i)

    async def stamp_at(self, due: float, i: int) -> None:
        self.app.stamp.send_with_options(args=(i,), delay=max(0, round((due - time.time()) * 1000)))

    def workers(self, nprocs: int, delayed: bool = False) -> list[list[str]]:
        return [[str(BIN / "dramatiq"), "peer_dramatiq", "--processes", str(nprocs), "--threads", "8"]]

    def config(self, nprocs: int) -> str:
        return (f"1 x `dramatiq peer_dramatiq --processes {nprocs} --threads 8` (a parent + {nprocs} worker "
                f"process{'es' if nprocs > 1 else ''}; threads 8 is the default)")

    async def remaining(self, r: Any, n: int) -> int:
        return int(await r.hlen(f"dramatiq:{QUEUE}.msgs"))  # a message leaves the hash when acked (after it ran)


CONTENDERS: dict[str, type[Contender]] = {c.name: c for c in (Corral, CorralTuned, NodeResque, Arq, Saq, RqSimple,
                                                              RqFork, Celery, Taskiq, Dramatiq)}


# ---- phases ------------------------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Phase:
    def __init__(self, c: Contender, r: Any, a: argparse.Namespace) -> None:
        self.c, self.r, self.a = c, r, a
        self.redis_pid = a.redis_pid

    def start_workers(self, nprocs: int, delayed: bool = False) -> list[subprocess.Popen[bytes]]:
        return [spawn(argv, self.c.env, self.c.logdir / f"{self.c.name}-{self.a.phase}-w{k}.log")
                for k, argv in enumerate(self.c.workers(nprocs, delayed))]

    def check_alive(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker exited with {p.returncode}: {self.log_tail()}")

    def log_tail(self) -> str:
        out = []
        for f in sorted(self.c.logdir.glob(f"{self.c.name}-{self.a.phase}-w*.log")):
            with contextlib.suppress(OSError):
                out.append(f"{f.name}: {f.read_text(errors='replace')[-800:]}")
        return " | ".join(out)

    async def enqueue_check(self, n: int) -> None:
        left = await self.c.remaining(self.r, n)
        if left != n:
            raise RuntimeError(f"after enqueuing {n} jobs, the library reports {left} outstanding")

    async def drain(self, n: int, nprocs: int) -> dict[str, Any]:
        t_spawn = time.perf_counter()
        procs = self.start_workers(nprocs)
        roots = [p.pid for p in procs]
        t_first = done_first = None
        cpu_first = rcpu_first = 0.0
        last_left, last_change = n, t_spawn
        timed_out = False
        try:
            while True:
                left = await self.c.remaining(self.r, n)
                now = time.perf_counter()
                if t_first is None and left < n:
                    t_first, done_first = now, n - left
                    cpu_first, rcpu_first = tree_cpu(roots), pid_cpu(self.redis_pid)
                if left <= 0:
                    break
                if left != last_left:
                    last_left, last_change = left, now
                self.check_alive(procs)
                if now - last_change > self.a.stall:
                    raise TimeoutError(f"stalled: {left} of {n} left, no progress for {self.a.stall:.0f} s")
                if now - t_spawn > self.a.drain_limit:  # reported with the rate so far (the harness marks it)
                    timed_out = True
                    break
                await asyncio.sleep(0.01)
            t_end = time.perf_counter()
            cpu_end, rcpu_end = tree_cpu(roots), pid_cpu(self.redis_pid)
            nprocs_seen = len(descendants(roots))
        finally:
            stop_all()
        if t_first is None or done_first is None:
            raise TimeoutError(f"no job done in the drain limit ({self.a.drain_limit:.0f} s): {self.log_tail()}")
        done = n - left
        counted = done - done_first
        steady = counted / (t_end - t_first) if t_end > t_first else float("nan")
        return {
            "jobs": n, "done": done, "timed_out": timed_out, "processes": nprocs, "config": self.c.config(nprocs),
            "jobs_per_s": steady,
            "cold_jobs_per_s": done / (t_end - t_spawn),
            "startup_s": t_first - t_spawn, "seconds": t_end - t_first, "done_at_first_poll": done_first,
            "worker_cpu_us_per_job": 1e6 * (cpu_end - cpu_first) / max(1, counted),
            "worker_cpu_pct": 100 * (cpu_end - cpu_first) / max(1e-9, t_end - t_first),
            "redis_cpu_us_per_job": 1e6 * (rcpu_end - rcpu_first) / max(1, counted),
            "os_processes": nprocs_seen,
            "failed": await self.c.failed(self.r),
            "leftover_redis_keys": int(await self.r.dbsize()),
        }

    async def ping_rtt(self, n: int = 2000) -> float:
        """Seconds per sequential PING on the harness's redis-py client: the round trip one call at a
        time can at best approach (the issue's "loopback limit"), measured in the same phase."""
        for _ in range(100):
            await self.r.ping()
        t0 = time.perf_counter()
        for _ in range(n):
            await self.r.ping()
        return (time.perf_counter() - t0) / n

    def raw_ping_block(self, sock: socket.socket, n: int) -> float:
        """Seconds for n sequential PINGs on a blocking socket (no client library, no event loop):
        the loopback round trip itself, the same floor for every contender."""
        t0 = time.perf_counter()
        for _ in range(n):
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            if sock.recv(64) != b"+PONG\r\n":
                raise RuntimeError("unexpected reply to PING")
        return time.perf_counter() - t0

    async def enqueue_against_raw_ping(self, n: int, block: int = 500) -> tuple[float, float, float, float]:
        """The sequential enqueues in blocks, each after a block of raw-socket PINGs: the round trip
        drifts (15-90 µs on this VM), so the share is the median of per-block ratios. A contender
        whose enqueue loop runs elsewhere (node-resque: in Node) gets PINGs before and after.
        Returns (enqueue seconds, client CPU seconds, raw RTT, share of 1 / raw RTT)."""
        host, port = self.a.redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.raw_ping_block(sock, 100)
            if type(self.c).enqueue_sequential is not Contender.enqueue_sequential:
                before = self.raw_ping_block(sock, 2000) / 2000
                secs, cpu = await self.c.enqueue_sequential(n)
                rtt = (before + self.raw_ping_block(sock, 2000) / 2000) / 2
                return secs, cpu, rtt, rtt * n / secs
            secs = cpu = ping = 0.0
            ratios = []
            for k in range(0, n, block):
                m = min(block, n - k)
                p = self.raw_ping_block(sock, m)
                e, c = await self.c.enqueue_sequential(m)
                secs, cpu, ping = secs + e, cpu + c, ping + p
                ratios.append(p / e)
            return secs, cpu, ping / n, statistics.median(ratios)

    async def drain1(self) -> dict[str, Any]:
        n = self.a.jobs
        rtt = await self.ping_rtt()
        secs, cpu, raw, raw_share = await self.enqueue_against_raw_ping(n)
        out: dict[str, Any] = {"enqueue_sequential": {"jobs": n, "jobs_per_s": n / secs,
                                                      "client_cpu_us_per_job": 1e6 * cpu / n,
                                                      "ping_rtt_us": 1e6 * rtt, "share_of_ping_limit": rtt * n / secs,
                                                      "raw_ping_rtt_us": 1e6 * raw,
                                                      "share_of_raw_ping_limit": raw_share}}
        await self.enqueue_check(n)
        out["drain"] = await self.drain(n, 1)
        return out

    async def drain2(self) -> dict[str, Any]:
        n = self.a.jobs
        out: dict[str, Any] = {}
        if self.c.has_batch:
            c0, t0 = time.process_time(), time.perf_counter()
            await self.c.enqueue_batch(n)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            out["enqueue_batch"] = {"jobs": n, "jobs_per_s": n / secs, "client_cpu_us_per_job": 1e6 * cpu / n,
                                    "api": self.c.batch_api}
        else:
            await self.c.prefill(n)
        await self.enqueue_check(n)
        out["drain"] = await self.drain(n, 2)
        return out

    async def warm_up(self, procs: list[subprocess.Popen[bytes]], delayed: bool) -> float:
        """A job (a delayed one for the delayed phase) must run before measuring: the workers (and the
        scheduler) are then up and idle. Returns seconds it took."""
        t0 = time.perf_counter()
        if delayed:
            await self.c.schedule([time.time() + 1.0])  # job index 0 = warm-up
        else:
            await self.c.stamp(-1)
        while True:
            if len(await self.starts()) >= 1:
                break
            self.check_alive(procs)
            if time.perf_counter() - t0 > self.a.warmup_limit:
                raise TimeoutError(f"warm-up job not run in {self.a.warmup_limit:.0f} s: {self.log_tail()}")
            await asyncio.sleep(0.02)
        await self.clear_starts()
        return time.perf_counter() - t0

    async def starts(self) -> dict[int, float]:
        """Job index -> start time, as the `stamp` jobs recorded them (local files, or `bench:starts`)."""
        rows: list[str] = []
        if self.c.starts_dir is not None:
            for f in self.c.starts_dir.glob("*.starts"):
                rows += f.read_text().splitlines()
        else:
            rows = [row.decode() for row in await self.r.lrange(STARTS, 0, -1)]
        out = {}
        for row in rows:
            if row.strip():
                i, t = row.split()
                out[int(i)] = float(t)
        return out

    async def clear_starts(self) -> None:
        if self.c.starts_dir is None:
            await self.r.delete(STARTS)
            return
        for f in self.c.starts_dir.glob("*.starts"):  # O_APPEND writers go on at the new end
            os.truncate(f, 0)

    async def collect(self, n: int, limit: float) -> dict[int, float]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and len(await self.starts()) < n:  # noqa: ASYNC110 - polls
            await asyncio.sleep(0.05)
        return await self.starts()

    async def pickup(self) -> dict[str, Any]:
        n, spacing = self.a.samples, 0.010
        procs = self.start_workers(1)
        try:
            warm = await self.warm_up(procs, False)
            await asyncio.sleep(1.0)  # idle
            sent = await self.c.send_spaced(n, spacing)
            starts = await self.collect(n, 30)
        finally:
            stop_all()
        lat = [1000 * (starts[i] - sent[i]) for i in sent if i in starts]
        first = [1000 * (starts[i] - sent[i]) for i in sorted(sent)[:20] if i in starts]
        return {"samples": n, "started": len(lat), "spacing_ms": 1000 * spacing, "config": self.c.config(1),
                "warmup_s": warm, "p50_first20_ms": pct(first, 50), "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
                "p99_ms": pct(lat, 99),
                "max_ms": max(lat) if lat else None, "min_ms": min(lat) if lat else None}

    async def delayed(self) -> dict[str, Any]:
        n = self.a.samples
        procs = self.start_workers(1, delayed=True)
        try:
            warm = await self.warm_up(procs, True)
            now = time.time()
            second = math.ceil(now) + (4 if now % 1 > 0.5 else 3)  # the due window is (second-1, second]
            dues = [second - 1 + (j + 1) / n for j in range(n)]
            await self.c.schedule(dues)
            enq_done = time.time()
            starts = await self.collect(n, second - time.time() + self.a.delayed_limit)
            extras = self.c.delayed_extras()
        finally:
            stop_all()
        late = [1000 * (starts[j] - dues[j]) for j in range(n) if j in starts]
        eff = [1000 * (starts[j] - self.c.effective_due(dues[j])) for j in range(n) if j in starts]
        return {"samples": n, "started": len(late), "config": self.c.config(1), "api": self.c.delayed_api,
                "due_rounding": self.c.due_rounding, "warmup_s": warm,
                "enqueue_finished_before_first_due_s": dues[0] - enq_done,
                "p50_ms": pct(late, 50), "p99_ms": pct(late, 99), "min_ms": min(late) if late else None,
                "max_ms": max(late) if late else None, "early": sum(1 for x in late if x < 0),
                "vs_stored_due_p50_ms": pct(eff, 50), "vs_stored_due_p99_ms": pct(eff, 99),
                "vs_stored_due_deciles_ms": [round(pct(eff, q), 1) for q in range(0, 101, 10)], **extras}


async def amain(a: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    os.makedirs(a.logdir, exist_ok=True)
    logdir = Path(a.logdir)
    starts_dir = None
    if a.starts == "local":  # a fresh directory per phase: the `stamp` jobs' start records
        starts_dir = logdir / f"{a.contender}-{a.phase}-starts"
        shutil.rmtree(starts_dir, ignore_errors=True)
        starts_dir.mkdir(parents=True)
    c = CONTENDERS[a.contender](a.redis_url, logdir, starts_dir)
    r = Redis.from_url(a.redis_url)
    await c.setup()
    try:
        ph = Phase(c, r, a)
        return dict(await getattr(ph, a.phase)())
    finally:
        with contextlib.suppress(Exception):
            await c.close()
        await r.aclose()


try:
    import uvloop

    run_loop: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]] = uvloop.run
    LOOP_NAME = f"uvloop {uvloop.__version__}"
except ImportError:  # pragma: no cover - the peers' venv sees the main interpreter's uvloop
    run_loop = asyncio.run
    LOOP_NAME = "asyncio"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--contender", required=True, choices=sorted(CONTENDERS))
    p.add_argument("--phase", required=True, choices=["drain1", "drain2", "pickup", "delayed"])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--redis-pid", type=int, required=True)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--stall", type=float, default=60.0)
    p.add_argument("--drain-limit", type=float, default=600.0)
    p.add_argument("--warmup-limit", type=float, default=60.0)
    p.add_argument("--delayed-limit", type=float, default=30.0)
    p.add_argument("--logdir", required=True)
    p.add_argument("--starts", choices=["local", "redis"], default="local",
                   help="where `stamp` jobs record their start: a local file per worker process (one write, "
                        "off the jobs' path) or RPUSH to bench:starts through the library's client")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.environ["BENCH_REDIS_URL"] = a.redis_url  # read by the app modules the client side imports
    signal.signal(signal.SIGTERM, lambda *_: (stop_all(2.0), sys.exit(143)))
    try:
        # every async client (Corral, arq, saq, taskiq) is driven on uvloop when it is installed,
        # as Corral's own nodes run; the sync ones (RQ, Celery, dramatiq) are not affected
        res: dict[str, Any] = {"ok": True, "loop": LOOP_NAME, "starts": a.starts, **run_loop(amain(a))}
    except BaseException as e:
        stop_all(2.0)
        res = {"ok": False, "error": f"{type(e).__name__}: {e}"[:3000], "traceback": traceback.format_exc()[-3000:]}
    finally:
        stop_all(2.0)
    Path(a.out).write_text(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
