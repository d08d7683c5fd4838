"""The worker pool: all worker slots of one node (node/slot.py) and what they share: the batched
ack+fetch calls (node/fetch_batcher.py), the job runner (node/perform.py), the queue list of `*`
slots, wake-ups, the capacity gate, and the supervisor that restarts a slot that ends or crashes.

Steady state costs one Redis round trip per job: the ack of a job and the fetch of the next are
one Lua script (`fetch.lua`), which also records the fetched job in the node's in-flight hash.
An idle slot waits for a `corral:wake` message naming one of its queues (Corral producers publish
one per enqueue) or for `poll_interval` (producers that do not publish), whichever comes first.

A job's task is confined: whatever it raises (an exception, `CancelledError`, `SystemExit`) fails
that job and the slot goes on; only the node's own shutdown cancels a job (then pushed back).
A slot that keeps crashing makes `/healthz` fail (`WorkerPool.health_problem`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from redis.asyncio.client import Redis

from cluster.activequeues import ActiveQueues
from cluster.aio import REDIS_FAILURES
from cluster.badkeys import BadKeys
from cluster.client import Client
from cluster.clock import Clock
from cluster.fetchbatch import FetchCall
from cluster.keys import Keys
from cluster.observe import Observer
from cluster.rawconn import FastScript
from cluster.scripts import Scripts
from cluster.task import Registry

from .executor import Executor
from .fetch_batcher import FetchBatcher
from .perform import JobRunner
from .slot import Slot
from .waiters import Waiters

log = logging.getLogger("corral.worker")

__all__ = ["CRASH_LOOP", "Slot", "WorkerPool"]

CRASH_LOOP = 3  # consecutive crashes of one slot that make /healthz fail


class WorkerPool:
    """All slots of one node plus what they share (queue list cache, wake-ups, counters)."""

    def __init__(self, *, redis: Redis, keys: Keys, registry: Registry, executor: Executor, client: Client,
                 node_id: str, queue_specs: Sequence[str], concurrency: int, clock: Clock, observer: Observer,
                 poll_interval: float = 0.5, failed_max: int = 0, fast_fetch: FastScript | None = None) -> None:
        self.redis, self.keys, self.scripts, self.node_id = redis, keys, Scripts(redis), node_id
        self.clock, self.observer, self.poll_interval = clock, observer, poll_interval
        self.executor = executor
        self.runner = JobRunner(redis, keys, self.scripts, registry, executor, client, clock, observer, node_id)
        self.fast_fetch = fast_fetch  # the hot path's own RESP connections (cluster/rawconn.py)
        self.fetch_call = FetchCall(keys, node_id, failed_max)
        self.parked_on: dict[str, int] = {}  # parked slots per queue spec
        self.stopping = False
        self.busy = 0
        n = len(queue_specs) * concurrency
        self.slots = [Slot(self, i, queue_specs[i // concurrency]) for i in range(n)]
        self._capacity = Waiters()
        self._capacity_timer: asyncio.TimerHandle | None = None
        self.bad_keys = BadKeys(keys, observer)
        self.active_queues = ActiveQueues(redis, keys, self.scripts, self.bad_keys)
        run = fast_fetch.run if fast_fetch is not None else functools.partial(self.scripts.run, "fetch")
        self.batcher = FetchBatcher(self.fetch_call, run, clock,
                                    functools.partial(self.bad_keys.report_lines, where="worker"))
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    @property
    def workers(self) -> list[tuple[str, str]]:
        return [(s.name, s.spec) for s in self.slots]

    def on_wake(self, queue: str) -> bool:
        """A producer queued work on `queue`: wake one parked slot that serves it. Returns whether
        one was found."""
        self.active_queues.add(queue)
        return self.wake_more(queue, 1) > 0

    def wake_more(self, queue: str, n: int) -> int:
        """Wake up to `n` parked slots serving `queue` (a fetch left `n` jobs there: their fetches
        share the next call, rather than one per round trip). Returns how many were woken."""
        if not self.parked_on.get(queue) and not self.parked_on.get("*"):
            return 0
        woken = 0
        for s in self.slots:
            if woken >= n:
                break
            if s.parked and (s.spec == queue or s.spec == "*") and not s.wake.is_set():
                s.wake.set()
                woken += 1
        return woken

    def on_targeted_wake(self, queue: str) -> None:
        """An enqueuer picked this node from the idle zset for one job. With no parked slot left
        (they all got work since), pass the wake-up on to every node rather than let the job wait
        for a poll."""
        if not self.on_wake(queue) and not self.stopping:
            task = asyncio.get_running_loop().create_task(self._broadcast_wake(queue))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _broadcast_wake(self, queue: str) -> None:
        try:
            await self.redis.publish(self.keys.wake_channel, queue)
        except REDIS_FAILURES:  # the idle slots' poll picks the job up anyway
            pass

    def backlogged(self) -> bool:
        """Sync or cpu_bound jobs wait for a thread or a process: take no new job until one is free."""
        return self.executor.jobs_waiting > 0

    async def wait_capacity(self) -> None:
        """Until a job of this node finishes, one waiting slot per finished job (a freed thread
        takes one more job, not one per slot), or one slot per `poll_interval` (jobs of other kinds
        may wait in the queue meanwhile)."""
        if self._capacity_timer is None:
            self._capacity_timer = asyncio.get_running_loop().call_later(self.poll_interval, self._capacity_tick)
        await self._capacity.wait()

    def _capacity_tick(self) -> None:
        self._capacity_timer = None
        self.job_done()
        if len(self._capacity):
            self._capacity_timer = asyncio.get_running_loop().call_later(self.poll_interval, self._capacity_tick)

    def job_done(self) -> None:
        self._capacity.wake_one()

    def parked_besides(self, slot: Slot) -> bool:
        return self.parked_on.get(slot.spec, 0) > (1 if slot.parked else 0)

    async def queues_for(self, spec: str) -> list[str]:
        if spec != "*":
            return [spec]
        return await self.active_queues.current(self.poll_interval)  # the non-empty queues (cluster/activequeues.py)

    def report(self) -> None:
        self.observer.watch_workers(lambda: self.busy, len(self.slots))

    def start(self, tg: asyncio.TaskGroup) -> None:
        self.report()
        for s in self.slots:
            self._tasks.append(tg.create_task(self._supervise(s), name=f"slot-{s.index}"))

    async def _supervise(self, s: Slot) -> None:
        """Run a slot for the node's life: a slot that ends or crashes is restarted (it resumes the
        job it held, or the ack it owed), never left dead."""
        while True:
            try:
                await s.run()
                if self.stopping:
                    return
                why = "ended on its own"
            except Exception as e:  # a bug or an unforeseen failure: never a silent dead slot
                why = f"{type(e).__name__}: {e}"
                log.error("worker: slot crashed; restarting it", exc_info=e, extra={
                    "event": "slot_crashed", "worker": s.name, "error": why})
            s.crashes += 1
            s.restarts += 1
            s.last_crash = why
            if self.stopping and s.crashes > CRASH_LOOP:
                return
            await asyncio.sleep(min(0.1 * 2 ** (s.crashes - 1), 5.0))
            log.warning("worker: slot restarted", extra={"event": "slot_restarted", "worker": s.name,
                                                           "restarts": s.restarts})

    def health_problem(self) -> str | None:
        """Why this node's workers are not healthy (for /healthz), or None."""
        for s in self.slots:
            if s.crashes >= CRASH_LOOP:
                return f"worker slot {s.name} crashed {s.crashes} times in a row (last: {s.last_crash})"
        if not self.stopping:
            for t in self._tasks:
                if t.done():
                    return f"worker {t.get_name()} is not running"
        return None

    async def stop(self, grace: float) -> int:
        """Stop fetching, let running jobs finish within `grace`, push back the rest. Returns pushed back."""
        self.stopping = True
        for s in self.slots:
            s.wake.set()
        self._capacity.wake_all()
        if not self._tasks:
            return 0
        _done, pending = await asyncio.wait(self._tasks, timeout=grace)
        for s in self.slots:
            s.cancel_job()  # the node's own shutdown: the slot pushes the job back
        if pending:
            await asyncio.wait(pending, timeout=max(5.0, grace))
        return sum(s.pushed_back for s in self.slots)
