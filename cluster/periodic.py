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

import asyncio
import datetime as dt
import logging
import math
from typing import TYPE_CHECKING, Any

from .aio import wait_event
from .badkeys import BadKeys
from .clock import Clock, RedisClock
from .election.base import Term
from .keys import Keys
from .leader import fenced
from .observe import Observer
from .redis_errors import ResponseError
from .scripts import Scripts
from .task import Registry, Task
from .wire import encode_job

if TYPE_CHECKING:
    from redis.asyncio import Redis

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
    from zoneinfo import ZoneInfo  # here: croniter (dateutil, ctypes) only where a task has a cron

    from croniter import croniter

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


def period(t: Task, slot: float) -> float:
    """How long after `slot` the task's next slot comes (its frequency, or the cron gap)."""
    return float(t.frequency) if t.frequency else next_slot(t, slot) - slot


def next_slot(t: Task, after: float) -> float:
    if t.frequency:
        f = float(t.frequency)
        return (math.floor(after / f) + 1) * f
    assert t.cron is not None
    from zoneinfo import ZoneInfo

    from croniter import croniter

    it = croniter(t.cron, dt.datetime.fromtimestamp(after, ZoneInfo(t.timezone)))
    return float(it.get_next(float))


class PeriodicEnqueuer:
    name = "periodic"

    def __init__(self, *, redis: Redis, keys: Keys, clock: Clock, observer: Observer, registry: Registry,
                 audit: bool = False, max_sleep: float = 1.0) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)
        self.clock = RedisClock(clock)  # slots are judged on Redis' clock, never this host's
        self.observer = observer
        self.bad_keys = BadKeys(keys, observer)
        self.tasks = registry.periodic()
        self.audit = audit
        self.max_sleep = max_sleep

    async def run(self, term: Term) -> None:
        if not self.tasks:
            await term.lost.wait()
            return
        started = await self.clock.sync(self.redis)
        last: dict[str, float] = {}
        for t in self.tasks:
            # No record (a new task, or Redis lost its data): start from the next slot after this
            # term began, so an occurrence enqueued before the loss is never enqueued again.
            last[t.name] = self._heal(t, await self._recorded(t), started)
        while not term.lost.is_set():
            await self.clock.fresh(self.redis)
            now = self.clock.time()
            for t in self.tasks:
                await self._fire_due(term, t, last, now)
            # the wake-up comes from the same reading as the due slots: a slot that falls between
            # two readings is then fired on the next pass instead of a period late
            wake = min(next_slot(t, now) for t in self.tasks)
            delay = min(self.max_sleep, max(0.0, wake - self.clock.time()))
            await wait_event(term.lost, delay)

    async def _recorded(self, t: Task) -> str | None:
        key = self.keys.periodic(t.name)
        try:
            raw = await self.redis.hget(key, "last")
        except ResponseError:  # not a hash: reported; the claim script refuses it too (BADKEY)
            self.bad_keys.report(key, str(await self.redis.type(key)), where="periodic", expected="hash")
            return None
        return None if raw is None else str(raw)

    def _heal(self, t: Task, raw: object, now: float) -> float:
        """The last claimed slot of `t` as recorded, or `now` when there is none or it is bogus: a
        slot more than one period after Redis' now was written by a clock running ahead (or
        Redis' clock stepped back since); trusting it would silence the task until then."""
        if raw is None:
            return now
        try:
            value = float(str(raw))
        except ValueError:
            value = math.inf
        if math.isfinite(value) and value <= now + period(t, now):
            return value
        log.warning("periodic: the task's record holds a last slot in the future; ignoring it", extra={
            "event": "periodic_record_healed", "task": t.name, "recorded_slot": str(raw)[:40],
            "redis_now": round(now, 3)})
        return now

    def due_slots(self, t: Task, last: float, now: float) -> list[float]:
        """The slots to claim after `last` (the last claimed slot, or when the term began)."""
        window = t.catch_up_window
        if t.missed == "skip":
            due = slots_between(t, max(last, now - max(window, float(t.frequency or 0)) - 1), now)
            return due[-1:]
        return [s for s in slots_between(t, last, now) if now - s <= window]

    async def _claim(self, term: Term, t: Task, slot: float, payload: str) -> tuple[list[Any], int]:
        """Run periodic_claim; a slot Redis' clock says is not due yet (our estimate of it ran a
        little ahead) is waited for on Redis' clock and claimed again, not left for the next pass.
        Returns the reply and how many times the slot was refused as EARLY first."""
        early = 0
        for _ in range(3):
            sent = self.clock.monotonic()
            res = await fenced(
                self.scripts, "periodic_claim",
                [self.keys.corral_lock, self.keys.audit, self.keys.periodic(t.name), self.keys.queues,
                 self.keys.queue(t.queue), self.keys.qtimes(t.queue), self.keys.members],
                [repr(slot), payload, t.queue, self.keys.wake_channel, t.overlap, t.name, self.keys.namespace + ":",
                 repr(period(t, slot))],
                term, self.observer, self.audit,
            )
            self.clock.observe(float(res[1]), sent, self.clock.monotonic())
            if res[0] != "EARLY":
                break
            early += 1
            await asyncio.sleep(min(1.0, max(0.0, slot - float(res[1]))) + 0.001)
        return res, early

    async def _fire_due(self, term: Term, t: Task, last: dict[str, float], now: float) -> None:
        due = self.due_slots(t, last[t.name], now)
        prev = last[t.name]
        if not due and now - prev > t.catch_up_window:
            # Everything since the last claim is older than the catch-up window: skipped. Move the
            # local marker on (the Redis record moves with the next claim) so we stop rescanning.
            newest = slots_between(t, max(prev, now - t.catch_up_window - 1), now)
            if not newest:
                last[t.name] = now - t.catch_up_window
        for slot in due:
            if slot <= last[t.name]:
                continue
            payload = encode_job(t.name, t.queue, [{}])
            res, early = await self._claim(term, t, slot, payload)
            status, redis_now = res[0], float(res[1])
            if status in ("OK", "SKIPPED") and res[2]:
                log.warning("periodic: the task's record held a last slot in the future; replaced", extra={
                    "event": "periodic_record_healed", "task": t.name, "recorded_slot": str(res[2])[:40],
                    "slot": slot, "redis_now": round(redis_now, 3)})
            if status == "OK":
                lateness = redis_now - slot
                self.observer.periodic_enqueued(t.name, lateness)
                # where a late occurrence lost its time: this pass woke `woke_ms` after the slot (the
                # host's share, on our estimate of Redis' clock); the rest is the claim's round trip
                # and any EARLY refusal waited out (`early`)
                log.info("periodic: enqueued occurrence", extra={
                    "event": "periodic_enqueued", "task": t.name, "queue": t.queue, "slot": slot,
                    "lateness_ms": round(lateness * 1000, 1), "woke_ms": round((now - slot) * 1000, 1),
                    "early": early})
                last[t.name] = slot
            elif status == "DUP":
                last[t.name] = self._heal(t, res[2], redis_now)
            elif status == "SKIPPED":
                log.info("periodic: occurrence skipped, previous still queued or running",
                         extra={"event": "periodic_skipped", "task": t.name, "slot": slot})
                last[t.name] = slot
            elif status == "EARLY":  # still early after waiting for it on Redis' clock: next pass
                return
            elif status == "BADKEY":
                key, _, type_ = str(res[2]).partition("\t")
                self.bad_keys.report(key, type_, where="periodic")
                return
            elif status == "PAUSED":
                return
