"""Soak run (FAULTS F16) and, with `--nemesis`, the randomized nemesis (F17): one Redis, three
audited nodes, a seeded producer, optional seeded faults every 20-60 s, then the checker.

    python -m tests.faults.soak --minutes 2 --seed 7              # F16: no faults
    python -m tests.faults.soak --minutes 10 --seed 7 --nemesis   # F17: replay a run by its seed

Prints the seed, every injected fault, Redis key count and node RSS samples (flat after the
warm-up, or something leaks), and the checker's table; exits 1 when an invariant is violated.
Not a pytest module (pytest collects only test_*.py). Loopback only; every process it starts is
killed by pid when it ends.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.checker import Bounds, Fault
from tests.faults.harness import Cell, CellConfig
from tests.support.nodes import NodeProcess

FAULTS = ("kill-leader", "sigterm-leader", "sigstop-leader", "kill-worker", "redis-stall", "redis-restart")


@dataclass
class Samples:
    keys: list[tuple[float, int]] = field(default_factory=list)
    rss_kb: list[tuple[float, int]] = field(default_factory=list)

    def take(self, cell: Cell) -> None:
        now = time.time()
        try:
            with cell.client() as c:
                self.keys.append((now, int(c.dbsize())))
        except OSError:
            return
        except Exception:  # Redis down during a fault: no sample
            return
        total = 0
        for node in cell.cluster.running():
            try:
                for line in Path(f"/proc/{node.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        self.rss_kb.append((now, total))


class Nemesis:
    """Seeded faults (F1, F2, F5, F6, F11, F7-style Redis restart), each recorded for the checker."""

    def __init__(self, cell: Cell, rng: random.Random) -> None:
        self.cell = cell
        self.rng = rng
        self.dup_allowance = 0

    def _restart_later(self, node: NodeProcess, after: float) -> None:
        time.sleep(after)
        if not node.running:
            node.start()
            node.wait_ready(30.0)

    def inject(self, kind: str) -> None:
        cell = self.cell
        leader = cell.leader(15.0)
        epoch = cell.epoch(leader)
        others = [n for n in cell.cluster.running() if n is not leader]
        t = time.time()
        if kind == "kill-leader":
            inflight = self._inflight(leader)
            leader.kill()
            cell.fault(Fault(kind, t, node=leader.reported_id, old_epoch=epoch, inflight=inflight))
            self.dup_allowance += len(inflight)
            self._restart_later(leader, 3.0)
        elif kind == "sigterm-leader":
            cell.fault(Fault(kind, t, node=leader.reported_id, old_epoch=epoch, graceful=True))
            leader.sigterm()
            leader.wait_exit(cell.config.shutdown_timeout + 10.0)
            self._restart_later(leader, 1.0)
        elif kind == "sigstop-leader":
            inflight = self._inflight(leader)
            leader.stop()
            time.sleep(3 * cell.config.lease)
            leader.cont()
            cell.fault(Fault(kind, t, t_end=time.time(), node=leader.reported_id, old_epoch=epoch, frozen=True,
                             inflight=inflight))
            self.dup_allowance += len(inflight)
        elif kind == "kill-worker" and others:
            victim = self.rng.choice(others)
            inflight = self._inflight(victim)
            victim.kill()
            cell.fault(Fault(kind, t, node=victim.reported_id, inflight=inflight))
            self.dup_allowance += len(inflight)
            self._restart_later(victim, 3.0)
        elif kind == "redis-stall":
            cell.redis_server.pause()
            time.sleep(8.0)
            cell.redis_server.resume()
            cell.fault(Fault(kind, t, t_end=time.time(), old_epoch=epoch, measure_from=time.time()))
        elif kind == "redis-restart":
            cell.kill_redis()
            time.sleep(1.6)
            up = cell.start_redis()
            cell.fault(Fault(kind, t, t_end=up, old_epoch=epoch, measure_from=up))

    def _inflight(self, node: NodeProcess) -> tuple[tuple[str, str], ...]:
        node_id = node.reported_id
        return tuple((job, node_id) for job in self.cell.inflight().get(node_id, []))


def run(minutes: float, seed: int, *, nemesis: bool, rate: float, workdir: Path) -> int:
    rng = random.Random(seed)
    print(f"soak: seed {seed}, {minutes} min, {rate}/s, nemesis {'on' if nemesis else 'off'}, workdir {workdir}",
          flush=True)
    cell = Cell("soak", workdir, CellConfig(pulse=nemesis, concurrency=2))
    samples = Samples()
    try:
        cell.start()
        producer = cell.producer(
            rate=rate, seed=seed,
            duration=lambda r: min(5.0, r.lognormvariate(-2.5, 1.0)),  # median ~80 ms, a tail of seconds
            delay=lambda r: r.uniform(1.0, 10.0) if r.random() < 0.2 else None)
        producer.start()
        chaos = Nemesis(cell, rng) if nemesis else None
        end = time.time() + minutes * 60
        next_fault = time.time() + rng.uniform(20, 60)
        next_sample = time.time()
        while time.time() < end:
            if time.time() >= next_sample:
                samples.take(cell)
                next_sample += 10.0
            if chaos is not None and time.time() >= next_fault:
                kind = rng.choice(FAULTS)
                print(f"soak: {time.strftime('%H:%M:%S')} nemesis {kind}", flush=True)
                chaos.inject(kind)
                next_fault = time.time() + rng.uniform(20, 60)
            time.sleep(0.2)
        samples.take(cell)
        bounds = Bounds(max_duplicated=chaos.dup_allowance if chaos else 0,
                        failover=cell.config.lease + 1.0 if chaos else None, handoff=0.5 if chaos else None,
                        recovery=15.0 if chaos else None, periodic_slack=None if chaos else 2)
        report = cell.finish(bounds, check_bounds=False)
        warm = [k for t, k in samples.keys if t >= samples.keys[0][0] + 60] or [k for _, k in samples.keys]
        rss = [k for t, k in samples.rss_kb if t >= samples.rss_kb[0][0] + 60] or [k for _, k in samples.rss_kb]
        print(f"\nRedis keys after warm-up: first {warm[0] if warm else '-'}, last {warm[-1] if warm else '-'}, "
              f"max {max(warm) if warm else '-'}")
        print(f"node RSS (kB, 3 nodes) after warm-up: first {rss[0] if rss else '-'}, last {rss[-1] if rss else '-'}")
        print(f"\nseed {seed}: {'PASS' if not cell.problems else 'FAIL'}")
        for p in cell.problems:
            print(f"  violation: {p}")
        del report
        return 1 if cell.problems else 0
    finally:
        cell.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a new random seed)")
    parser.add_argument("--rate", type=float, default=20.0, help="enqueues per second")
    parser.add_argument("--nemesis", action="store_true", help="inject seeded faults every 20-60 s (F17)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and artifacts here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="corral-soak-"))
    # SIGTERM (an outer timeout) still runs the cleanup that kills what this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args.minutes, seed, nemesis=args.nemesis, rate=args.rate, workdir=workdir)


if __name__ == "__main__":
    sys.exit(main())
