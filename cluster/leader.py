"""Leader duties as named loops inside one term, and the fenced call they all use.

    async def lead(term):            # given to the elector
        await LeaderDuties([Promotion(scheduler), periodic, recovery]).run(term)

Each duty has its own interval, logs and continues on error; `LeaseLost` (the term ended, or
a script answered STALE) cancels all of them before any further write. Delayed promotion is the
exception (`Promotion`): it runs in a scope of the term, only while node-resque's lock holds the
term's token too; losing that lock (a node-resque scheduler took it) ends the scope, not the term.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from .aio import REDIS_FAILURES, wait_event
from .election.base import Term
from .errors import LeaseLost
from .observe import Observer
from .scripts import Scripts

log = logging.getLogger("corral.leader")


async def fenced(scripts: Scripts, name: str, keys: list[str], args: list[Any], term: Term, observer: Observer,
                 audit: bool = False) -> list[Any]:
    """Run a leader script with the term's token; raise LeaseLost if the term is over or STALE."""
    if not term.valid():
        raise LeaseLost(f"{name}: term {term.epoch} is no longer valid (deadline or lost)")
    decided = time.monotonic()
    res = await scripts.run(name, keys, [*term.fenced_args(audit), *args])
    if res and res[0] == "STALE":
        observer.stale_write_rejected(name)
        # `decided_ms_ago`: a process frozen between its lease check and the send (SIGSTOP, a VM
        # pause) delivers a write it decided while it still led; fencing refuses it on arrival
        log.warning("leader write refused: stale term", extra={
            "epoch": term.epoch, "op": name, "event": "stale_write_rejected",
            "decided_ms_ago": round((time.monotonic() - decided) * 1000, 1)})
        term.lost.set()
        raise LeaseLost(f"{name}: refused as stale (term {term.epoch})")
    return list(res)


class Duty(Protocol):
    name: str

    async def run(self, term: Term) -> None: ...


class LeaderDuties:
    def __init__(self, duties: Sequence[Duty]) -> None:
        self.duties = list(duties)

    async def run(self, term: Term) -> None:
        async with asyncio.TaskGroup() as tg:
            for d in self.duties:
                tg.create_task(self._guard(d, term), name=f"leader-{d.name}")

    @staticmethod
    async def _guard(duty: Duty, term: Term) -> None:
        backoff = 0.05
        while True:
            try:
                await duty.run(term)
                return
            except LeaseLost:
                raise
            except REDIS_FAILURES as e:
                log.warning("%s: Redis error, retrying: %r", duty.name, e, extra={"duty": duty.name})
            except Exception:
                log.exception("%s: unexpected error, restarting the loop", duty.name, extra={"duty": duty.name})
            if not term.valid():
                raise LeaseLost(f"{duty.name}: term ended")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


class Promotion:
    """Runs `duty` (the delayed-job scheduler) in a scope of the term while the term also holds
    node-resque's lock (`term.promotes`, kept by the elector's renewals). A STALE from its fenced
    scripts (another scheduler holds the lock now) or the lock seen taken ends only the scope;
    the duty starts again in a new scope once the lock is ours again."""

    def __init__(self, duty: Duty) -> None:
        self.duty = duty
        self.name = duty.name

    async def run(self, term: Term) -> None:
        while not term.lost.is_set():
            if not term.promotes.is_set():
                await _first(term.promotes.wait(), term.lost.wait())
                continue
            scope = term.scope()
            watch = asyncio.create_task(self._end_with(term, scope), name="promotion-scope")
            try:
                await self.duty.run(scope)
            except LeaseLost:
                if not term.valid():  # the term itself ended (lost, or past its deadline)
                    raise
                term.promotes.clear()  # refused as stale: another scheduler holds the lock
                log.info("%s: delayed promotion paused: another scheduler holds the resque lock", self.name,
                         extra={"epoch": term.epoch, "event": "promotion_paused"})
            finally:
                scope.lost.set()
                watch.cancel()
            if not term.lost.is_set():
                await wait_event(term.lost, 0.05)  # no busy loop when the duty returns at once

    @staticmethod
    async def _end_with(term: Term, scope: Term) -> None:
        """The scope ends when the term does, or when a renewal finds the resque lock taken."""
        while not term.lost.is_set() and term.promotes.is_set():
            await wait_event(term.lost, 0.05)
        scope.lost.set()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
