"""Where a task's code runs: coroutines on the node's loop, sync functions in task threads
(`node/task_threads.py`), `cpu_bound` tasks in worker processes (`node/task_processes.py`), so
one heavy task never blocks the loop, its heartbeats or its HTTP endpoints.

Task code is confined: `SystemExit` and `KeyboardInterrupt` raised by a task (on the loop, in a
thread or in a process) become `TaskEscaped`, a failure of that job, instead of stopping the node.
A timeout starts when the task's code starts (a job waiting for a thread or a process has no
clock); a timed-out thread runs on, counted as `timed_out`; a timed-out process is killed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.task import JobContext, Task, call_run

from .task_processes import TaskEscaped, TaskProcesses
from .task_threads import TaskThreads

__all__ = ["Executor", "TaskEscaped"]


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


class Executor:
    def __init__(self, *, threads: int, processes: int, tasks_dir: str, nice: int = 0) -> None:
        self.nice = nice
        self.threads = TaskThreads(threads, nice)
        self.processes = TaskProcesses(processes or (os.cpu_count() or 1), str(Path(tasks_dir).resolve()), nice)

    async def run(self, t: Task, params: dict[str, Any], ctx: JobContext) -> Any:
        if t.is_async:
            if t.timeout:
                async with asyncio.timeout(t.timeout):
                    return await _guarded_async(t, params, ctx)
            return await _guarded_async(t, params, ctx)
        if t.cpu_bound:
            meta = {"payload": ctx.job.raw, "queue": ctx.queue, "worker": ctx.worker, "node_id": ctx.node_id,
                    "execution_id": ctx.execution_id, "attempt": ctx.attempt}
            return await self.processes.run(t.name, params, meta, t.timeout)
        call = functools.partial(contextvars.copy_context().run, _guarded_sync, t.run, params, ctx)
        return await self.threads.run(call, t.timeout, t.name)

    @property
    def unstoppable(self) -> int:
        """Task threads still running code (Python cannot stop them; they end with the process)."""
        return self.threads.running

    def shutdown(self) -> None:
        self.threads.shutdown()
        self.processes.shutdown()
