"""One node's slots share their ack+fetch calls: the calls slots make while one is in flight go out
together in the next, as one `fetch.lua` call (cluster/fetchbatch.py builds it).

A lone call goes out on the next loop iteration, so an idle node picks a job up as fast as with a
call per slot; under a backlog the batch grows with the slots that finished during one round trip,
so the round trip, the script's own overhead and the node's packing and parsing are paid once per
batch instead of once per job. Nothing about a job changes: each slot still acks its own job and
gets at most one, recorded in flight in the same step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.clock import Clock
from cluster.fetchbatch import FetchCall, SlotCall, SlotReply, parse

Run = Callable[[list[str], list[Any]], Awaitable[Any]]


class FetchBatcher:
    def __init__(self, call: FetchCall, run: Run, clock: Clock, on_bad_keys: Callable[[str], None], *,
                 max_batch: int = 64, max_inflight: int = 1) -> None:
        self.call_builder, self.run, self.clock, self.on_bad_keys = call, run, clock, on_bad_keys
        self.max_batch, self.max_inflight = max_batch, max_inflight
        self.pending: list[tuple[SlotCall, asyncio.Future[SlotReply]]] = []
        self.inflight = 0
        self.scheduled = False
        self.calls = 0  # script calls made (for /status and the benchmarks: jobs per call)
        self.records = 0
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, c: SlotCall) -> SlotReply:
        """This slot's reply. A failed script call (a Redis error, a lost reply) raises here for
        every slot of its batch; each retries with its own execution id, as with a call of its own."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SlotReply] = loop.create_future()
        self.pending.append((c, fut))
        if not self.scheduled and self.inflight < self.max_inflight:
            self.scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self.scheduled = False
        while self.pending and self.inflight < self.max_inflight:
            batch = [(c, f) for c, f in self.pending[:self.max_batch] if not f.done()]  # done: its slot was cancelled
            del self.pending[:self.max_batch]
            if not batch:
                continue
            self.inflight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[SlotCall, asyncio.Future[SlotReply]]]) -> None:
        try:
            keys, args = self.call_builder.build([c for c, _ in batch], self.clock.time())
            self.calls += 1
            self.records += len(batch)
            bad, replies = parse(await self.run(keys, args), len(batch))
        except BaseException as e:  # handed to every waiting slot, which decides
            for _, f in batch:
                if not f.done():
                    f.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            if not isinstance(e, Exception):
                raise
            return
        finally:
            self.inflight -= 1
            if self.pending and not self.scheduled:
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        if bad:
            self.on_bad_keys(bad)
        for (_, f), r in zip(batch, replies, strict=True):
            if not f.done():
                f.set_result(r)
