#!/usr/bin/env python3
"""Warm drains of no-op jobs at chosen slot counts (one or more node processes), with node and
Redis CPU per job and Redis commands per job; a small script over bench/run.py's harness.

    python bench/drain.py                       # the product's defaults, 1 and 2 processes
    python bench/drain.py -c 0 -c 16 -c 64      # 0 = no --concurrency flag (the default)
    python bench/drain.py --processes 3 --jobs 60000 --runs 3

Prints one line per run and the median per setting; --out writes the runs as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as lib  # bench/run.py: the harness


async def main(a: argparse.Namespace) -> int:
    h = lib.Harness(quick=True, quiet=a.quiet_wait)
    out = []
    try:
        await h.start_redis()
        for procs in a.processes:
            for c in a.concurrency:
                rates = []
                for i in range(a.runs):
                    r = await lib.drain_once(h, a.jobs, [(a.queues, c)] * procs, stats=True)
                    calls = r["commandstats_delta"]
                    evalsha = calls.get("evalsha", 0) / a.jobs
                    r.update(concurrency=c or lib.DEFAULT_CONCURRENCY, flag=bool(c), loadavg=os.getloadavg()[0],
                             evalsha_per_job=evalsha)
                    out.append(r)
                    rates.append(r["jobs_per_s"])
                    lib.log(f"{procs} x --concurrency {c or 'default'} run {i + 1}: {r['jobs_per_s']:,.0f}/s; node CPU "
                            f"{r['node_cpu_us_per_job']:.0f} us/job; Redis CPU {r['redis_cpu_us_per_job']:.1f} us/job; "
                            f"EVALSHA/job {evalsha:.3f}; others {r['others_cpu_pct']:.0f}%; load {r['loadavg']:.1f}")
                lib.log(f"{procs} x --concurrency {c or 'default'}: median {statistics.median(rates):,.0f}/s")
    finally:
        h.cleanup()
    if a.out:
        with open(a.out, "w") as fh:  # noqa: ASYNC230 - the measurements are over
            json.dump(out, fh, indent=1)
    return 0


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--concurrency", type=int, action="append", help="slots per entry; 0 = the default")
    p.add_argument("--processes", type=int, action="append", help="node processes (repeatable; default 1 and 2)")
    p.add_argument("--queues", default=lib.QUEUE)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--quiet-wait", type=float, default=5.0)
    p.add_argument("--out")
    a = p.parse_args()
    a.concurrency = a.concurrency or [0]
    a.processes = a.processes or [1, 2]
    return asyncio.run(main(a))


if __name__ == "__main__":
    sys.exit(cli())
