#!/usr/bin/env python3
"""Enqueue against the loopback limit, in one run: a sequential PING round trip on the same kind of
connection the client's enqueue uses (cluster/rawconn.py), then N sequential `enqueue` calls, then
one `enqueue_many` of N jobs; a small script over bench/run.py's harness.

    python bench/enqueue.py                 # 20,000 jobs, 3 runs, medians
    python bench/enqueue.py --jobs 100000 --runs 1

Reports jobs/s, client CPU per job, and sequential enqueue as a share of 1 / (PING round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as lib  # bench/run.py: the harness

from cluster.rawconn import RawPool, pack


async def ping_rtt(port: int, n: int) -> float:
    """Median-free mean seconds of n sequential PINGs on one raw connection (what enqueue rides on)."""
    pool = RawPool("127.0.0.1", port)
    conn = await pool._get()
    cmd = pack(["PING"])
    for _ in range(200):
        await conn.call(cmd)
    t0 = time.perf_counter()
    for _ in range(n):
        await conn.call(cmd)
    dt = (time.perf_counter() - t0) / n
    pool.close()
    return dt


async def main(a: argparse.Namespace) -> int:
    h = lib.Harness(quick=True, quiet=a.quiet_wait)
    me = os.getpid()
    res: dict[str, list[float]] = {"ping_limit": [], "sequential": [], "share": [], "seq_cpu_us": [],
                                   "many": [], "many_cpu_us": []}
    try:
        await h.start_redis()
        for i in range(a.runs):
            await lib.wait_quiet(h.quiet)
            await h.flush()
            rtt = await ping_rtt(h.port, a.jobs)
            client = await h.client()
            try:
                await client.enqueue("noop", None, queue=lib.QUEUE)  # scripts loaded, queue known
                await h.flush()
                c0, t0 = lib.proc_cpu_seconds(me), time.perf_counter()
                for _ in range(a.jobs):
                    await client.enqueue("noop", None, queue=lib.QUEUE)
                seq = a.jobs / (time.perf_counter() - t0)
                seq_cpu = 1e6 * (lib.proc_cpu_seconds(me) - c0) / a.jobs
                assert await client.length(lib.QUEUE) == a.jobs
                await h.flush()
                jobs = [("noop", None)] * a.jobs
                c0, t0 = lib.proc_cpu_seconds(me), time.perf_counter()
                await client.enqueue_many(jobs, queue=lib.QUEUE)
                many = a.jobs / (time.perf_counter() - t0)
                many_cpu = 1e6 * (lib.proc_cpu_seconds(me) - c0) / a.jobs
                assert await client.length(lib.QUEUE) == a.jobs
            finally:
                await client.close()
            for k, v in (("ping_limit", 1 / rtt), ("sequential", seq), ("share", seq * rtt), ("seq_cpu_us", seq_cpu),
                         ("many", many), ("many_cpu_us", many_cpu)):
                res[k].append(v)
            lib.log(f"run {i + 1}: PING RTT {rtt * 1e6:.0f} us (limit {1 / rtt:,.0f}/s); sequential enqueue "
                    f"{seq:,.0f}/s = {100 * seq * rtt:.0f} % of the limit, {seq_cpu:.0f} us client CPU per call; "
                    f"enqueue_many {many:,.0f}/s ({many_cpu:.1f} us/job); load {os.getloadavg()[0]:.1f}")
    finally:
        h.cleanup()
    lib.log("medians: " + ", ".join(f"{k} {statistics.median(v):,.2f}" for k, v in res.items()))
    return 0


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quiet-wait", type=float, default=5.0)
    return asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    sys.exit(cli())
