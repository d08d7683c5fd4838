#!/usr/bin/env python3
"""Enqueue against the loopback limit, in one run; a small script over bench/run.py's harness.

    python bench/enqueue.py                 # 20,000 jobs, 3 runs, medians
    python bench/enqueue.py --jobs 100000 --runs 1
    python bench/enqueue.py --pin split     # this process on CPU 0, redis-server on CPU 1 (or: same)

The loopback limit is 1 / (a sequential PING round trip). Two PINGs are timed: on a raw RESP
connection of the kind `Client.enqueue` rides on (cluster/rawconn.py, asyncio + uvloop), and on a
blocking socket with no event loop at all (the floor). On this shared VM the round trip moves from
≈ 15 to ≈ 90 µs from one moment to the next, so the PINGs and the sequential `enqueue` calls are
timed in alternating blocks (`--block` calls each) and the share is the median of the per-block
ratios: each pair of blocks saw the same machine. Then one `enqueue_many` of N jobs.

`SyncClient.enqueue` (blocking sockets, cluster/sync_client.py) is timed in blocks too, each right
after its own blocking-socket PING block: like is compared with like (no event loop on either side).

Reports jobs/s, client CPU per call, and sequential enqueue as a share of each loopback limit.

On a VM the round trip is bimodal: with client and Redis on one CPU a round trip is two context
switches (≈ 7 µs here), on two CPUs two cross-CPU wake-ups (≈ 60 µs here); unpinned, the
scheduler moves between the two. `--pin same|split` holds one regime for a whole run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as lib  # bench/run.py: the harness

import cluster
from cluster import rawconn
from cluster.connection import RedisSettings


def raw_connection(port: int) -> Any:
    """The class behind the client's fast path (named RawPool before it was renamed: a --rev older
    than the rename runs too)."""
    cls = getattr(rawconn, "RawConnection", None) or getattr(rawconn, "RawPool")  # noqa: B009
    return cls("127.0.0.1", port)


def socket_ping_block(sock: socket.socket, n: int) -> float:
    """Seconds for n sequential PINGs on a blocking socket (no event loop): the loopback floor."""
    t0 = time.perf_counter()
    for _ in range(n):
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        if sock.recv(64) != b"+PONG\r\n":
            raise RuntimeError("unexpected reply to PING")
    return time.perf_counter() - t0


def blocking_block(call: Callable[[], Any], n: int) -> tuple[float, float]:
    """(seconds, CPU seconds) for n sequential blocking calls."""
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - t0, time.process_time() - c0


def sync_blocks(h: lib.Harness, jobs: int, block: int) -> dict[str, float]:
    """Alternating blocks: blocking-socket PING, `SyncClient.enqueue`; per-block ratios."""
    sync_client = getattr(cluster, "SyncClient", None)
    if sync_client is None:  # a --rev before SyncClient
        return {}
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = sync_client(RedisSettings(url=h.url), lib.NS)

    def enqueue() -> None:
        client.enqueue("noop", None, queue=lib.QUEUE)

    def ping() -> None:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        if sock.recv(64) != b"+PONG\r\n":
            raise RuntimeError("unexpected reply to PING")

    try:
        blocking_block(enqueue, 200)  # warm: script loaded, queue packed, catalogue read
        blocking_block(ping, 200)
        client._pool.run(lambda c: c.call(rawconn.pack(["DEL", client.keys.queue(lib.QUEUE)])))
        ping_s = ping_cpu = enq_s = enq_cpu = 0.0
        shares = []
        done = 0
        while done < jobs:
            n = min(block, jobs - done)
            p, pc = blocking_block(ping, n)
            e, ec = blocking_block(enqueue, n)
            ping_s, ping_cpu, enq_s, enq_cpu = ping_s + p, ping_cpu + pc, enq_s + e, enq_cpu + ec
            shares.append(p / e)
            done += n
        if client.length(lib.QUEUE) != jobs:
            raise RuntimeError("SyncClient enqueue: queue length differs from the calls made")
        stats = client._pool.run(lambda c: c.call(rawconn.pack(["INFO", "commandstats"])))
    finally:
        client.close()
        sock.close()
    # Redis's own time per EVALSHA (the harness reset the stats before these blocks)
    line = next(ln for ln in stats.splitlines() if ln.startswith("cmdstat_evalsha:"))
    redis_us = float(line.split("usec_per_call=")[1].split(",")[0])
    return {"sync_socket_rtt_us": 1e6 * ping_s / jobs, "sync_sequential": jobs / enq_s,
            "sync_cpu_us": 1e6 * enq_cpu / jobs, "socket_ping_cpu_us": 1e6 * ping_cpu / jobs,
            "share_sync_socket": statistics.median(shares), "redis_evalsha_us": redis_us}


async def timed_block(call: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - t0, time.process_time() - c0


async def sequential(h: lib.Harness, jobs: int, block: int) -> dict[str, float]:
    """Alternating blocks: raw-connection PING, socket PING, `enqueue`; per-block ratios."""
    raw = raw_connection(h.port)
    conn = await raw._get()
    ping = rawconn.pack(["PING"])
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = await h.client()
    try:
        await client.enqueue("noop", None, queue=lib.QUEUE)  # scripts loaded, queue known
        for _ in range(200):  # warm: connections, caches
            await conn.call(ping)
            await client.enqueue("noop", None, queue=lib.QUEUE)
        socket_ping_block(sock, 200)
        await h.flush()
        ping_s = sock_s = enq_s = enq_cpu = 0.0
        share_raw, share_sock = [], []
        done = 0
        while done < jobs:
            n = min(block, jobs - done)
            p, _ = await timed_block(lambda: conn.call(ping), n)
            s = socket_ping_block(sock, n)
            e, cpu = await timed_block(lambda: client.enqueue("noop", None, queue=lib.QUEUE), n)
            ping_s, sock_s, enq_s, enq_cpu = ping_s + p, sock_s + s, enq_s + e, enq_cpu + cpu
            share_raw.append(p / e)
            share_sock.append(s / e)
            done += n
        if await client.length(lib.QUEUE) != jobs:
            raise RuntimeError("sequential enqueue: queue length differs from the calls made")
    finally:
        await client.close()
        raw.close()
        sock.close()
    return {"raw_rtt_us": 1e6 * ping_s / jobs, "socket_rtt_us": 1e6 * sock_s / jobs, "sequential": jobs / enq_s,
            "seq_cpu_us": 1e6 * enq_cpu / jobs, "share_raw": statistics.median(share_raw),
            "share_socket": statistics.median(share_sock), "share_raw_total": ping_s / enq_s}


async def batch(h: lib.Harness, jobs: int, me: int) -> dict[str, float]:
    client = await h.client()
    try:
        await client.enqueue("noop", None, queue=lib.QUEUE)
        await h.flush()
        c0, t0 = lib.proc_cpu_seconds(me), time.perf_counter()
        await client.enqueue_many([("noop", None)] * jobs, queue=lib.QUEUE)
        many = jobs / (time.perf_counter() - t0)
        cpu = 1e6 * (lib.proc_cpu_seconds(me) - c0) / jobs
        if await client.length(lib.QUEUE) != jobs:
            raise RuntimeError("enqueue_many: queue length differs from the jobs sent")
    finally:
        await client.close()
    return {"many": many, "many_cpu_us": cpu}


async def main(a: argparse.Namespace) -> int:
    h = lib.Harness(quick=True, quiet=a.quiet_wait)
    me = os.getpid()
    res: dict[str, list[float]] = {}
    try:
        await h.start_redis()
        if a.pin != "none":  # this process on CPU 0; redis-server on CPU 0 too, or on CPU 1
            os.sched_setaffinity(0, {0})
            os.sched_setaffinity(h.redis_pid, {0} if a.pin == "same" else {1})
        for i in range(a.runs):
            await lib.wait_quiet(h.quiet)
            await h.flush()
            r = await sequential(h, a.jobs, a.block)
            await h.flush()
            r.update(await batch(h, a.jobs, me))
            await h.flush()
            r.update(sync_blocks(h, a.jobs, a.block))
            for k, v in r.items():
                res.setdefault(k, []).append(v)
            lib.log(f"run {i + 1}: PING RTT raw connection {r['raw_rtt_us']:.1f} us, blocking socket "
                    f"{r['socket_rtt_us']:.1f} us; sequential enqueue {r['sequential']:,.0f}/s, "
                    f"{r['seq_cpu_us']:.1f} us client CPU per call = {100 * r['share_raw']:.0f} % of the raw-connection "
                    f"limit ({100 * r['share_socket']:.0f} % of the socket's; median of per-block ratios); "
                    f"enqueue_many {r['many']:,.0f}/s ({r['many_cpu_us']:.1f} us/job); load {os.getloadavg()[0]:.1f}")
            if "sync_sequential" in r:
                lib.log(f"run {i + 1}: SyncClient.enqueue {r['sync_sequential']:,.0f}/s, {r['sync_cpu_us']:.1f} us client "
                        f"CPU per call (a socket PING: {r['socket_ping_cpu_us']:.1f} us) = "
                        f"{100 * r['share_sync_socket']:.0f} % of the blocking-socket limit (PING RTT "
                        f"{r['sync_socket_rtt_us']:.1f} us; median of per-block ratios); Redis spends "
                        f"{r['redis_evalsha_us']:.1f} us per enqueue.lua call")
    finally:
        h.cleanup()
    lib.log("medians: " + ", ".join(f"{k} {statistics.median(v):,.2f}" for k, v in res.items()))
    return 0


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--block", type=int, default=500, help="calls per timed block (PING and enqueue alternate)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quiet-wait", type=float, default=5.0)
    p.add_argument("--pin", choices=("none", "same", "split"), default="none",
                   help="CPU placement of this process and redis-server (see above)")
    import uvloop  # the loop Corral's nodes and the peers' driver run on

    return uvloop.run(main(p.parse_args()))


if __name__ == "__main__":
    sys.exit(cli())
