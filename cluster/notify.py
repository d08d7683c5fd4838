"""One pub/sub connection per node that turns Corral's wake-up channels into asyncio events.

Producers publish on `corral:wake` (message = queue name) when they queue jobs and on
`corral:delayed_wake` when a delayed job becomes the earliest due. Subscribers that miss a
message (reconnects) lose nothing: workers and the scheduler also re-read on a short interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .aio import REDIS_FAILURES

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.notify")


class Notifier:
    def __init__(self, redis: Redis, channels: dict[str, Callable[[str], object]], retry: float = 0.5) -> None:
        self.redis = redis
        self.channels = channels
        self.retry = retry
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.channels)
                self.connected.set()
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is None:
                        continue
                    handler = self.channels.get(msg["channel"])
                    if handler is not None:
                        handler(msg["data"])
            except REDIS_FAILURES as e:
                self.connected.clear()
                log.debug("notify: subscription lost: %r", e)
                await asyncio.sleep(self.retry)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
