"""docs/FAULTS.md F14 with real `corral node` processes: the ZooKeeper leader partitioned from ZooKeeper.

Topology (`tests/faults/harness.py`, `CellConfig(election="zookeeper")`): the cell's own Redis
(AOF, `appendfsync always`) reached directly, its own standalone ZooKeeper, and three audited
`corral node --election zookeeper --zookeeper-session-timeout 6` processes, each reaching
ZooKeeper through its own `TcpProxy`. A `LockWatch` (a kazoo client of the harness, straight to
ZooKeeper) records when each lock node under `/corral/cell/leader` appears and disappears, and
whose it is (the lock node's data is the contender's node id): the old leader's lock node
disappearing is the server expiring its session.

The fault: the leader's ZooKeeper proxy goes to `blackhole` (sockets open, nothing forwarded).
kazoo pings every ~⅓ of the session timeout and drops the connection when a ping goes
unanswered (SUSPENDED after at most ⅔ of it, ~4 s); the server expires the session only after a
full session timeout without hearing from the client (6 s, rounded up to its 1 s tick). Pass:

- the leader steps down at SUSPENDED (reason "ZooKeeper connection suspended"), ≤ ⅔ session
  timeout + 0.5 s after the fault, and before the server expires its session;
- overlap ≤ 0: its step-down (and its last accepted write) ≤ the successor's `acquired`;
- the successor's first fenced write ≤ session timeout + 2 s after the fault;
- after the heal the old node sees LOST, contends again with a new lock node, and does not
  lead without re-acquiring (no write of its old epoch is accepted, it reports a follower);
- the checker's invariants: 0 lost, 0 duplicated, 0 unexpected, 0 accepted stale writes,
  0 duplicate periodic slots, no flaps.

A missing ZooKeeper (java or the jar) skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.recipe.watchers import ChildrenWatch

from tests.faults.checker import Bounds, Fault
from tests.faults.harness import NAMESPACE, Cell, CellConfig, redis_binary, zookeeper_java
from tests.support import missing, wait_until
from tests.support.servers import ZOOKEEPER_JAR

SESSION = 6.0  # docs/FAULTS.md F14: session timeout 6 s in tests
SUSPENDED_AFTER = SESSION * 2 / 3  # kazoo: an unanswered ping drops the connection after <= 2/3 of it
SUCCESSOR = SESSION + 2.0  # docs/FAULTS.md F14: successor's first fenced write <= session timeout + 2 s
LOCK_PATH = f"/corral/{NAMESPACE}/leader"


@dataclass
class LockNode:
    name: str
    owner: str  # the contender's node id (the lock node's data)
    created: float  # wall time the watch saw it
    deleted: float | None = None


class LockWatch:
    """Every lock node under `path` with its owner and when it came and went (wall time)."""

    def __init__(self, hosts: str, path: str) -> None:
        self.path = path
        self.zk = KazooClient(hosts=hosts, timeout=10.0)
        self.nodes: dict[str, LockNode] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> LockWatch:
        self.zk.start(timeout=10.0)
        self.zk.ensure_path(self.path)
        ChildrenWatch(self.zk, self.path, self._changed)
        return self

    def close(self) -> None:
        self._closed = True
        try:
            self.zk.stop()
        finally:
            self.zk.close()

    def _changed(self, children: list[str]) -> bool:
        now = time.time()
        present = set(children)
        with self._lock:
            for name, node in self.nodes.items():
                if name not in present and node.deleted is None:
                    node.deleted = now
        for name in present - set(self.nodes):
            try:
                data, _ = self.zk.get(f"{self.path}/{name}")
            except (NoNodeError, KazooException):
                data = b"?"
            with self._lock:
                self.nodes.setdefault(name, LockNode(name, data.decode(errors="replace"), now))
        return not self._closed  # False ends the watch

    def of(self, owner: str) -> list[LockNode]:
        with self._lock:
            return sorted((n for n in self.nodes.values() if n.owner == owner), key=lambda n: n.name[-10:])


@pytest.fixture
def zk_cell(tmp_path: Path) -> Iterator[Cell]:
    if redis_binary() is None:
        missing("redis-server is not installed")
    if zookeeper_java() is None:
        missing(f"ZooKeeper is not installed (need java and {ZOOKEEPER_JAR})")
    cfg = CellConfig(election="zookeeper", zookeeper_session_timeout=SESSION, zookeeper_proxied=True, pulse=True,
                     concurrency=2)
    cell = Cell("F14", tmp_path / "F14", cfg)
    try:
        yield cell.start()
    finally:
        cell.close()


def test_f14_partitioned_zookeeper_leader_stops_at_suspended(zk_cell: Cell) -> None:
    cell = zk_cell
    assert cell.zookeeper is not None
    watch = LockWatch(cell.zookeeper.hosts, LOCK_PATH).start()
    try:
        cell.producer(rate=20.0, seed=14, duration=lambda r: r.uniform(0.0, 0.1)).start()
        time.sleep(2.0)  # under load when the fault comes
        leader = cell.leader()
        old_id = leader.reported_id
        old_epoch = cell.epoch(leader)
        held = wait_until(lambda: [n for n in watch.of(old_id) if n.deleted is None], 3.0, 0.02,
                          message="the leader's lock node in the watch")
        assert len(held) == 1, f"the leader has {len(held)} lock nodes: {held}"
        old_node = held[0]
        proxy = cell.zk_proxy(leader)

        t_fault = time.time()
        proxy.blackhole()
        try:
            first = cell.first_record(old_epoch, SUCCESSOR + 1.0, after=t_fault)
            successor = cell.leader(3.0, exclude=[leader])
            expired = wait_until(lambda: old_node.deleted, SESSION + 3.0, 0.02,
                                 message="the server to expire the partitioned leader's session (its lock node gone)")
            down = wait_until(lambda: [e for e in cell.leader_events()
                                       if e.kind == "stepped_down" and e.epoch == old_epoch], 2.0, 0.02,
                              message="the partitioned leader's step-down")[0]
            # Partitioned a little past the successor's first write, then healed.
            time.sleep(max(0.0, first.t + 1.0 - time.time()))
        finally:
            t_heal = time.time()
            proxy.pass_through()

        def recontends() -> list[LockNode]:
            return [n for n in watch.of(old_id) if n.created >= t_heal and n.deleted is None]

        new_node = wait_until(recontends, 15.0, 0.05, message="the healed node to contend with a new lock node")[0]
        recontended = new_node.created - t_heal
        lost = wait_until(lambda: [r for r in leader.log_records() if r.get("event") == "zk_lost"
                                   and float(r["ts"]) >= t_heal], 5.0, 0.05,
                          message="the healed node to see its session LOST")
        suspended = [r for r in leader.log_records() if r.get("event") == "zk_suspended"
                     and float(r["ts"]) >= t_fault]
        wait_until(lambda: leader.leader()["leader"] == successor.reported_id, 5.0, 0.05,
                   message="the healed node to follow the successor")
        time.sleep(2.0)  # anything it still sends reaches Redis; then look
        audit = cell.audit()
        late_old = [r for r in audit if r.epoch == old_epoch and r.seq > first.seq]
        reacquired = [e for e in cell.leader_events() if e.node == old_id and e.kind == "acquired" and e.t >= t_fault]
        still_leads = leader.is_leader()
        acquired = next(e for e in cell.leader_events() if e.kind == "acquired" and e.epoch == first.epoch)
        cell.fault(Fault("zk-blackhole", t_fault, t_end=t_heal, node=old_id, old_epoch=old_epoch))
        report = cell.finish(Bounds(failover=SUCCESSOR))
    finally:
        watch.close()

    stopped = down.t - t_fault
    print(f"\nF14: stepped_down_after_fault_s={stopped:.3f}, reason={down.reason!r}, "
          f"session_expired_after_fault_s={expired - t_fault:.3f}, stop_before_expiry_s={expired - down.t:.3f}, "
          f"successor_acquired_after_fault_s={acquired.t - t_fault:.3f}, "
          f"successor_first_write_after_fault_s={first.t - t_fault:.3f}, overlap_s={down.t - acquired.t:+.3f}, "
          f"partitioned_s={t_heal - t_fault:.3f}, new_lock_node_after_heal_s={recontended:.3f}, "
          f"old_epoch={old_epoch}, new_epoch={first.epoch}, lock_nodes {old_node.name} -> {new_node.name}, "
          f"acknowledged={report.acknowledged}, stale_rejected={report.stale_rejected}")
    assert down.reason == "ZooKeeper connection suspended", f"stepped down for another reason: {down.reason!r}"
    assert suspended, "no zk_suspended event in the partitioned node's log"
    assert stopped <= SUSPENDED_AFTER + 0.5, f"stepped down {stopped:.2f}s after the partition (SUSPENDED by ~4 s)"
    assert down.t < expired, f"stepped down {down.t - expired:.2f}s after the server expired the session"
    assert down.t <= acquired.t, f"overlap: stepped down {down.t - acquired.t:+.3f}s after the successor acquired"
    assert first.t - t_fault <= SUCCESSOR, f"successor's first fenced write {first.t - t_fault:.2f}s after the fault"
    assert first.epoch > old_epoch and successor.reported_id != old_id
    assert new_node.name != old_node.name and new_node.owner == old_id
    assert lost, "no zk_lost after the heal"
    assert not late_old, f"writes of the partitioned leader's epoch accepted after its successor's: {late_old[:3]}"
    assert not reacquired, f"the healed node led again: {reacquired}"
    assert not still_leads, "the healed node reports is_leader true"
    assert report.epochs[-1] == first.epoch, f"epochs {report.epochs}"
