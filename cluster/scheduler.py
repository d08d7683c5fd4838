"""Delayed-job promotion, leader only: sleep until the earliest due second, then move due jobs
to their queues in fenced batches (one Lua script per batch, no pop-then-push window).

The leader is woken early by `corral:delayed_wake` when a Corral producer schedules an earlier
second, and re-reads the schedule at least every `reread` seconds for producers that do not
publish (node-resque, Ruby). Jobs whose task has enqueue plugins are staged, their hooks run
here, then they are queued or dropped (`unstage.lua`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .aio import wait_event
from .badkeys import BadKeys
from .clock import Clock, RedisClock
from .election.base import Term
from .enqueuer import Enqueuer
from .keys import Keys
from .leader import fenced
from .observe import Observer
from .plugins import EnqueueGuard, PluginContext, enqueue_checks, guard_script_args, runs_own_enqueue_hook
from .redis_errors import ResponseError
from .scripts import Scripts
from .task import Registry
from .wire import decode_job, js_date

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.scheduler")


class Scheduler:
    name = "scheduler"

    def __init__(self, *, redis: Redis, keys: Keys, clock: Clock, observer: Observer, registry: Registry,
                 client: Enqueuer, batch: int = 1000, reread: float = 1.0, audit: bool = False,
                 hook_redis: Callable[[], Redis] | None = None) -> None:
        """`hook_redis()`: the client enqueue plugins get as `ctx.redis` while a job is promoted
        (default `redis`; the leader process, whose duties run on `cluster/resp.py`, gives plugins
        a redis-py client, built on first need, as their hooks are written against it)."""
        self.redis = redis
        self.hook_redis = hook_redis
        self.keys = keys
        self.scripts = Scripts(redis)
        self.clock = RedisClock(clock)  # due seconds are judged on Redis' clock, never this host's
        self.observer = observer
        self.bad_keys = BadKeys(keys, observer)
        self.registry = registry
        self.client = client
        self.batch = batch
        self.reread = reread
        self.audit = audit
        self.wake = asyncio.Event()
        self.staged_tasks = [t.name for t in registry if t.has_enqueue_hooks()]

    def notify(self, _msg: str = "") -> None:
        self.wake.set()

    async def run(self, term: Term) -> None:
        await self.clock.sync(self.redis)
        while not term.lost.is_set():
            self.wake.clear()
            started = self.clock.monotonic()
            next_due = await self.tick(term)
            await self._sleep(next_due, self.clock.monotonic() - started)

    async def _sleep(self, next_due: float, tick: float) -> None:
        """Until the next due second, a wake-up, or at most `reread` (+ one tick) for a re-read.

        Each tick costs round trips (`tick` seconds, the last one's): a re-read still in flight
        when the next second falls due would make that second late by them, so within
        `reread + tick` of it the leader sleeps straight to it. A timer that fires a little early
        (uvloop's are ms-granular, on the cached loop time) is slept out: a tick sent before the
        due second promotes nothing and costs a round trip (milliseconds on loopback, the whole
        latency on a slow link)."""
        if next_due < 0 or next_due - self.clock.time() > self.reread + tick:
            await wait_event(self.wake, self.reread)
            return
        while (rest := next_due - self.clock.time()) > 0:
            if await wait_event(self.wake, rest):
                return

    async def tick(self, term: Term) -> float:
        """Promote everything due now; returns the next due second (-1 if none)."""
        while True:
            sent = self.clock.monotonic()
            sent_at = self.clock.time()  # our estimate of Redis' clock as the call leaves
            res = await fenced(
                self.scripts, "promote",
                [self.keys.leader_lock, self.keys.audit, self.keys.delayed_schedule, self.keys.queues,
                 self.keys.promoting, self.keys.failed],
                ["", self.batch, self.keys.namespace + ":", self.keys.wake_channel, js_date(self.clock.time()),
                 *self.staged_tasks],
                term, self.observer, self.audit,
            )
            moved, staged, next_due, buckets = int(res[1]), int(res[2]), float(res[3]), str(res[4])
            now = float(res[5])  # Redis' TIME inside the script: what "due" was judged by
            self.clock.observe(now, sent, self.clock.monotonic())
            self.bad_keys.report_lines(res[6], where="scheduler")
            if moved or staged:
                lateness = []
                oldest = now
                for b in buckets.split(","):
                    ts, _, n = b.partition(":")
                    lateness += [now - float(ts)] * int(n)
                    oldest = min(oldest, float(ts))
                self.observer.promoted(moved + staged, lateness)
                # sent_ms: how long after its oldest due second the call left (the host's share of
                # the lateness, on our estimate of Redis' clock); the rest is the round trip
                log.info("scheduler: promoted delayed jobs", extra={
                    "event": "promoted", "count": moved + staged, "buckets": buckets,
                    "lateness_ms": round(max(lateness) * 1000, 1) if lateness else 0,
                    "sent_ms": round((sent_at - oldest) * 1000, 1)})
            if staged or await self._staging_left():
                await self._run_staged(term)
            if moved + staged < self.batch:
                return next_due
            await asyncio.sleep(0)  # let the loop breathe between batches of a backlog

    async def _staging_left(self) -> int:
        try:
            return int(await self.redis.llen(self.keys.promoting))
        except ResponseError:  # not a list: reported by promote.lua's reply, nothing staged there
            return 0

    async def _run_staged(self, term: Term) -> None:
        for item in await self.redis.lrange(self.keys.promoting, 0, 999):
            payload = str(item)
            push = True
            queue = "default"
            guards: list[EnqueueGuard] = []
            try:
                job = decode_job(payload)
                queue = job.queue or "default"
                t = self.registry.find(job.task)
                plugins = [p for p in t.plugin_instances() if p.has_enqueue_hooks] if t else []
                hook_code = any(runs_own_enqueue_hook(p) for p in plugins)
                hook_redis = self.hook_redis() if hook_code and self.hook_redis else self.redis
                ctx = PluginContext(hook_redis, self.keys, self.scripts, job.task, queue, job.args, payload,
                                    client=self.client)
                # built-in hooks become guards that unstage.lua applies with the move (issue 20.1)
                push, guards = await enqueue_checks(plugins, ctx)
            except Exception:
                log.exception("scheduler: enqueue hook failed; queueing the job anyway")
            gkeys, gargs = guard_script_args(guards)
            res = await fenced(self.scripts, "unstage",
                               [self.keys.leader_lock, self.keys.audit, self.keys.promoting, self.keys.queues,
                                self.keys.queue(queue), self.keys.qtimes(queue), self.keys.failed, *gkeys],
                               [payload, "push" if push else "drop", queue, self.keys.wake_channel,
                                js_date(self.clock.time()), *gargs],
                               term, self.observer, self.audit)
            if res[0] == "BADKEY" or len(res) > 3:  # a key of the wrong type (the job failed, or stays staged)
                self.bad_keys.report_lines(str(res[1] if res[0] == "BADKEY" else res[3]), where="scheduler")
            push = push and res[0] == "OK" and res[2] == "pushed"
            if not push:
                log.info("scheduler: enqueue plugin dropped a promoted job", extra={"event": "promotion_dropped",
                                                                                    "payload": payload[:200]})

