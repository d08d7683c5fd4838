"""What every election backend shares: timing config, the term, and the node's view of it.

A term is a scope. The backend calls `lead(term)` when this node wins and cancels it, before any
further write, when the lease cannot be renewed by `term.deadline` (local monotonic clock,
counted from when the last good renew was *sent*). Leases alone never make one leader: every
leader write also passes `term.token` to a Lua script that refuses it unless the lock still holds
that token (fencing), so a paused or partitioned ex-leader cannot write.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..clock import Clock
from ..errors import ConfigError, LeaseLost
from ..observe import Observer

LeadFn = Callable[["Term"], Coroutine[Any, Any, None]]
# acquire.lua's lock value while a new Redis run waits out the previous run's leases: nobody leads
LOCK_DELAY_PREFIX = "corral-lock-delay/"
log = logging.getLogger("corral.election")


@dataclass(frozen=True)
class ElectionConfig:
    """Lease timing, seconds. ``ElectionConfig(lease=5.0, renew_period=1.0, renew_timeout=0.5, margin=1.5)``

    The leader stops at `last renew sent + lease - margin`; Redis expires the lock no sooner than
    `lease` after that renew arrived, so successors start at least `margin` after it stopped.
    """

    lease: float = 5.0
    renew_period: float = 1.0
    renew_timeout: float = 0.5
    margin: float = 1.5
    retry_period: float = 0.5
    # > 0: a renew extends the term only once `WAIT wait_replicas` confirms that many replicas have
    # it (Sentinel: a leader isolated with the old primary stops at its deadline, docs/FAULTS.md F8b)
    wait_replicas: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.wait_replicas, bool) or not isinstance(self.wait_replicas, int) or self.wait_replicas < 0:
            raise ConfigError(f"election wait_replicas must be a whole number >= 0, got {self.wait_replicas!r}")
        for name in ("lease", "renew_period", "renew_timeout", "margin", "retry_period"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ConfigError(f"election {name} must be a positive number of seconds, got {v!r}")
        if not self.lease - self.margin > self.renew_period + self.renew_timeout:
            raise ConfigError(
                f"election timing: lease - margin ({self.lease} - {self.margin}) must exceed "
                f"renew_period + renew_timeout ({self.renew_period} + {self.renew_timeout})"
            )
        if self.retry_period >= self.lease:
            raise ConfigError(f"election retry_period ({self.retry_period}) must be below the lease ({self.lease})")

    @property
    def lease_ms(self) -> int:
        return int(self.lease * 1000)

    @property
    def deadline_ms(self) -> int:
        """`lease - margin` in ms: the longest a leader acts after its last renew was sent (a new
        Redis run keeps a restored lock at least this long, acquire.lua)."""
        return math.ceil((self.lease - self.margin) * 1000)


def parse_token(token: str) -> tuple[str, int | None]:
    """`<node>/<epoch>/<rand>` -> (node, epoch); a foreign holder (node-resque) -> (value, None)."""
    parts = token.rsplit("/", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return token, None


@dataclass
class Term:
    """This node's leadership term: pass `token`/`epoch` to fenced scripts; check `valid()` first."""

    node: str
    token: str
    epoch: int
    since: float
    deadline: float
    clock: Clock
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    # set while node-resque's lock (delayed promotion) holds this term's token too
    promotes: asyncio.Event = field(default_factory=asyncio.Event)
    parent: Term | None = None  # a scope inside a term (promotion) ends with it, not the reverse

    def valid(self) -> bool:
        if self.lost.is_set():
            return False
        if self.parent is not None:
            return self.parent.valid()
        return self.clock.monotonic() < self.deadline

    def scope(self) -> Term:
        """A part of this term (delayed promotion) that can end alone: its STALE ends it, not the term."""
        return Term(node=self.node, token=self.token, epoch=self.epoch, since=self.since, deadline=self.deadline,
                    clock=self.clock, parent=self)

    def fenced_args(self, audit: bool) -> list[Any]:
        return [self.token, "1" if audit else "0", self.epoch]


@dataclass
class ElectionState:
    """The node's view, served by /leader: who leads, since when, and this node's own term."""

    node: str
    backend: str
    is_leader: bool = False
    leader: str | None = None
    epoch: int = 0
    since: float | None = None
    transitions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ElectorBase:
    """The term scope both backends share: become leader, run the duties next to the backend's
    renewals (`_keep_term`), and step down the moment either ends."""

    backend: str
    node_id: str
    state: ElectionState
    clock: Clock
    observer: Observer
    term: Term | None

    async def _keep_term(self, term: Term) -> None:
        """Renew until the term cannot be kept; raise LeaseLost then."""
        raise NotImplementedError

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
