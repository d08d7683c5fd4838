"""The time seams: wall time for due seconds and periodic slots, monotonic time for leases.

Nothing else in `cluster` or `node` reads the clock directly, so tests can drive `FakeClock`
(`cluster.testing`) and fault tests can shift wall time without touching leases.

Leader decisions (is a delayed second due, which periodic slot is next) use **Redis' clock**
(`RedisClock`): the one clock every node shares, read through this process's monotonic clock. A
leader whose own wall clock is off by an hour then promotes and claims exactly when a correct
one would; the scripts themselves judge due-ness with `TIME` as well.
"""

from __future__ import annotations

import time as _time
from typing import Any, Protocol


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

STEP = 1.0  # a sample this far from the estimate is a step of Redis' clock: taken whatever its round trip


class RedisClock:
    """Redis `TIME`, estimated between readings as `base.monotonic() + offset`.

    Each reading (`sync`, or `observe` with a time a script returned) gives the offset within
    half its round trip; a reading is taken when its round trip is no worse than twice the best
    seen, or when it moves the estimate by more than `STEP` (Redis' clock was stepped).
    Until the first reading, `time()` is the base clock's wall time.

        clock = RedisClock(SYSTEM_CLOCK)
        await clock.sync(redis)
        clock.time()        # Redis' epoch seconds now, to about half a round trip
    """

    def __init__(self, base: Clock = SYSTEM_CLOCK) -> None:
        self.base = base
        self.offset: float | None = None
        self.best_rtt = float("inf")
        self.synced_mono: float | None = None

    def time(self) -> float:
        if self.offset is None:
            return self.base.time()
        return self.base.monotonic() + self.offset

    def monotonic(self) -> float:
        return self.base.monotonic()

    def observe(self, redis_now: float, sent_mono: float, received_mono: float) -> None:
        """A Redis time read between `sent_mono` and `received_mono` (this process's monotonic clock)."""
        rtt = max(0.0, received_mono - sent_mono)
        offset = redis_now - (sent_mono + received_mono) / 2
        stepped = self.offset is not None and abs(offset - self.offset) > STEP
        stale = self.synced_mono is not None and received_mono - self.synced_mono > 30.0
        if self.offset is None or stepped or stale or rtt <= 2 * self.best_rtt:
            self.offset = offset
            self.best_rtt = rtt if stepped or stale else min(self.best_rtt, rtt)
            self.synced_mono = received_mono

    async def sync(self, redis: Any) -> float:
        """Read `TIME` once; returns the estimate of Redis' time after it."""
        sent = self.base.monotonic()
        sec, usec = await redis.time()
        self.observe(int(sec) + int(usec) / 1e6, sent, self.base.monotonic())
        return self.time()

    async def fresh(self, redis: Any, max_age: float = 5.0) -> None:
        """`sync` unless a reading is less than `max_age` seconds old."""
        if self.synced_mono is None or self.base.monotonic() - self.synced_mono > max_age:
            await self.sync(redis)
