"""Soak run (docs/FAULTS.md F16) and, with `--nemesis`, the randomized nemesis (F17): one Redis, three
audited nodes, a seeded producer, optional seeded faults every 20-60 s, then the checker.

    python -m tests.faults.soak --minutes 2 --seed 7              # F16: no faults
    python -m tests.faults.soak --minutes 10 --seed 7 --nemesis   # F17: replay a run by its seed

Prints the seed, every injected fault, Redis key count and node RSS samples, and the checker's
table; exits 1 when an invariant is violated. Not a pytest module (pytest collects only
test_*.py): the CI-length cells in `test_soak_cells.py` call `soak()` and assert on its
`SoakResult`. Loopback only; every process it starts is killed by pid when it ends.

Without the nemesis the load comes in cycles (`cycle` seconds, default 30): the producer runs,
then rests `idle` seconds (default 12, longer than the longest delay, 10 s, plus the longest job,
5 s, less the 2 s settle below). That gives F16 what it measures:
- lateness in idle stretches: periodic slots and delayed seconds due from 2 s after the producer
  stopped to the end of the stretch (p99 <= 25 ms + how late the host woke any process there at
  p99, measured beside the run: tests/faults/hostlag.py; ~0 on a quiet machine);
- quiet samples at the end of each stretch, when every queue, delayed second and in-flight list
  is empty: Redis key count and node RSS there must be flat after the first cycle (warm-up).
  Samples every 10 s under load are printed too, but they move with the load.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.faults.checker import Bounds, Fault, History, Report, check, percentile
from tests.faults.harness import Cell, CellConfig, Producer, skipped_jobs
from tests.support.nodes import NodeProcess

FAULTS = ("kill-leader", "sigterm-leader", "sigstop-leader", "kill-worker", "redis-stall", "redis-restart")

IDLE_SETTLE = 2.0  # an idle stretch is measured from this long after the producer stopped
LATENESS_P99 = 0.025  # F16/F18: p99 lateness in idle stretches
# Of the producer's enqueues: copies of the JobLock task `locked` (2 keys, 0.5 s runs: copies
# contend, a blocked one is re-enqueued 1 s later) and delayed jobs of `hooked` (QueueLock +
# DelayQueueLock: staged at promotion, queued through their guards). Checked: no two runs of
# one JobLock key at once, no hooked delayed job lost (issue 20).
LOCKED_SHARE = 0.05
HOOKED_SHARE = 0.05
KEYS_SLACK = 2  # quiet key count: at most this many keys above the first quiet sample after warm-up
RSS_SLACK = 0.10  # quiet node RSS: at most 10 % above the first quiet sample after warm-up


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Sample:
    t: float
    keys: int
    rss_kb: dict[str, int]  # per node id
    quiet: bool  # taken at the end of an idle stretch

    @property
    def rss_total(self) -> int:
        return sum(self.rss_kb.values())


@dataclass
class Samples:
    taken: list[Sample] = field(default_factory=list)

    def take(self, cell: Cell, *, quiet: bool = False) -> Sample | None:
        try:
            with cell.client() as c:
                keys = int(c.dbsize())
        except (redis.RedisError, OSError):  # Redis down during a fault: no sample
            return None
        rss = {n.node_id: kb for n in cell.cluster.running() if (kb := rss_kb(n.pid)) is not None}
        sample = Sample(time.time(), keys, rss, quiet)
        self.taken.append(sample)
        return sample

    def quiet(self) -> list[Sample]:
        return [s for s in self.taken if s.quiet]


class Nemesis:
    """Seeded faults (F1, F2, F5, F6, F11, F7-style Redis restart), each recorded for the checker."""

    def __init__(self, cell: Cell, rng: random.Random) -> None:
        self.cell = cell
        self.rng = rng
        self.dup_allowance = 0
        self.injected: list[str] = []

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
        self.injected.append(f"{time.strftime('%H:%M:%S', time.localtime(t))} {kind}")
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
            # t_end is stamped before SIGCONT: what the node logs after it comes after the resume
            resumed = cell.resume_probing(leader, epoch)
            cell.fault(Fault(kind, t, t_end=resumed, node=leader.reported_id, old_epoch=epoch, frozen=True,
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


# ---- one run ----------------------------------------------------------------------------------


@dataclass
class SoakResult:
    """What one run found; `problems` empty = every invariant held."""

    seed: int
    minutes: float
    nemesis: bool
    rate: float
    workdir: Path
    report: Report | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a run too short could not measure
    samples: Samples = field(default_factory=Samples)
    injected: list[str] = field(default_factory=list)
    idle_windows: list[tuple[float, float]] = field(default_factory=list)
    idle_lateness: list[float] = field(default_factory=list)
    leadership_changes: int = 0
    load_average: float = 0.0
    host_lag_p99: float = 0.0  # how late the host woke any process in the idle stretches, p99
    locked_skipped: int = 0  # JobLock copies fetched while another held the lock (re-enqueued)

    @property
    def replay(self) -> str:
        return (f"python -m tests.faults.soak --minutes {self.minutes:g} --seed {self.seed} --rate {self.rate:g}"
                + (" --nemesis" if self.nemesis else ""))

    def figures(self) -> str:
        """Seed, faults, leadership, lateness, and the key count / RSS samples as text lines."""
        lines = [f"seed {self.seed} ({'nemesis' if self.nemesis else 'no faults'}, {self.minutes:g} min, "
                 f"{self.rate:g}/s); replay: {self.replay}"]
        if self.nemesis:
            lines.append(f"faults injected: {', '.join(self.injected) or 'none'}")
        lines.append(f"leadership changes: {self.leadership_changes}")
        r = self.report
        if r is not None:
            acked = sum(a for a, _ in r.lock_runs.values())
            runs = sum(n for _, n in r.lock_runs.values())
            lines.append(f"JobLock: {acked} copies acknowledged on {len(r.lock_runs)} keys, {runs} runs, "
                         f"{self.locked_skipped} fetches skipped while the lock was held; violations "
                         f"{len(r.lock_overlaps)} (+{len(r.lock_overlaps_refused)} after a refused ack), "
                         f"copies lost {len(r.lock_lost)}")
            lines.append(f"hooked delayed jobs (QueueLock + DelayQueueLock): {r.hooked_delayed} acknowledged, "
                         f"lost {len(r.lost_hooked)}")
        if self.idle_lateness:
            lat = self.idle_lateness
            lines.append(f"lateness in {len(self.idle_windows)} idle stretches: n={len(lat)} "
                         f"p50={percentile(lat, 50) * 1000:.1f}ms p99={percentile(lat, 99) * 1000:.1f}ms "
                         f"max={max(lat) * 1000:.1f}ms (host wake-up lag p99 {self.host_lag_p99 * 1000:.1f}ms, "
                         f"1-min load average {self.load_average:.1f} on {os.cpu_count()} CPUs)")
        quiet = self.samples.quiet()
        if quiet:
            lines.append("quiet samples (end of each idle stretch): keys "
                         + ", ".join(str(s.keys) for s in quiet) + "; node RSS kB "
                         + ", ".join(str(s.rss_total) for s in quiet))
        loaded = [s for s in self.samples.taken if not s.quiet]
        if loaded:
            lines.append(f"samples under load every 10 s: keys {min(s.keys for s in loaded)}.."
                         f"{max(s.keys for s in loaded)}; node RSS kB {loaded[0].rss_total} -> {loaded[-1].rss_total}")
        lines += [f"not measured: {n}" for n in self.notes]
        return "\n".join(lines)

    def describe(self) -> str:
        """The failure message: problems, figures, the checker's table and where the artifacts are."""
        table = self.report.table() if self.report else "(no report)"
        return ("; ".join(self.problems) + "\n" + self.figures() + f"\n{table}\nartifacts: {self.workdir}")


def soak(minutes: float, seed: int, *, nemesis: bool, workdir: Path, rate: float = 20.0, cycle: float = 30.0,
         idle: float = 12.0, log: Callable[[str], None] = print) -> SoakResult:
    """Run one soak (or nemesis) and return what it found; never raises on a violated invariant.

    Without the nemesis the producer runs `cycle - idle` seconds, then rests `idle` seconds, over
    and over; with it, the producer runs throughout and a seeded fault comes every 20-60 s."""
    rng = random.Random(seed)
    result = SoakResult(seed, minutes, nemesis, rate, workdir)
    log(f"soak: seed {seed}, {minutes:g} min, {rate:g}/s, nemesis {'on' if nemesis else 'off'}, workdir {workdir}")
    cell = Cell("soak", workdir, CellConfig(pulse=nemesis, concurrency=2, plugins=True))
    samples = result.samples
    try:
        cell.start()
        chaos = Nemesis(cell, rng) if nemesis else None
        start = time.time()
        end = start + minutes * 60

        def producer(k: int) -> Producer:
            return cell.producer(
                f"p{k}", rate=rate, seed=seed * 1000 + k,
                duration=lambda r: min(5.0, r.lognormvariate(-2.5, 1.0)),  # median ~80 ms, a tail of seconds
                delay=lambda r: r.uniform(1.0, 10.0) if r.random() < 0.2 else None,
                locked=LOCKED_SHARE, hooked=HOOKED_SHARE).start()

        burst = 0
        current: Producer | None = producer(burst)
        rest_at = start + cycle - idle if chaos is None else float("inf")
        next_fault = start + rng.uniform(20, 60)
        next_sample = start
        while time.time() < end:
            now = time.time()
            if now >= next_sample:
                samples.take(cell)
                next_sample += 10.0
            if current is not None and now >= rest_at:
                current.stop()
                current = None
                result.idle_windows.append((now + IDLE_SETTLE, min(now + idle, end)))
            if current is None and now >= rest_at + idle:
                samples.take(cell, quiet=True)
                burst += 1
                current = producer(burst)
                rest_at += cycle
            if chaos is not None and now >= next_fault:
                kind = rng.choice(FAULTS)
                log(f"soak: {time.strftime('%H:%M:%S')} nemesis {kind}")
                chaos.inject(kind)
                next_fault = time.time() + rng.uniform(20, 60)
            time.sleep(0.1)
        samples.take(cell, quiet=current is None)  # the last stretch ends with the run
        result.load_average = os.getloadavg()[0]
        if chaos is not None:
            result.injected = chaos.injected
            bounds = Bounds(max_duplicated=chaos.dup_allowance, failover=cell.config.lease + 1.0, handoff=0.5,
                            recovery=15.0, periodic_slack=None)
        else:
            bounds = Bounds(max_duplicated=0, periodic_slack=2)
        result.report = cell.finish(bounds, check_bounds=False)
        result.problems = list(cell.problems)
        result.locked_skipped = skipped_jobs(cell.cluster.nodes, "locked")
        result.leadership_changes = len([e for e in cell.leader_events() if e.kind == "acquired"]) - 1
        if chaos is None:
            result.problems += _quiet_run_problems(cell, result)
    finally:
        cell.close()
    log("\n" + result.figures())
    return result


def _quiet_run_problems(cell: Cell, result: SoakResult) -> list[str]:
    """F16 beyond the checker: no leadership change, idle lateness, flat keys and RSS after warm-up."""
    problems = []
    if result.leadership_changes or len(result.report.epochs if result.report else []) > 1:
        problems.append(f"leadership changed with no fault: {result.leadership_changes} acquisitions after the first, "
                        f"epochs {result.report.epochs if result.report else '?'}")
    audit = cell.audit()
    for window in result.idle_windows:
        if window[1] > window[0]:
            w = check(History(audit=audit, lateness_window=window))
            result.idle_lateness += w.lateness
    lat = result.idle_lateness
    # what the host itself added to every process's wake-ups in those stretches (tests/faults/hostlag.py)
    host = [x for w in result.idle_windows if w[1] > w[0] and cell.hostlag is not None
            for x in cell.hostlag.samples(w)]
    result.host_lag_p99 = percentile(host, 99) if host else 0.0
    if not lat:
        result.notes.append("idle lateness (no periodic slot or delayed second fell in an idle stretch)")
    elif percentile(lat, 99) > LATENESS_P99 + result.host_lag_p99:
        problems.append(f"lateness in idle stretches p99 {percentile(lat, 99) * 1000:.1f} ms > "
                        f"{LATENESS_P99 * 1000:.0f} ms + {result.host_lag_p99 * 1000:.1f} ms the host added to every "
                        f"process's wake-ups at p99 (1-min load average {result.load_average:.1f} on "
                        f"{os.cpu_count()} CPUs)")
    quiet = result.samples.quiet()[1:]  # the first stretch ends the warm-up
    if len(quiet) < 2:
        result.notes.append(f"key count and RSS flatness ({len(quiet)} quiet samples after the warm-up; "
                            "a run needs 3 cycles or more)")
        return problems
    base = quiet[0]
    grown = [s.keys for s in quiet if s.keys > base.keys + KEYS_SLACK]
    if grown:
        problems.append(f"Redis key count grew after warm-up: {[s.keys for s in quiet]} (quiet samples)")
    for node_id, first in base.rss_kb.items():
        later = [s.rss_kb[node_id] for s in quiet if node_id in s.rss_kb]
        if later and later[-1] > first * (1 + RSS_SLACK):
            problems.append(f"node {node_id} RSS grew after warm-up: {later} kB (quiet samples)")
    return problems


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
    result = soak(args.minutes, seed, nemesis=args.nemesis, rate=args.rate, workdir=workdir,
                  log=lambda line: print(line, flush=True))
    print(f"\nseed {seed}: {'PASS' if not result.problems else 'FAIL'}")
    for p in result.problems:
        print(f"  violation: {p}")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
