"""The one time seam: wall time for due seconds and periodic slots, monotonic time for leases.

Nothing else in `cluster` or `node` reads the clock directly, so tests can drive `FakeClock`
(`cluster.testing`) and fault tests can shift wall time without touching leases.
"""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock epoch seconds (due times, periodic slots)."""

    def monotonic(self) -> float:
        """Monotonic seconds (leases, deadlines, durations)."""


class SystemClock:
    """The real clock. `offset` shifts wall time only (clock-jump fault tests)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def time(self) -> float:
        return _time.time() + self.offset

    def monotonic(self) -> float:
        return _time.monotonic()


SYSTEM_CLOCK = SystemClock()
