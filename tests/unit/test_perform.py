"""node/perform.py's one failed-entry builder and the waiting line the worker pool, task threads
and task processes share (node/waiters.py): pure, no Redis."""

from __future__ import annotations

import asyncio
import json

from node.executor import TaskEscaped
from node.perform import failed_outcome
from node.waiters import Waiters


def _raise(e: BaseException) -> BaseException:
    try:
        raise e
    except BaseException as caught:
        return caught


def test_a_failed_entry_names_the_error_and_keeps_the_job() -> None:
    o = failed_outcome("n1:1+0", "q", '{"class":"t","queue":"q","args":[{"a":1}]}', ValueError("bad"), 0.0)
    entry = json.loads(o.entry)
    assert o.kind == "fail"
    assert (entry["exception"], entry["error"], entry["backtrace"]) == ("ValueError", "bad", None)
    assert entry["payload"] == {"class": "t", "queue": "q", "args": [{"a": 1}]}
    assert list(entry) == ["worker", "queue", "payload", "exception", "error", "backtrace", "failed_at"]


def test_a_failed_entry_carries_the_backtrace_and_names_an_escape_as_itself() -> None:
    entry = json.loads(failed_outcome("w", "q", "{}", _raise(TaskEscaped("SystemExit", "3")), 0.0,
                                      backtrace=True).entry)
    assert entry["exception"] == "SystemExit"
    assert any("_raise" in line for line in entry["backtrace"])
    assert json.loads(failed_outcome("w", "q", "{}", ValueError(), 0.0).entry)["error"] == "ValueError"


def test_an_error_whose_text_cannot_be_read_still_gives_an_entry() -> None:
    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    entry = json.loads(failed_outcome("w", "q", "not json \udcff", Hostile(), 0.0).entry)
    assert (entry["exception"], entry["error"]) == ("Hostile", "Hostile")
    assert entry["payload"].startswith("not json")


async def test_waiters_wake_in_order_and_a_cancelled_wakeup_is_passed_on() -> None:
    w = Waiters()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await w.wait()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert len(w) == 3
    assert w.wake_one()
    tasks[0].cancel()  # picked, then cancelled before it ran: its turn goes to the next one
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == [1] and len(w) == 1
    w.wake_all()
    await asyncio.gather(*tasks[1:])
    assert order == [1, 2] and not w.wake_one()
