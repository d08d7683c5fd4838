"""How this process's event loop and wall clock are doing, shared by the node (node/runtime.py) and
its leader process (node/leader/child.py): the loop-lag watcher and the clock-offset seam of the
fault tests (docs/FAULTS.md F9).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cluster.clock import SystemClock


class LoopLag:
    """How late this loop wakes from a `period` sleep: `seconds` is the last measure. `on_wake`
    (if given) runs after every wake-up with that lag; when it returns True, `run` ends."""

    def __init__(self, period: float, on_wake: Callable[[float], bool] | None = None) -> None:
        self.period = period
        self.on_wake = on_wake
        self.seconds = 0.0

    async def run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.period)
            self.seconds = max(0.0, time.monotonic() - t - self.period)
            if self.on_wake is not None and self.on_wake(self.seconds):
                return


def apply_clock_offset(clock: SystemClock, path: str, log: logging.Logger) -> bool:
    """Shift `clock`'s wall time by the seconds written in `path` (a fault test's SIGUSR1); leases
    stay on the monotonic clock. False (logged on `log`) when the file cannot be read."""
    try:
        with open(path) as fh:
            clock.offset = float(fh.read().strip() or 0)
    except (OSError, ValueError) as e:
        log.warning("clock offset file unreadable: %r", e)
        return False
    return True
