"""The one elector loop, over a `LeaderLock` (base.py): contend, lead one term at a time, renew it,
step down, release. The backends (redis.py, zookeeper.py) only say how to acquire, renew, release
and observe their lock; what a term is and when it ends is decided here, the same for both.

- The leader stops its duties at `last renew sent + lease - margin` on the monotonic clock, even
  with no error seen; every wait is cut at that deadline, so the duties stop then, not at the next
  renew. A renew never waits for its reply past the deadline either.
- A dropped connection is retried once at once, then the term ends (docs/FAULTS.md F4: RST ->
  stop now); any other Redis failure is counted and the term runs on to its deadline.
- Renewals run on the same loop as the duties: a starved loop loses the lease instead of holding
  it while doing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..aio import REDIS_DROPPED, REDIS_FAILURES, wait_event, within
from ..clock import Clock
from ..errors import LeaseLost
from ..observe import Observer
from ..scripts import Scripts
from .base import ElectionConfig, ElectionState, LeaderLock, LeadFn, Term

log = logging.getLogger("corral.election")

_WATCH_WAIT = 3.0  # bound on ending the lock's observer task


class LockElector:
    """``LockElector(lock, config=, clock=, observer=)``: `state`, `term`, `await run(lead)`,
    `await release()`, `stop()` (the `Contender` a node uses)."""

    def __init__(self, lock: LeaderLock, *, config: ElectionConfig, clock: Clock, observer: Observer) -> None:
        self.lock = lock
        self.backend = lock.backend
        self.node_id = lock.node_id
        self.config = config
        self.clock = clock
        self.observer = observer
        self.state = ElectionState(node=lock.node_id, backend=lock.backend, extra=lock.extra)
        self.term: Term | None = None
        self._stopping = False

    @property
    def scripts(self) -> Scripts:
        return self.lock.scripts

    @scripts.setter
    def scripts(self, scripts: Scripts) -> None:
        self.lock.scripts = scripts

    # ---- candidate -------------------------------------------------------------------------

    async def run(self, lead: LeadFn) -> None:
        """Contend forever; while elected, run `lead(term)` and cancel it when the term ends."""
        await self.lock.open(self._seen)
        watcher = asyncio.create_task(self.lock.observe(), name="election-observe")
        try:
            while not self._stopping:
                term = await self.lock.acquire()
                if term is None:
                    continue
                try:
                    await self._lead_term(term, lead)
                finally:
                    await self.lock.release(term, shutdown=False)
        finally:
            watcher.cancel()
            # Bounded: awaiting the watcher waits as long as it runs, cancelled or not.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([watcher], timeout=_WATCH_WAIT)
            await self.lock.close()

    def _seen(self, leader: str | None, epoch: int | None, since: float | None) -> None:
        """The lock saw who holds it (None: nobody, or a lock-delay); epoch None: unknown, keep ours."""
        if self.term is None:
            self._set_follower(leader, self.state.epoch if epoch is None else epoch, since)

    def _set_follower(self, leader: str | None, epoch: int, since: float | None = None) -> None:
        changed = self.state.is_leader
        epoch_changed = epoch != self.state.epoch
        self.state.is_leader = False
        self.state.leader = leader
        self.state.epoch = epoch
        self.state.extra["since"] = since
        if changed:
            self.state.transitions += 1
        if changed or epoch_changed:
            self.observer.leader_changed(False, epoch)  # followers export the epoch they see too

    # ---- leader ----------------------------------------------------------------------------

    async def _lead_term(self, term: Term, lead: LeadFn) -> None:
        self.term = term
        self.state.is_leader = True
        self.state.leader = self.node_id
        self.state.epoch = term.epoch
        self.state.since = term.since
        self.state.transitions += 1
        self.observer.leader_changed(True, term.epoch)
        log.info("election: became leader", extra={"epoch": term.epoch, "event": "leader_acquired",
                                                   "backend": self.backend})
        reason = "stopped"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._renewals(term), name="election-renew")
                tg.create_task(lead(term), name="leader-duties")
        except* LeaseLost as eg:
            reason = str(eg.exceptions[0])
        finally:
            term.lost.set()
            self.term = None
            self._set_follower(None, term.epoch)
            log.warning("election: stepped down", extra={"epoch": term.epoch, "reason": reason,
                                                          "event": "leader_stepped_down"})

    async def _renewals(self, term: Term) -> None:
        try:
            await self._keep_term(term)
        finally:
            # Set before the duties are cancelled: a duty that missed its cancellation still ends
            # when it sees the term lost, instead of keeping this node "leader" forever.
            term.lost.set()

    async def _keep_term(self, term: Term) -> None:
        """Renew every `renew_period` until the term cannot be kept; raise LeaseLost then."""
        cfg = self.config
        while True:
            # wake for the next renew, or at the deadline if that comes first
            await wait_event(term.lost, max(0.0, min(cfg.renew_period, term.deadline - self.clock.monotonic())))
            if term.lost.is_set():
                raise LeaseLost(self.lock.lost_reason or "released")
            if self.clock.monotonic() >= term.deadline:
                raise LeaseLost("deadline passed before a renew")
            await self._renew_once(term)
            if self.clock.monotonic() >= term.deadline:
                raise LeaseLost("deadline passed")

    async def _renew_once(self, term: Term) -> None:
        cfg = self.config
        retried = False
        while True:
            sent = self.clock.monotonic()
            try:
                # never wait for a reply past the deadline: the term ends there, not a timeout later
                counts = await within(max(0.001, min(cfg.renew_timeout, term.deadline - sent)), self.lock.renew(term))
            except REDIS_DROPPED as e:
                self.observer.redis_error("election")
                if retried:
                    raise LeaseLost(f"connection to Redis lost: {e}") from None
                retried = True
                continue
            except REDIS_FAILURES:
                self.observer.redis_error("election")
                if self.clock.monotonic() >= term.deadline:
                    raise LeaseLost("renew timed out past the deadline") from None
                return
            if term.lost.is_set():
                raise LeaseLost(self.lock.lost_reason or "released")
            if counts:
                term.deadline = sent + cfg.lease - cfg.margin
            return

    async def release(self) -> None:
        """Give up leadership now (SIGTERM): release the lock, wake the candidates, end the session."""
        self._stopping = True
        self.lock.stop()
        term = self.term
        if term is not None:
            self.lock.lost_reason = "released"
            term.lost.set()
            if await self.lock.release(term, shutdown=True):
                log.info("election: released leadership", extra={"epoch": term.epoch, "event": "leader_released"})
        await self.lock.close()

    def stop(self) -> None:
        self._stopping = True
        self.lock.stop()
