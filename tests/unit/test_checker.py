"""The fault checker's own tests (docs/FAULTS.md §3): a clean synthetic history passes, and one planted
anomaly of each kind is flagged. A checker that never fails proves nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from tests.faults.checker import (
    AuditRecord,
    Bounds,
    Enqueue,
    Execution,
    Fault,
    History,
    LeaderEvent,
    PeriodicSpec,
    check,
    parse_audit,
    percentile,
)

_seq = iter(range(10**6))


def rec(t: float, epoch: int, op: str, detail: str, token: str | None = None) -> AuditRecord:
    return AuditRecord(id=f"{int(t * 1000)}-{next(_seq)}", op=op, epoch=epoch,
                       token=token or f"{'n1' if epoch == 100 else 'n2'}/{epoch}/ab", t=t, detail=detail)


def run(job: str | None, start: float, end: float | None, outcome: str | None = "ok", *, node: str = "n2",
        task: str = "job") -> Execution:
    return Execution(id=job, task=task, execution_id=f"x{next(_seq)}", node=node, pid=1, start=start, end=end,
                     outcome=outcome)


LOCK = "locked:L1"
MONO = 1000.0  # the processes' monotonic clock reads wall time minus this


def locked(start: float, end: float | None, outcome: str | None = "ok", *, node: str = "n2",
           ack_refused: bool = False, mono: float = MONO) -> Execution:
    """A run of the JobLock task `locked` (every copy has the same args: named by its lock key)."""
    return Execution(id=None, task="locked", execution_id=f"x{next(_seq)}", node=node, pid=2, start=start, end=end,
                     outcome=outcome, key=LOCK, m_start=start - mono, m_end=None if end is None else end - mono,
                     ack_refused=ack_refused)


def clean() -> History:
    """n1 leads epoch 100, is SIGTERMed at 12.70 and hands over to n2 (epoch 101); n3 is killed at
    14.0 with j4 in flight, recovered at 22.5 and run again; j5 was pushed back by n1's drain. Two
    copies of the JobLock job L1 run one after the other; the delayed job h1 of `hooked` (an
    enqueue plugin) runs at its due second, and h2 (immediate) was refused by that plugin."""
    enqueues = [Enqueue(f"j{i}", "ok", 1.0 + i / 10, 1.001 + i / 10) for i in range(1, 6)]
    enqueues += [Enqueue("j6", "info", 2.0, 4.0), Enqueue("j7", "fail", 2.1, 2.2), Enqueue("j8", "info", 2.3, 4.3),
                 Enqueue("d1", "ok", 3.0, 3.001, due=20.0), Enqueue("d2", "ok", 3.1, 3.101, due=20.0),
                 Enqueue("L1a", "ok", 3.2, 3.201, task="locked", key=LOCK),
                 Enqueue("L1b", "ok", 3.3, 3.301, task="locked", key=LOCK),
                 Enqueue("h1", "ok", 3.4, 3.401, due=21.0, task="hooked"),
                 Enqueue("h2", "refused", 3.5, 3.501, task="hooked")]
    executions = [run("j1", 2, 2.5), run("j2", 2, 2.5), run("j3", 2, 2.5), run("j6", 5, 5.1),
                  run("j4", 13.5, None, None, node="n3"), run("j4", 22.6, 23.0),
                  run("j5", 12.0, 12.72, "cancelled", node="n1"), run("j5", 12.8, 13.0),
                  run("d1", 20.01, 20.02), run("d2", 20.01, 20.03),
                  locked(4.0, 4.5, node="n3"), locked(4.52, 5.0), run("h1", 21.01, 21.05, task="hooked")]
    executions += [run(None, s + 0.01, s + 0.02, task="tick") for s in range(10, 17)]
    audit = [rec(10.003, 100, "periodic", "tick@10"), rec(11.003, 100, "periodic", "tick@11"),
             rec(12.002, 100, "periodic", "tick@12"), rec(13.003, 101, "periodic", "tick@13"),
             rec(14.003, 101, "periodic", "tick@14"), rec(15.003, 101, "periodic", "tick@15"),
             rec(16.003, 101, "periodic", "tick@16"), rec(20.004, 101, "promote", "20:2"),
             rec(22.5, 101, "recover", "n3:1:0")]
    events = [LeaderEvent("n1", "acquired", 5.0, 100), LeaderEvent("n1", "stopping", 12.701),
              LeaderEvent("n1", "released", 12.703, 100), LeaderEvent("n2", "acquired", 12.704, 101),
              LeaderEvent("n1", "stepped_down", 12.706, 100, "released")]
    faults = [Fault("sigterm", 12.70, node="n1", old_epoch=100, graceful=True),
              Fault("kill", 14.0, node="n3", inflight=(("j4", "n3"),))]
    return History(enqueues=enqueues, executions=executions, audit=sorted(audit, key=lambda r: r.seq),
                   leader_events=events, faults=faults, periodic={"tick": PeriodicSpec(1.0)},
                   enqueue_hooks=frozenset({"hooked"}))


BOUNDS = Bounds(max_duplicated=1, handoff=0.5, failover=6.0, recovery=15.0, lateness_p99=0.025, lateness_max=0.1)


def with_(h: History, **changes: object) -> History:
    return dataclasses.replace(h, **changes)  # type: ignore[arg-type]


def test_clean_history_passes_and_is_measured() -> None:
    r = check(clean())
    assert r.violations(BOUNDS) == [], r.table()
    assert (r.attempted, r.acknowledged, r.failed, r.refused, r.indeterminate) == (14, 10, 1, 1, 2)
    assert r.lost == [] and r.unexpected == [] and r.unfinished == [] and r.resurrected == []
    assert r.recovered == ["j6"]  # indeterminate but executed: reported, not an anomaly
    assert r.duplicated == ["j4"] and r.completed_twice == []  # within the kill's in-flight bound
    assert r.started_twice == ["j4", "j5"] and r.cancelled == 1  # j5's first run was pushed back
    assert r.epochs == [100, 101] and r.stale_accepted == [] and r.dup_slots == []
    assert r.periodic_runs == {"tick": (7, 7)} and r.missed_slots == {}
    assert [k for k, _ in r.handoffs] == ["sigterm"] and r.handoffs[0][1] == pytest.approx(0.303)
    assert r.recoveries == {"j4": pytest.approx(8.5)}
    (ov,) = r.overlaps
    assert (ov.old_epoch, ov.new_epoch) == (100, 101) and ov.seconds == pytest.approx(12.701 - 12.704)
    assert r.promote_lateness == [pytest.approx(0.004)] and max(r.periodic_lateness) == pytest.approx(0.003)
    assert r.flaps == [] and r.early_promotions == []
    assert r.lock_runs == {LOCK: (2, 2)} and r.lock_overlaps == [] and r.lock_lost == []
    assert r.hooked_delayed == 1 and r.lost_hooked == []
    assert "duplicate periodic slots" in r.table()


def _plant(kind: str) -> tuple[History, Callable[..., bool]]:
    h = clean()
    if kind == "lost":
        return with_(h, enqueues=[*h.enqueues, Enqueue("j9", "ok", 3.0, 3.1)]), lambda r: r.lost == ["j9"]
    if kind == "duplicated":
        return (with_(h, executions=[*h.executions, run("j1", 3, 3.5)]),
                lambda r: "j1" in r.duplicated and r.completed_twice == ["j1"])
    if kind == "unexpected":
        return with_(h, executions=[*h.executions, run("zz", 3, 3.5)]), lambda r: r.unexpected == ["zz"]
    if kind == "resurrected":
        return with_(h, executions=[*h.executions, run("j7", 3, 3.5)]), lambda r: r.resurrected == ["j7"]
    if kind == "unfinished":
        ex = [x for x in h.executions if x.id != "j2"] + [run("j2", 2, None, None)]
        return with_(h, executions=ex), lambda r: r.unfinished == ["j2"]
    if kind == "dup_slot":
        audit = sorted([*h.audit, rec(13.5, 101, "periodic", "tick@11")], key=lambda r: r.seq)
        return with_(h, audit=audit), lambda r: r.dup_slots == ["tick@11"] and not r.stale_accepted
    if kind == "stale_epoch":
        audit = sorted([*h.audit, rec(13.6, 100, "promote", "13:1")], key=lambda r: r.seq)
        return with_(h, audit=audit), lambda r: [x.epoch for x in r.stale_accepted] == [100]
    if kind == "stale_token":
        audit = sorted([*h.audit, rec(13.7, 101, "promote", "13:1", token="n3/101/zz")], key=lambda r: r.seq)
        return with_(h, audit=audit), lambda r: [x.token for x in r.stale_accepted] == ["n3/101/zz"]
    if kind == "overlap":
        audit = sorted([*h.audit, rec(12.9, 100, "promote", "12:1")], key=lambda r: r.seq)
        return with_(h, audit=audit), lambda r: r.overlaps[0].seconds == pytest.approx(12.9 - 12.704)
    if kind == "frozen_overlap":
        # n1 is frozen 12.0..20.0 (SIGSTOP); n2 takes over at 12.704; n1 logs its step-down at 20.1
        # (ignored: frozen) but one of its writes was accepted at 12.9: still an overlap.
        faults = [Fault("sigstop", 12.0, t_end=20.0, node="n1", frozen=True)]
        events = [e for e in h.leader_events if e.node != "n1" or e.kind == "acquired"]
        events.append(LeaderEvent("n1", "stepped_down", 20.1, 100, "deadline"))
        audit = sorted([*h.audit, rec(12.9, 100, "promote", "12:1")], key=lambda r: r.seq)
        return with_(h, faults=faults, leader_events=events, audit=audit), \
            lambda r: r.overlaps[0].seconds == pytest.approx(12.9 - 12.704)
    if kind in ("frozen_claim", "frozen_attempt"):
        # n1 is frozen 12.0..20.0 and resumed at 20.0; before its lease check (step-down logged at
        # 20.1) it answered /leader "is_leader" (claim) or sent a leader write (refused as STALE).
        faults = [Fault("sigstop", 12.0, t_end=20.0, node="n1", frozen=True)]
        events = [e for e in h.leader_events if e.node != "n1" or e.kind == "acquired"]
        act = "claimed" if kind == "frozen_claim" else "stale_rejected"
        events += [LeaderEvent("n1", act, 20.05, 100), LeaderEvent("n1", "stepped_down", 20.1, 100, "deadline")]
        return with_(h, faults=faults, leader_events=events), \
            lambda r: r.overlaps[0].seconds == pytest.approx(20.05 - 12.704)
    if kind == "refused_not_rerun":
        ex = [x for x in h.executions if x.id != "j4"]
        ex.append(dataclasses.replace(run("j4", 13.5, 20.0, node="n3"), ack_refused=True))
        return with_(h, executions=ex), lambda r: r.refused_not_rerun == ["j4"]
    if kind == "missed_slot":
        audit = [x for x in h.audit if x.detail != "tick@14"]
        return with_(h, audit=audit), lambda r: r.missed_slots == {"tick": [14.0]}
    if kind == "beyond_window":
        audit = sorted([*h.audit, rec(80.0, 101, "periodic", "tick@17")], key=lambda r: r.seq)
        return with_(h, audit=audit), lambda r: len(r.beyond_window) == 1
    if kind == "periodic_runs":
        ex = [x for x in h.executions if x.task != "tick"]
        return with_(h, executions=ex), lambda r: r.periodic_runs == {"tick": (7, 0)}
    if kind == "slow_handoff":
        audit = [x for x in h.audit if x.detail != "tick@13"]
        audit += [rec(13.4, 101, "periodic", "tick@13")]
        return with_(h, audit=sorted(audit, key=lambda r: r.seq)), \
            lambda r: r.handoffs == [("sigterm", pytest.approx(0.7))]
    if kind == "slow_failover":
        faults = [*h.faults, Fault("kill-leader", 30.0, node="n2", old_epoch=101)]
        events = [*h.leader_events, LeaderEvent("n1", "acquired", 36.8, 102)]
        audit = [*h.audit, rec(37.0, 102, "periodic", "tick@37")]
        return with_(h, faults=faults, leader_events=events, audit=sorted(audit, key=lambda r: r.seq),
                     periodic={}), lambda r: r.failovers == [("kill-leader", pytest.approx(7.0))]
    if kind == "no_recovery":
        audit = [x for x in h.audit if x.op != "recover"]
        return with_(h, audit=audit), lambda r: r.recoveries == {"j4": None}
    if kind == "late_promotion":
        audit = [x for x in h.audit if x.op != "promote"] + [rec(20.2, 101, "promote", "20:2")]
        return with_(h, audit=sorted(audit, key=lambda r: r.seq)), \
            lambda r: r.promote_lateness == [pytest.approx(0.2)]
    if kind == "early_promotion":
        audit = sorted([*h.audit, rec(20.9, 101, "promote", "21:1")], key=lambda r: r.seq)
        return with_(h, audit=audit), lambda r: len(r.early_promotions) == 1
    if kind == "lock_overlap":
        # a third copy of L1 starts while the second one runs (0.3 s on both clocks)
        return with_(h, executions=[*h.executions, locked(4.7, 4.8, node="n1")]), \
            lambda r: len(r.lock_overlaps) == 1 and r.lock_overlaps[0].endswith("+0.100s")
    if kind == "lock_overlap_killed":
        # n3 is killed at 4.3 mid-run (no end record): a copy started at 4.2 on n1 ran beside it
        ex = [x for x in h.executions if not (x.key == LOCK and x.node == "n3")]
        ex += [locked(4.0, None, None, node="n3"), locked(4.2, 4.25, node="n1")]
        faults = [*h.faults, Fault("kill-worker", 4.3, node="n3")]
        return with_(h, executions=ex, faults=faults), lambda r: len(r.lock_overlaps) == 1
    if kind == "lock_lost":
        return with_(h, enqueues=[*h.enqueues, Enqueue("L1c", "ok", 3.6, 3.601, task="locked", key=LOCK)]), \
            lambda r: r.lock_lost == [f"{LOCK}#3"] and r.lost == []
    if kind == "lost_hooked":
        enqueues = [*h.enqueues, Enqueue("h3", "ok", 3.6, 3.601, due=22.0, task="hooked")]
        return with_(h, enqueues=enqueues, dropped=[("h3", 22.001)]), \
            lambda r: r.lost_hooked == ["h3 (dropped at promotion)"] and r.lost == ["h3"]
    if kind == "refused_executed":
        return with_(h, executions=[*h.executions, run("h2", 3.6, 3.7, task="hooked")]), \
            lambda r: r.resurrected == ["h2"]
    if kind == "flap":
        events = [*h.leader_events, LeaderEvent("n1", "acquired", 100.0, 102)]
        return with_(h, leader_events=events), lambda r: r.flaps == [(102, 100.0)]
    raise AssertionError(kind)


KINDS = ["lost", "duplicated", "unexpected", "resurrected", "unfinished", "dup_slot", "stale_epoch", "stale_token",
         "overlap", "frozen_overlap", "missed_slot", "beyond_window", "periodic_runs", "slow_handoff", "slow_failover",
         "no_recovery", "late_promotion", "early_promotion", "flap", "frozen_claim", "frozen_attempt",
         "refused_not_rerun", "lock_overlap", "lock_overlap_killed", "lock_lost", "lost_hooked", "refused_executed"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_planted_anomaly_is_flagged(kind: str) -> None:
    h, found = _plant(kind)
    r = check(h)
    assert found(r), f"{kind} not found:\n{r.table()}"
    if kind == "early_promotion":
        return  # reported, not a docs/FAULTS.md invariant
    assert r.violations(BOUNDS), f"{kind} found but not a violation:\n{r.table()}"


def test_duplicates_within_the_in_flight_bound_pass_and_beyond_it_fail() -> None:
    r = check(clean())
    assert r.duplicated == ["j4"]
    assert r.violations(BOUNDS) == []
    assert any(v.startswith("duplicated") for v in r.violations(dataclasses.replace(BOUNDS, max_duplicated=0)))


def test_a_frozen_leader_overlaps_only_by_its_accepted_writes() -> None:
    h = clean()
    faults = [Fault("sigstop", 12.0, t_end=20.0, node="n1", frozen=True)]
    events = [e for e in h.leader_events if e.node != "n1" or e.kind == "acquired"]
    events.append(LeaderEvent("n1", "stepped_down", 20.1, 100, "deadline"))
    r = check(with_(h, faults=faults, leader_events=events))
    assert r.overlaps[0].seconds == pytest.approx(12.002 - 12.704)  # its last write, not the late log line
    unfrozen = check(with_(h, leader_events=events))
    assert unfrozen.overlaps[0].seconds == pytest.approx(20.1 - 12.704)


def test_a_frozen_leader_that_checks_its_lease_first_does_not_overlap() -> None:
    # F17 seed 507224: n1 was SIGSTOPped at 12.0 while leading, n2 took over at 12.704, n1 was
    # resumed at 20.0 and logged its step-down at 20.04 (its lease check), saying and doing nothing
    # as leader before it. It acted until 12.002 (its last write): no overlap.
    h = clean()
    faults = [Fault("sigstop", 12.0, t_end=20.0, node="n1", frozen=True)]
    events = [e for e in h.leader_events if e.node != "n1" or e.kind == "acquired"]
    events += [LeaderEvent("n1", "claimed", 11.5, 100), LeaderEvent("n1", "stepped_down", 20.04, 100, "deadline")]
    r = check(with_(h, faults=faults, leader_events=events))
    assert r.overlaps[0].seconds == pytest.approx(12.002 - 12.704)
    assert not r.violations(BOUNDS), r.table()
    # A step-down logged inside the window is real (a leader process stops itself while the
    # node's loop is blocked): it ends the term there.
    inside = [e for e in events if e.kind != "stepped_down"] + [LeaderEvent("n1", "stepped_down", 14.0, 100, "stall")]
    assert check(with_(h, faults=faults, leader_events=inside)).overlaps[0].seconds == pytest.approx(14.0 - 12.704)


def test_a_job_completed_twice_after_a_refused_late_ack_is_the_at_least_once_case() -> None:
    # n3 was declared dead while it ran j4 (frozen), j4 was recovered and ran again on n2; n3
    # resumed, finished its copy and its ack was refused: completed twice, reported as such.
    h = clean()
    ex = [x for x in h.executions if not (x.id == "j4" and x.node == "n3")]
    ex.append(dataclasses.replace(run("j4", 13.5, 24.0, node="n3"), ack_refused=True))
    r = check(with_(h, executions=ex))
    assert r.completed_twice == ["j4"] and r.completed_twice_refused == ["j4"] and r.refused_not_rerun == []
    assert "1 with a refused late ack" in r.table()
    assert not r.violations(BOUNDS), r.table()  # within the in-flight bound of the fault


def test_lateness_window_limits_what_is_measured() -> None:
    r = check(with_(clean(), lateness_window=(14.0, 16.0)))
    assert len(r.periodic_lateness) == 3 and r.promote_lateness == []


def test_stale_refusals_are_counted_separately() -> None:
    h = clean()
    h.leader_events.append(LeaderEvent("n1", "stale_rejected", 12.8, 100))
    r = check(h)
    assert r.stale_rejected == 1 and r.stale_accepted == [] and r.violations(BOUNDS) == []


def test_parse_audit_and_percentiles() -> None:
    entries = [("1700000000002-0", {"op": "periodic", "epoch": "7", "token": "n/7/x", "redis_time_us": "1700000000002500",
                                    "detail": "tick@1700000000"}),
               ("1700000000001-0", {"op": "promote", "epoch": "7", "token": "n/7/x", "redis_time_us": "1700000000001000",
                                    "detail": "1700000000:3"})]
    records = parse_audit(entries)
    assert [r.op for r in records] == ["promote", "periodic"]
    assert records[1].t == pytest.approx(1700000000.0025)
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile([3.0], 99) == 3.0


def test_a_lost_job_is_counted_as_hooked_only_when_delayed_with_an_enqueue_plugin() -> None:
    h = clean()
    enqueues = [*h.enqueues, Enqueue("h3", "ok", 3.6, 3.601, task="hooked"),  # immediate
                Enqueue("d3", "ok", 3.7, 3.701, due=22.0)]  # delayed, task without enqueue hooks
    r = check(with_(h, enqueues=enqueues))
    assert r.lost == ["d3", "h3"] and r.lost_hooked == []
    assert "hooked delayed lost" in r.table()


def test_job_lock_runs_are_judged_on_monotonic_stamps() -> None:
    # The third copy's process had its wall clock stepped back 1 s: by wall time it overlaps the
    # second copy, by the monotonic clock (what the lock's holders really did) it ran after it.
    h = clean()
    later = locked(4.1, 4.2, node="n1", mono=MONO - 1.0)  # monotonic 5.1 .. 5.2, after 3.52 .. 4.0
    r = check(with_(h, executions=[*h.executions, later]))
    assert r.lock_overlaps == [] and r.lock_runs == {LOCK: (2, 3)}, r.table()


def test_job_lock_overlap_after_a_refused_ack_is_the_at_least_once_case() -> None:
    # n3 was frozen and declared dead while it held L1: recovery freed its lock and re-queued the
    # copy, which ran on n2 while n3, resumed, finished its own run (its ack refused).
    h = clean()
    ex = [x for x in h.executions if x.key != LOCK]
    ex += [locked(4.0, 20.0, node="n3", ack_refused=True), locked(14.0, 14.5), locked(14.6, 15.0)]
    r = check(with_(h, executions=ex))
    assert r.lock_overlaps == [] and len(r.lock_overlaps_refused) == 2, r.table()
    # one stale copy overlapping two later copies (which took the lock one after the other) is one
    # duplicate, the at-least-once case: within the 1 in flight, over a bound of 0
    assert r.lock_refused_runs == {ex[-3].execution_id}, r.table()
    assert not [v for v in r.violations(BOUNDS) if "JobLock" in v]
    assert any("after a refused ack" in v for v in r.violations(dataclasses.replace(BOUNDS, max_duplicated=0)))


def test_a_killed_run_without_its_fault_is_not_judged() -> None:
    # No fault says when n9's process died: how long it held L1 is unknown, nothing is asserted.
    h = clean()
    ex = [x for x in h.executions if not (x.key == LOCK and x.node == "n3")]
    ex += [locked(4.0, None, None, node="n9"), locked(4.2, 4.25, node="n1")]
    r = check(with_(h, executions=ex))
    assert r.lock_overlaps == [] and r.lock_lost == [], r.table()


def test_a_job_that_ended_while_the_signal_landed_needs_no_recovery() -> None:
    """CI (F17, seed 507224): a job ended 2.5 ms after the SIGSTOP was sent, before the process
    stopped, and was acked; recovery found nothing in flight on the frozen node. Such a job is not
    counted as waiting for recovery; one that ends only after the node runs again still is."""
    from tests.faults.checker import Execution, Fault, History, check

    def history(end: float) -> History:
        run = Execution(id="j1", task="job", execution_id="e1", node="n1", pid=1, start=99.8, end=end, outcome="ok")
        fault = Fault(kind="sigstop-leader", t=100.0, t_end=115.0, node="n1", inflight=(("j1", "n1"),), frozen=True)
        return History(executions=[run], faults=[fault])

    assert "j1" not in check(history(100.0025)).recoveries
    assert check(history(115.2)).recoveries == {"j1": None}  # frozen mid-job and never recovered
