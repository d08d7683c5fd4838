"""Jepsen-style checker for Corral fault cells (docs/FAULTS.md §3).

Input: one cell's `History`, built by the harness (`tests/faults/harness.py`) after the cell ran
and drained, or by hand in the checker's own unit tests:

- `enqueues`: every enqueue the producers invoked, with its outcome: `ok` (acknowledged),
  `fail` (known not to have happened: refused before anything reached Redis), `refused` (an
  enqueue plugin - QueueLock, DelayQueueLock - refused it: `Client.enqueue` returned False),
  `info` (indeterminate: a timeout or a connection lost after sending). A job is named by its
  unique id, except the copies of a JobLock task, which share their args (the lock is on task +
  queue + args) and are named by that lock `key` and counted per key.
- `executions`: one entry per execution of a job, from the per-process JSONL logs the task code
  writes (never Redis): start, end (None when the process died mid-job) and outcome (`ok`,
  `error`, `cancelled` = interrupted by a graceful stop and pushed back, None = never ended), and
  whether its node logged its late ack refused (`ack_lost`: the at-least-once case), and the
  process's monotonic stamps (`m_start`, `m_end`: comparable across processes on one host, what
  the JobLock overlap check uses).
- `enqueue_hooks`: the tasks with an enqueue plugin; `dropped`: the jobs whose promotion the
  leader logged as dropped by such a plugin (`promotion_dropped`), with when.
- `audit`: the `<ns>:corral:audit` stream in stream order; every accepted leader write.
- `leader_events`: from the nodes' JSON logs: acquired / stepped_down / released / stopping /
  stale_rejected, with the log's wall time and the term's epoch; plus `claimed`, the harness's
  probes of a resumed node that answered "I lead" (see `_check_leadership` for overlap).
- `faults`: what the cell injected and when, with what each fault lets the checker measure
  (failover / handoff duration, recovery of the jobs in flight on a killed node).

Times are this host's wall clock (`time.time()`): a node's JSON log `ts`, the audit
`redis_time_us` (Redis `TIME` = the host clock on one machine, docs/FAULTS.md §2) and the harness's own
stamps compare directly. The clock seam of F9 shifts only a node's *internal* clock, never its
log stamps.

    report = check(history)
    print(report.table())
    assert not report.violations(Bounds(max_duplicated=2)), report.table()
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "AuditRecord",
    "Bounds",
    "Enqueue",
    "Execution",
    "Fault",
    "History",
    "LeaderEvent",
    "Overlap",
    "PeriodicSpec",
    "Report",
    "check",
    "parse_audit",
    "percentile",
    "summary",
]

TERMINAL = ("ok", "error")


# ---- the history ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueue:
    """One invoked enqueue. `due` is the delayed second (the bucket) for a delayed job."""

    id: str
    outcome: str  # ok | fail | info
    t_invoke: float
    t_complete: float
    due: float | None = None
    task: str = "job"
    key: str | None = None  # a JobLock task's lock key (task + queue + args): copies are counted per key


@dataclass(frozen=True)
class Execution:
    """One run of a job (id None for periodic occurrences, which carry no params)."""

    id: str | None
    task: str
    execution_id: str
    node: str
    pid: int
    start: float
    end: float | None = None
    outcome: str | None = None  # ok | error | cancelled | None (never ended: the process died)
    planned: float | None = None  # the run time the job asked for (its "s" param), when known
    # The node logged `ack_lost` for this run: it finished, but recovery had taken the job from it
    # (it was declared dead: frozen, partitioned), so its ack was refused and another copy runs.
    ack_refused: bool = False
    key: str | None = None  # a JobLock task's lock key (task + queue + args), as for `Enqueue.key`
    m_start: float | None = None  # time.monotonic() in the process at start / end
    m_end: float | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One accepted leader write, in stream order (`id` = stream id "<ms>-<n>")."""

    id: str
    op: str  # promote | periodic | recover | unstage
    epoch: int
    token: str
    t: float  # Redis TIME when the script ran, epoch seconds
    detail: str

    @property
    def seq(self) -> tuple[int, int]:
        ms, _, n = self.id.partition("-")
        return int(ms), int(n or 0)


def parse_audit(entries: Iterable[tuple[str, dict[str, str]]]) -> list[AuditRecord]:
    """XRANGE output (decoded) -> records, in stream order."""
    out = [AuditRecord(id=str(i), op=f["op"], epoch=int(f["epoch"]), token=f["token"],
                       t=int(f["redis_time_us"]) / 1e6, detail=f.get("detail", "")) for i, f in entries]
    return sorted(out, key=lambda r: r.seq)


@dataclass(frozen=True)
class LeaderEvent:
    """A leadership event from a node's log. kind: acquired | stepped_down | released | stopping |
    stale_rejected (a leader write refused as STALE: the fencing working) | claimed (not from the
    log: the harness asked the node, over /leader or /metrics, and it answered that it leads;
    `t` = when it can first have said so)."""

    node: str
    kind: str
    t: float
    epoch: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    - `old_epoch`: the epoch leading at injection; the first audit record of a higher epoch
      ends the failover (or the handoff when `graceful`). Measured from `measure_from` when
      given (F7: Redis accepting connections again), else from `t`.
    - `node`: the target node's reported id; `inflight`: job ids in flight on it at injection
      as (job id, node id) pairs: each job's node must have a `recover` audit record after `t`
      that returned at least as many jobs as were in flight there; the recovery duration is
      measured from `recovery_from` (F15: the first node back) or `t`.
    - [t, t_end] is the fault window; leadership changes outside every window (plus `settle`
      seconds after it) are flaps.
    - `frozen`: the target could not run during [t, t_end] (SIGSTOP, a blocked event loop);
      `t_end` must be stamped *before* it is resumed (SIGCONT), so that whatever it logs after
      `t_end` is known to come after the resume. See `_check_leadership` for what overlap means
      for a frozen leader.
    """

    kind: str
    t: float
    t_end: float | None = None
    node: str | None = None
    old_epoch: int | None = None
    graceful: bool = False
    measure_from: float | None = None
    inflight: tuple[tuple[str, str], ...] = ()
    recovery_from: float | None = None
    frozen: bool = False


@dataclass(frozen=True)
class PeriodicSpec:
    """A periodic task with a fixed frequency, as the checker's missed-slot rule needs it."""

    frequency: float
    missed: str = "catch_up"  # catch_up | skip (missed slots are only looked for under catch_up)
    catch_up_window: float = 60.0
    count_runs: bool = True  # compare executions with claimed slots (off for sub-second tasks)


@dataclass
class History:
    enqueues: list[Enqueue] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    leader_events: list[LeaderEvent] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    periodic: dict[str, PeriodicSpec] = field(default_factory=dict)
    # Missed slots are looked for in [start, end] (default: first..last claimed slot).
    window: tuple[float, float] | None = None
    # Seconds after a fault window in which leadership changes are caused by it (not flaps).
    settle: float = 15.0
    # Lateness counts only delayed buckets and periodic slots in [start, end] (default: all).
    lateness_window: tuple[float, float] | None = None
    # Tasks with an enqueue plugin (QueueLock, DelayQueueLock): their delayed jobs are staged at
    # promotion and their hooks run there (issue 20.1: such a job could be dropped by its own lock).
    enqueue_hooks: frozenset[str] = frozenset()
    # (job id, wall time) of every promotion an enqueue plugin dropped (the leaders' logs).
    dropped: list[tuple[str, float]] = field(default_factory=list)


# ---- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """{n, p50, p99, max} (n only when empty)."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


# ---- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlap:
    old_epoch: int
    new_epoch: int
    old_node: str | None
    new_node: str
    old_end: float | None  # the later of its step-down and its last accepted write
    new_acquired: float

    @property
    def seconds(self) -> float | None:
        """old_end - new_acquired; must be <= 0. None when the old term left no trace at all."""
        return None if self.old_end is None else self.old_end - self.new_acquired


@dataclass(frozen=True)
class Bounds:
    """What a cell must meet. The defaults are docs/FAULTS.md's invariants; `None` = not asserted."""

    max_lost: int = 0
    max_unfinished: int = 0
    max_duplicated: int = 0  # docs/FAULTS.md: <= jobs in flight on killed / stopped / partitioned nodes
    max_completed_twice: int | None = None  # None: same as max_duplicated
    max_unexpected: int = 0
    max_lock_overlaps: int = 0  # two runs holding one JobLock key at once
    max_dup_slots: int = 0
    max_stale_accepted: int = 0
    max_overlap: float = 0.0
    max_flaps: int = 0
    max_missed_slots: int | None = 0  # catch-up tasks only; skip-policy tasks are reported
    periodic_slack: int | None = 2  # |executions - claimed slots| per periodic task
    failover: float | None = None
    handoff: float | None = None
    recovery: float | None = None
    lateness_p99: float | None = None
    lateness_max: float | None = None


@dataclass
class Report:
    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    lost: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    started_twice: list[str] = field(default_factory=list)
    completed_twice: list[str] = field(default_factory=list)
    # Of those, the documented at-least-once case: one copy's ack was refused (the node was declared
    # dead while it ran the job, recovery re-ran it); each such node said so (`ack_lost`).
    completed_twice_refused: list[str] = field(default_factory=list)
    # A refused ack means recovery re-queued the job: a job with no other run after it is lost.
    refused_not_rerun: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)  # enqueues known failed that executed
    recovered: list[str] = field(default_factory=list)  # indeterminate enqueues that executed
    cancelled: int = 0  # executions interrupted by a graceful stop (pushed back)
    dup_slots: list[str] = field(default_factory=list)
    periodic_runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # task -> (claimed, executed)
    missed_slots: dict[str, list[float]] = field(default_factory=dict)
    beyond_window: list[str] = field(default_factory=list)  # replays later than the catch-up window
    stale_accepted: list[AuditRecord] = field(default_factory=list)
    stale_rejected: int = 0
    epochs: list[int] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    failovers: list[tuple[str, float | None]] = field(default_factory=list)
    handoffs: list[tuple[str, float | None]] = field(default_factory=list)
    recoveries: dict[str, float | None] = field(default_factory=dict)  # job id -> seconds (None: never)
    promote_lateness: list[float] = field(default_factory=list)
    periodic_lateness: list[float] = field(default_factory=list)
    early_promotions: list[str] = field(default_factory=list)  # "ts:count" promoted before the due second
    flaps: list[tuple[int, float]] = field(default_factory=list)  # (epoch, acquired at) outside fault windows
    refused: int = 0  # enqueues an enqueue plugin refused (known not queued)
    # Delayed jobs of a task with an enqueue plugin, acknowledged, never run (a subset of `lost`).
    lost_hooked: list[str] = field(default_factory=list)
    hooked_delayed: int = 0  # such jobs acknowledged
    # JobLock: two runs with one lock key at once ("key: exec a / exec b +overlap s"). Those where one
    # run's ack was refused (its node was declared dead, recovery freed its lock) are the
    # at-least-once case, bounded as duplicates.
    lock_overlaps: list[str] = field(default_factory=list)
    lock_overlaps_refused: list[str] = field(default_factory=list)
    # the stale runs behind those overlaps: one frozen copy can overlap several later copies that
    # took the lock one after the other, and it is one duplicate (at-least-once), not several
    lock_refused_runs: set[str] = field(default_factory=set)
    lock_runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (copies acknowledged, runs)
    lock_lost: list[str] = field(default_factory=list)  # "key#n": acknowledged copies that never ran

    # -- derived ---------------------------------------------------------------------------------

    def fraction(self, name: str) -> float:
        """Count of `name` over attempted enqueues (rabbitmq/jepsen total-queue style)."""
        n = len(getattr(self, name))
        return n / self.attempted if self.attempted else 0.0

    @property
    def lateness(self) -> list[float]:
        return self.promote_lateness + self.periodic_lateness

    @property
    def worst_overlap(self) -> float | None:
        known = [o.seconds for o in self.overlaps if o.seconds is not None]
        return max(known) if known else None

    def violations(self, bounds: Bounds | None = None) -> list[str]:
        b = bounds or Bounds()
        out: list[str] = []

        def over(name: str, items: Sequence[object], limit: int | None) -> None:
            if limit is not None and len(items) > limit:
                out.append(f"{name}: {len(items)} > {limit}: {list(items)[:8]}")

        over("lost", self.lost, b.max_lost)
        over("unfinished", self.unfinished, b.max_unfinished)
        over("duplicated", self.duplicated, b.max_duplicated)
        over("completed twice", self.completed_twice,
             b.max_duplicated if b.max_completed_twice is None else b.max_completed_twice)
        over("unexpected", self.unexpected, b.max_unexpected)
        over("refused ack but never run again (recovered copy lost)", self.refused_not_rerun, 0)
        over("resurrected (failed enqueue executed)", self.resurrected, b.max_unexpected)
        over("lost delayed jobs with enqueue hooks", self.lost_hooked, b.max_lost)
        over("JobLock violations (two copies at once)", self.lock_overlaps, b.max_lock_overlaps)
        over("JobLock runs overlapping later copies after a refused ack", sorted(self.lock_refused_runs),
             b.max_duplicated)
        over("JobLock copies lost", self.lock_lost, b.max_lost)
        over("duplicate periodic slots", self.dup_slots, b.max_dup_slots)
        over("stale-leader writes accepted", self.stale_accepted, b.max_stale_accepted)
        over("flaps", self.flaps, b.max_flaps)
        if b.max_missed_slots is not None:
            missed = [f"{task}@{s:g}" for task, slots in self.missed_slots.items() for s in slots]
            over("missed periodic slots (catch-up)", missed, b.max_missed_slots)
            over("replays later than the catch-up window", self.beyond_window, 0)
        if b.periodic_slack is not None:
            for task, (claimed, executed) in self.periodic_runs.items():
                if abs(claimed - executed) > b.periodic_slack:
                    out.append(f"periodic {task}: {claimed} slots claimed but {executed} executions")
        for o in self.overlaps:
            if o.seconds is not None and o.seconds > b.max_overlap:
                out.append(f"overlap epoch {o.old_epoch}->{o.new_epoch}: {o.seconds:+.3f}s > {b.max_overlap}")
        for name, items, limit in (("failover", self.failovers, b.failover), ("handoff", self.handoffs, b.handoff)):
            for kind, d in items:
                if limit is not None and (d is None or d > limit):
                    out.append(f"{name} after {kind}: {'never' if d is None else f'{d:.3f}s'} > {limit}s")
        if b.recovery is not None:
            for job, d in self.recoveries.items():
                if d is None or d > b.recovery:
                    out.append(f"recovery of {job}: {'never' if d is None else f'{d:.3f}s'} > {b.recovery}s")
        lat = self.lateness
        if lat and b.lateness_p99 is not None and percentile(lat, 99) > b.lateness_p99:
            out.append(f"lateness p99 {percentile(lat, 99) * 1000:.1f} ms > {b.lateness_p99 * 1000:.0f} ms")
        if lat and b.lateness_max is not None and max(lat) > b.lateness_max:
            out.append(f"lateness max {max(lat) * 1000:.1f} ms > {b.lateness_max * 1000:.0f} ms")
        return out

    def _recovery_text(self) -> str:
        if not self.recoveries:
            return "-"
        done = [d for d in self.recoveries.values() if d is not None]
        never = len(self.recoveries) - len(done)
        text = f"n={len(self.recoveries)}" + (f" max={max(done):.3f}s" if done else "")
        return text + (f" never={never}" if never else "")

    def table(self) -> str:
        """The report as an aligned text table (what CI prints and the soak run shows)."""
        def ms(s: dict[str, float]) -> str:
            if not s.get("n"):
                return "-"
            return (f"n={int(s['n'])} p50={s['p50'] * 1000:.1f}ms p99={s['p99'] * 1000:.1f}ms "
                    f"max={s['max'] * 1000:.1f}ms")

        def secs(items: Iterable[float | None]) -> str:
            vals = list(items)
            return ", ".join("never" if v is None else f"{v:.3f}s" for v in vals) or "-"

        def ids(items: Sequence[object]) -> str:
            return f"{len(items)}" + (f"  {list(items)[:5]}" if items else "")

        ov = [o.seconds for o in self.overlaps]
        rows = [
            ("enqueues attempted", f"{self.attempted} (ok {self.acknowledged}, fail {self.failed}, "
                                   f"refused {self.refused}, info {self.indeterminate})"),
            ("lost", f"{ids(self.lost)}  ({self.fraction('lost'):.4f})"),
            ("unfinished", ids(self.unfinished)),
            ("duplicated", f"{ids(self.duplicated)}  ({self.fraction('duplicated'):.4f})"),
            ("started twice / completed twice", f"{len(self.started_twice)} / {len(self.completed_twice)} "
                                                f"({len(self.completed_twice_refused)} with a refused late ack: "
                                                "at-least-once)"),
            ("cancelled (pushed back)", str(self.cancelled)),
            ("unexpected", f"{ids(self.unexpected)}  ({self.fraction('unexpected'):.4f})"),
            ("resurrected (fail executed)", ids(self.resurrected)),
            ("hooked delayed lost", f"{ids(self.lost_hooked)}  (of {self.hooked_delayed} acknowledged)"),
            ("JobLock violations", f"{ids(self.lock_overlaps)}  ({len(self.lock_overlaps_refused)} after a refused "
                                   f"ack; {sum(n for _, n in self.lock_runs.values())} runs of "
                                   f"{len(self.lock_runs)} keys)"),
            ("JobLock copies lost", ids(self.lock_lost)),
            ("recovered (info executed)", f"{len(self.recovered)}  ({self.fraction('recovered'):.4f})"),
            ("duplicate periodic slots", ids(self.dup_slots)),
            ("periodic claimed/executed", ", ".join(f"{k} {c}/{e}" for k, (c, e) in self.periodic_runs.items()) or "-"),
            ("missed slots", ", ".join(f"{k} {len(v)}" for k, v in self.missed_slots.items()) or "-"),
            ("replays beyond catch-up window", ids(self.beyond_window)),
            ("stale writes accepted", ids([r.id for r in self.stale_accepted])),
            ("stale writes rejected (fencing)", str(self.stale_rejected)),
            ("epochs", ", ".join(map(str, self.epochs)) or "-"),
            ("overlap per handoff", secs(ov)),
            ("failover", ", ".join(f"{k} {'never' if d is None else f'{d:.3f}s'}" for k, d in self.failovers) or "-"),
            ("handoff", ", ".join(f"{k} {'never' if d is None else f'{d:.3f}s'}" for k, d in self.handoffs) or "-"),
            ("recovery", self._recovery_text()),
            ("promotion lateness", ms(summary(self.promote_lateness))),
            ("periodic lateness", ms(summary(self.periodic_lateness))),
            ("early promotions", ids(self.early_promotions)),
            ("flaps", ids(self.flaps)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


# ---- the checks -------------------------------------------------------------------------------


def _token_epoch(token: str) -> int | None:
    parts = token.rsplit("/", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def _check_jobs(h: History, r: Report) -> None:
    r.attempted = len(h.enqueues)
    by_outcome: dict[str, set[str]] = defaultdict(set)
    for e in h.enqueues:
        if e.key is None:  # JobLock copies are counted per key (_check_job_locks)
            by_outcome[e.outcome].add(e.id)
    count = Counter(e.outcome for e in h.enqueues)
    r.acknowledged, r.failed, r.refused, r.indeterminate = count["ok"], count["fail"], count["refused"], count["info"]
    ok, info = by_outcome["ok"], by_outcome["info"]
    fail = by_outcome["fail"] | by_outcome["refused"]
    invoked = ok | fail | info
    jobs = [x for x in h.executions if x.id is not None and x.key is None]
    starts: Counter[str] = Counter()
    effective: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    for x in jobs:
        assert x.id is not None
        starts[x.id] += 1
        if x.outcome == "cancelled":
            r.cancelled += 1
        else:
            effective[x.id] += 1
        if x.outcome in TERMINAL:
            completed[x.id] += 1
    r.lost = sorted(ok - set(starts))
    r.unfinished = sorted(i for i in (ok | info) & set(starts) if not completed[i])
    r.duplicated = sorted(i for i, n in effective.items() if n > 1)
    r.started_twice = sorted(i for i, n in starts.items() if n > 1)
    r.completed_twice = sorted(i for i, n in completed.items() if n > 1)
    refused = {x.id for x in jobs if x.ack_refused}
    r.completed_twice_refused = [i for i in r.completed_twice if i in refused]
    for x in jobs:
        if x.ack_refused and not any(y.id == x.id and y.execution_id != x.execution_id and y.outcome != "cancelled"
                                     for y in jobs):
            r.refused_not_rerun.append(str(x.id))
    r.unexpected = sorted(set(starts) - invoked)
    r.resurrected = sorted(fail & set(starts))
    r.recovered = sorted(info & set(starts))
    hooked = {e.id for e in h.enqueues if e.outcome == "ok" and e.due is not None and e.task in h.enqueue_hooks
              and e.key is None}
    r.hooked_delayed = len(hooked)
    dropped = {i for i, _ in h.dropped}
    r.lost_hooked = [i + (" (dropped at promotion)" if i in dropped else "") for i in r.lost if i in hooked]


def _interval(x: Execution, h: History) -> tuple[float, float] | None:
    """When a run held its JobLock, on its process's monotonic clock (wall time for a record
    without one). A run that never ended held it until its process died: the first fault that
    took its node down after it started (killed; a frozen node's run goes on after the resume and
    logs its end); with no such fault the end is unknown and nothing is asserted about it."""
    offset = x.start - x.m_start if x.m_start is not None else 0.0  # wall - monotonic in that process
    start = x.m_start if x.m_start is not None else x.start
    if x.end is not None:
        return start, (x.m_end if x.m_start is not None and x.m_end is not None else x.end - offset)
    died = [f.t for f in h.faults if f.node == x.node and not f.frozen and f.t >= x.start]
    return (start, min(died) - offset) if died else None


def _check_job_locks(h: History, r: Report) -> None:
    """JobLock: no two runs with one lock key at once; every acknowledged copy runs."""
    runs: dict[str, list[Execution]] = defaultdict(list)
    for x in h.executions:
        if x.key is not None:
            runs[x.key].append(x)
    acked = Counter(e.key for e in h.enqueues if e.key is not None and e.outcome == "ok")
    for key in sorted(set(runs) | set(acked)):
        effective = [x for x in runs.get(key, []) if x.outcome != "cancelled"]
        r.lock_runs[key] = (acked.get(key, 0), len(effective))
        done = sum(1 for x in effective if x.outcome in TERMINAL or x.ack_refused)
        r.lock_lost += [f"{key}#{n}" for n in range(done + 1, acked.get(key, 0) + 1)]
        held = sorted(((iv, x) for x in runs.get(key, []) if (iv := _interval(x, h)) is not None),
                      key=lambda p: p[0][0])
        for (a_iv, a), (b_iv, b) in itertools.combinations(held, 2):
            if b_iv[0] < a_iv[1] and a_iv[0] < b_iv[1]:
                text = f"{key}: {a.execution_id} / {b.execution_id} +{min(a_iv[1], b_iv[1]) - b_iv[0]:.3f}s"
                if a.ack_refused or b.ack_refused:
                    r.lock_overlaps_refused.append(text)
                    r.lock_refused_runs.update(x.execution_id for x in (a, b) if x.ack_refused)
                else:
                    r.lock_overlaps.append(text)


def _check_audit(h: History, r: Report) -> None:
    highest = 0
    tokens: dict[int, str] = {}
    for rec in h.audit:
        stale = rec.epoch < highest
        if tokens.setdefault(rec.epoch, rec.token) != rec.token:
            stale = True  # a second lock value for one epoch: not the lock value at that point
        te = _token_epoch(rec.token)
        if te is not None and te != rec.epoch:
            stale = True
        if stale:
            r.stale_accepted.append(rec)
        if rec.epoch > highest:
            highest = rec.epoch
            r.epochs.append(rec.epoch)
    r.stale_rejected = sum(1 for e in h.leader_events if e.kind == "stale_rejected")


def _recover_detail(detail: str) -> tuple[str, int, int]:
    """"<node>:<recovered>:<poisoned>" (node ids never contain ':')."""
    rest, _, poisoned = detail.rpartition(":")
    node, _, recovered = rest.rpartition(":")
    return node, int(recovered or 0), int(poisoned or 0)


def _slot(detail: str) -> tuple[str, float]:
    task, _, slot = detail.rpartition("@")
    return task, float(slot)


def _check_periodic(h: History, r: Report) -> None:
    claims = [(rec, *_slot(rec.detail)) for rec in h.audit if rec.op == "periodic"]
    counts = Counter(rec.detail for rec, _, _ in claims)
    r.dup_slots = sorted(d for d, n in counts.items() if n > 1)
    claimed: dict[str, set[float]] = defaultdict(set)
    lw = h.lateness_window
    for rec, task, slot in claims:
        claimed[task].add(slot)
        if lw is None or lw[0] <= slot <= lw[1]:
            r.periodic_lateness.append(rec.t - slot)
        spec = h.periodic.get(task)
        if spec is not None and spec.missed == "catch_up" and rec.t - slot > spec.catch_up_window:
            r.beyond_window.append(f"{task}@{slot:g} ({rec.t - slot:.1f}s late)")
    executed = Counter(x.task for x in h.executions if x.id is None and x.key is None and x.outcome != "cancelled")
    for task in sorted(set(claimed) | set(h.periodic)):
        if task in h.periodic and not h.periodic[task].count_runs:
            continue
        r.periodic_runs[task] = (len(claimed.get(task, ())), executed.get(task, 0))
    for task, spec in h.periodic.items():
        slots = claimed.get(task, set())
        if not slots or spec.missed != "catch_up":
            continue
        lo, hi = (min(slots), max(slots)) if h.window is None else h.window
        f = spec.frequency
        nominal = [round(k * f, 6) for k in range(math.ceil(lo / f - 1e-9), math.floor(hi / f + 1e-9) + 1)]
        have = {round(s, 6) for s in slots}
        missed = [s for s in nominal if s not in have]
        if missed:
            r.missed_slots[task] = missed


def _check_lateness(h: History, r: Report) -> None:
    first: dict[int, tuple[float, int]] = {}
    for rec in h.audit:
        if rec.op != "promote" or not rec.detail:
            continue
        for bucket in rec.detail.split(","):
            ts, _, count = bucket.partition(":")
            sec = int(float(ts))
            if sec not in first:
                first[sec] = (rec.t, int(count or 0))
    lw = h.lateness_window
    for sec, (t, jobs) in sorted(first.items()):
        if lw is not None and not lw[0] <= sec <= lw[1]:
            continue
        r.promote_lateness.append(t - sec)
        if t < sec:
            r.early_promotions.append(f"{sec}:{jobs} ({t - sec:+.3f}s)")


def _stop_time(events: list[LeaderEvent], node: str, epoch: int, acquired: float) -> float | None:
    """When `node` stopped leading `epoch`: its step-down, or (SIGTERM) the `stopping` event
    logged just before the release sets the term lost, whichever comes first."""
    candidates = [e.t for e in events if e.node == node and e.epoch == epoch and e.kind == "stepped_down"]
    released = any(e.node == node and e.epoch == epoch and e.kind == "released" for e in events)
    if released:
        candidates += [e.t for e in events if e.node == node and e.kind == "stopping" and e.t >= acquired]
    return min(candidates) if candidates else None


def _check_leadership(h: History, r: Report) -> None:
    """Overlap per handoff: when the old term's last act as leader ended, minus when the new term
    was acquired (must be <= 0). An act is an accepted leader write (audit), a step-down logged
    while it could still act, a leader write it attempted (refused as STALE), or telling anyone
    that it leads (/leader, /metrics: `claimed`).

    A frozen leader (SIGSTOP, its loop blocked) cannot act while frozen: it stopped acting when it
    froze, and that moment is its end, not the step-down it logs on resuming. Resuming, it still
    holds its old view until its lease check runs; the check must come first. So its end is the
    later of the freeze and anything it did as leader after the resume - a write accepted or
    attempted, an answer that it leads - each of which, after its successor acquired, is overlap.
    The step-down logged after the resume is that lease check, not an act. (A step-down logged
    inside the window is real: the node's leader process runs on while the node's loop is blocked
    and stops itself when the node stops answering.)
    """
    acquired = sorted((e for e in h.leader_events if e.kind == "acquired" and e.epoch is not None),
                      key=lambda e: (e.epoch or 0, e.t))
    last_write: dict[int, float] = {}
    for rec in h.audit:
        last_write[rec.epoch] = max(rec.t, last_write.get(rec.epoch, rec.t))
    # STALE refusals are not counted for a running leader: a node logs one when the reply arrives,
    # which can be after a successor acquired although the write was sent before the node stopped;
    # they are the fencing working and are reported as `stale_rejected`. After a freeze they are
    # counted: a write sent before the freeze reached Redis before any successor existed.
    for prev, new in itertools.pairwise(acquired):
        assert prev.epoch is not None and new.epoch is not None
        stop = _stop_time(h.leader_events, prev.node, prev.epoch, prev.t)
        ends = [t for t in (last_write.get(prev.epoch),) if t is not None]
        frozen = [f for f in h.faults if f.frozen and f.node == prev.node and f.t <= new.t
                  and (f.t_end is None or new.t <= f.t_end)]
        resumed = [f.t_end for f in frozen if f.t_end is not None]
        if stop is not None and resumed and stop >= min(resumed):
            # logged on resuming: it acted until it froze, then only what it did after the resume counts
            stop = min(f.t for f in frozen)
            after = min(resumed)
            ends += [e.t for e in h.leader_events if e.node == prev.node and e.epoch == prev.epoch
                     and e.kind in ("claimed", "stale_rejected") and e.t >= after]
        if stop is not None:
            ends.append(stop)
        ends += [e.t for e in h.leader_events if e.node == prev.node and e.epoch == prev.epoch
                 and e.kind == "claimed" and e.t >= new.t]
        r.overlaps.append(Overlap(prev.epoch, new.epoch, prev.node, new.node, max(ends) if ends else None, new.t))
    windows = [(f.t, (f.t_end if f.t_end is not None else f.t) + h.settle) for f in h.faults]
    for e in acquired[1:]:
        if not any(a <= e.t <= b for a, b in windows):
            assert e.epoch is not None
            r.flaps.append((e.epoch, e.t))


SIGNAL_DELIVERY = 0.05  # seconds from sending a signal to the process stopping (a few ms measured)


def _check_faults(h: History, r: Report) -> None:
    for f in h.faults:
        if f.old_epoch is not None:
            start = f.measure_from if f.measure_from is not None else f.t
            first = next((rec for rec in h.audit if rec.epoch > f.old_epoch and rec.t >= f.t), None)
            d = None if first is None else first.t - start
            (r.handoffs if f.graceful else r.failovers).append((f.kind, d))
        # A job that ended on its node within the signal's delivery (SIGSTOP / SIGKILL take a few ms
        # to land) finished, and was acked, before the fault: nothing was left to recover (seen in
        # CI: a job ended 2.5 ms after the SIGSTOP was sent, and recovery then found 0 in flight).
        landed = f.t + SIGNAL_DELIVERY
        inflight = [(job, node) for job, node in f.inflight
                    if not any(e.id == job and e.node == node and e.end is not None and f.t <= e.end <= landed
                               for e in h.executions)]
        if inflight:
            start = f.recovery_from if f.recovery_from is not None else f.t
            need = Counter(node for _, node in inflight)
            done: dict[str, float] = {}
            got: Counter[str] = Counter()
            for rec in h.audit:
                if rec.op != "recover" or rec.t < f.t:
                    continue
                node, recovered, poisoned = _recover_detail(rec.detail)
                if node in need and node not in done:
                    got[node] += recovered + poisoned
                    if got[node] >= need[node]:
                        done[node] = rec.t - start
            for job, node in inflight:
                r.recoveries[job] = done.get(node)


def check(h: History) -> Report:
    """Run every check of docs/FAULTS.md §3 over one history."""
    r = Report()
    _check_jobs(h, r)
    _check_job_locks(h, r)
    _check_audit(h, r)
    _check_periodic(h, r)
    _check_lateness(h, r)
    _check_leadership(h, r)
    _check_faults(h, r)
    return r
