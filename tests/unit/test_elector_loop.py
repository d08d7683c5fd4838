"""The elector loop (cluster/election/elector.py) over a scripted lock: how a renew's failure ends
a term. Pure unit test: the lock is a stand-in, the backends have their own integration tests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.clock import SYSTEM_CLOCK
from cluster.election.base import ElectionConfig, SeenFn, Term
from cluster.election.elector import LockElector
from cluster.observe import Observer

CFG = ElectionConfig(lease=1.0, renew_period=0.05, renew_timeout=0.05, margin=0.3, retry_period=0.05)


class CountingObserver(Observer):
    def __init__(self) -> None:
        self.errors = 0

    def redis_error(self, where: str) -> None:
        self.errors += 1


class ScriptedLock:
    """Wins one term, then answers each renew from `outcomes` (an exception is raised), then True."""

    backend = "scripted"
    node_id = "n1"

    def __init__(self, outcomes: list[Any]) -> None:
        self.scripts: Any = None  # no Redis here
        self.extra: dict[str, Any] = {}
        self.lost_reason: str | None = None
        self.outcomes = outcomes
        self.renews = 0
        self.won = False
        self.released: list[bool] = []

    async def open(self, seen: SeenFn) -> None:
        pass

    async def acquire(self) -> Term | None:
        await asyncio.sleep(0.01)
        if self.won:
            return None
        self.won = True
        now = SYSTEM_CLOCK.monotonic()
        return Term(node="n1", token="n1/7/ab", epoch=7, since=SYSTEM_CLOCK.time(),
                    deadline=now + CFG.lease - CFG.margin, clock=SYSTEM_CLOCK)

    async def renew(self, term: Term) -> bool:
        self.renews += 1
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return bool(outcome)
        return True

    async def release(self, term: Term, *, shutdown: bool) -> bool:
        self.released.append(shutdown)
        return True

    async def observe(self) -> None:
        await asyncio.Event().wait()

    def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def lead_one_term(lock: ScriptedLock, observer: Observer, caplog: pytest.LogCaptureFixture) -> str:
    """Run the elector until its one term ends; the step-down's reason."""
    elector = LockElector(lock, config=CFG, clock=SYSTEM_CLOCK, observer=observer)
    ended = asyncio.Event()

    async def lead(term: Term) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    caplog.set_level(logging.INFO, logger="corral.election")
    task = asyncio.create_task(elector.run(lead))
    try:
        await asyncio.wait_for(ended.wait(), 5)
        elector.stop()
        await asyncio.wait_for(task, 5)
    finally:
        task.cancel()
    assert not elector.state.is_leader and elector.term is None
    assert lock.released == [False], "the lock is given back after every term"
    downs = [r for r in caplog.records if getattr(r, "event", None) == "leader_stepped_down"]
    assert len(downs) == 1
    return str(downs[0].reason)  # type: ignore[attr-defined]


async def test_a_dropped_connection_is_retried_once_then_ends_the_term(caplog: pytest.LogCaptureFixture) -> None:
    lock = ScriptedLock([True, RedisConnectionError("reset"), RedisConnectionError("reset again")])
    observer = CountingObserver()
    reason = await lead_one_term(lock, observer, caplog)
    assert reason == "connection to Redis lost: reset again"
    assert lock.renews == 3 and observer.errors == 2


async def test_a_slow_redis_keeps_the_term_until_its_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """Timeouts are counted and the term runs on, never past `last good renew + lease - margin`."""
    lock = ScriptedLock([TimeoutError()] * 1000)
    observer = CountingObserver()
    started = SYSTEM_CLOCK.monotonic()
    reason = await lead_one_term(lock, observer, caplog)
    assert reason in ("deadline passed", "deadline passed before a renew", "renew timed out past the deadline")
    assert SYSTEM_CLOCK.monotonic() - started >= CFG.lease - CFG.margin
    assert observer.errors >= 2


async def test_an_unconfirmed_renew_does_not_move_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    lock = ScriptedLock([False] * 1000)
    reason = await lead_one_term(lock, CountingObserver(), caplog)
    assert reason.startswith("deadline passed")


async def test_a_bug_in_a_renew_is_not_taken_for_a_redis_outage() -> None:
    """A RuntimeError (a programming error) ends the elector with that error: it is neither retried
    as a dropped connection nor turned into a quiet step-down."""
    lock = ScriptedLock([RuntimeError("a bug")])
    elector = LockElector(lock, config=CFG, clock=SYSTEM_CLOCK, observer=CountingObserver())
    terms: list[Term] = []

    async def lead(term: Term) -> None:
        terms.append(term)
        await asyncio.Event().wait()

    with pytest.raises(BaseExceptionGroup) as err:
        await asyncio.wait_for(elector.run(lead), 5)
    assert err.group_contains(RuntimeError, match="a bug")
    assert lock.renews == 1
    assert terms and terms[0].lost.is_set() and not elector.state.is_leader
