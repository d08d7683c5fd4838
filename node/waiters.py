"""Coroutines waiting their turn for something that frees up one at a time (a thread, a process, the
worker pool's capacity), woken first come, first served.

    waiters = Waiters()
    await waiters.wait()        # in the one that needs a turn
    waiters.wake_one()          # where one turn frees up
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Waiters:
    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        """How many wait now."""
        return len(self._queue)

    async def wait(self) -> None:
        """Until a `wake_one()` (or `wake_all()`) picks this caller. One cancelled after it was
        picked passes its turn on, so a turn is never lost."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.wake_one()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._queue.remove(fut)

    def wake_one(self) -> bool:
        """Wake the longest waiting caller; False if none waits."""
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return True
        return False

    def wake_all(self) -> None:
        while self.wake_one():
            pass
