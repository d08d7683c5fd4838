"""Small asyncio helpers that keep cancellation intact.

On Python 3.11 `asyncio.wait_for` turns a cancellation that races its timeout into
`TimeoutError` (fixed in 3.12); a loop that tolerates timeouts then swallows the cancellation and
never stops. `asyncio.timeout` keeps it, so every bounded wait here uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from .redis_errors import ConnectionError as RedisConnectionError
from .redis_errors import RedisError

T = TypeVar("T")

# What a Redis call can raise when the server or the link fails. Not RuntimeError: a bug must not
# be retried as an outage. uvloop's RuntimeError on a reset transport reaches callers as redis-py's
# ConnectionError (the connection classes of cluster/connection.py convert it).
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
# Among them, a dropped connection (RST, a closed socket): worth one retry at once, not a wait.
REDIS_DROPPED: tuple[type[BaseException], ...] = (RedisConnectionError, ConnectionError)


async def within(seconds: float, aw: Awaitable[T]) -> T:
    """`await aw`, bounded by `seconds` (raises TimeoutError).

    Also raises a cancellation that arrived during the call but was swallowed inside it: redis-py
    bounds its socket I/O with 3.11's `asyncio.wait_for`, which can lose a cancel that races the
    reply, so the call returns normally and a loop that should have stopped (a leader's renewals,
    cancelled at step-down) runs on. Counts are compared, not `cancelling() > 0`: on 3.11 a
    TaskGroup whose child failed leaves a stale cancel request on its parent task."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    async with asyncio.timeout(seconds):
        res = await aw
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError
    return res


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False
