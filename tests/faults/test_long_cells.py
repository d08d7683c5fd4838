"""docs/FAULTS.md §4 long cells F8b and F9b (not in CI: `make long-faults`, or `CORRAL_LONG=1 pytest -m long`).

- **F9b, clock jump on the Redis host**: redis-server runs with a preloaded clock shim whose
  wall-clock offset the cell changes at run time; its wall clock jumps +1 h while three audited
  nodes run the frequency=1 `tick` task and a producer enqueues. Pass: <= 1 leadership change,
  0 accepted stale writes, 0 duplicate periodic slots, 0 lost acknowledged jobs; spurious
  recoveries (live nodes declared dead) are counted and reported.

  Why a shim and not libfaketime: libfaketime 0.9.10 (Debian 12's `faketime`) aborts Debian's
  redis-server at start ("Cannot recover from unexpected recursive calls to clock_gettime()":
  the dynamically linked jemalloc reads the clock while libfaketime initialises), with
  `FAKETIME`, `FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE`, `FAKETIME_DONT_FAKE_MONOTONIC` and
  the MT build alike. The cell first probes libfaketime (a redis-server under it must answer
  PING) and uses it when it works; otherwise it compiles `_SHIM_SOURCE` (30 lines of C: it
  offsets CLOCK_REALTIME(_COARSE), gettimeofday and time by the microseconds written in a
  mmapped file, through the raw syscall so nothing recurses, and leaves CLOCK_MONOTONIC alone,
  as `FAKETIME_DONT_FAKE_MONOTONIC=1` would). Either way only redis-server's clock moves: the
  nodes, the producer and the harness keep the host clock.
  The same cell also jumps the clock -1 h (`backward`, not in FAULTS), with the same criteria.

- **F8b, Sentinel with an isolated old primary**: 1 primary + 2 replicas + 3 sentinels (down-after
  5 s), `min-replicas-to-write 1`, `min-replicas-max-lag 5` on every data server; the primary and
  the leader node are cut from the rest (`SentinelCell`) while a producer on the primary's side
  keeps enqueueing; healed after 25 s. How it differs from docs/FAULTS.md's full topology: one proxy
  carries every majority-side connection to the primary (replication, sentinels, n2 and n3), so
  the cut is one blackhole, not per-link proxies; the leader node n1 reaches the primary by a
  plain URL through its own proxy instead of through Sentinel (Sentinel would hand it the
  majority's proxy address), so after the heal it stays on the demoted old primary (READONLY)
  and the new leader declares it dead; the producer writes to the primary directly, not through
  Sentinel (a batch through Sentinel after the failover checks the majority side takes writes).
  docs/FAULTS.md's "writes stop <= 5 s" is not reachable with `min-replicas-max-lag 5` (see the test);
  the cell asserts <= 7 s and prints whether 5 s held.

Times: the harness compares node log stamps, its own `time.time()` and the audit records'
`redis_time_us`, which docs/FAULTS.md §2 takes to be one clock. After the jump Redis' clock is the host's
+ `shift`, so `JumpedCell.audit` takes the shift off the records written after the jump (a
record more than shift/2 off the host clock, in the shift's direction) before the checker sees them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cluster.client import Client
from cluster.redis_settings import RedisSettings
from tests.faults.checker import AuditRecord, Bounds, Enqueue, Fault
from tests.faults.harness import NAMESPACE, AuditCollector, Cell, CellConfig, classify, redis_binary, task_source
from tests.support import free_port, missing, wait_until
from tests.support.nodes import NodeCluster, NodeProcess
from tests.support.proxy import TcpProxy
from tests.support.servers import RedisServer, find_binary

pytestmark = pytest.mark.long

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

_SHIM_SOURCE = r"""
/* A wall-clock offset for one process (LD_PRELOAD): CLOCK_REALTIME(_COARSE), gettimeofday and
 * time are moved by the signed microseconds written (ASCII) at the start of the file named by
 * CORRAL_CLOCK_OFFSET_FILE, read through a shared mapping on every call, so a write to the file
 * takes effect at once. CLOCK_MONOTONIC is untouched. The real clock is read by syscall: no
 * dlsym, no malloc, nothing for an allocator's clock reads to recurse into. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const volatile char *offset_text;

__attribute__((constructor)) static void shim_init(void) {
  const char *path = getenv("CORRAL_CLOCK_OFFSET_FILE");
  if (!path) return;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return;
  void *p = mmap(NULL, 64, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p != MAP_FAILED) offset_text = p;
}

static long long offset_us(void) {
  char buf[32];
  if (!offset_text) return 0;
  for (int i = 0; i < 31; i++) buf[i] = offset_text[i];
  buf[31] = 0;
  return strtoll(buf, NULL, 10);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
  int rc = (int)syscall(SYS_clock_gettime, id, ts);
  if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_us() * 1000LL;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
  }
  return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
  struct timespec ts;
  (void)tz;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
  if (tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
  return 0;
}

time_t time(time_t *out) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (out) *out = ts.tv_sec;
  return ts.tv_sec;
}
"""


def figures(name: str, **values: object) -> None:
    print(f"\n{name}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in values.items()))


# ---- a settable wall clock for redis-server ------------------------------------------------------


class RedisClock:
    """The wall-clock offset of a redis-server started with `env`: libfaketime when it runs
    Debian's redis-server here, else the compiled shim (see the module docstring)."""

    def __init__(self, workdir: Path, binary: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.path = workdir / "redis-clock-offset"
        self.backend = "libfaketime" if self._libfaketime_works(binary) else "shim"
        self.offset = 0.0
        self.set(0.0)
        if self.backend == "shim":
            self.library = self._build_shim()
            self.env = {"LD_PRELOAD": str(self.library), "CORRAL_CLOCK_OFFSET_FILE": str(self.path)}
        else:
            self.library = Path(LIBFAKETIME)
            self.env = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(self.path),
                        "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def set(self, seconds: float) -> None:
        """Move the wall clock to host + `seconds`; in effect for the next clock read."""
        self.offset = seconds
        if getattr(self, "backend", "shim") == "libfaketime":
            self.path.write_text(f"{seconds:+.0f}\n")
            return
        # One pwrite of a fixed-width record into the mapped page: the reader never sees a
        # shorter number with stale digits behind it.
        text = f"{round(seconds * 1e6):<63d}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, text, 0)
        finally:
            os.close(fd)

    def _libfaketime_works(self, binary: str) -> bool:
        if not os.path.exists(LIBFAKETIME):
            return False
        probe = self.workdir / "faketime-probe"
        probe.write_text("+0\n")
        port = free_port()
        env = {**os.environ, "LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(probe),
               "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "no"],
                                env=env, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            def answers() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError("exited")
                with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1) as c:
                    return bool(c.ping())

            try:
                wait_until(answers, 3.0, 0.1, ignore=(redis.RedisError, OSError))
                return True
            except (AssertionError, RuntimeError):
                return False
        finally:
            proc.kill()
            proc.wait(5)

    def _build_shim(self) -> Path:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            missing("a C compiler (cc) to build the Redis clock shim (libfaketime does not run redis-server here)")
        src = self.workdir / "clock_shim.c"
        lib = self.workdir / "clock_shim.so"
        src.write_text(_SHIM_SOURCE)
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60,
                       capture_output=True)
        return lib


class JumpedCell(Cell):
    """A cell whose Redis wall clock may run `shift` seconds ahead of the host: audit records
    stamped on the shifted clock are moved back onto the host's (see the module docstring)."""

    shift = 0.0

    def audit(self) -> list[AuditRecord]:
        records = super().audit()
        if not self.shift:
            return records
        edge = time.time() + self.shift / 2  # past it (in the shift's direction): stamped on the shifted clock
        return [dataclasses.replace(r, t=r.t - self.shift) if (r.t - edge) * self.shift > 0 else r for r in records]


@pytest.fixture
def cells() -> Iterator[list[Cell]]:
    if redis_binary() is None:
        missing("redis-server is not installed")
    made: list[Cell] = []
    yield made
    for cell in made:
        cell.close()


def _redis_time(cell: Cell) -> float:
    with cell.client() as c:
        sec, usec = c.time()
    return int(sec) + int(usec) / 1e6


# ---- F9b: the Redis host's wall clock jumps +1 h ------------------------------------------------


@pytest.mark.parametrize("shift", [3600.0, -3600.0], ids=["forward", "backward"])
def test_f9b_clock_jump_on_the_redis_host(cells: list[Cell], tmp_path: Path, shift: float) -> None:
    """docs/FAULTS.md F9b is the forward jump; the backward one (same criteria) is run alongside."""
    binary = redis_binary()
    assert binary is not None
    clock = RedisClock(tmp_path / "clock", binary)
    cfg = CellConfig(concurrency=2, tick_frequency=1.0, redis_env=clock.env)
    name = "F9b-forward" if shift > 0 else "F9b-backward"
    cell = JumpedCell(name, tmp_path / name, cfg)
    cells.append(cell)
    cell.start()
    skew_before = _redis_time(cell) - time.time()
    producer = cell.producer(rate=20.0, seed=92, duration=lambda r: r.uniform(0.0, 0.5)).start()
    time.sleep(6.0)
    leader = cell.leader()
    epoch = cell.epoch(leader)
    inflight = cell.inflight()
    t_jump = time.time()
    clock.set(shift)
    cell.shift = shift
    skew_after = _redis_time(cell) - time.time()
    cell.fault(Fault("redis-clock-jump", t_jump, t_end=t_jump, old_epoch=epoch))
    # Past dead_after + lease: a live node declared dead on the jumped clock would show by now.
    time.sleep(cfg.dead_after + cfg.lease + 2.0)
    after_leader = cell.leader(10.0)
    producer.stop()
    cap = cfg.nodes * cfg.concurrency  # jobs that can be in flight at once: the duplicate bound
    report = cell.finish(Bounds(max_duplicated=cap, max_overlap=math.inf), check_bounds=False)

    audit = cell.audit()
    events = cell.leader_events()
    changes = [e for e in events if e.kind == "acquired" and e.t >= t_jump]
    recoveries = [r for r in audit if r.op == "recover" and r.t >= t_jump]
    recovered_jobs = sum(int(r.detail.rsplit(":", 2)[1]) for r in recoveries)
    re_registered = [(n.node_id, r["ts"]) for n in cell.cluster.nodes for r in n.log_records()
                     if r.get("event") == "re_registered" and float(r["ts"]) >= t_jump]
    old_writes = [r.t for r in audit if r.epoch == epoch]
    new_first = next((r for r in audit if r.epoch > epoch), None)
    stepped = [e.t for e in events if e.kind == "stepped_down" and e.epoch == epoch]
    figures(name, backend=clock.backend, shift_s=shift, redis_skew_before_s=skew_before,
            redis_skew_after_s=skew_after, leadership_changes=len(changes),
            new_leader_acquired_after_jump_s=(changes[0].t - t_jump) if changes else None,
            old_leader_stepped_down_after_jump_s=(stepped[0] - t_jump) if stepped else None,
            old_epoch_last_write_after_jump_s=max(old_writes) - t_jump if old_writes else None,
            new_epoch_first_write_after_jump_s=(new_first.t - t_jump) if new_first else None,
            spurious_recoveries=len(recoveries), jobs_recovered=recovered_jobs,
            nodes_re_registered=len(re_registered), inflight_at_jump=sum(map(len, inflight.values())),
            stale_rejected=report.stale_rejected, acknowledged=report.acknowledged, lost=len(report.lost),
            duplicated=len(report.duplicated), dup_slots=len(report.dup_slots),
            overlap=report.worst_overlap, leader_after=after_leader.node_id, problems=cell.problems)
    assert abs(skew_before) < 1.0 and abs(skew_after - shift) < 1.0, (skew_before, skew_after)
    assert len(changes) <= 1, f"{len(changes)} leadership changes after the Redis clock jump: {changes}"
    assert not report.stale_accepted, report.stale_accepted
    assert not report.dup_slots, report.dup_slots
    assert not report.lost, report.lost
    assert not cell.problems, cell.describe(cell.problems)


# ---- F8b: Sentinel, the old primary isolated together with the leader node ------------------------

MASTER = "mymaster"


class SentinelServer(RedisServer):
    """`redis-server <conf> --sentinel` monitoring `MASTER` at 127.0.0.1:`master_port`."""

    def __init__(self, workdir: Path, master_port: int, binary: str, *, down_after_ms: int,
                 failover_timeout_ms: int) -> None:
        monitor = [f"monitor {MASTER} 127.0.0.1 {master_port} 2", f"down-after-milliseconds {MASTER} {down_after_ms}",
                   f"failover-timeout {MASTER} {failover_timeout_ms}", f"parallel-syncs {MASTER} 1"]
        super().__init__(workdir, binary=binary, options={"sentinel": monitor})
        self.argv.append("--sentinel")

    def master_port(self) -> int | None:
        with self.client(socket_timeout=1, socket_connect_timeout=1) as c:
            addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(addr[1]) if addr else None

    def view(self) -> tuple[int, int]:
        """(other sentinels, replicas) this sentinel knows."""
        with self.client(socket_timeout=1, socket_connect_timeout=1) as c:
            return (len(c.execute_command("SENTINEL", "SENTINELS", MASTER)),
                    len(c.execute_command("SENTINEL", "REPLICAS", MASTER)))


class SentinelCell(Cell):
    """F8b's topology, on the harness's nodes, producers, drain and checker:

        n1 (leader) --pl--> P <--ps-- R1, R2 (replicas), S1..S3 (sentinels), n2, n3 (via Sentinel)
        producer ---------> P

    Everything on the majority side reaches the primary P through the one proxy `ps`: the
    sentinels monitor P at ps's port, so that is also the address they give n2 and n3, and the
    replicas replicate from it. `ps.blackhole()` is the partition {P, n1, producer} | {R1, R2,
    S1..S3, n2, n3}; n1 (started first, so it leads) reaches P through its own proxy `pl`, which
    stays in pass, by a plain URL: a Sentinel lookup would hand it ps's address and cut it too.
    An audit collector runs on every data server (P's copy keeps what the isolated side wrote,
    which P's resync after the heal discards); `redis_server` is whichever server is the
    primary now (`follow()` moves it)."""

    def __init__(self, name: str, workdir: Path, config: CellConfig, *, down_after_ms: int = 5000) -> None:
        super().__init__(name, workdir, config)
        self.down_after_ms = down_after_ms
        self.data: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []
        self.collectors: list[AuditCollector] = []
        self.ps: TcpProxy | None = None
        self.primary: RedisServer | None = None

    @property
    def redis_server(self) -> RedisServer:
        assert self.primary is not None, "cell not started"
        return self.primary

    def start(self, timeout: float = 30.0) -> SentinelCell:
        binary = redis_binary()
        assert binary is not None
        cfg = self.config
        for d in (self.workdir, self.log_dir, self.tasks_dir):
            d.mkdir(parents=True, exist_ok=True)
        (self.tasks_dir / "cell_tasks.py").write_text(task_source(tick=cfg.tick, tick_frequency=cfg.tick_frequency))
        options = {**cfg.redis_options, "min_replicas_to_write": 1, "min_replicas_max_lag": 5}
        p = RedisServer(self.workdir / "P", options=options, binary=binary).start()
        self.primary = self.server = p
        self.ps = TcpProxy(p.port, name="majority-to-P").start()
        self.data = [p] + [RedisServer(self.workdir / f"R{i}", binary=binary, options={
            **options, "replicaof": f"127.0.0.1 {self.ps.port}"}).start() for i in (1, 2)]
        wait_until(lambda: all(r.info("replication").get("master_link_status") == "up" for r in self.data[1:]),
                   15, 0.1, message="both replicas in sync")
        self.sentinels = [SentinelServer(self.workdir / f"S{i}", self.ps.port, binary, down_after_ms=self.down_after_ms,
                                         failover_timeout_ms=60000) for i in (1, 2, 3)]
        for s in self.sentinels:
            s.start()
        wait_until(lambda: all(s.view() == (2, 2) for s in self.sentinels), 30, 0.2,
                   message="each sentinel knows the two others and both replicas", ignore=(redis.RedisError,))
        self.collectors = [AuditCollector(s, self.keys.audit, cfg.audit_interval).start() for s in self.data]
        self.collector = self.collectors[0]
        self.nodes = NodeCluster(self.workdir / "nodes", redis_url=p.url)
        n1 = self._add("n1", sentinel=False)
        n1.wait_ready(timeout)
        wait_until(lambda: n1.is_leader(timeout=0.5), 15, 0.05, message="n1 leads")
        for node in (self._add("n2", sentinel=True), self._add("n3", sentinel=True)):
            node.wait_ready(timeout)
        return self

    def _add(self, node_id: str, *, sentinel: bool) -> NodeProcess:
        assert self.nodes is not None and self.ps is not None
        args = self.node_args(node_id)
        if sentinel:
            args += ["--redis-sentinels", ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
                     "--redis-sentinel-master", MASTER]
        return self.nodes.add(node_id, proxied=not sentinel, namespace=NAMESPACE, tasks_dir=self.tasks_dir,
                              queues="default", concurrency=self.config.concurrency, extra_args=args,
                              env={"CELL_LOG_DIR": str(self.log_dir)})

    def sentinel_master(self) -> int | None:
        """The primary's port as a majority of the sentinels give it (None: no majority)."""
        ports: list[int | None] = []
        for s in self.sentinels:
            try:
                ports.append(s.master_port())
            except (redis.RedisError, OSError):
                ports.append(None)
        best = max(set(ports), key=ports.count)
        return best if ports.count(best) >= 2 else None

    def follow(self, port: int) -> RedisServer:
        self.primary = next(s for s in self.data if s.port == port)
        return self.primary

    def audit(self) -> list[AuditRecord]:
        merged = {r.id: r for c in self.collectors for r in c.final()}
        return sorted(merged.values(), key=lambda r: r.seq)

    def close(self) -> None:
        super().close()  # producers, the first collector, nodes (and n1's proxy), P
        for c in self.collectors[1:]:
            c.stop()
        for s in [*self.sentinels, *self.data]:
            s.kill()
        if self.ps is not None:
            self.ps.close()


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_f8b_sentinel_isolated_old_primary(cells: list[Cell], tmp_path: Path, wait_replicas: int) -> None:
    """Partition the primary and the leader node from the replicas, the sentinels and the other
    two nodes while a producer on the primary's side keeps enqueueing (docs/FAULTS.md F8b). Pass: writes
    accepted by the old primary stop <= 5 s after the isolation (`min-replicas-to-write 1`,
    `min-replicas-max-lag 5`); every lost enqueue is reported by the checker (and each is one the
    old primary acknowledged around or after the isolation); 0 duplicate slots from the leader
    side (no slot claimed by the old leader once a newer epoch had claimed anything).

    `wait_replicas=1` runs the nodes with `--leader-wait-replicas 1`: the old leader's renewals go
    unconfirmed from the isolation on, so it stops at its deadline (lease - margin after its last
    confirmed renew) instead of when the old primary starts refusing writes (NOREPLICAS, 5-7 s)."""
    if find_binary("redis-server") is None:
        missing("redis-server is not installed")
    extra = ("--leader-wait-replicas", "1") if wait_replicas else ()
    cfg = CellConfig(concurrency=2, tick_frequency=1.0, extra_args=extra)
    cell = SentinelCell("F8b", tmp_path / "F8b", cfg)
    cells.append(cell)
    cell.start()
    ps = cell.ps
    assert ps is not None
    old_primary = cell.redis_server
    n1 = cell.cluster.node("n1")
    producer = cell.producer(rate=20.0, seed=82, duration=lambda r: r.uniform(0.0, 0.3)).start()
    time.sleep(6.0)
    epoch = cell.epoch(n1)
    assert cell.leader(5.0) is n1
    t_iso = time.time()
    ps.blackhole()
    cell.fault(Fault("isolate-old-primary", t_iso, node=n1.reported_id, old_epoch=epoch))

    def refused_for(seconds: float) -> bool:
        recent = [e for e in list(cell.enqueues) if e.t_invoke >= time.time() - seconds]
        return bool(recent) and time.time() - t_iso > seconds and all(e.outcome != "ok" for e in recent)

    wait_until(lambda: refused_for(2.0), 20, 0.1, message="the old primary refuses the producer's writes")
    new_port = wait_until(lambda: (p if (p := cell.sentinel_master()) not in (None, ps.port) else None), 40,
                          0.2, message="the sentinels promoted a replica")
    assert new_port is not None
    t_promoted = time.time()
    new_primary = cell.follow(new_port)
    first_new = cell.first_record(epoch, 30.0, after=t_iso)
    # The majority side takes writes: a batch through Sentinel runs.
    settings = RedisSettings(sentinels=tuple(f"127.0.0.1:{s.port}" for s in cell.sentinels), sentinel_master=MASTER)
    post = [f"F8b-post-{i}" for i in range(20)]
    asyncio.run(_enqueue_via_sentinel(cell, settings, post))
    time.sleep(max(0.0, t_iso + 25.0 - time.time()))
    t_heal = time.time()
    ps.pass_through()
    wait_until(lambda: old_primary.info("replication").get("role") == "slave"
               and old_primary.info("replication").get("master_link_status") == "up", 40, 0.2,
               message="the old primary rejoined as a replica of the new one", ignore=(redis.RedisError,))
    t_rejoined = time.time()
    cell.fault(Fault("heal", t_heal))
    producer.stop()
    report = cell.finish(Bounds(max_lost=10**6, max_duplicated=10**6, max_dup_slots=10**6, max_stale_accepted=10**6,
                                max_missed_slots=None, max_overlap=math.inf, periodic_slack=None, max_flaps=10**6),
                         settle=30.0, check_bounds=False)

    audit = cell.audit()
    mine = [e for e in cell.enqueues if e.id.startswith("F8b-p-")]
    accepted_after = [e for e in mine if e.outcome == "ok" and e.t_invoke >= t_iso]
    writes_stop = max((e.t_complete for e in accepted_after), default=t_iso) - t_iso
    old_writes_after = [r for r in audit if r.epoch <= epoch and r.t >= t_iso]
    leader_writes_stop = max((r.t for r in old_writes_after), default=t_iso) - t_iso
    executed = {x.id for x in cell.executions() if x.id is not None}
    # Every acknowledged enqueue that never ran is in the checker's `lost`, and every lost one was
    # acknowledged by the old primary around or after the isolation (replication is asynchronous:
    # up to its lag before it).
    unreported = sorted(e.id for e in mine if e.outcome == "ok" and e.id not in executed and e.id not in report.lost)
    lost_before = sorted(e.id for e in mine if e.id in set(report.lost) and e.t_complete < t_iso - 1.0)
    post_missing = sorted(i for i in post if i not in executed)
    # Slot claims: which epoch claimed each slot, in stream order.
    claims: dict[str, list[int]] = {}
    for r in audit:
        if r.op == "periodic":
            claims.setdefault(r.detail, []).append(r.epoch)
    leader_side_dups = sorted(d for d, epochs in claims.items() if any(
        e <= epoch and any(f > epoch for f in epochs[:i]) for i, e in enumerate(epochs)))
    reclaimed = sorted(d for d, epochs in claims.items() if len(epochs) > 1 and d not in leader_side_dups)
    ticks_on_n1 = [x for x in cell.executions() if x.task == "tick" and x.node == n1.reported_id and x.start >= t_iso]
    stepped = [e.t - t_iso for e in cell.leader_events() if e.kind == "stepped_down" and e.epoch == epoch]
    figures("F8b", old_primary_writes_accepted_until_s=writes_stop,
            old_leader_stepped_down_after_s=stepped[0] if stepped else None,
            old_leader_writes_accepted_until_s=leader_writes_stop,
            promoted_after_s=t_promoted - t_iso, new_epoch_first_write_after_s=first_new.t - t_iso,
            rejoined_after_heal_s=t_rejoined - t_heal, acknowledged=report.acknowledged,
            acked_after_isolation=len(accepted_after), lost=len(report.lost), lost_ids=report.lost[:6],
            unreported_losses=len(unreported), lost_acked_before_isolation=len(lost_before),
            duplicated=len(report.duplicated), dup_slots=len(report.dup_slots),
            dup_slots_leader_side=len(leader_side_dups), slots_reclaimed_by_new_leader=len(reclaimed),
            ticks_run_on_isolated_side=len(ticks_on_n1), stale_accepted=len(report.stale_accepted),
            epochs=report.epochs, post_batch_missing=len(post_missing), new_primary=new_primary.port)
    # docs/FAULTS.md F8b asks for <= 5 s, which `min-replicas-max-lag 5` cannot give: Redis counts a replica
    # good while its ack is <= 5 whole seconds old and recounts once a second (replicationCron),
    # so the old primary takes writes for 5-7 s. Asserted: that bound; printed: whether 5 s held.
    print(f"F8b: docs/FAULTS.md bound (writes stop <= 5 s) {'met' if writes_stop <= 5.0 else 'NOT met'}: {writes_stop:.2f}s")
    assert writes_stop <= 5.0 + 2.0, f"the old primary acknowledged enqueues {writes_stop:.2f}s after the isolation"
    assert not unreported, f"acknowledged, never run, not reported lost: {unreported}"
    assert not lost_before, f"lost although acknowledged well before the isolation: {lost_before}"
    assert not leader_side_dups, f"the isolated leader claimed slots a newer epoch had claimed: {leader_side_dups}"
    assert not post_missing, f"jobs enqueued through Sentinel after the failover did not run: {post_missing}"
    assert not report.unexpected, report.unexpected
    if wait_replicas:
        bound = cfg.lease - cfg.margin + cfg.renew_timeout
        assert stepped and stepped[0] <= bound, f"old leader stepped down {stepped} s after isolation (bound {bound} s)"


async def _enqueue_via_sentinel(cell: Cell, settings: RedisSettings, ids: list[str]) -> None:
    client = await Client.connect(settings=settings, namespace=NAMESPACE)
    try:
        for job_id in ids:
            t0 = time.time()
            try:
                await client.enqueue("job", {"id": job_id, "s": 0.0}, queue="default")
                outcome = "ok"
            except Exception as e:  # every outcome is recorded
                outcome = classify(e)
            cell.enqueues.append(Enqueue(job_id, outcome, t0, time.time()))
    finally:
        await client.close()
