#!/usr/bin/env python3
"""Delayed jobs against their due second, one node (the leader); a small script over bench/run.py.

    python bench/delayed.py                     # 1,000 jobs due in one second; the peers' 200 in one second
                                                # (bench/peers' delayed phase); light: 20/s for 10 s
    python bench/delayed.py -c 0 -c 64 --runs 3 # 0 = the product's default slot count

Lateness = the task's start time.time() - the due second (resque files a job under the second it
is due in, rounded up, so a job never starts early).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as lib  # bench/run.py: the harness


async def main(a: argparse.Namespace) -> int:
    h = lib.Harness(quick=True, quiet=a.quiet_wait)
    try:
        await h.start_redis()
        for c in a.concurrency:
            for label, per_second, seconds in (("burst 1,000 in one second", 1000, 1),
                                               ("peers' 200 in one second", 200, 1), ("light 20/s x 10 s", 20, 10)):
                p99s = []
                for i in range(a.runs):
                    r = await lib.delayed_once(h, c, per_second, seconds)
                    late = r["late_ms"]
                    p99s.append(lib.pct(late, 99))
                    lib.log(f"--concurrency {c or 'default'} {label} run {i + 1}: start - due second p50 "
                            f"{lib.pct(late, 50):.1f} ms, p99 {p99s[-1]:.1f} ms, max {max(late):.1f} ms; scheduler "
                            f"p99 ~{1000 * r['hist']['p99']:.1f} ms; load {os.getloadavg()[0]:.1f}")
                lib.log(f"--concurrency {c or 'default'} {label}: median p99 {statistics.median(p99s):.1f} ms")
    finally:
        h.cleanup()
    return 0


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--concurrency", type=int, action="append", help="slots per entry; 0 = the default")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--quiet-wait", type=float, default=5.0)
    a = p.parse_args()
    a.concurrency = a.concurrency or [0]
    return asyncio.run(main(a))


if __name__ == "__main__":
    sys.exit(cli())
