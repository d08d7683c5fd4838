"""Helpers for tests that run nodes in-process (see tests/integration/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from node.runtime import Node

NodeFactory = Callable[..., Awaitable[Node]]


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02,  # noqa: ASYNC109
                   what: str = "condition") -> None:
    """Poll an async predicate until true; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def results(redis: Redis, key: str = "results") -> list[str]:
    return [str(x) for x in await redis.lrange(key, 0, -1)]
