"""Worker slots: each one is a resque worker that fetches, runs and acks jobs, one at a time.

Steady state costs one Redis round trip per job: the ack of a job and the fetch of the next are
one Lua script (`fetch.lua`), which also records the fetched job in the node's in-flight hash.
An idle slot waits for a `corral:wake` message naming one of its queues (Corral producers publish
one per enqueue) or for `poll_interval` (producers that do not publish), whichever comes first.

A job's task is confined: whatever it raises (an exception, `CancelledError`, `SystemExit`) fails
that job and the slot goes on; only the node's own shutdown cancels a job (then pushed back).
Each slot runs under a supervisor that restarts it if it ever ends or crashes; a slot that keeps
crashing makes `/healthz` fail (`WorkerPool.health_problem`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import logging
import math
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from cluster.activequeues import ActiveQueues
from cluster.aio import REDIS_FAILURES, wait_event
from cluster.badkeys import BadKeys
from cluster.client import Client, bucket
from cluster.clock import Clock
from cluster.errors import JobDecodeError, Retry, TaskNotFound
from cluster.fetchbatch import FetchCall, SlotCall
from cluster.keys import Keys
from cluster.membership import worker_name
from cluster.observe import Observer
from cluster.plugins import PluginContext
from cluster.rawconn import FastScript
from cluster.scripts import Scripts
from cluster.task import JobContext, Registry
from cluster.wire import Job, decode_job, encode_failed, encode_job, js_date

from .executor import Executor, TaskEscaped
from .fetch_batcher import FetchBatcher

log = logging.getLogger("corral.worker")


class JobTimeout(Exception):
    pass


class JobCancelled(Exception):
    """The task raised CancelledError (or its job task was cancelled) while this node was not
    stopping: a failure of that job, not a shutdown."""


ATTEMPT_FIELD = "corral_attempt"  # extra payload field of a job re-run by Retry: its attempt number
CRASH_LOOP = 3  # consecutive crashes of one slot that make /healthz fail


def attempt_of(job: Job) -> int:
    n = job.extra.get(ATTEMPT_FIELD)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def with_attempt(task: str, queue: str, args: list[Any], attempt: int) -> str:
    """The job's bytes (node-resque's) plus `"corral_attempt":n`; other resque clients ignore it."""
    return encode_job(task, queue, args)[:-1] + f',"{ATTEMPT_FIELD}":{attempt}}}'


# What the ack tells fetch.lua: ok (count processed), fail (count failed and push `entry` on
# `failed`), failcount (count failed, no entry: a retry is scheduled), drop (no stats, no entry).
OutcomeKind = Literal["ok", "fail", "failcount", "drop"]


@dataclass
class Outcome:
    kind: OutcomeKind
    entry: str = ""


class WorkerPool:
    """All slots of one node plus what they share (queue list cache, wake-ups, counters)."""

    def __init__(self, *, redis: Redis, keys: Keys, registry: Registry, executor: Executor, client: Client,
                 node_id: str, queue_specs: Sequence[str], concurrency: int, clock: Clock, observer: Observer,
                 poll_interval: float = 0.5, failed_max: int = 0, fast_fetch: FastScript | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)
        self.registry = registry
        self.executor = executor
        self.client = client
        self.node_id = node_id
        self.clock = clock
        self.observer = observer
        self.poll_interval = poll_interval
        self.failed_max = failed_max
        self.fast_fetch = fast_fetch  # the hot path's own RESP connections (cluster/rawconn.py)
        self.fetch_call = FetchCall(keys, node_id, failed_max)
        self.parked_on: dict[str, int] = {}  # parked slots per queue spec
        self.slots: list[Slot] = []
        n = 0
        for spec in queue_specs:
            for _ in range(concurrency):
                self.slots.append(Slot(self, n, spec))
                n += 1
        self.stopping = False
        self.busy = 0
        self._capacity_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
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
        if not self.parked_on.get(queue) and not self.parked_on.get("*"):
            return False
        for s in self.slots:
            if s.parked and (s.spec == queue or s.spec == "*") and not s.wake.is_set():
                s.wake.set()
                return True
        return False

    def wake_more(self, queue: str, n: int) -> None:
        """A slot's fetch left `n` jobs on `queue`: wake up to `n` parked slots serving it at once
        (their fetches share the next call), rather than one per round trip."""
        if not self.parked_on.get(queue) and not self.parked_on.get("*"):
            return
        for s in self.slots:
            if n <= 0:
                return
            if s.parked and (s.spec == queue or s.spec == "*") and not s.wake.is_set():
                s.wake.set()
                n -= 1

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
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._capacity_waiters.append(fut)
        if self._capacity_timer is None:
            self._capacity_timer = loop.call_later(self.poll_interval, self._capacity_tick)
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()

    def _capacity_tick(self) -> None:
        self._capacity_timer = None
        self.job_done()
        if self._capacity_waiters:
            self._capacity_timer = asyncio.get_running_loop().call_later(self.poll_interval, self._capacity_tick)

    def job_done(self) -> None:
        while self._capacity_waiters:
            fut = self._capacity_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

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
        for _ in range(len(self._capacity_waiters)):
            self.job_done()
        if not self._tasks:
            return 0
        _done, pending = await asyncio.wait(self._tasks, timeout=grace)
        for s in self.slots:
            if s.job_task is not None and not s.job_task.done():
                s.node_cancel = True  # the node's own shutdown: the slot pushes the job back
                s.job_task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=max(5.0, grace))
        return sum(s.pushed_back for s in self.slots)


class Slot:
    def __init__(self, pool: WorkerPool, index: int, spec: str) -> None:
        self.pool = pool
        self.index = index
        self.spec = spec
        self.name = worker_name(pool.node_id, index, os.getpid())  # resque's host:pid (cluster/membership.py)
        self.wid = f"{self.name}:{spec}"
        self.wake = asyncio.Event()
        self.idle = True
        self.parked = False  # waiting for a wake-up or the poll (filed in corral:idle:<spec>)
        self.current: dict[str, Any] | None = None
        self.job_task: asyncio.Task[Outcome] | None = None
        self.node_cancel = False  # set when the node cancels the running job (shutdown past the grace)
        self.pushed_back = 0
        self.crashes = 0  # consecutive, reset by a good round trip to Redis
        self.restarts = 0
        self.last_crash = ""
        self._exec_seq = itertools.count(1)
        self._exec_id = self._next_exec()
        # state kept across a restart by the supervisor: the ack this slot owes, the job it holds
        self._ack: tuple[str, Outcome] | None = None
        self._holding: tuple[str, str, str] | None = None
        self.enqueued_ms: float | None = None
        self.acking: tuple[str, str] | None = None  # (queue, payload) of the job the next fetch acks
        self._ack_retried = False
        self.left = 0
        self._keys = pool.fetch_call.slot_keys(self.wid, self.name, spec)
        self._not_member = False

    async def _fetch(self, ack: tuple[str, Outcome] | None, fetch: bool,
                     exec_id: str) -> tuple[str, str | None, str | None, str]:
        pool = self.pool
        queues = await pool.queues_for(self.spec) if fetch else []
        call = SlotCall(self.index, self._keys, self.name, exec_id, fetch, queues, pool.parked_besides(self))
        if ack is not None:
            call.ack_exec, call.ack_kind, call.ack_entry = ack[0], ack[1].kind, ack[1].entry
        res = await pool.batcher.call(call)  # with the other slots' calls of this round trip (node/fetch_batcher.py)
        status, queue, payload = res.status, res.queue, res.payload
        self.enqueued_ms = res.enqueued_ms
        self.left = res.left
        not_member = res.not_member
        if not_member and not self._not_member:
            log.warning("worker: not fetching, this node is not a member (declared dead); waiting for its heartbeat "
                        "to register it again", extra={"event": "fetch_refused_not_member", "worker": self.name})
        self._not_member = not_member
        if status == "LOST" and ack is not None:  # logged and counted, with its reason (LOST)
            self._report_refused_ack(ack, retried=self._ack_retried)
        self._ack_retried = False
        return status, queue, payload, exec_id  # an empty entry ("") is a job too: it must fail, not vanish

    async def run(self) -> None:
        pool = self.pool
        backoff = 0.05
        if self._holding is not None and not await self._finish_held():  # restarted while holding a job
            return
        while True:
            fetch = not pool.stopping
            if fetch and pool.backlogged():  # --threads / --processes bound sync and cpu_bound jobs, not the slots
                if self._ack is None:
                    await pool.wait_capacity()
                    continue
                fetch = False  # the ack alone
            if not fetch and self._ack is None:
                return
            try:
                # a retry after a lost reply reuses the execution id: fetch.lua then hands back the
                # job the first call recorded instead of popping (and orphaning) another
                status, queue, payload, _ = await self._fetch(self._ack, fetch, self._exec_id)
            except REDIS_FAILURES as e:
                pool.observer.redis_error("worker")
                log.warning("worker: Redis error, retrying: %r", e, extra={"worker": self.name})
                self._ack_retried = self._ack is not None  # the lost call may have applied the ack already
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if status == "BADFAILED":
                # `failed` is not a list: nothing was written, the failed job stays in flight (never
                # lost; recovered if this node dies) and its ack is retried until the key is fixed
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            self.crashes = 0
            self._ack = None
            job_exec, self._exec_id = self._exec_id, self._next_exec()
            if queue is None or payload is None:
                if pool.stopping:
                    return
                if not fetch:  # acked only (the node is backlogged): back to the gate, not parked
                    continue
                self.wake.clear()
                self.parked = True
                pool.parked_on[self.spec] = pool.parked_on.get(self.spec, 0) + 1
                try:
                    await wait_event(self.wake, pool.poll_interval)
                finally:
                    self.parked = False
                    pool.parked_on[self.spec] -= 1
                continue
            self._holding = (queue, payload, job_exec)
            if self.left:  # more waiting behind this job: wake idle slots for them (a burst ramps up at once)
                pool.wake_more(queue, self.left)
            if not await self._finish_held():
                return

    async def _finish_held(self) -> bool:
        """Run the held job (or keep waiting for it after a restart) and owe its ack. False when
        the node's shutdown cancelled it: it was pushed back and this slot ends."""
        assert self._holding is not None
        pool = self.pool
        queue, payload, job_exec = self._holding
        if self.job_task is None and pool.stopping:  # restarted during the shutdown: never started, give it back
            self._release()
            await self._push_back(queue, job_exec)
            return False
        if self.job_task is None:
            self.idle = False
            pool.busy += 1
            self.current = {"queue": queue, "payload": payload, "execution_id": job_exec,
                            "started": pool.clock.time()}
            self.node_cancel = False
            self.job_task = asyncio.create_task(self._perform_confined(queue, payload, job_exec))
        job_task = self.job_task
        try:
            outcome = await asyncio.shield(job_task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if job_task.done() and not job_task.cancelled():
                outcome = job_task.result()  # it finished as the cancellation came: ack it
            elif not self.node_cancel and not pool.stopping and (me is None or me.cancelling() == 0):
                # the job's own task got cancelled (not by this node): a failure of that job
                outcome = self._crashed(queue, payload, JobCancelled("the job was cancelled outside its task"))
            else:  # the node is stopping: give the job back (stop() cancelled it, or our TaskGroup ended)
                if not job_task.done():
                    self.node_cancel = True
                    job_task.cancel()
                self._release()
                await self._push_back(queue, job_exec)
                return False
        except Exception as e:  # a hostile job or a failing hook fails the job, never the node
            outcome = self._crashed(queue, payload, e)
        self._release()
        self._ack = (job_exec, outcome)
        self.acking = (queue, payload)
        pool.job_done()
        return True

    def _release(self) -> None:
        self._holding = None
        self.job_task = None  # node_cancel stays: a cancelled job task may not have seen it yet
        if not self.idle:
            self.idle = True
            self.pool.busy -= 1
        self.current = None

    async def _perform_confined(self, queue: str, payload: str, exec_id: str) -> Outcome:
        try:
            return await self.perform(queue, payload, exec_id)
        except (SystemExit, KeyboardInterrupt) as e:  # from a plugin hook: task code is confined already
            return self._crashed(queue, payload, e)

    def _report_refused_ack(self, ack: tuple[str, Outcome], *, retried: bool) -> None:
        """The leader recovered this job while we ran it (this node was declared dead: frozen,
        partitioned), so another copy was or will be run: the at-least-once case, said out loud.
        On a retry (the first call's reply was lost: a Redis stall) "LOST" is ambiguous: the first
        call may have applied the ack itself; that is logged as `ack_unconfirmed`, not counted."""
        queue, payload = self.acking if self.acking is not None else ("", "")
        task = _task_name(payload)
        fields = {"worker": self.name, "queue": queue, "task": task, "execution_id": ack[0],
                  "outcome": ack[1].kind, "payload": payload[:1000]}
        if retried:
            log.warning("worker: ack not confirmed: the lost first attempt applied it, or the leader recovered the "
                        "job meanwhile", extra={"event": "ack_unconfirmed", **fields})
            return
        self.pool.observer.ack_refused(queue, task)
        log.warning("worker: ack refused, the job had been recovered by the leader (this node was declared dead); "
                    "another copy runs elsewhere", extra={"event": "ack_lost", **fields})

    def _next_exec(self) -> str:
        """Execution ids: unique within this node's in-flight hash (node ids are unique per start)."""
        return f"{self.index}.{next(self._exec_seq)}"

    async def _push_back(self, queue: str, exec_id: str) -> None:
        k = self.pool.keys
        for attempt in range(3):
            try:
                n = await self.pool.scripts.run(
                    "pushback", [k.inflight(self.pool.node_id), k.worker(self.wid), k.worker_started(self.wid),
                                 k.queue(queue), k.queues, k.qtimes(queue), k.recovered],
                    [self.index, exec_id, queue, k.wake_channel])
                self.pushed_back += int(n)
                log.warning("worker: job not finished within the shutdown grace; pushed back to its queue",
                            extra={"event": "job_pushed_back", "worker": self.name, "queue": queue})
                return
            except REDIS_FAILURES as e:
                log.warning("worker: push back failed (attempt %d): %r", attempt + 1, e)
                await asyncio.sleep(0.2)

    def _crashed(self, queue: str, payload: str, exc: BaseException) -> Outcome:
        self.pool.observer.job_finished(queue, "unknown", 0.0, False)
        log.error("worker: job failed outside its task", exc_info=exc, extra={
            "event": "job_failure", "queue": queue, "worker": self.name, "error": f"{type(exc).__name__}: {exc}"})
        try:
            return Outcome("fail", self._entry(queue, payload, type(exc).__name__, str(exc) or type(exc).__name__, None))
        except Exception:  # last resort: the payload as a plain JSON string, so the job is never lost
            entry = {"worker": self.name, "queue": queue, "payload": payload.encode("utf-8", "replace").decode(),
                     "exception": type(exc).__name__, "error": repr(exc)[:1000], "backtrace": None,
                     "failed_at": js_date(self.pool.clock.time())}
            return Outcome("fail", json.dumps(entry, ensure_ascii=False, separators=(",", ":")))

    async def _run_again(self, delay: float, job: Job, queue: str, attempt: int) -> None:
        """Schedule the job again in `delay` seconds, carrying its next attempt number (a Retry
        signal or the Retry plugin). Enqueue hooks run when the leader promotes it."""
        pool = self.pool
        k = pool.keys
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"Retry delay must be a non-negative number of seconds, got {delay!r}")
        ts = bucket(pool.clock.time() + delay)
        payload = with_attempt(job.task, queue, job.args, attempt)
        await pool.scripts.run("enqueue_at", [k.delayed_schedule, k.delayed(ts), k.timestamps(payload)],
                               [ts, payload, k.delayed_member(ts), k.delayed_channel])

    def _entry(self, queue: str, payload: str, exc_name: str, error: str, backtrace: list[str] | None) -> str:
        return encode_failed(worker=self.name, queue=queue, payload_raw=payload, exception=exc_name,
                             error=error, backtrace=backtrace, failed_at=self.pool.clock.time())

    async def perform(self, queue: str, payload: str, exec_id: str) -> Outcome:
        pool = self.pool
        clock = pool.clock
        try:
            job = decode_job(payload)
        except JobDecodeError as e:
            pool.observer.job_finished(queue, "unknown", 0.0, False)
            log.error("worker: bad payload moved to failed", extra={"event": "job_failure", "queue": queue,
                                                                     "error": e.reason})
            return Outcome("fail", self._entry(queue, payload, "JobDecodeError", str(e), None))
        t = pool.registry.find(job.task)
        if t is None:
            pool.observer.job_finished(queue, "unknown", 0.0, False)
            log.error("worker: unknown task moved to failed", extra={"event": "job_failure", "queue": queue,
                                                                      "task": job.task})
            return Outcome("fail", self._entry(queue, payload, "TaskNotFound", str(TaskNotFound(job.task)), None))
        plugins = t.plugin_instances()
        pctx = PluginContext(pool.redis, pool.keys, pool.scripts, job.task, queue, job.args, payload, client=pool.client,
                             node_id=pool.node_id, execution_id=exec_id)
        for p in plugins:
            if not await p.before_perform(pctx):
                log.info("worker: plugin %s skipped job", p.name, extra={"event": "job_skipped", "task": job.task,
                                                                         "queue": queue})
                return Outcome("drop")
        jlog = logging.LoggerAdapter(logging.getLogger(f"corral.task.{job.task}"),
                                     {"task": job.task, "queue": queue, "worker": self.name})
        retry_counter = pctx.state.get("retry")
        attempt = max(attempt_of(job), int(retry_counter or 0) + 1)  # Retry re-runs, and Retry plugin retries
        ctx = JobContext(job=job, queue=queue, worker=self.name, node_id=pool.node_id, execution_id=exec_id,
                         client=pool.client, log=jlog, attempt=attempt)
        wait = None if self.enqueued_ms is None else clock.time() - self.enqueued_ms / 1000
        pool.observer.job_started(queue, job.task, wait)
        log.debug("worker: working job", extra={"event": "job_start", "task": job.task, "queue": queue,
                                                "worker": self.name})
        start = clock.monotonic()
        error: BaseException | None = None
        retry_signal: Retry | None = None
        try:
            await pool.executor.run(t, job.params, ctx)
        except Retry as r:
            retry_signal = r
        except TimeoutError:
            error = JobTimeout(f"task {job.task!r} exceeded its timeout of {t.timeout}s")
        except TaskEscaped as e:
            error = e
        except asyncio.CancelledError:
            if self.node_cancel:  # the node's shutdown: the slot pushes the job back
                raise
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                me.uncancel()  # the task cancelled itself: a failure, the slot goes on
            error = JobCancelled(f"task {job.task!r} raised CancelledError; this node was not stopping")
        except BaseException as e:  # whatever a task raises fails its job, never the node
            error = e
        duration = clock.monotonic() - start
        if retry_signal is not None:
            await self._run_again(retry_signal.delay, job, queue, attempt + 1)
            pool.observer.job_retried(queue, job.task)
            log.info("worker: job asked to retry", extra={"event": "job_retry", "task": job.task, "queue": queue,
                                                           "delay": retry_signal.delay})
            return Outcome("drop")
        pctx.error = error
        for p in plugins:
            try:
                await p.after_perform(pctx)
            except Exception as e:
                log.exception("worker: plugin %s after_perform failed", p.name)
                pctx.error = pctx.error or e
        if pctx.retry_in is not None and pctx.error is not None:
            await self._run_again(pctx.retry_in, job, queue, attempt + 1)
            pool.observer.job_retried(queue, job.task)
            pool.observer.job_finished(queue, job.task, duration, False)
            log.warning("worker: job failed, retry scheduled", extra={
                "event": "job_retry", "task": job.task, "queue": queue, "delay": pctx.retry_in,
                "error": repr(pctx.error), "duration_ms": round(duration * 1000, 2)})
            return Outcome("failcount")
        if pctx.error is not None:
            err = pctx.error
            pool.observer.job_finished(queue, job.task, duration, False)
            tb = traceback.format_exception(err)
            lines = [ln.rstrip() for chunk in tb[1:] for ln in chunk.splitlines() if ln.strip()] or None
            log.error("worker: job failed", extra={"event": "job_failure", "task": job.task, "queue": queue,
                                                    "error": f"{type(err).__name__}: {err}",
                                                    "duration_ms": round(duration * 1000, 2)})
            name = err.kind if isinstance(err, TaskEscaped) else type(err).__name__
            return Outcome("fail", self._entry(queue, payload, name, str(err) or type(err).__name__, lines))
        pool.observer.job_finished(queue, job.task, duration, True)
        log.info("worker: job success", extra={"event": "job_success", "task": job.task, "queue": queue,
                                                "worker": self.name, "duration_ms": round(duration * 1000, 2)})
        return Outcome("ok")


def _task_name(payload: str) -> str:
    try:
        job = json.loads(payload)
    except ValueError:
        return "unknown"
    return str(job.get("class", "unknown")) if isinstance(job, dict) else "unknown"
