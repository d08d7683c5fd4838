"""Test seams shipped with the library: a clock tests can drive."""

from __future__ import annotations


class FakeClock:
    """``clock = FakeClock(1_700_000_000.0); clock.advance(5)`` moves both wall and monotonic time."""

    def __init__(self, wall: float = 1_700_000_000.0, mono: float = 1000.0) -> None:
        self.wall = wall
        self.mono = mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def jump_wall(self, seconds: float) -> None:
        self.wall += seconds
