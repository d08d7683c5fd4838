"""docs/FAULTS.md §4 cells under load, in CI (one round each): F10 (latency on every node's link to
Redis) and F13b (CPU-bound sync jobs on every worker thread).

Same topology and timing as `test_matrix.py` (own redis-server, three audited `corral node`s,
docs/FAULTS.md §1 defaults: lease 5 s, renew 1 s, renew timeout 0.5 s, margin 1.5 s). Neither fault
should move leadership: both cells assert 0 leadership changes and bound the scheduler's
lateness (`redis_time - due second` of each delayed bucket's first promotion and
`redis_time - slot` of each periodic claim) on top of the checker's invariants.

Times are this host's wall clock: node log `ts`, audit `redis_time_us` and `time.time()` here.
"""

from __future__ import annotations

import math
import os
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.faults.checker import Bounds, Fault, LeaderEvent, Report, check, percentile
from tests.faults.harness import Cell, CellConfig, whole_seconds_ahead
from tests.faults.test_matrix import MakeCell, figures, make_cell  # noqa: F401 (the fixture, for pytest)
from tests.support import wait_until
from tests.support.nodes import NodeProcess


def _changes(cell: Cell, epoch: int) -> list[LeaderEvent]:
    """Leadership changes after the term `epoch` began: any step-down, any other acquire."""
    return [e for e in cell.leader_events() if e.kind in ("acquired", "stepped_down", "released")
            and not (e.kind == "acquired" and e.epoch == epoch)]


def _ms(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds (for `figures`)."""
    return {"p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000,
            "max_ms": max(values) * 1000}


def _lateness(cell: Cell, lo: float, hi: float) -> Report:
    """The checker's lateness over delayed seconds and periodic slots due in [lo, hi]."""
    return check(cell.history(lateness_window=(lo, hi)))


# ---- F10: every node's link to Redis delayed 75 +- 50 ms each way for 30 s ------------------------

MEAN = 0.075
JITTER = 0.050
LATENCY_WINDOW = 30.0


def _round_trips(port: int, n: int = 10) -> list[float]:
    """PING round trips through one node's proxy (proves the delay is in force, and its size)."""
    out = []
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=1.0,
                     retry=Retry(NoBackoff(), 0)) as c:
        c.ping()
        for _ in range(n):
            t = time.monotonic()
            c.ping()
            out.append(time.monotonic() - t)
    return out


def test_f10_latency_on_every_link(make_cell: MakeCell) -> None:  # noqa: F811
    """Every node reaches Redis through its own proxy; all proxies delay each direction by
    75 +- 50 ms (round trip +150 +- 100 ms, below the 0.5 s renew timeout) for 30 s while a
    producer (direct to Redis) enqueues immediate and delayed jobs and the 1 s `tick` runs.
    Pass: 0 leadership changes, overlap <= 0, the checker's invariants, lateness p99 <= 400 ms
    for what fell due during the fault and <= 25 ms (plus the host's own wake-up lag, measured beside
    the cell: tests/faults/hostlag.py) for a quiet 9 s window after it."""
    cell = make_cell("F10", CellConfig(proxied=True, concurrency=2))
    leader = cell.leader()
    epoch = cell.epoch(leader)
    proxies = [cell.cluster.proxy(n) for n in cell.cluster.nodes]
    errors_before = leader.metric("corral_redis_errors_total", {"where": "election"}) or 0.0
    producer = cell.producer(rate=20.0, seed=10, duration=lambda r: r.uniform(0.0, 0.05),
                             delay=lambda r: r.uniform(1.0, 4.0) if r.random() < 0.5 else None)
    producer.start()
    time.sleep(1.0)
    t_on = time.time()
    dialled = [p.connections_total for p in proxies]
    for p in proxies:
        p.delay(MEAN, JITTER)
    rtt = _round_trips(proxies[0].port)
    time.sleep(max(0.0, t_on + LATENCY_WINDOW - time.time()))
    for p in proxies:
        p.pass_through()
    t_off = time.time()
    dialled = [p.connections_total - n for p, n in zip(proxies, dialled, strict=True)]
    producer.stop()
    errors_during = (leader.metric("corral_redis_errors_total", {"where": "election"}) or 0.0) - errors_before
    # A quiet window after the fault: 2 delayed jobs due at each of 9 whole seconds.
    due = whole_seconds_ahead(9, lead=1.5)
    cell.enqueue([("job", {"id": f"F10-after-{int(d)}-{k}", "s": 0}) for d in due for k in range(2)],
                 at=[d for d in due for _ in range(2)])
    time.sleep(max(0.0, due[-1] + 1.0 - time.time()))  # the timed window after the fault
    cell.fault(Fault("latency", t_on, t_end=t_off))
    during = (math.ceil(t_on), t_off - 0.3)  # due while every link was delayed
    report = cell.finish(Bounds(), lateness_window=during)
    after = _lateness(cell, due[0], due[-1])
    changes = _changes(cell, epoch)
    lat_during, lat_after = report.lateness, after.lateness
    figures("F10", leader=leader.node_id, rtt_p50_ms=percentile(rtt, 50) * 1000, rtt_max_ms=max(rtt) * 1000,
            renew_errors_during=int(errors_during), leadership_changes=len(changes),
            connections_opened_during=" ".join(f"{n.node_id}:{k}" for n, k in zip(cell.cluster.nodes, dialled,
                                                                                     strict=True)),
            promotions_during=len(report.promote_lateness), slots_during=len(report.periodic_lateness),
            acknowledged=report.acknowledged)
    figures("F10 lateness during", **_ms(lat_during))
    figures("F10 lateness after", n=len(lat_after), **_ms(lat_after))
    assert MEAN * 2 - 2 * JITTER <= percentile(rtt, 50) <= MEAN * 2 + 2 * JITTER + 0.05, f"proxy delay not in force: {rtt}"
    assert not changes, f"leadership changed under latency: {changes}"
    assert all(r.epoch == epoch for r in cell.audit()), "a leader write of another epoch"
    assert len(report.promote_lateness) >= LATENCY_WINDOW - 4, "too few delayed seconds fell due during the fault"
    assert percentile(lat_during, 99) <= 0.4, f"lateness p99 during the fault {percentile(lat_during, 99) * 1000:.0f} ms"
    assert len(after.promote_lateness) == len(due)
    load = os.getloadavg()[0]
    host_p99 = cell.lateness_allowance((due[0], due[-1] + 1.0))  # what a loaded host added (tests/faults/hostlag.py)
    assert percentile(lat_after, 99) <= 0.025 + host_p99, (
        f"lateness p99 after the fault {percentile(lat_after, 99) * 1000:.1f} ms (the host woke processes up to "
        f"{host_p99 * 1000:.1f} ms late at p99; 1-min load average {load:.1f} on {os.cpu_count()} CPUs)")


# ---- F13b: every worker thread of every node spins a pure-Python CPU loop -------------------------

SPIN_WINDOW = 30.0  # docs/FAULTS.md F13b says 60 s; 30 s keeps the CI cell short


def _redis_stalls(cell: Cell) -> float:
    """The longest event Redis' latency monitor recorded (ms; fsync, slow commands): tells a slow
    Redis from a starved node when lateness is high."""
    with cell.client() as c:
        events = c.execute_command("LATENCY", "LATEST")
        print("\nRedis LATENCY LATEST (event, latest ms, max ms):", [(e[0], int(e[2]), int(e[3])) for e in events])
        return float(max((int(e[3]) for e in events), default=0))


def _where_late(leader: NodeProcess, window: tuple[float, float], p: float = 99) -> dict[str, object]:
    """Where the leader's late occurrences in `window` lost their time, from its own log lines:
    `woke_ms` / `sent_ms` (the loop woke or the call left that long after the due time: the host's
    share) against `lateness_ms` (Redis' TIME when the script ran). The rest is the round trip,
    including Redis waiting for a CPU; `early` counts claims refused as EARLY and waited out."""
    rows = [(float(r["lateness_ms"]), float(r.get("woke_ms", r.get("sent_ms", 0.0))), int(r.get("early", 0)))
            for r in leader.log_records() if r.get("event") in ("periodic_enqueued", "promoted")
            and window[0] <= float(r.get("slot", r["ts"])) <= window[1]]
    if not rows:
        return {"occurrences": 0}
    cut = percentile([r[0] for r in rows], p)
    tail = [r for r in rows if r[0] >= cut]
    return {"occurrences": len(rows), "tail_from_ms": cut, "tail": len(tail),
            "tail_woke_late_ms": sum(r[1] for r in tail) / len(tail),
            "tail_round_trip_ms": sum(r[0] - r[1] for r in tail) / len(tail),
            "early_refusals": sum(r[2] for r in rows)}


def test_f13b_cpu_bound_sync_jobs(make_cell: MakeCell) -> None:  # noqa: F811
    """All worker threads of every node (`--threads 2`, 2 slots) run sync `def` tasks that spin
    pure-Python loops (the GIL is contended by bytecode, not released in C), for 30 s instead of
    docs/FAULTS.md's 60 s to keep CI short; delayed jobs fall due at every second of it, the 1 s `tick`
    and the 0.1 s `beat` (claimed, never run: 10 slots a second to measure) run. Pass: 0
    leadership changes, promotion + periodic lateness p99 <= 100 ms, the checker's invariants.

    History: with the leader on the node's loop, the spinning threads starved it of the GIL
    (p99 140-480 ms). Now the leader is a process of its own (35ca510), in a session of its own
    (no shared autogroup CPU share with the spinners) and task threads run at nice 10: p99
    37-55 ms over 3 runs on the 2-CPU host, 3 nodes' spinners demanding 3 CPUs."""
    # No AOF: nothing is killed here, and an fsync per write on this VM's disk stalls Redis 100-270 ms
    # at times under this load (LATENCY: aof-fsync-always), which would be measured as lateness.
    redis_options = {"appendonly": False, "latency_monitor_threshold": 20}
    cell = make_cell("F13b", CellConfig(spin=True, beat=True, concurrency=2, audit_interval=1.0,
                                        redis_options=redis_options))
    leader = cell.leader()
    epoch = cell.epoch(leader)
    time.sleep(2.0)  # past the leader's first slot (claimed late by design when a term starts)
    t_on = time.time()
    until = t_on + SPIN_WINDOW
    threads = len(cell.cluster.nodes) * 2
    # More 1 s spins than the threads can run in the window; those fetched after `until` return at once.
    cell.enqueue([("spin", {"id": f"F13b-spin-{i}", "s": 1.0, "until": until})
                  for i in range(int(threads * SPIN_WINDOW * 1.3))])
    due = [d for d in whole_seconds_ahead(int(SPIN_WINDOW), lead=1.0) if d <= until - 0.5]
    cell.enqueue([("job", {"id": f"F13b-{int(d)}-{k}", "s": 0}) for d in due for k in range(3)],
                 at=[d for d in due for _ in range(3)])
    time.sleep(max(0.0, until - time.time()))  # the timed fault window
    wait_until(lambda: not [x for x in cell.executions() if x.task == "spin" and x.end is None], 5.0, 0.1,
               message="every spin to end after the window")
    cell.fault(Fault("cpu-bound-sync", t_on, t_end=until))
    report = cell.finish(Bounds(), lateness_window=(due[0], due[-1]))
    spins = [x for x in cell.executions() if x.task == "spin" and x.end is not None and x.start < until]
    busy = {n.reported_id: sum(min(x.end or x.start, until) - max(x.start, t_on) for x in spins
                               if x.node == n.reported_id) / (2 * (until - t_on)) for n in cell.cluster.nodes}
    changes = _changes(cell, epoch)
    lat = report.lateness
    load = os.getloadavg()[0]
    figures("F13b", leader=leader.node_id, window_s=until - t_on, spins=len(spins), leadership_changes=len(changes),
            threads_busy=" ".join(f"{k}:{v:.2f}" for k, v in sorted(busy.items())),
            promotions=len(report.promote_lateness), slots=len(report.periodic_lateness),
            redis_longest_stall_ms=_redis_stalls(cell), load_average_1min=load)
    figures("F13b promotion lateness", **_ms(report.promote_lateness))
    figures("F13b periodic lateness", **_ms(report.periodic_lateness))
    figures("F13b lateness", **_ms(lat))
    host_p99 = cell.lateness_allowance((t_on, until))
    figures("F13b host lag (tests/faults/hostlag.py)", p99_ms=host_p99 * 1000,
            max_ms=cell.hostlag.worst((t_on, until)) * 1000 if cell.hostlag else 0.0)
    figures("F13b where the p99 tail lost its time (leader log)", **_where_late(leader, (t_on, until)))
    assert all(v >= 0.9 for v in busy.values()), f"worker threads not kept busy by the spins: {busy}"
    assert not changes, f"leadership changed under CPU-bound sync jobs: {changes}"
    assert all(r.epoch == epoch for r in cell.audit()), "a leader write of another epoch"
    assert len(report.promote_lateness) == len(due)
    # the FAULTS bound plus what the host itself added to any process's wake-ups meanwhile (another
    # session's load; tests/faults/hostlag.py), as F10/F16/F18: a quiet host asserts 100 ms as written
    assert percentile(lat, 99) <= 0.1 + host_p99, (
        f"lateness p99 {percentile(lat, 99) * 1000:.1f} ms > 100 ms + host lag {host_p99 * 1000:.1f} ms (max "
        f"{max(lat) * 1000:.0f} ms; 1-min load average {load:.1f} on {os.cpu_count()} CPUs)")
