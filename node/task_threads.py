"""Threads for sync tasks, with timeouts that account for what Python cannot do: stop a thread.

A sync task whose `timeout` passes fails with `JobTimeout`, but its thread runs on until the
function returns. Such a thread is counted as `timed_out`, never as free: the pool starts another
thread so that `size` jobs can still run, within 2 x `size` threads in all: past `size` timed-out
threads fewer jobs run at once, and with 2 x `size` new jobs wait for one of them to end (without
a clock: their timeout has not started). A job's clock starts only when its function is running in a
thread, so a job that never ran never fails `JobTimeout`. Threads are daemons: a node that exits
(SIGTERM past its grace) does not wait for them, and a job it pushed back dies with the process.

    threads = TaskThreads(size=16, nice=10)
    result = await threads.run(functools.partial(fn, params, ctx), timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .waiters import Waiters

log = logging.getLogger("corral.executor")
_names = itertools.count(1)


def lower_priority(nice: int) -> None:
    """Run this thread (Linux: PRIO_PROCESS with a thread id is per thread) at a lower CPU priority
    than the node's event loop, so a CPU-bound task delays the loop's heartbeats, fetches and
    pings to the leader process as little as possible."""
    if nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class _Job:
    __slots__ = ("done", "fn", "label", "started", "t0", "timed_out")

    def __init__(self, fn: Callable[[], Any], done: asyncio.Future[Any], started: asyncio.Future[None] | None,
                 label: str) -> None:
        self.fn = fn
        self.done = done
        self.started = started
        self.timed_out = False  # its caller gave up on it (timeout or shutdown): the thread is not free
        self.label = label
        self.t0 = 0.0


class TaskThreads:
    def __init__(self, size: int, nice: int = 0, prefix: str = "corral-task") -> None:
        self.size = size
        self.max_timed_out = size
        self.nice = nice
        self.prefix = prefix
        self.busy = 0  # threads running a job whose caller still waits for it
        self.timed_out = 0  # threads still running a job its caller gave up on
        self.waiting = 0  # jobs waiting for a thread (their clock has not started)
        self.closed = False
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._waiters = Waiters()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _can_start(self) -> bool:
        return self.busy < self.size and self.busy + self.timed_out < self.size + self.max_timed_out

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def running(self) -> int:
        """Threads running task code right now (busy + timed out)."""
        return self.busy + self.timed_out

    def stuck_problem(self) -> str | None:
        """Why no sync job can start any more, or None: every thread the pool may run is held by a
        job past its timeout (Python cannot stop them; only the process ending frees them)."""
        if self.timed_out >= self.size + self.max_timed_out:
            return (f"all {self.timed_out} task threads are stuck in jobs past their timeout (--threads "
                    f"{self.size}); sync tasks cannot run until one returns")
        return None

    def snapshot(self) -> dict[str, int]:
        return {"size": self.size, "busy": self.busy, "timed_out": self.timed_out, "idle": self.idle,
                "waiting_jobs": self.waiting}

    async def run(self, fn: Callable[[], Any], timeout: float | None = None,  # noqa: ASYNC109  # from its start
                  label: str = "") -> Any:
        """Run `fn` in a thread; with `timeout`, raise TimeoutError `timeout` seconds after it began."""
        loop = self._loop = asyncio.get_running_loop()
        if self.closed:
            raise RuntimeError("task threads are shut down")
        if not self._can_start():
            self.waiting += 1
            try:
                while not self._can_start():
                    await self._waiters.wait()  # one woken but leaving (cancelled) passes the free thread on
            finally:
                self.waiting -= 1
        self.busy += 1
        job = _Job(fn, loop.create_future(), loop.create_future() if timeout else None, label)
        inbox = self._idle.pop() if self._idle else self._spawn()
        inbox.put(job)
        try:
            if job.started is not None:
                await job.started  # the clock starts when the function runs, not when it was queued
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(job.done)
            return await asyncio.shield(job.done)
        except BaseException:  # TimeoutError, or the caller was cancelled (shutdown)
            if not job.done.done():
                job.timed_out = True
                self.busy -= 1
                self.timed_out += 1
                job.done.add_done_callback(_consume)
                self._wake()  # its place among the `size` running jobs is free for a waiting one
                log.warning("task thread still running a job its caller gave up on; counted as timed out, "
                            "not free", extra={"event": "thread_timed_out", "task": label,
                                               "timed_out_threads": self.timed_out})
            raise

    def _spawn(self) -> queue.SimpleQueue[_Job | None]:
        inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        threading.Thread(target=self._work, args=(inbox,), name=f"{self.prefix}-{next(_names)}", daemon=True).start()
        return inbox

    def _work(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        lower_priority(self.nice)
        while True:
            job = inbox.get()
            if job is None:
                return
            loop = job.done.get_loop()
            job.t0 = time.monotonic()
            if job.started is not None:
                loop.call_soon_threadsafe(_set, job.started, None)
            try:
                result, error = job.fn(), None
            except BaseException as e:  # the caller decides what a task's exception means
                result, error = None, e
            try:
                loop.call_soon_threadsafe(self._finished, job, inbox, result, error)
            except RuntimeError:  # the loop is closed: the node has stopped
                return

    def _finished(self, job: _Job, inbox: queue.SimpleQueue[_Job | None], result: Any,
                  error: BaseException | None) -> None:
        if job.timed_out:
            self.timed_out -= 1
            log.warning("a timed-out task thread finished after %.1f s; the thread is free again",
                        time.monotonic() - job.t0, extra={"event": "thread_freed", "task": job.label})
        else:
            self.busy -= 1
        if not job.done.done():
            if error is not None:
                job.done.set_exception(error)
            else:
                job.done.set_result(result)
        if self.closed or len(self._idle) >= self.size:
            inbox.put(None)  # more idle threads than the pool's size: this one ends
        else:
            self._idle.append(inbox)
        self._wake()

    def _wake(self) -> None:
        if self._can_start():
            self._waiters.wake_one()

    def shutdown(self) -> None:
        """Idle threads end; running ones are daemons and end with the process."""
        self.closed = True
        for inbox in self._idle:
            inbox.put(None)
        self._idle.clear()
        self._waiters.wake_all()


def _set(fut: asyncio.Future[None], value: None) -> None:
    if not fut.done():
        fut.set_result(value)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a late exception of a job nobody awaits any more is not "never retrieved"
