#!/usr/bin/env python3
"""What open dashboards cost Redis: 10 dashboards on one node of a 3-node cluster.

    python bench/ui_load.py                      # 3 rounds of 30 s windows, ~5 min
    python bench/ui_load.py --window 20 --rounds 2

A Redis of its own (free loopback port) and 3 `corral node` processes as `make up` runs them
(the example tasks in tasks/: sayHello every second, sayGoodbye every 2 s; --queues *,*). Then
windows alternate: no dashboard, then 10 dashboards polling node 1 the way the page does (the
session once, then its view every 2 s, starts spread over the period). Two placements: all 10 on
the overview (the default page), and 10 spread over every page. For each window: `INFO
commandstats` delta (every command, those run inside Lua scripts included; the harness's own
INFO/CONFIG excluded), Redis CPU, node 1
CPU. The figure the issue asks for: (commands/s with dashboards - without) / without.

Results: printed as Markdown and written to bench/raw/ui-load-<UTC date>.json; the write-up is
bench/ui_load.md. Bounded in time; kills only the processes it started, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
PERIOD = 2.0
PAGES_OVERVIEW = ["overview"] * 10
PAGES_MIXED = ["overview", "overview", "overview", "workers", "periodic", "failed?page=0&size=20",
               "delayed?page=0&size=20", "locks", "queue?name=default&page=0&size=50", "overview"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Cluster:
    def __init__(self, workdir: Path, nodes: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.http_ports = [free_port() for _ in range(nodes)]

    def start(self) -> None:
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(self.redis_proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                break
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["PYTHONPATH"] = str(REPO)
        for i, hp in enumerate(self.http_ports):
            log = open(self.workdir / f"node{i + 1}.log", "ab")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "node", "node", "--redis-url", f"redis://127.0.0.1:{self.port}/0",
                 "--http-port", str(hp), "--node-id", f"node{i + 1}", "--tasks-dir", str(REPO / "tasks"),
                 "--queues", "*,*", "--log-format", "json"],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                views = [get_json(f"http://127.0.0.1:{hp}/leader") for hp in self.http_ports]
                if sum(v["is_leader"] for v in views) == 1:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("the cluster did not get one leader in 60 s")

    @property
    def node1_pid(self) -> int:
        return self.procs[1].pid

    def stop(self) -> None:
        for p in self.procs[1:]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs[1:]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.redis_proc.kill()
        self.redis_proc.wait(5)


async def dashboard(port: int, page: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """One open page: the session once, then its view every 2 s (the page's refresh)."""

    async def get(path: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /ui/api/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        counts["requests"] += 1
        if not data.startswith(b"HTTP/1.1 200"):
            counts["errors"] += 1

    await asyncio.sleep(random.uniform(0, PERIOD))
    await get("session")
    while not stop.is_set():
        t = time.monotonic()
        await get(page)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, PERIOD - (time.monotonic() - t)))


async def stats(r: Redis) -> dict[str, Any]:
    cmd = await r.info("commandstats")
    cpu = await r.info("cpu")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in cmd.items()}
    return {"calls": calls,
            "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), "t": time.monotonic()}


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    secs = b["t"] - a["t"]
    by = {k: b["calls"].get(k, 0) - a["calls"].get(k, 0) for k in b["calls"]}
    by = {k: v for k, v in by.items() if v > 0 and not k.startswith(("info", "config"))}
    return {"seconds": round(secs, 2), "commands_per_s": round(sum(by.values()) / secs, 2),
            "evalsha_per_s": round(by.get("evalsha", 0) / secs, 2),
            "redis_cpu_ms_per_s": round((b["cpu"] - a["cpu"]) * 1000 / secs, 3),
            "by_command": dict(sorted(by.items(), key=lambda kv: -kv[1]))}


async def window(r: Redis, cluster: Cluster, seconds: float, pages: list[str] | None) -> dict[str, Any]:
    stop = asyncio.Event()
    counts = {"requests": 0, "errors": 0}
    tasks = [asyncio.create_task(dashboard(cluster.http_ports[0], p, stop, counts)) for p in pages or []]
    if tasks:
        await asyncio.sleep(PERIOD + 0.5)  # every dashboard open and polling before we count
    c0, a = cpu_seconds(cluster.node1_pid), await stats(r)
    await asyncio.sleep(seconds)
    b, c1 = await stats(r), cpu_seconds(cluster.node1_pid)
    stop.set()
    await asyncio.gather(*tasks)
    out = diff(a, b)
    out["node1_cpu_ms_per_s"] = round((c1 - c0) * 1000 / out["seconds"], 1)
    out["dashboards"] = len(tasks)
    out["dashboard_requests"] = counts["requests"]
    out["dashboard_errors"] = counts["errors"]
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corral-ui-load-") as tmp:
        cluster = Cluster(Path(tmp), args.nodes)
        try:
            cluster.start()
            r = Redis(port=cluster.port)
            print(f"cluster up: {args.nodes} nodes; warming up {args.warmup} s", flush=True)
            await asyncio.sleep(args.warmup)
            results: dict[str, list[dict[str, Any]]] = {"baseline": [], "overview": [], "mixed": []}
            for i in range(args.rounds):
                for name, pages in (("baseline", None), ("overview", PAGES_OVERVIEW), ("mixed", PAGES_MIXED)):
                    w = await window(r, cluster, args.window, pages)
                    results[name].append(w)
                    print(f"round {i + 1} {name:9s} {w['commands_per_s']:8.2f} commands/s "
                          f"{w['evalsha_per_s']:7.2f} evalsha/s  redis cpu {w['redis_cpu_ms_per_s']:.2f} ms/s  "
                          f"node1 cpu {w['node1_cpu_ms_per_s']} ms/s", flush=True)
            await r.aclose()
        finally:
            cluster.stop()
    return results


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def mean(name: str, key: str) -> float:
        return sum(w[key] for w in results[name]) / len(results[name])

    out: dict[str, Any] = {}
    for key in ("commands_per_s", "evalsha_per_s", "redis_cpu_ms_per_s", "node1_cpu_ms_per_s"):
        base = mean("baseline", key)
        out[key] = {"baseline": round(base, 2)}
        for name in ("overview", "mixed"):
            v = mean(name, key)
            out[key][name] = round(v, 2)
            out[key][f"{name}_added_pct"] = round((v - base) / base * 100, 2) if base else None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--window", type=float, default=30.0, help="seconds per measured window")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=float, default=10.0)
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    summary = summarize(results)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    raw = REPO / "bench" / "raw" / f"ui-load-{stamp}.json"
    raw.parent.mkdir(exist_ok=True)
    raw.write_text(json.dumps({"args": vars(args), "summary": summary, "windows": results}, indent=2) + "\n")
    print("\n| | no dashboard | 10 on the overview | 10 over every page |\n|---|---|---|---|")
    for key, label in (("commands_per_s", "Redis commands/s (Lua-internal included)"),
                       ("evalsha_per_s", "of which EVALSHA/s"),
                       ("redis_cpu_ms_per_s", "Redis CPU, ms/s"), ("node1_cpu_ms_per_s", "node 1 CPU, ms/s")):
        s = summary[key]
        print(f"| {label} | {s['baseline']} | {s['overview']} ({s['overview_added_pct']:+.1f} %) "
              f"| {s['mixed']} ({s['mixed_added_pct']:+.1f} %) |")
    print(f"\nraw: {raw.relative_to(REPO)}")


if __name__ == "__main__":
    main()
