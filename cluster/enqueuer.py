"""The enqueue capability: what task code and plugins may do with the cluster through their context.

A task's `ctx.client` (`JobContext`) and a plugin's `ctx.client` (`PluginContext`) are the node's
`Client` at run time; their type is this Protocol, the part they are documented for (queueing
follow-up jobs). So neither `task.py` nor `plugins.py` depends on `client.py`, which depends on
both: the library has no import circle (`tests/unit/test_layout_rules.py`).

    async def run(params, ctx):
        await ctx.client.enqueue_in(60, "followUp", {"id": params["id"]})
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol


class Enqueuer(Protocol):
    """Queue jobs now, at a time or after a delay (signatures of `cluster.Client`)."""

    async def enqueue(self, task: str, params: dict[str, Any] | None = None, *, queue: str | None = None,
                      raw_args: Sequence[Any] | None = None, unknown_ok: bool = False) -> bool: ...

    async def enqueue_at(self, when: float | dt.datetime, task: str, params: dict[str, Any] | None = None, *,
                         queue: str | None = None, raw_args: Sequence[Any] | None = None,
                         unknown_ok: bool = False) -> int: ...

    async def enqueue_in(self, delay: float | dt.timedelta, task: str, params: dict[str, Any] | None = None, *,
                         queue: str | None = None, raw_args: Sequence[Any] | None = None,
                         unknown_ok: bool = False) -> int: ...
