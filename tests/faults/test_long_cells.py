"""FAULTS.md §4 long cells F8b and F9b (not in CI: `make long-faults`, or `CORRAL_LONG=1 pytest -m long`).

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

- **F8b, Sentinel with an isolated old primary**: see `test_f8b_sentinel_isolated_old_primary`.

Times: the harness compares node log stamps, its own `time.time()` and the audit records'
`redis_time_us`, which FAULTS §2 takes to be one clock. After the jump Redis' clock is the host's
+ `shift`, so `JumpedCell.audit` takes the shift off the records written after the jump (a
record more than shift/2 ahead of the host clock) before the checker sees them.
"""

from __future__ import annotations

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

from tests.faults.checker import AuditRecord, Bounds, Fault
from tests.faults.harness import Cell, CellConfig, redis_binary
from tests.support import free_port, missing, wait_until

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
        ahead = time.time() + self.shift / 2
        return [dataclasses.replace(r, t=r.t - self.shift) if r.t > ahead else r for r in records]


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


def test_f9b_clock_jump_on_the_redis_host(cells: list[Cell], tmp_path: Path) -> None:
    binary = redis_binary()
    assert binary is not None
    shift = 3600.0
    clock = RedisClock(tmp_path / "clock", binary)
    cfg = CellConfig(concurrency=2, tick_frequency=1.0, redis_env=clock.env)
    cell = JumpedCell("F9b", tmp_path / "F9b", cfg)
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
    figures("F9b", backend=clock.backend, shift_s=shift, redis_skew_before_s=skew_before,
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
