"""TaskThreads (node/task_threads.py) with real threads: clocks start when the code starts,
timed-out threads are counted and replaced, a waiting job that is cancelled never runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from node.task_threads import TaskThreads


async def test_a_job_waiting_for_a_thread_has_no_clock() -> None:
    threads = TaskThreads(1)
    gate = threading.Event()
    first = asyncio.create_task(threads.run(lambda: gate.wait(5), label="first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(threads.run(lambda: "ran", timeout=0.2, label="second"))
    await asyncio.sleep(0.4)  # twice the second job's timeout, spent waiting for the only thread
    assert threads.waiting == 1 and not second.done()
    gate.set()
    assert await first is True
    assert await second == "ran"
    threads.shutdown()


async def test_a_timed_out_thread_is_counted_and_replaced() -> None:
    threads = TaskThreads(1)
    gate = threading.Event()
    with pytest.raises(TimeoutError):
        await threads.run(lambda: gate.wait(5), timeout=0.05)
    assert (threads.busy, threads.timed_out) == (0, 1)
    assert await threads.run(lambda: threading.current_thread().name) != ""  # a fresh thread ran it
    assert threads.snapshot()["timed_out"] == 1
    gate.set()
    for _ in range(200):
        if threads.timed_out == 0:
            break
        await asyncio.sleep(0.01)
    assert (threads.timed_out, threads.busy) == (0, 0)
    threads.shutdown()


async def test_a_cancelled_waiter_leaves_the_line_and_never_runs() -> None:
    threads = TaskThreads(1)
    gate = threading.Event()
    ran: list[str] = []
    first = asyncio.create_task(threads.run(lambda: gate.wait(5)))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(threads.run(lambda: ran.append("leaving")))
    staying = asyncio.create_task(threads.run(lambda: ran.append("staying")))
    await asyncio.sleep(0.05)
    assert threads.waiting == 2
    leaving.cancel()  # a job pushed back at shutdown while it waited for a thread
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert threads.waiting == 1
    gate.set()
    await first
    await asyncio.wait_for(staying, 2)
    assert ran == ["staying"]
    threads.shutdown()


async def test_exceptions_of_any_kind_reach_the_caller() -> None:
    threads = TaskThreads(2)

    def exits() -> None:
        raise SystemExit(4)

    with pytest.raises(SystemExit):
        await threads.run(exits)
    assert threads.busy == 0
    threads.shutdown()
