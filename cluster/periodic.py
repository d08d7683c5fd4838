"""Periodic tasks, leader only: compute each task's occurrences (slots) and claim each one
once, in the same fenced script that enqueues it.

A slot is the nominal fire time: multiples of `frequency` since the epoch (fixed rate, aligned,
so every node computes the same slots), or the cron expression's times in its time zone. The
per-task record `corral:periodic:<task>` keeps the last claimed slot; a slot at or before it is
refused inside the script, so any number of nodes, restarts and leader changes give one enqueue
per occurrence. Completion of a run never carries the schedule: failures, kills and locks
cannot stop it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from zoneinfo import ZoneInfo

from croniter import croniter
from redis.asyncio import Redis

from .aio import wait_event
from .clock import Clock
from .election.base import Term
from .keys import Keys
from .leader import fenced
from .observe import Observer
from .scripts import Scripts
from .task import Registry, Task
from .wire import encode_job

log = logging.getLogger("corral.periodic")


def slots_between(t: Task, after: float, until: float, limit: int = 1000) -> list[float]:
    """Slots s with after < s <= until, oldest first (at most `limit`, the newest kept)."""
    if until <= after:
        return []
    if t.frequency:
        f = float(t.frequency)
        first = math.floor(after / f) + 1
        last = math.floor(until / f + 1e-9)
        ks = range(max(first, last - limit + 1), last + 1)
        return [round(k * f, 6) for k in ks]
    assert t.cron is not None
    tz = ZoneInfo(t.timezone)
    it = croniter(t.cron, dt.datetime.fromtimestamp(after, tz))
    out: list[float] = []
    while True:
        s = float(it.get_next(float))
        if s > until:
            break
        out.append(s)
        if len(out) > limit:
            out.pop(0)
    return out


def next_slot(t: Task, after: float) -> float:
    if t.frequency:
        f = float(t.frequency)
        return (math.floor(after / f) + 1) * f
    assert t.cron is not None
    it = croniter(t.cron, dt.datetime.fromtimestamp(after, ZoneInfo(t.timezone)))
    return float(it.get_next(float))


class PeriodicEnqueuer:
    name = "periodic"

    def __init__(self, *, redis: Redis, keys: Keys, clock: Clock, observer: Observer, registry: Registry,
                 audit: bool = False, max_sleep: float = 1.0) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)
        self.clock = clock
        self.observer = observer
        self.tasks = registry.periodic()
        self.audit = audit
        self.max_sleep = max_sleep

    async def run(self, term: Term) -> None:
        if not self.tasks:
            await term.lost.wait()
            return
        started = self.clock.time()
        last: dict[str, float | None] = {}
        for t in self.tasks:
            raw = await self.redis.hget(self.keys.periodic(t.name), "last")
            # No record (a new task, or Redis lost its data): start from the next slot after this
            # term began, so an occurrence enqueued before the loss is never enqueued again.
            last[t.name] = float(raw) if raw is not None else started
        while not term.lost.is_set():
            now = self.clock.time()
            for t in self.tasks:
                await self._fire_due(term, t, last, now)
            # the wake-up comes from the same reading as the due slots: a slot that falls between
            # two readings is then fired on the next pass instead of a period late
            wake = min(next_slot(t, now) for t in self.tasks)
            delay = min(self.max_sleep, max(0.0, wake - self.clock.time()))
            await wait_event(term.lost, delay)

    def due_slots(self, t: Task, last: float | None, now: float) -> list[float]:
        window = t.catch_up_window
        if last is None or t.missed == "skip":
            due = slots_between(t, max(last or -1.0, now - max(window, float(t.frequency or 0)) - 1), now)
            return due[-1:]
        return [s for s in slots_between(t, last, now) if now - s <= window]

    async def _fire_due(self, term: Term, t: Task, last: dict[str, float | None], now: float) -> None:
        due = self.due_slots(t, last[t.name], now)
        prev = last[t.name]
        if not due and prev is not None and now - prev > t.catch_up_window:
            # Everything since the last claim is older than the catch-up window: skipped. Move the
            # local marker on (the Redis record moves with the next claim) so we stop rescanning.
            newest = slots_between(t, max(prev, now - t.catch_up_window - 1), now)
            if not newest:
                last[t.name] = now - t.catch_up_window
        for slot in due:
            if last[t.name] is not None and slot <= (last[t.name] or 0):
                continue
            payload = encode_job(t.name, t.queue, [{}])
            res = await fenced(
                self.scripts, "periodic_claim",
                [self.keys.corral_lock, self.keys.audit, self.keys.periodic(t.name), self.keys.queues,
                 self.keys.queue(t.queue), self.keys.qtimes(t.queue), self.keys.members],
                [repr(slot), payload, t.queue, self.keys.wake_channel, t.overlap, t.name, self.keys.namespace + ":"],
                term, self.observer, self.audit,
            )
            status = res[0]
            if status == "OK":
                lateness = self.clock.time() - slot
                self.observer.periodic_enqueued(t.name, lateness)
                log.info("periodic: enqueued occurrence", extra={
                    "event": "periodic_enqueued", "task": t.name, "queue": t.queue, "slot": slot,
                    "lateness_ms": round(lateness * 1000, 1)})
                last[t.name] = slot
            elif status == "DUP":
                raw = await self.redis.hget(self.keys.periodic(t.name), "last")
                last[t.name] = float(raw) if raw is not None else slot
            elif status == "SKIPPED":
                log.info("periodic: occurrence skipped, previous still queued or running",
                         extra={"event": "periodic_skipped", "task": t.name, "slot": slot})
                last[t.name] = slot
            elif status == "PAUSED":
                return
