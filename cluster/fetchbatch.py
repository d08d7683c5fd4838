"""The arguments and replies of `fetch.lua`: the acks and fetches of several slots of one node in
one script call (the KEYS / ARGV layout is the script's header).

A slot's record names its own keys (worker, stats, idle zset) and its queues; every key goes into
KEYS once and records refer to it by index, so a batch of 64 slots on one queue sends that queue's
keys once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .keys import Keys
from .wire import js_date


@dataclass(slots=True)
class SlotKeys:
    """The keys one slot's records always name: worker:<name>, its :started, its two stats, the
    idle zset of its queue spec."""

    worker: str
    started: str
    processed: str
    failed: str
    idle: str


@dataclass(slots=True)
class SlotCall:
    slot: int
    keys: SlotKeys
    worker: str  # resque worker name
    exec_id: str  # the execution id a fetched job is recorded under (reused on a retry)
    fetch: bool
    queues: Sequence[str]  # priority order; empty: ack only
    parked_besides: bool  # another slot of the node stays parked on the same spec
    ack_exec: str = ""  # "" = nothing to ack
    ack_kind: str = ""
    ack_entry: str = ""


@dataclass(slots=True)
class SlotReply:
    status: str  # OK | LOST | NONE | BADFAILED
    queue: str | None
    payload: str | None
    enqueued_ms: float | None
    left: int  # jobs left in the queue the job came from
    not_member: bool


class FetchCall:
    """Builds one call of fetch.lua for a batch of slot records."""

    def __init__(self, keys: Keys, node_id: str, failed_max: int) -> None:
        self.keys = keys
        self.node_id = node_id
        self.failed_max = failed_max
        self._fixed = [keys.inflight(node_id), keys.stat("processed"), keys.stat("failed"), keys.failed,
                       keys.recovered, keys.members]
        self._queue_keys: dict[str, tuple[str, str]] = {}

    def slot_keys(self, worker_id: str, worker_name: str, spec: str) -> SlotKeys:
        k = self.keys
        return SlotKeys(k.worker(worker_id), k.worker_started(worker_id), k.stat("processed", worker_name),
                        k.stat("failed", worker_name), k.idle(spec))

    def _qkeys(self, q: str) -> tuple[str, str]:
        pair = self._queue_keys.get(q)
        if pair is None:
            if len(self._queue_keys) > 10_000:  # `*` slots over many short-lived queue names
                self._queue_keys.clear()
            pair = self._queue_keys[q] = (self.keys.queue(q), self.keys.qtimes(q))
        return pair

    def build(self, calls: Sequence[SlotCall], now: float) -> tuple[list[str], list[Any]]:
        keys = list(self._fixed)
        index: dict[str, int] = {}

        def ix(key: str) -> int:
            i = index.get(key)
            if i is None:
                keys.append(key)
                i = index[key] = len(keys)  # Lua's 1-based index
            return i

        args: list[Any] = [self.failed_max, self.node_id, js_date(now), int(now), len(calls)]
        for c in calls:
            sk = c.keys
            queues = c.queues if c.fetch else ()
            args += [c.slot, c.ack_exec, c.ack_kind, c.ack_entry, "1" if c.fetch and queues else "0", c.exec_id,
                     c.worker, "1" if c.parked_besides else "0", ix(sk.worker), ix(sk.started), ix(sk.processed),
                     ix(sk.failed), ix(sk.idle), len(queues)]
            for q in queues:
                qk, qt = self._qkeys(q)
                args += [q, ix(qk), ix(qt)]
        return keys, args


def parse(res: Any, n: int) -> tuple[str | None, list[SlotReply]]:
    """(bad key lines or None, one reply per record). A reply of the wrong shape is an error, not a
    guess: the caller treats it like a failed call (each slot retries with the same execution id)."""
    if not isinstance(res, list) or len(res) != n + 1:
        raise ValueError(f"fetch.lua answered {res!r:.200} for {n} records")
    replies = []
    for r in res[1:]:
        replies.append(SlotReply(r[0], r[1] or None, r[2] if r[2] is not None else None,
                                 float(r[3]) if r[3] else None, int(r[4] or 0), r[5] == "NOTMEMBER"))
    return (str(res[0]) if res[0] else None), replies
