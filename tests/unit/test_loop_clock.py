"""node/loop_clock.py: the loop-lag watcher and the clock-offset seam the node and its leader
process share."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from cluster.clock import SystemClock
from node.loop_clock import LoopLag, apply_clock_offset


async def test_loop_lag_measures_a_blocked_loop_and_ends_when_told() -> None:
    lags: list[float] = []

    def on_wake(lag: float) -> bool:
        lags.append(lag)
        if len(lags) == 1:  # something else blocks the loop during the next sleep: it wakes that late
            asyncio.get_running_loop().call_soon(time.sleep, 0.2)
        return len(lags) == 3

    watch = LoopLag(0.01, on_wake)
    await asyncio.wait_for(watch.run(), 10)  # returns: on_wake said so on the third wake-up
    assert len(lags) == 3 and all(x >= 0 for x in lags)
    assert lags[1] >= 0.2 - 0.01  # the blocked sleep: late by the block minus its period
    assert watch.seconds == lags[-1]


def test_clock_offset_from_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = SystemClock()
    f = tmp_path / "offset"
    f.write_text("30.5\n")
    before = clock.time()
    assert apply_clock_offset(clock, str(f), logging.getLogger("test"))
    assert clock.offset == 30.5 and clock.time() - before >= 30.5
    f.write_text("")  # empty: back to no offset
    assert apply_clock_offset(clock, str(f), logging.getLogger("test")) and clock.offset == 0
    f.write_text("soon")
    with caplog.at_level(logging.WARNING, logger="test"):
        assert not apply_clock_offset(clock, str(f), logging.getLogger("test"))
        assert not apply_clock_offset(clock, str(tmp_path / "missing"), logging.getLogger("test"))
    assert clock.offset == 0  # an unreadable file changes nothing
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["clock offset file unreadable"] * 2
