#!/usr/bin/env python3
"""Idle memory of a node at its defaults: RSS and PSS of the node process and of its leader
process (`--leader-process`, the default), 10 s after /readyz; a small script over bench/run.py.

    python bench/rss.py

RSS counts the shared pages (the interpreter, libssl, redis-py's modules mapped from the same
files) in each process; PSS splits them between the processes that share them, so the PSS sum is
what the two use together.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as lib  # bench/run.py: the harness


async def main() -> int:
    h = lib.Harness(quick=True, quiet=5)
    try:
        await h.start_redis()
        for queues in ("default", "default,default"):
            [n] = await h.start_nodes([(queues, 0)])
            await asyncio.sleep(10)
            child = lib.leader_process_of(n.pid)
            rss = [(lib.proc_status_kb(p, "VmRSS") or 0) / 1024 for p in (n.pid, child) if p]
            pss = [lib.pss_kb(p) / 1024 for p in (n.pid, child) if p]
            lib.log(f"--queues {queues} (defaults): RSS node {rss[0]:.1f} MB + leader process "
                    f"{rss[1] if len(rss) > 1 else 0:.1f} MB = {sum(rss):.1f} MB; PSS {' + '.join(f'{x:.1f}' for x in pss)}"
                    f" = {sum(pss):.1f} MB; load {os.getloadavg()[0]:.1f}")
            await h.stop_nodes([n])
    finally:
        h.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
