"""Where a task's code runs: coroutines on the node's loop, sync functions in task threads
(`node/task_threads.py`), `cpu_bound` tasks in worker processes (`node/task_processes.py`), so
one heavy task never blocks the loop, its heartbeats or its HTTP endpoints.

Task code is confined: `SystemExit` and `KeyboardInterrupt` raised by a task (on the loop, in a
thread or in a process) become `TaskEscaped`, a failure of that job, instead of stopping the node.
A timeout starts when the task's code starts (a job waiting for a thread or a process has no
clock); a timed-out thread runs on, counted as `timed_out`; a timed-out process is killed; a
timed-out coroutine is cancelled, and one that ignores the cancellation for `CANCEL_GRACE` is
abandoned (it runs on, counted in `abandoned`) so that its slot and its job go on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.task import JobContext, Task

from .task_processes import TaskEscaped, TaskProcesses
from .task_threads import TaskThreads

log = logging.getLogger("corral.executor")
CANCEL_GRACE = 1.0  # seconds a cancelled coroutine gets to wind down before it is abandoned

__all__ = ["Executor", "TaskEscaped"]


async def call_run(t: Task, params: dict[str, Any], ctx: JobContext) -> Any:
    """Run an async task on the loop (sync ones go to the task threads or processes)."""
    result = t.run(params, ctx)
    if asyncio.iscoroutine(result):
        return await result
    return result


def _describe(e: BaseException) -> str:
    return ", ".join(map(repr, e.args))


async def _guarded_async(t: Task, params: dict[str, Any], ctx: JobContext) -> Any:
    try:
        return await call_run(t, params, ctx)
    except (SystemExit, KeyboardInterrupt) as e:
        raise TaskEscaped(type(e).__name__, _describe(e)) from e


def _guarded_sync(fn: Callable[..., Any], params: dict[str, Any], ctx: JobContext) -> Any:
    try:
        return fn(params, ctx)
    except (SystemExit, KeyboardInterrupt) as e:
        raise TaskEscaped(type(e).__name__, _describe(e)) from e


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # the job's outcome was decided without it: not "never retrieved"


class Executor:
    def __init__(self, *, threads: int, processes: int, tasks_dir: str, nice: int = 0) -> None:
        self.nice = nice
        self.threads = TaskThreads(threads, nice)
        self.processes = TaskProcesses(processes or (os.cpu_count() or 1), str(Path(tasks_dir).resolve()), nice)
        self.abandoned: set[asyncio.Task[Any]] = set()  # coroutines that ignored their cancellation

    async def run(self, t: Task, params: dict[str, Any], ctx: JobContext) -> Any:
        if t.is_async:
            if t.timeout:
                return await self._run_async_bounded(t, params, ctx)
            return await _guarded_async(t, params, ctx)
        if t.cpu_bound:
            meta = {"payload": ctx.job.raw, "queue": ctx.queue, "worker": ctx.worker, "node_id": ctx.node_id,
                    "execution_id": ctx.execution_id, "attempt": ctx.attempt}
            return await self.processes.run(t.name, params, meta, t.timeout)
        call = functools.partial(contextvars.copy_context().run, _guarded_sync, t.run, params, ctx)
        return await self.threads.run(call, t.timeout, t.name)

    async def _run_async_bounded(self, t: Task, params: dict[str, Any], ctx: JobContext) -> Any:
        """The coroutine runs in a task of its own, so that a job whose code swallows the
        cancellation (`except BaseException`, a bare `except:`) still ends at its timeout."""
        inner = asyncio.get_running_loop().create_task(_guarded_async(t, params, ctx), name=f"job:{t.name}")
        try:
            async with asyncio.timeout(t.timeout):
                return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if not inner.done():  # the node cancelled this job (shutdown): its code stops too
                self._stop(inner, t.name, 0.0)
            raise
        except TimeoutError:
            await self._stop_and_wait(inner, t.name)
            raise

    async def _stop_and_wait(self, inner: asyncio.Task[Any], name: str) -> None:
        inner.cancel()
        await asyncio.wait({inner}, timeout=CANCEL_GRACE)
        self._stop(inner, name, CANCEL_GRACE)

    def _stop(self, inner: asyncio.Task[Any], name: str, waited: float) -> None:
        if not inner.done():
            inner.cancel()
            self.abandoned.add(inner)
            inner.add_done_callback(self.abandoned.discard)
            if waited:
                log.warning("a timed-out coroutine ignored its cancellation for %.1f s; abandoned (it runs on)",
                            waited, extra={"event": "coroutine_abandoned", "task": name})
        inner.add_done_callback(_consume)

    @property
    def jobs_waiting(self) -> int:
        """Sync and cpu_bound jobs of this node waiting for a thread or a process: while there are
        any, the node's slots take no new job (node/worker.py), so --threads and --processes bound
        what such jobs hold, whatever the slot count."""
        return self.threads.waiting + self.processes.waiting

    @property
    def unstoppable(self) -> int:
        """Task code still running that was given up on: threads (Python cannot stop them) and
        coroutines that ignored their cancellation. Both end with the process."""
        return self.threads.running + len(self.abandoned)

    def shutdown(self) -> None:
        self.threads.shutdown()
        self.processes.shutdown()
