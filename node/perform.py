"""One fetched job from its bytes to its outcome, in the order it happens: decode (payload → `Job`,
name → `Task`), run (before-perform hooks, the task in node/executor.py, after-perform hooks),
outcome (what the ack tells `fetch.lua`: the failed entry, or the re-run to schedule first).

The slot (node/slot.py) fetches, hands the held job here, and acks the `Outcome` it gets back.
Nothing here reads or writes the slot: what a run needs comes in, what it decided comes out.
Two functions do the writing every path shares: `failed_outcome` builds every failed entry,
`JobRunner.run_again` re-enqueues (a `Retry` signal, a Retry-plugin retry, a job a plugin such as
JobLock refused for now).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import traceback
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio.client import Redis

from cluster.client import bucket
from cluster.clock import Clock
from cluster.enqueuer import Enqueuer
from cluster.errors import JobDecodeError, Retry, TaskNotFound
from cluster.keys import Keys
from cluster.observe import Observer
from cluster.plugins import Plugin, PluginContext
from cluster.scripts import Scripts
from cluster.task import JobContext, Registry, Task
from cluster.wire import Job, decode_job, encode_failed, encode_job, js_date

from .executor import Executor, TaskEscaped

log = logging.getLogger("corral.worker")

ATTEMPT_FIELD = "corral_attempt"  # extra payload field of a job re-run by Retry: its attempt number


class JobTimeout(Exception):
    pass


class JobCancelled(Exception):
    """The task raised CancelledError (or its job task was cancelled) while this node was not
    stopping: a failure of that job, not a shutdown."""


# What the ack tells fetch.lua: ok (count processed), fail (count failed and push `entry` on
# `failed`), failcount (count failed, no entry: a retry is scheduled), drop (no stats, no entry).
OutcomeKind = Literal["ok", "fail", "failcount", "drop"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    entry: str = ""


OK, DROP, FAILCOUNT = Outcome("ok"), Outcome("drop"), Outcome("failcount")


@dataclass(slots=True)
class Held:
    """A job a slot fetched and has not acked yet (kept across a restart of the slot)."""

    queue: str
    payload: str
    exec_id: str
    enqueued_ms: float | None  # when it was queued (corral:qtimes), for the wait metric
    node_cancel: bool = False  # set when the node's shutdown cancels it: pushed back, not failed


def attempt_of(job: Job) -> int:
    n = job.extra.get(ATTEMPT_FIELD)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def with_attempt(task: str, queue: str, args: list[Any], attempt: int) -> str:
    """The job's bytes (node-resque's) plus `"corral_attempt":n`; other resque clients ignore it."""
    return encode_job(task, queue, args)[:-1] + f',"{ATTEMPT_FIELD}":{attempt}}}'


def describe(error: BaseException) -> str:
    """`Name: message`, even for an exception whose `__str__` raises."""
    return f"{type(error).__name__}: {_text(error)}"


def failed_outcome(worker: str, queue: str, payload: str, error: BaseException, failed_at: float, *,
                   backtrace: bool = False) -> Outcome:
    """The `fail` outcome naming `error` (a task's `SystemExit` is named as itself, not
    `TaskEscaped`); with `backtrace`, the error's traceback. Never raises: an error whose text
    cannot be read or a payload JSON cannot carry still gives an entry (the payload as a string),
    so the job is never lost."""
    name = error.kind if isinstance(error, TaskEscaped) else type(error).__name__
    text = _text(error) or name
    try:
        lines = None
        if backtrace:
            tb = traceback.format_exception(error)
            lines = [ln.rstrip() for chunk in tb[1:] for ln in chunk.splitlines() if ln.strip()] or None
        return Outcome("fail", encode_failed(worker=worker, queue=queue, payload_raw=payload, exception=name,
                                             error=text, backtrace=lines, failed_at=failed_at))
    except Exception:
        entry = {"worker": worker, "queue": queue, "payload": payload.encode("utf-8", "replace").decode(),
                 "exception": name, "error": text[:1000], "backtrace": None, "failed_at": js_date(failed_at)}
        return Outcome("fail", json.dumps(entry, ensure_ascii=False, separators=(",", ":")))


def _text(error: BaseException) -> str:
    """The error's message; its repr if `__str__` raises; "" if both do."""
    for spell in (str, repr):
        try:
            return spell(error)
        except Exception:
            continue
    return ""


def _safe_repr(error: BaseException) -> str:
    try:
        return repr(error)
    except Exception:
        return type(error).__name__


@dataclass(slots=True)
class Ran:
    """What running a decoded job came to, before the outcome is decided."""

    pctx: PluginContext
    attempt: int
    skipped_by: Plugin | None = None  # a before-perform hook refused the job (it did not run)
    retry: Retry | None = None  # the task asked to run again later
    duration: float = 0.0


@dataclass
class JobRunner:
    """Runs one job for a slot of this node; shared by all slots (it holds no job state)."""

    redis: Redis
    keys: Keys
    scripts: Scripts
    registry: Registry
    executor: Executor
    client: Enqueuer  # the task's and the plugins' `ctx.client` (the node's Client)
    clock: Clock
    observer: Observer
    node_id: str

    async def perform(self, worker: str, held: Held) -> Outcome:
        """decode → run → outcome."""
        try:
            job = decode_job(held.payload)
        except JobDecodeError as e:
            self.observer.job_finished(held.queue, "unknown", 0.0, False)
            log.error("worker: bad payload moved to failed", extra={"event": "job_failure", "queue": held.queue,
                                                                     "error": e.reason})
            return self.failed(worker, held, e)
        t = self.registry.find(job.task)
        if t is None:
            self.observer.job_finished(held.queue, "unknown", 0.0, False)
            log.error("worker: unknown task moved to failed", extra={"event": "job_failure", "queue": held.queue,
                                                                      "task": job.task})
            return self.failed(worker, held, TaskNotFound(job.task))
        ran = await self.run(worker, held, job, t)
        return await self.outcome(worker, held, job, ran)

    async def run(self, worker: str, held: Held, job: Job, t: Task) -> Ran:
        """The before-perform hooks, the task (whatever it raises is kept as its error), and unless
        it asked to run again, the after-perform hooks (which may swallow the error or ask for a
        retry)."""
        queue = held.queue
        plugins = t.plugin_instances()
        pctx = PluginContext(self.redis, self.keys, self.scripts, job.task, queue, job.args, held.payload,
                             client=self.client, node_id=self.node_id, execution_id=held.exec_id)
        for p in plugins:
            if not await p.before_perform(pctx):
                return Ran(pctx, attempt_of(job), skipped_by=p)
        jlog = logging.LoggerAdapter(logging.getLogger(f"corral.task.{job.task}"),
                                     {"task": job.task, "queue": queue, "worker": worker})
        attempt = max(attempt_of(job), int(pctx.state.get("retry") or 0) + 1)  # Retry re-runs, Retry plugin retries
        ctx = JobContext(job=job, queue=queue, worker=worker, node_id=self.node_id, execution_id=held.exec_id,
                         client=self.client, log=jlog, attempt=attempt)
        wait = None if held.enqueued_ms is None else self.clock.time() - held.enqueued_ms / 1000
        self.observer.job_started(queue, job.task, wait)
        log.debug("worker: working job", extra={"event": "job_start", "task": job.task, "queue": queue,
                                                "worker": worker})
        start = self.clock.monotonic()
        ran = Ran(pctx, attempt)
        try:
            await self.executor.run(t, job.params, ctx)
        except Retry as r:
            ran.retry = r
        except TimeoutError:
            pctx.error = JobTimeout(f"task {job.task!r} exceeded its timeout of {t.timeout}s")
        except asyncio.CancelledError:
            if held.node_cancel:  # the node's shutdown: the slot pushes the job back
                raise
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                me.uncancel()  # the task cancelled itself: a failure, the slot goes on
            pctx.error = JobCancelled(f"task {job.task!r} raised CancelledError; this node was not stopping")
        except BaseException as e:  # whatever a task raises fails its job, never the node (TaskEscaped too)
            pctx.error = e
        ran.duration = self.clock.monotonic() - start
        pctx.rerun = ran.retry is not None  # the run is over either way: its hooks release what it held
        for p in plugins:
            try:
                await p.after_perform(pctx)
            except Exception as e:
                log.exception("worker: plugin %s after_perform failed", p.name)
                pctx.error = pctx.error or e
        return ran

    async def outcome(self, worker: str, held: Held, job: Job, ran: Ran) -> Outcome:
        """What the ack writes, after the re-run it needs is scheduled; metrics and the log line."""
        queue, pctx, duration = held.queue, ran.pctx, ran.duration
        ms = round(duration * 1000, 2)
        if ran.skipped_by is not None:
            if pctx.requeue_in is not None:  # refused for now (JobLock held): the same job, later
                await self.run_again(pctx.requeue_in, job, queue, None)
            log.info("worker: plugin %s skipped job", ran.skipped_by.name, extra={
                "event": "job_skipped", "task": job.task, "queue": queue})
            return DROP
        if ran.retry is not None:
            await self.run_again(ran.retry.delay, job, queue, ran.attempt + 1)
            self.observer.job_retried(queue, job.task)
            log.info("worker: job asked to retry", extra={"event": "job_retry", "task": job.task, "queue": queue,
                                                           "delay": ran.retry.delay})
            return DROP
        error = pctx.error
        if error is not None and pctx.retry_in is not None:
            await self.run_again(pctx.retry_in, job, queue, ran.attempt + 1)
            self.observer.job_retried(queue, job.task)
            self.observer.job_finished(queue, job.task, duration, False)
            log.warning("worker: job failed, retry scheduled", extra={
                "event": "job_retry", "task": job.task, "queue": queue, "delay": pctx.retry_in,
                "error": _safe_repr(error), "duration_ms": ms})
            return FAILCOUNT
        if error is not None:
            self.observer.job_finished(queue, job.task, duration, False)
            log.error("worker: job failed", extra={"event": "job_failure", "task": job.task, "queue": queue,
                                                    "error": describe(error), "duration_ms": ms})
            return self.failed(worker, held, error, backtrace=True)
        self.observer.job_finished(queue, job.task, duration, True)
        log.info("worker: job success", extra={"event": "job_success", "task": job.task, "queue": queue,
                                                "worker": worker, "duration_ms": ms})
        return OK

    def crashed(self, worker: str, held: Held, error: BaseException) -> Outcome:
        """A failure outside the task's code (a hook raised, the job's task was cancelled from outside)."""
        self.observer.job_finished(held.queue, "unknown", 0.0, False)
        log.error("worker: job failed outside its task", exc_info=error, extra={
            "event": "job_failure", "queue": held.queue, "worker": worker, "error": describe(error)})
        return self.failed(worker, held, error)

    def failed(self, worker: str, held: Held, error: BaseException, *, backtrace: bool = False) -> Outcome:
        return failed_outcome(worker, held.queue, held.payload, error, self.clock.time(), backtrace=backtrace)

    async def run_again(self, delay: float, job: Job, queue: str, attempt: int | None) -> None:
        """The one place a job is queued again: as a delayed job due in `delay` seconds, carrying
        its next `attempt` number (None: the same bytes, for a job that did not run). Enqueue hooks
        run when the leader promotes it."""
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"Retry delay must be a non-negative number of seconds, got {delay!r}")
        k = self.keys
        ts = bucket(self.clock.time() + delay)
        payload = encode_job(job.task, queue, job.args) if attempt is None else with_attempt(
            job.task, queue, job.args, attempt)
        await self.scripts.run("enqueue_at", [k.delayed_schedule, k.delayed(ts), k.timestamps(payload)],
                               [ts, payload, k.delayed_member(ts), k.delayed_channel])
