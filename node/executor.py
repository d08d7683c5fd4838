"""Where a task's code runs: coroutines on the node's loop, sync functions in a thread pool,
`cpu_bound` tasks in a process pool (spawned workers that load the same task files), so one heavy
task never blocks the loop, its heartbeats or its HTTP endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import multiprocessing
import os
import threading
from collections.abc import Awaitable
from concurrent.futures import Executor as _Executor
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cluster.task import JobContext, Task, call_run

log = logging.getLogger("corral.executor")
_process_registry: dict[str, Task] = {}


def _lower_priority(nice: int) -> None:
    """Run this thread (Linux: PRIO_PROCESS with a thread id is per thread) at a lower CPU priority
    than the node's event loop, so a CPU-bound task delays the loop's heartbeats, fetches and
    pings to the leader process as little as possible."""
    if nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _process_init(tasks_dir: str, parent: int, nice: int) -> None:
    from .lifeline import die_with_parent
    from .loader import load_dir

    die_with_parent(parent)  # a pool worker outliving a killed node would spin on as an orphan
    _lower_priority(nice)

    for t in load_dir(tasks_dir):
        _process_registry[t.name] = t


def _process_entry(task_name: str, params: dict[str, Any], meta: dict[str, Any]) -> Any:
    from cluster.wire import decode_job

    t = _process_registry[task_name]
    ctx = JobContext(job=decode_job(meta["payload"]), queue=meta["queue"], worker=meta["worker"],
                     node_id=meta["node_id"], execution_id=meta["execution_id"], client=None,
                     log=logging.getLogger(f"corral.task.{task_name}"), attempt=meta["attempt"])
    return t.run(params, ctx)


class Executor:
    def __init__(self, *, threads: int, processes: int, tasks_dir: str, nice: int = 0) -> None:
        self.nice = nice
        self.threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="corral-task",
                                          initializer=_lower_priority, initargs=(nice,))
        self._processes: _Executor | None = None
        self._process_count = processes or (os.cpu_count() or 1)
        self.tasks_dir = str(Path(tasks_dir).resolve())

    def _process_pool(self) -> _Executor:
        if self._processes is None:
            self._processes = ProcessPoolExecutor(
                max_workers=self._process_count, mp_context=multiprocessing.get_context("spawn"),
                initializer=_process_init, initargs=(self.tasks_dir, os.getpid(), self.nice),
            )
        return self._processes

    async def run(self, t: Task, params: dict[str, Any], ctx: JobContext) -> Any:
        loop = asyncio.get_running_loop()
        coro: Awaitable[Any]
        if t.is_async:
            coro = call_run(t, params, ctx)
        elif t.cpu_bound:
            meta = {"payload": ctx.job.raw, "queue": ctx.queue, "worker": ctx.worker, "node_id": ctx.node_id,
                    "execution_id": ctx.execution_id, "attempt": ctx.attempt}
            coro = loop.run_in_executor(self._process_pool(), _process_entry, t.name, params, meta)
        else:
            call = functools.partial(contextvars.copy_context().run, t.run, params, ctx)
            coro = loop.run_in_executor(self.threads, call)
        if t.timeout:
            return await asyncio.wait_for(coro, t.timeout)
        return await coro

    def shutdown(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
