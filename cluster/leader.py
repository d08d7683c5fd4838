"""Leader duties as named loops inside one term, and the fenced call they all use.

    async def lead(term):            # given to the elector
        await LeaderDuties([scheduler, periodic, recovery]).run(term)

Each duty has its own interval, logs and continues on error; `LeaseLost` (the term ended, or
a script answered STALE) cancels all of them before any further write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from .aio import REDIS_FAILURES
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
    res = await scripts.run(name, keys, [*term.fenced_args(audit), *args])
    if res and res[0] == "STALE":
        observer.stale_write_rejected(name)
        log.warning("leader write refused: stale term", extra={"epoch": term.epoch, "op": name,
                                                                "event": "stale_write_rejected"})
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
