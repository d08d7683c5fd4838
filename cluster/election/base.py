"""What every election backend shares: timing config, the term, the node's view of it, and the
two interfaces: `LeaderLock` (what a backend implements) and `Contender` (what a node uses).

A term is a scope. The elector (elector.py) calls `lead(term)` when this node wins and cancels it,
before any further write, when the lease cannot be renewed by `term.deadline` (local monotonic
clock, counted from when the last good renew was *sent*). Leases alone never make one leader: every
leader write also passes `term.token` to a Lua script that refuses it unless the lock still holds
that token (fencing), so a paused or partitioned ex-leader cannot write.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..aio import within
from ..clock import Clock
from ..errors import ConfigError
from ..keys import Keys
from ..scripts import Scripts

LeadFn = Callable[["Term"], Coroutine[Any, Any, None]]
# what a lock reports of the holder it sees: (leader or None, its epoch or None = unknown, since)
SeenFn = Callable[[str | None, int | None, float | None], None]
# acquire.lua's lock value while a new Redis run waits out the previous run's leases: nobody leads
LOCK_DELAY_PREFIX = "corral-lock-delay/"


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


def lock_holder(token: str, info: Mapping[str, Any] | None) -> tuple[str, int | None, float | None]:
    """Who holds a lock whose value is `token`: (node, epoch, since) from the `corral:leader`
    record if it is that term's, else what the token itself says (no `since`)."""
    if info and info.get("token") == token:
        return str(info["node"]), int(info["epoch"]), float(info["since"])
    node, epoch = parse_token(token)
    return node, epoch, None


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


class HasDeadline(Protocol):
    @property
    def deadline(self) -> float: ...


class Contender(Protocol):
    """What a node reads and drives of whoever contends for it: an elector in this process
    (elector.py) or the leader process that runs one in a child (node/leader/supervisor.py)."""

    @property
    def state(self) -> ElectionState: ...
    @property
    def term(self) -> HasDeadline | None: ...
    async def release(self) -> None: ...
    def stop(self) -> None: ...


class LeaderLock(Protocol):
    """One backend's lock, as client-go's resourcelock.Interface is to its LeaderElector: the
    elector loop (elector.py) runs over it. Redis calls raise cluster.aio's REDIS_FAILURES;
    a lock found held by another token raises LeaseLost."""

    backend: str
    node_id: str
    scripts: Scripts
    extra: dict[str, Any]  # what the backend adds to the node's view (ElectionState.extra)
    lost_reason: str | None  # why the backend set `term.lost` (None: released)

    async def open(self, seen: SeenFn) -> None:
        """Start contending: `seen` takes every holder the lock observes while this node follows."""

    async def acquire(self) -> Term | None:
        """One attempt: a new term, or None once the backend's retry wait is over."""

    async def renew(self, term: Term) -> bool:
        """Extend the lock for `term`: True when it counts (the caller moves the deadline)."""

    async def release(self, term: Term, *, shutdown: bool) -> bool:
        """After `term` ended (`shutdown`: a graceful stop): give the lock up; True to log it."""

    async def observe(self) -> None:
        """Run while the elector runs: keep the follower's view (`seen`), wake the candidate."""

    def stop(self) -> None:
        """Stop contending: no new attempt, a pending one cancelled."""

    async def close(self) -> None:
        """End the backend's session (bounded, idempotent)."""


async def release_token(scripts: Scripts, keys: Keys, token: str, limit: float) -> Any:
    """Compare-and-delete Corral's lock (and node-resque's, with our token) and wake the candidates."""
    return await within(limit, scripts.run("release", [keys.corral_lock, keys.leader, keys.leader_lock],
                                           [token, keys.released_channel]))
