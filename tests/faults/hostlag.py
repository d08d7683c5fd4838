"""How late this host wakes a sleeping process: what a lateness bound must allow for on a loaded
machine, measured beside the cell instead of guessed.

The leader promotes a delayed second, or claims a periodic slot, when a timer wakes it; on a host
whose CPUs are taken (other test runs, a CPU hog, CI neighbours) that wake-up comes late for
every process alike, however good the code is. `HostLag` runs a tiny process of its own at the
nodes' priority that sleeps 10 ms at a time and records how late each wake-up came, so a test
can assert "lateness p99 <= 25 ms + what this host added at p99 in the same window": a quiet host
adds ~0, and the bound stays the docs/FAULTS.md bound; a starved one adds what it took from everybody.

    lag = HostLag(workdir / "hostlag.txt").start()
    ...
    extra = lag.percentile(99, window=(t0, t1))   # seconds
    lag.stop()
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.faults.checker import percentile

PERIOD = 0.01
_PROBE = """
import sys, time
period, end = float(sys.argv[1]), time.time() + float(sys.argv[2])
with open(sys.argv[3], "a", buffering=1) as out:
    rows = []
    while time.time() < end:
        t = time.monotonic()
        time.sleep(period)
        rows.append(f"{time.time():.4f} {time.monotonic() - t - period:.5f}")
        if len(rows) >= 50:
            out.write("\\n".join(rows) + "\\n")
            rows = []
"""


class HostLag:
    def __init__(self, path: Path, *, limit: float = 3600.0) -> None:
        self.path = path
        self.limit = limit  # the probe exits by itself after this many seconds
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HostLag:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", _PROBE, str(PERIOD), str(self.limit), str(self.path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # by its own pid
            self.proc.wait(5)

    def samples(self, window: tuple[float, float] | None = None) -> list[float]:
        """Wake-up lateness (s) of the samples taken in `window` (wall time), oldest first. Rows are
        written 50 at a time (every 0.5 s): wait that long after a window before reading it."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue  # a torn last line
            t, lag = float(parts[0]), max(0.0, float(parts[1]))
            if window is None or window[0] <= t <= window[1]:
                out.append(lag)
        return out

    def percentile(self, p: float, window: tuple[float, float] | None = None) -> float:
        """p-th percentile of the wake-up lateness in `window` (0 when nothing was sampled)."""
        time.sleep(0.6)  # the rows of the window's last half second
        values = self.samples(window)
        return percentile(values, p) if values else 0.0

    def worst(self, window: tuple[float, float] | None = None) -> float:
        values = self.samples(window)
        return max(values) if values else 0.0
