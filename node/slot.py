"""One worker slot: a resque worker that fetches, runs and acks jobs, one at a time.

Its loop is the job's path: fetch (with the previous job's ack, one `fetch.lua` call shared with
the other slots' calls of the same round trip, node/fetch_batcher.py) → hold the job → run it
(node/perform.py decodes, runs and returns the outcome) → owe its ack → the next fetch carries it.
An idle slot parks until a wake-up names one of its queues or `poll_interval` passes.

What a slot keeps across a restart by its supervisor (node/worker.py) is the job it holds and the
ack it owes; everything else a call returns. A refused ack (the leader recovered the job while we
ran it) is logged `ack_lost` and counted; the node's shutdown pushes a held job back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

from cluster.aio import REDIS_FAILURES, wait_event
from cluster.clock import Clock
from cluster.fetchbatch import FetchCall, SlotCall, SlotReply
from cluster.keys import Keys
from cluster.membership import worker_name
from cluster.observe import Observer
from cluster.scripts import Scripts

from .fetch_batcher import FetchBatcher
from .perform import Held, JobCancelled, JobRunner, Outcome

log = logging.getLogger("corral.worker")


class Pool(Protocol):
    """What a slot uses of the pool its node runs (node/worker.py's `WorkerPool`)."""

    node_id: str
    keys: Keys
    scripts: Scripts
    clock: Clock
    observer: Observer
    poll_interval: float
    fetch_call: FetchCall
    batcher: FetchBatcher
    runner: JobRunner
    stopping: bool
    busy: int
    parked_on: dict[str, int]

    def backlogged(self) -> bool: ...
    async def wait_capacity(self) -> None: ...
    def job_done(self) -> None: ...
    async def queues_for(self, spec: str) -> list[str]: ...
    def parked_besides(self, slot: Slot) -> bool: ...
    def wake_more(self, queue: str, n: int) -> int: ...


@dataclass(slots=True)
class Owed:
    """The ack a slot owes for the job it ran: sent with its next fetch."""

    exec_id: str
    outcome: Outcome
    queue: str
    payload: str
    retried: bool = False  # the last call carrying it lost its reply: it may have been applied


class Slot:
    def __init__(self, pool: Pool, index: int, spec: str) -> None:
        self.pool = pool
        self.index = index
        self.spec = spec
        self.name = worker_name(pool.node_id, index, os.getpid())  # resque's host:pid (cluster/membership.py)
        self.wid = f"{self.name}:{spec}"
        self.wake = asyncio.Event()
        self.idle = True
        self.parked = False  # waiting for a wake-up or the poll (filed in corral:idle:<spec>)
        self.current: dict[str, Any] | None = None  # the running job, for /status
        self.job_task: asyncio.Task[Outcome] | None = None
        self.pushed_back = 0
        self.crashes = 0  # consecutive, reset by a good round trip to Redis
        self.restarts = 0
        self.last_crash = ""
        self._exec_seq = itertools.count(1)
        self._exec_id = self._next_exec()
        # kept across a restart by the supervisor: the job this slot holds, the ack it owes
        self.held: Held | None = None
        self.owed: Owed | None = None
        self._keys = pool.fetch_call.slot_keys(self.wid, self.name, spec)
        self._not_member = False

    async def run(self) -> None:
        pool = self.pool
        backoff = 0.05
        if self.held is not None and not await self._finish(self.held):  # restarted while holding a job
            return
        while True:
            fetch = not pool.stopping
            if fetch and pool.backlogged():  # --threads / --processes bound sync and cpu_bound jobs, not the slots
                if self.owed is None:
                    await pool.wait_capacity()
                    continue
                fetch = False  # the ack alone
            if not fetch and self.owed is None:
                return
            try:
                # a retry after a lost reply reuses the execution id: fetch.lua then hands back the
                # job the first call recorded instead of popping (and orphaning) another
                reply = await self._fetch(self.owed, fetch, self._exec_id)
            except REDIS_FAILURES as e:
                pool.observer.redis_error("worker")
                log.warning("worker: Redis error, retrying: %r", e, extra={"worker": self.name})
                if self.owed is not None:
                    self.owed.retried = True  # the lost call may have applied the ack already
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if reply.status == "BADFAILED":
                # `failed` is not a list: nothing was written, the failed job stays in flight (never
                # lost; recovered if this node dies) and its ack is retried until the key is fixed
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            self.crashes = 0
            self.owed = None
            job_exec, self._exec_id = self._exec_id, self._next_exec()
            if reply.queue is None or reply.payload is None:  # an empty entry ("") is a job too: it must fail
                if pool.stopping:
                    return
                if fetch:  # else acked only (the node is backlogged): back to the gate, not parked
                    await self._park()
                continue
            self.held = Held(reply.queue, reply.payload, job_exec, reply.enqueued_ms)
            if reply.left:  # more waiting behind this job: wake idle slots for them (a burst ramps up at once)
                pool.wake_more(reply.queue, reply.left)
            if not await self._finish(self.held):
                return

    async def _fetch(self, owed: Owed | None, fetch: bool, exec_id: str) -> SlotReply:
        """One call: the ack this slot owes (if any) and, with `fetch`, the next job, recorded in
        flight under `exec_id` in the same step."""
        pool = self.pool
        queues = await pool.queues_for(self.spec) if fetch else []
        call = SlotCall(self.index, self._keys, self.name, exec_id, fetch, queues, pool.parked_besides(self))
        if owed is not None:
            call.ack_exec, call.ack_kind, call.ack_entry = owed.exec_id, owed.outcome.kind, owed.outcome.entry
        reply = await pool.batcher.call(call)  # with the other slots' calls of this round trip
        if reply.not_member and not self._not_member:
            log.warning("worker: not fetching, this node is not a member (declared dead); waiting for its heartbeat "
                        "to register it again", extra={"event": "fetch_refused_not_member", "worker": self.name})
        self._not_member = reply.not_member
        if owed is not None:
            if reply.status == "LOST":  # logged and counted, with its reason (LOST)
                self._report_refused_ack(owed)
            owed.retried = False
        return reply

    async def _park(self) -> None:
        pool = self.pool
        self.wake.clear()
        self.parked = True
        pool.parked_on[self.spec] = pool.parked_on.get(self.spec, 0) + 1
        try:
            await wait_event(self.wake, pool.poll_interval)
        finally:
            self.parked = False
            pool.parked_on[self.spec] -= 1

    async def _finish(self, held: Held) -> bool:
        """Run the held job (or keep waiting for it after a restart) and owe its ack. False when
        the node's shutdown took it back: it was pushed back and this slot ends."""
        pool = self.pool
        if self.job_task is None:
            if pool.stopping:  # restarted during the shutdown: never started, give it back
                return await self._give_back(held)
            self.idle = False
            pool.busy += 1
            self.current = {"queue": held.queue, "payload": held.payload, "execution_id": held.exec_id,
                            "started": pool.clock.time()}
            self.job_task = asyncio.create_task(self._perform_confined(held))
        job_task = self.job_task
        try:
            outcome = await asyncio.shield(job_task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if job_task.done() and not job_task.cancelled():
                outcome = job_task.result()  # it finished as the cancellation came: ack it
            elif not held.node_cancel and not pool.stopping and (me is None or me.cancelling() == 0):
                # the job's own task got cancelled (not by this node): a failure of that job
                outcome = pool.runner.crashed(self.name, held, JobCancelled("the job was cancelled outside its task"))
            else:  # the node is stopping: give the job back (stop() cancelled it, or our TaskGroup ended)
                self.cancel_job()
                return await self._give_back(held)
        except Exception as e:  # a hostile job or a failing hook fails the job, never the node
            outcome = pool.runner.crashed(self.name, held, e)
        self._release()
        self.owed = Owed(held.exec_id, outcome, held.queue, held.payload)
        pool.job_done()
        return True

    async def _perform_confined(self, held: Held) -> Outcome:
        try:
            return await self.pool.runner.perform(self.name, held)
        except (SystemExit, KeyboardInterrupt) as e:  # from a plugin hook: task code is confined already
            return self.pool.runner.crashed(self.name, held, e)

    def cancel_job(self) -> None:
        """The node's shutdown: cancel the running job; the slot pushes it back."""
        if self.job_task is not None and not self.job_task.done() and self.held is not None:
            self.held.node_cancel = True
            self.job_task.cancel()

    def _release(self) -> None:
        self.held = None
        self.job_task = None
        if not self.idle:
            self.idle = True
            self.pool.busy -= 1
        self.current = None

    async def _give_back(self, held: Held) -> bool:
        self._release()
        await self._push_back(held.queue, held.exec_id)
        return False

    def _report_refused_ack(self, owed: Owed) -> None:
        """The leader recovered this job while we ran it (this node was declared dead: frozen,
        partitioned), so another copy was or will be run: the at-least-once case, said out loud.
        On a retry (the first call's reply was lost: a Redis stall) "LOST" is ambiguous: the first
        call may have applied the ack itself; that is logged as `ack_unconfirmed`, not counted."""
        task = _task_name(owed.payload)
        fields = {"worker": self.name, "queue": owed.queue, "task": task, "execution_id": owed.exec_id,
                  "outcome": owed.outcome.kind, "payload": owed.payload[:1000]}
        if owed.retried:
            log.warning("worker: ack not confirmed: the lost first attempt applied it, or the leader recovered the "
                        "job meanwhile", extra={"event": "ack_unconfirmed", **fields})
            return
        self.pool.observer.ack_refused(owed.queue, task)
        log.warning("worker: ack refused, the job had been recovered by the leader (this node was declared dead); "
                    "another copy runs elsewhere", extra={"event": "ack_lost", **fields})

    def _next_exec(self) -> str:
        """Execution ids: unique within this node's in-flight hash (node ids are unique per start)."""
        return f"{self.index}.{next(self._exec_seq)}"

    async def _push_back(self, queue: str, exec_id: str) -> None:
        pool = self.pool
        k = pool.keys
        for attempt in range(3):
            try:
                n = await pool.scripts.run(
                    "pushback", [k.inflight(pool.node_id), self._keys.worker, self._keys.started,
                                 k.queue(queue), k.queues, k.qtimes(queue), k.recovered],
                    [self.index, exec_id, queue, k.wake_channel])
                self.pushed_back += int(n)
                log.warning("worker: job not finished within the shutdown grace; pushed back to its queue",
                            extra={"event": "job_pushed_back", "worker": self.name, "queue": queue})
                return
            except REDIS_FAILURES as e:
                log.warning("worker: push back failed (attempt %d): %r", attempt + 1, e)
                await asyncio.sleep(0.2)


def _task_name(payload: str) -> str:
    try:
        job = json.loads(payload)
    except ValueError:
        return "unknown"
    return str(job.get("class", "unknown")) if isinstance(job, dict) else "unknown"
