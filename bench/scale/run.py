#!/usr/bin/env python3
"""Corral scale simulation: many `corral node` processes on one Redis primary.

    python bench/scale/run.py                 # 50 nodes (or as many as fit), ~10 min
    python bench/scale/run.py --nodes 20      # fewer nodes
    python bench/scale/run.py --worktree      # measure the checkout's files instead of a HEAD snapshot

What it measures (results: bench/raw/scale-<date>-n<N>.json; write-up: bench/SCALE.md):
  redis-benchmark   SET, GET and EVALSHA of small scripts on this machine's redis-server, PUBLISH to
                    0 and 50 subscribers (from 50 clients and from 1), ZRANGE of a 50- and 1,000-member
                    zset: Redis CPU per request (the capacity figures SCALE.md's arithmetic starts from)
  start-up          N nodes, started in small batches; stops adding nodes when memory runs short
                    or a node does not become ready (the number that fit is reported)
  idle traffic      INFO commandstats delta over an idle window (default 30 s): commands/s for
                    the cluster and per node, by command; Redis and node CPU; then a MONITOR
                    sample (10 s) attributes EVALSHAs to scripts and connections to nodes
  leader            every node's /leader polled in rounds for a window (default 60 s): rounds
                    with 0, 1 or >1 nodes saying is_leader, and the Redis lock holder
  trickle           single `enqueue` calls on the idle cluster at 10, 50 and 200/s (10 s each):
                    Redis commands, Redis CPU and node CPU per job when every enqueue's wake-up
                    reaches every node
  spread            50,000 no-op jobs by `Client.enqueue_many` once all nodes are ready: drain
                    time, Redis commands per job, Redis CPU per job, per-node share vs fair share;
                    then the same with jobs that sleep 10 ms (async), where node CPU contention
                    on this 2-core machine is not what decides the shares
  failover          kill -9 the leader K times (default 5); time until another node's /leader
                    says is_leader, and the new term's `since` minus the kill; then the same
                    on a 3-node cluster
  rss               VmRSS of every node (idle and after the drain)

The task is an async no-op that records which node ran it by appending one byte to a per-process
file (`<out>/<pid>-<node id>`): no Redis traffic of its own. The product's own per-worker counter
(`stat:processed:<worker>`) is read as a cross-check.

Everything is bounded in time and loopback only; it kills only the processes it started, by pid,
also on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _product_source() -> tuple[Path, str]:
    """Other sessions edit and commit to this checkout while a run goes on: by default a clean
    `git archive` snapshot of one revision is measured (first on PYTHONPATH for the harness's
    Client and for every node). `--worktree` measures the files as they are."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--rev", default="HEAD")
    pre.add_argument("--worktree", action="store_true")
    a, _ = pre.parse_known_args()
    if a.worktree or __name__ != "__main__" or {"-h", "--help"} & set(sys.argv[1:]):
        return ROOT, "worktree"  # --help must not leave a snapshot behind in /tmp
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", a.rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    src = Path(tempfile.mkdtemp(prefix=f"corral-scale-src-{sha[:10]}-"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", sha, "cluster", "node"],
                         capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=tar, check=True)
    return src, sha


SRC, SRC_REV = _product_source()
sys.path.insert(0, str(SRC))
sys.path.insert(1, str(ROOT / "bench"))

from redis.asyncio import Redis  # noqa: E402
from servers import REDIS_SERVER, RedisServer, start_redis  # noqa: E402  (bench/servers.py)

from cluster.client import Client  # noqa: E402
from cluster.keys import Keys  # noqa: E402

RAW = ROOT / "bench" / "raw"
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
NS = "resque"
KEYS = Keys(NS)
QUEUE = "default"
SCRIPT_COMMANDS = {"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"}

TASKS_FILE = '''\
"""Scale benchmark task: an async no-op (or an async sleep of params["s"] seconds) that records
which node ran it (one byte appended to a per-process file; no Redis traffic of its own)."""
import asyncio
import os

from cluster import task

OUT = {out!r}
_fds = {{}}


def _mark(node_id):
    fd = _fds.get(node_id)
    if fd is None:
        fd = os.open(os.path.join(OUT, f"{{os.getpid()}}-{{node_id}}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fds[node_id] = fd
    os.write(fd, b".")


@task(name="noop", queue="default")
async def noop(params, ctx):
    if params.get("s"):
        await asyncio.sleep(params["s"])
    _mark(ctx.node_id)
'''


# ---- small helpers ---------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_ticks() -> tuple[float, float]:
    parts = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


async def wait_quiet(max_wait: float, busy_limit: float = 0.25) -> float:
    """Wait (at most max_wait s) until the machine is < busy_limit busy; returns the last busy share."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = cpu_ticks()
        await asyncio.sleep(0.5)
        b1, t1 = cpu_ticks()
        busy = (b1 - b0) / max(1.0, t1 - t0)
        if busy <= busy_limit or time.monotonic() >= deadline:
            return busy


def corral_bin() -> list[str]:
    """The real console script (not a pyenv shim), so the pid held is the node's own."""
    cand = Path(sys.executable).parent / "corral"
    if cand.exists():
        return [str(cand)]
    found = shutil.which("corral")
    return [found] if found else [sys.executable, "-m", "node"]


async def http_get(port: int, path: str, limit: float = 1.0) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    return await asyncio.wait_for(go(), limit)


def spawn(argv: list[str], log_to: Path | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    """A child in its own session (a Ctrl-C in the terminal reaches the harness only)."""
    if log_to is not None:
        with open(log_to, "ab") as fh:
            return spawn(argv, stdout=fh, stderr=subprocess.STDOUT, **kw)
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kw)


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_v = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout.strip()
    m = re.search(r"v=(\S+)", redis_v)
    import redis as redis_py
    import uvloop

    if SRC_REV == "worktree":
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() + " (worktree)"
    else:
        commit = SRC_REV[:10]
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_total_mb": round(_mem_total_mb()),
            "python": platform.python_version(), "redis": m.group(1) if m else redis_v,
            "redis_py": redis_py.__version__, "uvloop": uvloop.__version__, "commit": commit,
            "kernel": platform.release(), "loadavg": os.getloadavg()}


def _mem_total_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def script_shas() -> dict[str, str]:
    """sha1 -> script name, as redis-py's register_script computes it (sha1 of the source text)."""
    out = {}
    for f in (SRC / "cluster" / "scripts").glob("*.lua"):
        out[hashlib.sha1(f.read_text().encode()).hexdigest()] = f.stem
    return out


LUA_COMMANDS: set[str] = set()
for _f in (SRC / "cluster" / "scripts").glob("*.lua"):
    LUA_COMMANDS |= {m.lower() for m in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", _f.read_text())}


# ---- processes ----------------------------------------------------------------------------------

class Node:
    def __init__(self, h: Harness, name: str, port: int | None = None) -> None:
        self.h = h
        self.name = name
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.node_id: str | None = None  # the full id (name + per-start suffix), from /leader
        self.log_path = h.tmp / "logs" / f"{name}-{self.port}.log"
        self.started_mono = 0.0
        self.ready_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Node:
        argv = [*corral_bin(), "node", "--redis-url", self.h.url, "--tasks-dir", str(self.h.tasks_dir),
                "--queues", QUEUE, "--log-level", "warning", "--http-port", str(self.port),
                "--node-id", self.name, "--shutdown-timeout", "5"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.started_mono = time.monotonic()
        self.proc = spawn(argv, log_to=self.log_path, env=env, cwd=self.h.tmp)
        self.h.procs.append(self.proc)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, limit: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if not self.alive():
                raise RuntimeError(f"node {self.name} exited early; log: {self.tail()}")
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
                status, _ = await http_get(self.port, "/readyz", 1.0)
                if status == 200:
                    self.ready_s = time.monotonic() - self.started_mono
                    view = await self.leader_view(2.0)
                    if view:
                        self.node_id = view.get("node")
                    return self.ready_s
            await asyncio.sleep(0.05)
        raise TimeoutError(f"node {self.name} not ready in {limit}s; log: {self.tail()}")

    async def leader_view(self, limit: float = 1.0) -> dict[str, Any] | None:
        try:
            status, body = await http_get(self.port, "/leader", limit)
        except (OSError, TimeoutError, ValueError, IndexError):
            return None
        return dict(json.loads(body)) if status == 200 else None

    async def get_json(self, path: str, limit: float = 2.0) -> dict[str, Any] | None:
        try:
            _status, body = await http_get(self.port, path, limit)
        except (OSError, TimeoutError, ValueError, IndexError):
            return None
        with contextlib.suppress(ValueError):
            return dict(json.loads(body))
        return None

    async def metric(self, names: tuple[str, ...], limit: float = 3.0) -> dict[str, float] | None:
        try:
            status, body = await http_get(self.port, "/metrics", limit)
        except (OSError, TimeoutError, ValueError, IndexError):
            return None
        if status != 200:
            return None
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            for n in names:
                if line.startswith(n + " ") or line.startswith(n + "{"):
                    out[n] = out.get(n, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def rss_mb(self) -> float | None:
        kb = proc_status_kb(self.pid, "VmRSS") if self.alive() else None
        return None if kb is None else kb / 1024

    def tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    async def wait_exit(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while self.alive() and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a child process)
            await asyncio.sleep(0.02)
        return not self.alive()

    async def stop(self, limit: float = 15.0) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            if not await self.wait_exit(limit):
                self.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)


class Harness:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="corral-scale-"))
        self.tasks_dir = self.tmp / "tasks"
        self.marks = self.tmp / "marks"
        for d in (self.tasks_dir, self.marks, self.tmp / "logs"):
            d.mkdir()
        (self.tasks_dir / "scale_tasks.py").write_text(TASKS_FILE.format(out=str(self.marks)))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server: RedisServer | None = None
        self.port = 0
        self.url = ""
        self.r: Redis | None = None

    async def start_redis(self) -> None:
        self.server = start_redis(self.tmp / "redis")  # bench/servers.py: the benchmarks' one launcher
        self.port = self.server.port
        self.url = self.server.url
        self.r = Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        await self.r.ping()

    @property
    def redis(self) -> Redis:
        assert self.r is not None
        return self.r

    @property
    def redis_pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def cleanup(self) -> None:
        if self.server is not None:
            self.server.kill()
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Contention:
    """CPU used on this machine by processes that are not ours (other sessions share it), sampled every 0.5 s."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        prev: tuple[float, dict[int, float], float] | None = None
        while True:
            pids = [p.pid for p in self.h.procs if p.poll() is None] + [os.getpid()]
            busy, _ = cpu_ticks()
            ours = {pid: proc_cpu_seconds(pid) for pid in pids}
            now = time.monotonic()
            if prev is not None:
                pbusy, pours, pt = prev
                mine = sum(v - pours[k] for k, v in ours.items() if k in pours and not math.isnan(v - pours[k]))
                self.samples.append((now, max(0.0, (busy - pbusy) / hz - mine) / max(1e-3, now - pt)))
            prev = (busy, ours, now)
            await asyncio.sleep(0.5)

    def mean_between(self, t0: float, t1: float | None = None) -> float:
        xs = [v for t, v in self.samples if t >= t0 and (t1 is None or t <= t1)]
        return round(statistics.fmean(xs), 3) if xs else float("nan")


# ---- Redis measurements ---------------------------------------------------------------------------

async def redis_cpu(h: Harness) -> float:
    """redis-server's CPU seconds (user + sys, getrusage: microsecond resolution, unlike /proc ticks)."""
    info = await h.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def commandstats(r: Redis) -> dict[str, int]:
    info = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
            if after.get(k, 0) != before.get(k, 0)}


def split_commands(d: dict[str, int], harness: dict[str, int]) -> dict[str, Any]:
    """Client-issued vs script-internal (by command name: a command that some script uses is counted
    as script-internal unless no script ran), minus the harness's own commands."""
    d = {k: v - harness.get(k, 0) for k, v in d.items()}
    d = {k: v for k, v in d.items() if v > 0 and not k.startswith(("info", "config"))}
    scripts = sum(v for k, v in d.items() if k in SCRIPT_COMMANDS)
    client_other = {k: v for k, v in d.items() if k not in SCRIPT_COMMANDS and k not in LUA_COMMANDS}
    inner = {k: v for k, v in d.items() if k in LUA_COMMANDS}
    return {"by_command": d, "total": sum(d.values()), "evalsha": scripts,
            "client_other": client_other, "client_total": scripts + sum(client_other.values()),
            "script_internal_or_shared": inner, "script_internal_or_shared_total": sum(inner.values())}


async def monitor_sample(h: Harness, seconds: float, nodes: list[Node]) -> dict[str, Any]:
    """MONITOR for a few seconds: EVALSHAs by script, top-level commands by node (connection ->
    pid via /proc), script-internal commands by name. Costs Redis CPU, so it runs outside the
    commandstats window."""
    shas = script_shas()
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    lines: list[str] = []
    try:
        writer.write(b"MONITOR\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), 2.0)
        assert first.startswith(b"+OK"), first
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = await asyncio.wait_for(reader.readline(), left)
            except TimeoutError:
                break
            if not line:
                break
            lines.append(line.decode(errors="replace"))
    finally:
        writer.close()
    port_pid = socket_owners(h.port, {n.pid: n for n in nodes if n.alive()})
    pid_node = {n.pid: n for n in nodes}
    leader_pid = None
    for n in nodes:
        v = await n.leader_view(2.0)
        if v and v.get("is_leader"):
            leader_pid = n.pid
    line_re = re.compile(r'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"(?: "([^"]*)")?')
    by_script: Counter[str] = Counter()
    top_by_cmd: Counter[str] = Counter()
    inner_by_cmd: Counter[str] = Counter()
    per_pid: dict[int | str, Counter[str]] = defaultdict(Counter)
    for ln in lines:
        m = line_re.match(ln)
        if not m:
            continue
        who, cmd, arg1 = m.group(1), m.group(2).lower(), m.group(3)
        if who == "lua":
            inner_by_cmd[cmd] += 1
            continue
        top_by_cmd[cmd] += 1
        label = cmd
        if cmd in ("evalsha", "eval"):
            label = "evalsha " + shas.get(arg1 or "", (arg1 or "?")[:10])
            by_script[label] += 1
        port = int(who.rsplit(":", 1)[1]) if ":" in who else -1
        owner: int | str = port_pid.get(port, "harness/other")
        if owner == os.getpid():
            owner = "harness/other"
        per_pid[owner][label] += 1
    follower_rates: list[dict[str, float]] = []
    leader_rate: dict[str, float] = {}
    for pid, c in per_pid.items():
        if not isinstance(pid, int) or pid not in pid_node:
            continue
        rates = {k: v / seconds for k, v in c.items()}
        if pid == leader_pid:
            leader_rate = rates
        else:
            follower_rates.append(rates)
    labels = sorted({k for r in follower_rates for k in r})
    follower_median = {k: statistics.median([r.get(k, 0.0) for r in follower_rates]) for k in labels}
    return {
        "seconds": seconds, "lines": len(lines),
        "top_level_per_s": {k: v / seconds for k, v in top_by_cmd.most_common()},
        "evalsha_by_script_per_s": {k: v / seconds for k, v in by_script.most_common()},
        "script_internal_per_s": {k: v / seconds for k, v in inner_by_cmd.most_common()},
        "leader_top_level_per_s": leader_rate,
        "follower_median_top_level_per_s": follower_median,
        "followers_seen": len(follower_rates),
        "unattributed_top_level_per_s": {k: v / seconds for k, v in per_pid.get("harness/other", Counter()).items()},
    }


def socket_owners(redis_port: int, pids: dict[int, Any]) -> dict[int, int]:
    """Local TCP port of each connection to redis_port -> pid of the process holding it."""
    inode_port: dict[str, int] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines()[1:]:
                f = line.split()
                local, remote, inode = f[1], f[2], f[9]
                if int(remote.rsplit(":", 1)[1], 16) == redis_port:
                    inode_port[inode] = int(local.rsplit(":", 1)[1], 16)
    out: dict[int, int] = {}
    for pid in [*pids, os.getpid()]:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        port = inode_port.get(target[8:-1])
                        if port is not None:
                            out[port] = pid
    return out


def redis_benchmark(port: int, args: list[str], n: int, clients: int = 50) -> float:
    """requests/s from `redis-benchmark -q`."""
    cmd = [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(port), "-q", "-n", str(n), "-c", str(clients), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    # -q prints "\rSET: rps=... \r" progress, then "SET: 98765.43 requests per second, p50=0.263 msec"
    m = re.findall(r"([\d.]+) requests per second", out)
    if not m:
        raise RuntimeError(f"redis-benchmark said: {out[-500:]!r}")
    return float(m[-1])


class Subscribers:
    """n raw subscriber connections to one channel, drained (and discarded) by a thread."""

    def __init__(self, port: int, n: int, channel: str) -> None:
        import selectors
        import threading

        self.sel = selectors.DefaultSelector()
        self.socks = []
        for _ in range(n):
            sk = socket.create_connection(("127.0.0.1", port), timeout=5)
            sk.sendall(f"SUBSCRIBE {channel}\r\n".encode())
            sk.setblocking(False)
            self.sel.register(sk, selectors.EVENT_READ)
            self.socks.append(sk)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.received = 0

    def start(self) -> None:
        self.thread.start()
        time.sleep(0.5)

    def _drain(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.sel.select(0.2):
                with contextlib.suppress(BlockingIOError, OSError):
                    self.received += len(key.fileobj.recv(1 << 16))  # type: ignore[union-attr]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for sk in self.socks:
            with contextlib.suppress(OSError):
                sk.close()


async def sc_redis_benchmark(h: Harness, repeats: int, quiet: float) -> dict[str, Any]:
    """SET and EVALSHA of small scripts on a fresh server, before any node runs. Median of repeats."""
    r = h.redis
    src = {p.stem: p.read_text() for p in (SRC / "cluster" / "scripts").glob("*.lua")}
    renew_sha = await r.script_load(src["renew"])
    acquire_sha = await r.script_load(src["acquire"])
    fetch_sha = await r.script_load(src["fetch"])
    hb_sha = await r.script_load(src["heartbeat"])
    await r.set("bench:lock", "tok")
    await r.set("bench:resque-lock", "tok")
    await r.set("resque:corral:leader_lock", "someone/1/abcd")
    fetch_keys = ["resque:corral:inflight:x", "resque:worker:x+0:default", "resque:worker:x+0:default:started",
                  "resque:stat:processed", "resque:stat:processed:x+0", "resque:stat:failed",
                  "resque:stat:failed:x+0", "resque:failed", "resque:corral:recovered", "resque:corral:idle:default",
                  "resque:corral:members", "resque:queue:empty", "resque:corral:qtimes:empty"]
    fetch_args = ["0", "", "", "", "0", "1", "0123456789abcdef", "Thu Jan 01 1970 00:00:00 GMT+0000", "x+0",
                  "0", "x", "0", "empty"]
    await r.zadd("resque:corral:members", {"x": 1})
    cases: dict[str, list[str]] = {
        "SET (redis-benchmark -t set)": ["-t", "set"],
        "GET (redis-benchmark -t get)": ["-t", "get"],
        "EVALSHA renew.lua (GET + PEXPIRE, both locks)": ["EVALSHA", renew_sha, "2", "bench:lock", "bench:resque-lock",
                                                          "tok", "5000"],
        "EVALSHA acquire.lua, lock held (INFO server + GET + PTTL)": ["EVALSHA", acquire_sha, "5",
                                                         "resque:corral:leader_lock", "resque:corral:epoch",
                                                         "resque:corral:leader", "resque:corral:epoch_run",
                                                         "resque:resque_scheduler_leader_lock",
                                                         "n", "r", "5000", "0", "3500"],
        "EVALSHA fetch.lua, empty queue (idle poll: 1 LPOP)": ["EVALSHA", fetch_sha, str(len(fetch_keys)),
                                                               *fetch_keys, *fetch_args],
        "EVALSHA heartbeat.lua, 1 worker (TIME ZSCORE ZADD HSET SET)": [
            "EVALSHA", hb_sha, "3", "resque:corral:members", "resque:corral:node:x", "resque:worker:ping:x+0", "x",
            '{"node":"x","queues":["default"]}', "60000", '{"time":0,"name":"x+0","queues":"default"}'],
    }
    for args in cases.values():  # each script case must run, not answer an error (which is cheaper)
        if args[0] == "EVALSHA":
            await r.execute_command(*args)
    cases["SET pipelined 16 (redis-benchmark -t set -P 16)"] = ["-t", "set", "-P", "16"]
    # every Corral enqueue publishes one wake-up that each node's subscriber receives: price one delivery
    cases["PUBLISH, 0 subscribers"] = ["PUBLISH", "bench:wake", "default"]
    cases["PUBLISH, 50 subscribers"] = ["PUBLISH", "bench:wake", "default"]
    # the same from one client (one PUBLISH in flight): with 50 clients the server batches many messages
    # into one write per subscriber; a lone enqueue's wake-up pays one write to every subscriber
    cases["PUBLISH, 0 subscribers, 1 client"] = ["PUBLISH", "bench:nobody", "default"]
    cases["PUBLISH, 50 subscribers, 1 client"] = ["PUBLISH", "bench:wake", "default"]
    # every node reads the whole members zset every 5 s (cluster gauges): an O(N) read per node, O(N^2) in all
    for size in (50, 1000):
        await r.zadd(f"bench:members{size}", {f"node-{i:04d}-abcdef": 1.7e12 + i for i in range(size)})
        cases[f"ZRANGE members 0 -1 WITHSCORES, {size} members (gauge refresher)"] = [
            "ZRANGE", f"bench:members{size}", "0", "-1", "WITHSCORES"]
    out: dict[str, Any] = {}
    subscribers: Subscribers | None = None
    for label, args in cases.items():
        if label == "PUBLISH, 50 subscribers":
            subscribers = Subscribers(h.port, 50, "bench:wake")
            subscribers.start()
        vals, cpu_us = [], []
        for _ in range(repeats):
            await wait_quiet(quiet)
            c0 = await redis_cpu(h)
            one = label.endswith("1 client")
            # 1,000-member replies are ~40 KB each; one client is latency-bound
            requests = 20_000 if "1000 members" in label or one else 200_000
            vals.append(await asyncio.to_thread(redis_benchmark, h.port, args, requests, 1 if one else 50))
            cpu_us.append(1e6 * (await redis_cpu(h) - c0) / requests)
            if label.startswith("PUBLISH, 50"):  # each delivery must reach a live subscriber
                numsub = dict(await r.pubsub_numsub("bench:wake"))
                if numsub.get("bench:wake") != 50:
                    raise RuntimeError(f"{label}: {numsub.get('bench:wake')} of 50 subscribers left")
        us = statistics.median(cpu_us)
        # server-side cost: redis-server CPU per request (includes reading and answering the socket);
        # 1e6 / that = requests/s one fully busy Redis core could serve, whatever the client's limits
        out[label] = {"median_rps": statistics.median(vals), "runs": vals, "redis_cpu_us_per_request": us,
                      "redis_cpu_us_runs": cpu_us, "one_core_capacity_per_s": 1e6 / us if us else None}
        log(f"   redis-benchmark {label}: {statistics.median(vals):,.0f}/s (runs {', '.join(f'{v:,.0f}' for v in vals)});"
            f" Redis CPU {us:.2f} us/request = {1e6 / us if us else float('nan'):,.0f}/s per full core")
    if subscribers is not None:
        out["PUBLISH, 50 subscribers"]["subscriber_bytes_received"] = subscribers.received
        subscribers.stop()
    for suffix in ("", ", 1 client"):
        c0 = out[f"PUBLISH, 0 subscribers{suffix}"]["redis_cpu_us_per_request"]
        c50 = out[f"PUBLISH, 50 subscribers{suffix}"]["redis_cpu_us_per_request"]
        out[f"PUBLISH, per subscriber delivered{suffix}"] = {
            "redis_cpu_us_per_request": (c50 - c0) / 50,
            "derived": f"(PUBLISH to 50 subscribers{suffix} - PUBLISH to 0{suffix}) / 50"}
        log(f"   one PUBLISH delivery to a subscriber{suffix}: {(c50 - c0) / 50:.2f} us of Redis CPU")
    await r.flushall()
    await r.script_flush()
    return {"clients": "50 (1 for the '1 client' cases)",
            "requests": "200,000 (20,000 for the 1,000-member ZRANGE and the '1 client' cases)", "pipeline": 1,
            "cases": out}


# ---- leader polling -------------------------------------------------------------------------------

async def leader_round(nodes: list[Node], limit: float = 1.0) -> tuple[list[Node], int, float]:
    """One round: every node's /leader at once. (nodes saying is_leader, nodes that answered, seconds)."""
    t0 = time.perf_counter()
    views = await asyncio.gather(*(n.leader_view(limit) for n in nodes))
    leaders = [n for n, v in zip(nodes, views, strict=True) if v and v.get("is_leader")]
    answered = sum(1 for v in views if v)
    return leaders, answered, time.perf_counter() - t0


async def sc_leader_window(h: Harness, nodes: list[Node], seconds: float, every: float) -> dict[str, Any]:
    counts: Counter[int] = Counter()
    round_s: list[float] = []
    unanswered = 0
    lock_mismatch = 0
    holders: Counter[str] = Counter()
    bad_rounds: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        leaders, answered, took = await leader_round(nodes)
        token = await h.redis.get(KEYS.leader_lock)
        round_s.append(took)
        counts[len(leaders)] += 1
        unanswered += len(nodes) - answered
        holder = str(token).rsplit("/", 2)[0] if token else None
        holders[holder or "none"] += 1
        if len(leaders) == 1 and leaders[0].node_id != holder:
            lock_mismatch += 1
        if len(leaders) != 1 and len(bad_rounds) < 20:
            bad_rounds.append({"t": round(tick, 3), "leaders": [n.name for n in leaders], "lock_holder": holder})
        await asyncio.sleep(max(0.0, every - (time.monotonic() - tick)))
    rounds = sum(counts.values())
    return {
        "seconds": seconds, "rounds": rounds, "rounds_by_leader_count": {str(k): v for k, v in sorted(counts.items())},
        "rounds_zero_leaders": counts.get(0, 0), "rounds_more_than_one_leader": sum(v for k, v in counts.items() if k > 1),
        "round_duration_ms_p50": 1000 * pct(round_s, 50), "round_duration_ms_p99": 1000 * pct(round_s, 99),
        "unanswered_requests": unanswered, "lock_holder_mismatch_rounds": lock_mismatch,
        "lock_holders_seen": dict(holders), "bad_rounds": bad_rounds,
    }


async def transitions(nodes: list[Node]) -> dict[str, Any]:
    """Sum over nodes of corral_leader_transitions_total and corral_is_leader (scrapes never touch Redis)."""
    res = await asyncio.gather(*(n.metric(("corral_leader_transitions_total", "corral_is_leader")) for n in nodes))
    ok = [m for m in res if m is not None]
    return {"answered": len(ok), "transitions_sum": sum(m.get("corral_leader_transitions_total", 0) for m in ok),
            "is_leader_sum": sum(m.get("corral_is_leader", 0) for m in ok)}


# ---- failover ---------------------------------------------------------------------------------------

async def sc_failover(h: Harness, nodes: list[Node], kills: int, label: str) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    for k in range(kills):
        leader = None
        deadline = time.monotonic() + 30
        while leader is None and time.monotonic() < deadline:
            leaders, _answered, _ = await leader_round(nodes)
            if len(leaders) == 1:
                leader = leaders[0]
            else:
                await asyncio.sleep(0.1)
        if leader is None:
            raise RuntimeError(f"failover {label}: no single leader within 30 s")
        # at least one renew after it was seen: the lease is fully extended; then a random phase
        await asyncio.sleep(1.2 + random.uniform(0, 1.0))
        others = [n for n in nodes if n is not leader]
        old_epoch = (await leader.leader_view(1.0) or {}).get("epoch")
        t_wall = time.time()
        t0 = time.perf_counter()
        os.kill(leader.pid, signal.SIGKILL)
        t1 = None
        new_view: dict[str, Any] | None = None
        rounds = 0
        multi = 0
        round_s: list[float] = []
        while time.perf_counter() - t0 < 30:
            tick = time.perf_counter()
            views = await asyncio.gather(*(n.leader_view(1.0) for n in others))
            rounds += 1
            round_s.append(time.perf_counter() - tick)
            lead = [v for v in views if v and v.get("is_leader")]
            if len(lead) > 1:
                multi += 1
            if lead:
                t1 = time.perf_counter()
                new_view = lead[0]
                break
            await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - tick)))
        if t1 is None or new_view is None:
            raise RuntimeError(f"failover {label}: no new leader in 30 s")
        since = new_view.get("since")
        s = {"seen_ms": 1000 * (t1 - t0), "since_minus_kill_ms": 1000 * (float(since) - t_wall) if since else None,
             "poll_rounds": rounds, "poll_round_ms_p50": 1000 * pct(round_s, 50), "rounds_more_than_one_leader": multi,
             "old_epoch": old_epoch, "new_epoch": new_view.get("epoch")}
        samples.append(s)
        log(f"   failover {label} kill {k + 1}: new leader seen after {s['seen_ms']:.0f} ms "
            f"(its term began {s['since_minus_kill_ms']:.0f} ms after the kill; poll round p50 "
            f"{s['poll_round_ms_p50']:.0f} ms)")
        await leader.wait_exit(10)
        idx = nodes.index(leader)
        nodes[idx] = Node(h, leader.name, port=leader.port).start()
        await nodes[idx].wait_ready(60)
        await asyncio.sleep(1.0)
    seen = [s["seen_ms"] for s in samples]
    since = [s["since_minus_kill_ms"] for s in samples if s["since_minus_kill_ms"] is not None]
    return {"nodes": len(nodes), "kills": kills, "samples": samples,
            "seen_ms": {"min": min(seen), "median": statistics.median(seen), "max": max(seen)},
            "term_began_ms": {"min": min(since), "median": statistics.median(since), "max": max(since)} if since else None,
            "rounds_more_than_one_leader": sum(s["rounds_more_than_one_leader"] for s in samples)}


# ---- spread and traffic ---------------------------------------------------------------------------------

def mark_counts(h: Harness) -> dict[int, int]:
    """pid -> jobs that process ran (bytes in its mark files)."""
    out: dict[int, int] = defaultdict(int)
    for f in h.marks.iterdir():
        with contextlib.suppress(ValueError, OSError):
            out[int(f.name.split("-", 1)[0])] += f.stat().st_size
    return dict(out)


async def processed_by_worker(h: Harness) -> dict[str, int]:
    out = {}
    async for k in h.redis.scan_iter(match=KEYS.stat_processed + ":*", count=1000):
        out[k.removeprefix(KEYS.stat_processed + ":")] = int(await h.redis.get(k) or 0)
    return out


async def wait_processed(h: Harness, n: int, limit: float, every: float = 0.05) -> tuple[float, int]:
    polls = 0
    deadline = time.perf_counter() + limit
    while True:
        v = await h.redis.get(KEYS.stat_processed)
        polls += 1
        now = time.perf_counter()
        if v is not None and int(v) >= n:
            return now, polls
        if now > deadline:
            raise TimeoutError(f"only {v} of {n} jobs processed in {limit}s")
        await asyncio.sleep(every)


def node_cpu(nodes: list[Node]) -> dict[int, float]:
    return {n.pid: proc_cpu_seconds(n.pid) for n in nodes if n.alive()}


def cpu_delta(a: dict[int, float], b: dict[int, float]) -> list[float]:
    return [b[p] - a[p] for p in a if p in b and not math.isnan(b[p] - a[p])]


async def sc_idle(h: Harness, nodes: list[Node], seconds: float) -> dict[str, Any]:
    await h.redis.config_resetstat()
    before = await commandstats(h.redis)
    r0, n0, t0 = await redis_cpu(h), node_cpu(nodes), time.monotonic()
    total0 = int((await h.redis.info("stats"))["total_commands_processed"])
    await asyncio.sleep(seconds)
    total1 = int((await h.redis.info("stats"))["total_commands_processed"])
    r1, n1, t1 = await redis_cpu(h), node_cpu(nodes), time.monotonic()
    after = await commandstats(h.redis)
    secs = t1 - t0
    d = split_commands(delta(after, before), {"info": 2})
    n = len(nodes)
    per_s = {k: v / secs for k, v in d["by_command"].items()}
    ncpu = cpu_delta(n0, n1)
    clients = await h.redis.info("clients")
    return {
        "seconds": secs, "nodes": n,
        "all_commands_per_s": d["total"] / secs, "all_commands_per_s_per_node": d["total"] / secs / n,
        "total_commands_processed_per_s": (total1 - total0 - 1) / secs,
        "client_commands_per_s": d["client_total"] / secs, "client_commands_per_s_per_node": d["client_total"] / secs / n,
        "evalsha_per_s": d["evalsha"] / secs, "evalsha_per_s_per_node": d["evalsha"] / secs / n,
        "by_command_per_s": dict(sorted(per_s.items(), key=lambda kv: -kv[1])),
        "by_command_per_s_per_node": {k: v / n for k, v in sorted(per_s.items(), key=lambda kv: -kv[1])},
        "redis_cpu_pct": 100 * (r1 - r0) / secs, "redis_cpu_us_per_s_per_node": 1e6 * (r1 - r0) / secs / n,
        "nodes_cpu_cores_total": sum(ncpu) / secs, "node_cpu_pct_median": 100 * statistics.median(ncpu) / secs,
        "node_cpu_pct_max": 100 * max(ncpu) / secs,
        "redis_connected_clients": int(clients["connected_clients"]),
        "redis_pubsub_clients": int(clients.get("pubsub_clients", -1)),
    }


async def sc_trickle(h: Harness, nodes: list[Node], jobs: int, rate: float) -> dict[str, Any]:
    """Single `enqueue` calls on the idle cluster: each publishes one wake-up that every node hears."""
    client = Client(h.redis, NS)
    processed0 = int(await h.redis.get(KEYS.stat_processed) or 0)
    await asyncio.sleep(1.0)
    before = await commandstats(h.redis)
    n0 = node_cpu(nodes)
    r0, t0 = await redis_cpu(h), time.monotonic()
    for i in range(jobs):
        await client.enqueue("noop", {"i": i}, queue=QUEUE)
        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    t_sent = time.monotonic()
    _, polls = await wait_processed(h, processed0 + jobs, 60, every=0.1)
    await asyncio.sleep(0.5)
    t1 = time.monotonic()
    r1 = await redis_cpu(h)
    n1 = node_cpu(nodes)
    after = await commandstats(h.redis)
    secs = t1 - t0
    return {"jobs": jobs, "rate_per_s": rate, "seconds": secs, "achieved_rate_per_s": jobs / (t_sent - t0),
            "commandstats": delta(after, before), "redis_cpu_s": r1 - r0, "nodes_cpu_s": sum(cpu_delta(n0, n1)),
            "harness_gets": polls + 1}


async def sc_drain(h: Harness, nodes: list[Node], jobs: int, idle: dict[str, Any],
                   sleep_s: float = 0.0) -> dict[str, Any]:
    n = len(nodes)
    marks0 = mark_counts(h)
    workers0 = await processed_by_worker(h)
    processed0 = int(await h.redis.get(KEYS.stat_processed) or 0)
    tr0 = await transitions(nodes)
    client = Client(h.redis, NS)
    payload = [("noop", {"i": i, "s": sleep_s} if sleep_s else {"i": i}) for i in range(jobs)]
    before = await commandstats(h.redis)
    r0, n0 = await redis_cpu(h), node_cpu(nodes)
    t0 = time.perf_counter()
    queued = await client.enqueue_many(payload, queue=QUEUE)
    t_enq = time.perf_counter() - t0
    assert queued == jobs, queued
    t1, polls = await wait_processed(h, processed0 + jobs, 900)
    r1, n1 = await redis_cpu(h), node_cpu(nodes)
    after = await commandstats(h.redis)
    secs = t1 - t0
    tr1 = await transitions(nodes)
    queue_left = int(await h.redis.llen(KEYS.queue(QUEUE)))
    failed = int(await h.redis.get(KEYS.stat_failed) or 0)
    # spread: jobs per node from the task's own marks, cross-checked with stat:processed:<worker>
    marks1 = mark_counts(h)
    per_pid = {n_.pid: marks1.get(n_.pid, 0) - marks0.get(n_.pid, 0) for n_ in nodes}
    workers1 = await processed_by_worker(h)
    per_worker = {w: workers1.get(w, 0) - workers0.get(w, 0) for w in workers1}
    per_worker = {w: c for w, c in per_worker.items() if c}
    shares = list(per_pid.values())
    fair = jobs / n
    dev = [100 * (s - fair) / fair for s in shares]
    # enqueue_many's own scripts (one per 5,000-job batch) are job traffic and stay in; the harness's
    # GET polls of stat:processed come out
    d = split_commands(delta(after, before), {"get": polls})
    background = idle["all_commands_per_s"] * secs
    background_evalsha = idle["evalsha_per_s"] * secs
    ncpu = cpu_delta(n0, n1)
    return {
        "jobs": jobs, "job_sleep_s": sleep_s, "nodes": n, "enqueue_many_s": t_enq, "drain_s": secs,
        "jobs_per_s": jobs / secs,
        "queue_left": queue_left, "failed": failed,
        "transitions_before": tr0, "transitions_after": tr1,
        "leader_changes_during_drain": tr1["transitions_sum"] - tr0["transitions_sum"],
        "per_node_jobs": sorted(shares), "fair_share": fair,
        "share_min": min(shares), "share_max": max(shares), "share_stdev": statistics.pstdev(shares),
        "share_stdev_pct_of_fair": 100 * statistics.pstdev(shares) / fair,
        "dev_min_pct": min(dev), "dev_max_pct": max(dev),
        "nodes_within_10pct": sum(1 for x in dev if abs(x) <= 10), "all_within_10pct": all(abs(x) <= 10 for x in dev),
        "nodes_with_zero_jobs": sum(1 for s in shares if s == 0),
        "marks_total": sum(shares), "stat_processed_per_worker_total": sum(per_worker.values()),
        "marks_match_stat_per_worker": sorted(per_worker.values()) == sorted(s for s in shares if s),
        "commands": d,
        "all_commands_per_job": d["total"] / jobs, "client_commands_per_job": d["client_total"] / jobs,
        "evalsha_per_job": d["evalsha"] / jobs,
        "background_commands_during_drain_est": background,
        "all_commands_per_job_minus_idle_background": (d["total"] - background) / jobs,
        "evalsha_per_job_minus_idle_background": (d["evalsha"] - background_evalsha) / jobs,
        "redis_cpu_pct": 100 * (r1 - r0) / secs, "redis_cpu_us_per_job": 1e6 * (r1 - r0) / jobs,
        "nodes_cpu_cores_total": sum(ncpu) / secs, "nodes_cpu_us_per_job": 1e6 * sum(ncpu) / jobs,
        "harness_get_polls": polls,
    }


def rss_summary(nodes: list[Node]) -> dict[str, Any]:
    vals = [v for v in (n.rss_mb() for n in nodes) if v is not None]
    return {"nodes": len(vals), "min_mb": min(vals), "median_mb": statistics.median(vals), "max_mb": max(vals),
            "sum_mb": sum(vals)}


async def loop_lag(nodes: list[Node]) -> dict[str, Any]:
    res = await asyncio.gather(*(n.get_json("/healthz") for n in nodes))
    lags = [1000 * float(r["loop_lag_seconds"]) for r in res if r and "loop_lag_seconds" in r]
    return {"answered": len(lags), "p50_ms": pct(lags, 50), "max_ms": max(lags) if lags else None}


# ---- the run ------------------------------------------------------------------------------------------

async def start_cluster(h: Harness, want: int, batch: int, min_free_mb: float,
                        ready_limit: float) -> tuple[list[Node], dict[str, Any]]:
    nodes: list[Node] = []
    stop_reason = None
    t0 = time.monotonic()
    while len(nodes) < want:
        free = mem_available_mb()
        if free < min_free_mb:
            stop_reason = f"MemAvailable {free:.0f} MB < {min_free_mb:.0f} MB"
            break
        fresh = [Node(h, f"s{len(nodes) + i + 1:02d}").start() for i in range(min(batch, want - len(nodes)))]
        try:
            await asyncio.gather(*(x.wait_ready(ready_limit) for x in fresh))
        except (RuntimeError, TimeoutError) as e:
            stop_reason = f"a node of batch {len(nodes) // batch + 1} did not become ready: {e}"[:600]
            for x in fresh:
                await x.stop(5)
            break
        nodes.extend(fresh)
        if len(nodes) % 10 == 0 or len(nodes) == want:
            log(f"   {len(nodes)} nodes ready ({time.monotonic() - t0:.0f} s; MemAvailable {mem_available_mb():,.0f} MB)")
    ready = [x.ready_s for x in nodes if x.ready_s is not None]
    return nodes, {"wanted": want, "started": len(nodes), "stop_reason": stop_reason,
                   "seconds": time.monotonic() - t0, "batch": batch,
                   "ready_s_p50": pct(ready, 50), "ready_s_max": max(ready) if ready else None}


async def main(args: argparse.Namespace) -> int:
    h = Harness()
    RAW.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"started": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
                           "args": vars(args)}
    name = "redis-benchmark" if args.bench_only else f"n{args.nodes}"
    out_path = Path(args.out) if args.out else RAW / f"scale-{dt.date.today().isoformat()}-{name}.json"
    contention = Contention(h)
    monitor = asyncio.create_task(contention.run())
    phases: dict[str, tuple[float, float]] = {}

    def save() -> None:
        res["others_cpu_cores_by_phase"] = {k: contention.mean_between(a, b) for k, (a, b) in phases.items()}
        out_path.write_text(json.dumps(res, indent=1, default=str) + "\n")

    nodes: list[Node] = []
    try:
        await h.start_redis()
        log(f"redis-server pid {h.redis_pid} on 127.0.0.1:{h.port}; measuring {res['machine']['commit']}; tmp {h.tmp}")
        if not args.skip_redis_benchmark:
            log("== redis-benchmark")
            t = time.monotonic()
            res["redis_benchmark"] = await asyncio.wait_for(
                sc_redis_benchmark(h, args.bench_repeats, args.quiet_wait), 14 * args.bench_repeats * (args.quiet_wait + 60))
            phases["redis_benchmark"] = (t, time.monotonic())
            save()
        if args.bench_only:
            res["finished"] = dt.datetime.now().isoformat(timespec="seconds")
            save()
            log(f"wrote {out_path}")
            return 0
        await wait_quiet(args.quiet_wait)
        c0, t0 = await redis_cpu(h), time.monotonic()
        await asyncio.sleep(10.0)
        res["redis_alone_idle_cpu_pct"] = 100 * (await redis_cpu(h) - c0) / (time.monotonic() - t0)
        log(f"== redis-server alone, idle 10 s: {res['redis_alone_idle_cpu_pct']:.2f} % CPU")
        busy = await wait_quiet(args.quiet_wait)
        log(f"== start {args.nodes} nodes (machine {100 * busy:.0f} % busy before)")
        t = time.monotonic()
        nodes, res["startup"] = await asyncio.wait_for(
            start_cluster(h, args.nodes, args.batch, args.min_free_mb, 90), 1800)
        phases["startup"] = (t, time.monotonic())
        n = len(nodes)
        why = res["startup"]["stop_reason"]
        log(f"   {n} nodes running ({res['startup']['seconds']:.0f} s){'; stopped: ' + why if why else ''}")
        if n < 2:
            raise RuntimeError("fewer than 2 nodes started")
        await asyncio.sleep(args.settle)
        res["rss_idle"] = rss_summary(nodes)
        res["redis_memory_idle_mb"] = int((await h.redis.info("memory"))["used_memory"]) / 2**20
        res["mem_available_mb_idle"] = mem_available_mb()
        log(f"   node RSS idle: median {res['rss_idle']['median_mb']:.1f} MB, max {res['rss_idle']['max_mb']:.1f}, "
            f"sum {res['rss_idle']['sum_mb']:.0f} MB; MemAvailable {res['mem_available_mb_idle']:,.0f} MB")
        save()

        log(f"== idle traffic, {args.idle_window:.0f} s (no polling)")
        t = time.monotonic()
        res["idle"] = await asyncio.wait_for(sc_idle(h, nodes, args.idle_window), args.idle_window + 60)
        phases["idle"] = (t, time.monotonic())
        res["loop_lag_idle"] = await loop_lag(nodes)
        i = res["idle"]
        log(f"   {i['all_commands_per_s']:,.0f} commands/s incl. script-internal ({i['all_commands_per_s_per_node']:.1f}"
            f"/node); client commands {i['client_commands_per_s']:,.0f}/s ({i['client_commands_per_s_per_node']:.2f}/node); "
            f"Redis CPU {i['redis_cpu_pct']:.1f} %; nodes {i['nodes_cpu_cores_total']:.2f} cores")
        save()
        log(f"== MONITOR sample, {args.monitor_window:.0f} s")
        res["monitor_idle"] = await asyncio.wait_for(monitor_sample(h, args.monitor_window, nodes),
                                                     args.monitor_window + 60)
        save()

        log(f"== leader window, {args.leader_window:.0f} s of /leader rounds over {n} nodes")
        t = time.monotonic()
        tr0 = await transitions(nodes)
        res["leader"] = await asyncio.wait_for(sc_leader_window(h, nodes, args.leader_window, args.leader_every),
                                               args.leader_window + 120)
        res["leader"]["transitions_before"] = tr0
        res["leader"]["transitions_after"] = await transitions(nodes)
        phases["leader"] = (t, time.monotonic())
        lw = res["leader"]
        log(f"   {lw['rounds']} rounds: by leader count {lw['rounds_by_leader_count']}; round p50 "
            f"{lw['round_duration_ms_p50']:.0f} ms; transitions {tr0['transitions_sum']} -> "
            f"{lw['transitions_after']['transitions_sum']}")
        save()

        res["trickle"] = []
        t = time.monotonic()
        for rate in [float(x) for x in args.trickle_rates.split(",") if x]:
            jobs = int(rate * args.trickle_seconds)
            log(f"== trickle: {jobs} single enqueues at {rate:.0f}/s")
            await wait_quiet(args.quiet_wait)
            tr = await asyncio.wait_for(sc_trickle(h, nodes, jobs, rate), 300)
            d = split_commands(tr["commandstats"], {"get": tr["harness_gets"]})
            idle = res["idle"]
            bg = idle["all_commands_per_s"] * tr["seconds"]
            bg_e = idle["evalsha_per_s"] * tr["seconds"]
            lpop = d["by_command"].get("lpop", 0) - idle["by_command_per_s"].get("lpop", 0) * tr["seconds"]
            tr.update(commands=d, all_commands_per_job=d["total"] / jobs, evalsha_per_job=d["evalsha"] / jobs,
                      all_commands_per_job_minus_idle_background=(d["total"] - bg) / jobs,
                      evalsha_per_job_minus_idle_background=(d["evalsha"] - bg_e) / jobs,
                      lpops_per_job_minus_idle_background=lpop / jobs,
                      publish_deliveries_per_job=n,
                      redis_cpu_pct=100 * tr["redis_cpu_s"] / tr["seconds"],
                      redis_cpu_us_per_job_minus_idle=1e6 * (tr["redis_cpu_s"] - idle["redis_cpu_pct"] / 100 *
                                                             tr["seconds"]) / jobs,
                      nodes_cpu_cores=tr["nodes_cpu_s"] / tr["seconds"],
                      nodes_cpu_us_per_job_minus_idle=1e6 * (tr["nodes_cpu_s"] - idle["nodes_cpu_cores_total"] *
                                                             tr["seconds"]) / jobs)
            res["trickle"].append(tr)
            log(f"   achieved {tr['achieved_rate_per_s']:.0f}/s; per job beyond the idle background: "
                f"{tr['evalsha_per_job_minus_idle_background']:.1f} EVALSHA "
                f"({tr['lpops_per_job_minus_idle_background']:.1f} LPOPs), "
                f"{tr['all_commands_per_job_minus_idle_background']:.0f} commands, Redis CPU "
                f"{tr['redis_cpu_us_per_job_minus_idle']:.0f} us, node CPU {tr['nodes_cpu_us_per_job_minus_idle']:.0f} us; "
                f"Redis {tr['redis_cpu_pct']:.0f} % busy, nodes {tr['nodes_cpu_cores']:.2f} cores")
            save()
        phases["trickle"] = (t, time.monotonic())

        log(f"== spread: {args.jobs:,} jobs by enqueue_many over {n} nodes")
        await wait_quiet(args.quiet_wait)
        t = time.monotonic()
        res["drain"] = await asyncio.wait_for(sc_drain(h, nodes, args.jobs, res["idle"]), 1200)
        phases["drain"] = (t, time.monotonic())
        dr = res["drain"]
        log(f"   {dr['drain_s']:.1f} s = {dr['jobs_per_s']:,.0f} jobs/s; per node min {dr['share_min']} max "
            f"{dr['share_max']} stdev {dr['share_stdev']:.1f} (fair {dr['fair_share']:.0f}); within +-10 %: "
            f"{dr['nodes_within_10pct']}/{n}; {dr['all_commands_per_job']:.2f} commands/job "
            f"({dr['evalsha_per_job']:.3f} EVALSHA); Redis CPU {dr['redis_cpu_us_per_job']:.1f} us/job "
            f"({dr['redis_cpu_pct']:.0f} %); leader changes {dr['leader_changes_during_drain']}")
        if args.sleep_drain_ms:
            log(f"== spread: {args.jobs:,} jobs that sleep {args.sleep_drain_ms:.0f} ms, by enqueue_many over {n} nodes")
            await wait_quiet(args.quiet_wait)
            t = time.monotonic()
            res["drain_sleep"] = await asyncio.wait_for(
                sc_drain(h, nodes, args.jobs, res["idle"], args.sleep_drain_ms / 1000), 1200)
            phases["drain_sleep"] = (t, time.monotonic())
            dr = res["drain_sleep"]
            log(f"   {dr['drain_s']:.1f} s = {dr['jobs_per_s']:,.0f} jobs/s; per node min {dr['share_min']} max "
                f"{dr['share_max']} stdev {dr['share_stdev']:.1f} (fair {dr['fair_share']:.0f}); within +-10 %: "
                f"{dr['nodes_within_10pct']}/{n}; {dr['all_commands_per_job']:.2f} commands/job; Redis CPU "
                f"{dr['redis_cpu_us_per_job']:.1f} us/job; leader changes {dr['leader_changes_during_drain']}")
        res["rss_after_drain"] = rss_summary(nodes)
        res["loop_lag_after_drain"] = await loop_lag(nodes)
        save()

        if args.kills:
            log(f"== failover: kill -9 the leader {args.kills} times, {n} nodes")
            t = time.monotonic()
            res["failover_big"] = await asyncio.wait_for(sc_failover(h, nodes, args.kills, f"{n} nodes"), 900)
            phases["failover_big"] = (t, time.monotonic())
            save()
        await asyncio.gather(*(x.stop() for x in nodes))
        nodes = []

        if args.small and args.kills:
            log(f"== failover: kill -9 the leader {args.kills} times, {args.small} nodes")
            await h.redis.flushall()
            t = time.monotonic()
            nodes, _ = await start_cluster(h, args.small, args.small, 0, 90)
            await asyncio.sleep(2.0)
            res["failover_small"] = await asyncio.wait_for(sc_failover(h, nodes, args.kills, f"{args.small} nodes"), 600)
            phases["failover_small"] = (t, time.monotonic())
            await asyncio.gather(*(x.stop() for x in nodes))
            nodes = []
        res["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        save()
        log(f"wrote {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}")
        return 0
    finally:
        monitor.cancel()
        with contextlib.suppress(Exception):
            save()
        for x in nodes:
            x.kill()
        if h.r is not None:
            with contextlib.suppress(Exception):
                await h.r.aclose()
        h.cleanup()
        if SRC != ROOT:
            shutil.rmtree(SRC, ignore_errors=True)


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=50, help="corral node processes (default 50)")
    p.add_argument("--jobs", type=int, default=50_000, help="jobs for the spread/drain measurement")
    p.add_argument("--kills", type=int, default=5, help="kill -9 of the leader, per cluster size (0 = no failover)")
    p.add_argument("--small", type=int, default=3, help="size of the comparison cluster for failover (0 = skip)")
    p.add_argument("--idle-window", type=float, default=30.0, help="seconds of idle INFO commandstats")
    p.add_argument("--monitor-window", type=float, default=10.0, help="seconds of MONITOR sample")
    p.add_argument("--leader-window", type=float, default=60.0, help="seconds of /leader polling")
    p.add_argument("--leader-every", type=float, default=0.25, help="seconds between /leader rounds")
    p.add_argument("--trickle-rates", default="10,50,200", help="single enqueues per second, comma-separated")
    p.add_argument("--trickle-seconds", type=float, default=10.0, help="seconds of single enqueues per rate")
    p.add_argument("--sleep-drain-ms", type=float, default=10.0,
                   help="then a second drain of the same size whose jobs sleep this long (async), so node CPU "
                        "contention does not decide the shares (0 = skip)")
    p.add_argument("--batch", type=int, default=5, help="nodes started at once")
    p.add_argument("--settle", type=float, default=10.0, help="seconds after the last node is ready")
    p.add_argument("--min-free-mb", type=float, default=2048, help="stop adding nodes below this MemAvailable")
    p.add_argument("--bench-repeats", type=int, default=3, help="redis-benchmark runs per case (median)")
    p.add_argument("--skip-redis-benchmark", action="store_true")
    p.add_argument("--bench-only", action="store_true", help="only the redis-benchmark cases (no nodes)")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="wait up to this long for the shared machine to be < 25 %% busy before a measurement")
    p.add_argument("--out", default=None, help="raw JSON path (default bench/raw/scale-<date>-n<N>.json)")
    p.add_argument("--rev", default="HEAD", help="measure a clean snapshot of this git revision (default HEAD)")
    p.add_argument("--worktree", action="store_true", help="measure the checkout's files as they are")
    args = p.parse_args()

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    import uvloop

    try:
        return uvloop.run(main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(cli())
