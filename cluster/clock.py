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

STEP = 1.0  # a reading this far from the estimate is a step of Redis' clock: taken whatever its round trip
REFRESH = 30.0  # a reading is taken whatever it says once the kept one is this old (drift, slews)


class RedisClock:
    """Redis `TIME`, estimated between readings as `base.monotonic() + offset`.

    A reading (`sync`, or `observe` with a time a script returned) was taken by Redis somewhere
    between our send and our receipt; the offset kept assumes it was taken at the send, the
    latest instant it can stand for. The estimate is thus never behind Redis (at most one round
    trip ahead): a leader wakes a little early, the scripts (which judge with `TIME` themselves)
    refuse what is not due yet, and nothing is made late by a slow reading. A reading replaces
    the offset when it is tighter (lower), when the last one is more than `REFRESH` s old, or
    when it moves the estimate by more than `STEP` (Redis' clock was stepped).
    Until the first reading, `time()` is the base clock's wall time.

        clock = RedisClock(SYSTEM_CLOCK)
        await clock.sync(redis)
        clock.time()        # Redis' epoch seconds now, or up to one round trip ahead
    """

    def __init__(self, base: Clock = SYSTEM_CLOCK) -> None:
        self.base = base
        self.offset: float | None = None
        self.synced_mono: float | None = None  # when the kept reading was taken
        self.read_mono: float | None = None  # when the last reading was taken, kept or not

    def time(self) -> float:
        if self.offset is None:
            return self.base.time()
        return self.base.monotonic() + self.offset

    def monotonic(self) -> float:
        return self.base.monotonic()

    def observe(self, redis_now: float, sent_mono: float, received_mono: float) -> None:
        """A Redis time read between `sent_mono` and `received_mono` (this process's monotonic clock)."""
        offset = redis_now - sent_mono
        self.read_mono = received_mono
        if (self.offset is None or offset <= self.offset or abs(offset - self.offset) > STEP
                or (self.synced_mono is not None and received_mono - self.synced_mono > REFRESH)):
            self.offset = offset
            self.synced_mono = received_mono

    async def sync(self, redis: Any) -> float:
        """Read `TIME` once; returns the estimate of Redis' time after it."""
        sent = self.base.monotonic()
        sec, usec = await redis.time()
        self.observe(int(sec) + int(usec) / 1e6, sent, self.base.monotonic())
        return self.time()

    async def fresh(self, redis: Any, max_age: float = 5.0) -> None:
        """`sync` unless a reading is less than `max_age` seconds old."""
        if self.read_mono is None or self.base.monotonic() - self.read_mono > max_age:
            await self.sync(redis)
