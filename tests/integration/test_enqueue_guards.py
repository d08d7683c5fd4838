"""Issue 20.1: an enqueue hook's effect and the job's move are one atomic step.

QueueLock and DelayQueueLock are enqueue guards (cluster/plugins.py `EnqueueGuard`) applied by
the script that moves the job (unstage.lua for promoted delayed jobs, enqueue_guarded.lua for
`Client.enqueue`). The exact interleavings of the issue are driven against a real Redis: the
leader's term ends between the hooks and `unstage` (SIGTERM: `fenced` raises LeaseLost before
sending), and a ConnectionError raised before `unstage` (or the enqueue script) reaches Redis,
then the retry.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.client import Client
from cluster.clock import SYSTEM_CLOCK
from cluster.election.base import Term
from cluster.errors import LeaseLost
from cluster.observe import Observer
from cluster.scheduler import Scheduler
from cluster.scripts import Scripts
from cluster.task import Registry, Task

NS = "resque"
TOKEN = "guard-test/1/x"


async def _noop(params: dict[str, Any], ctx: Any) -> None: ...


REGISTRY = Registry([Task(name="qlocked", run=_noop, plugins=["QueueLock"]),
                     Task(name="dlocked", run=_noop, plugins=["DelayQueueLock"])])


@dataclass
class EndingTerm(Term):
    """A term that stays valid for `valid_calls` checks, then ends (the SIGTERM seam)."""

    valid_calls: int = 1_000_000

    def valid(self) -> bool:
        self.valid_calls -= 1
        return self.valid_calls >= 0 and super().valid()


def _term(valid_calls: int = 1_000_000) -> EndingTerm:
    return EndingTerm(node="t", token=TOKEN, epoch=1, since=time.time(), deadline=time.monotonic() + 3600,
                      clock=SYSTEM_CLOCK, valid_calls=valid_calls)


class FailingOnce(Scripts):
    """Raises ConnectionError, before anything is sent, on the first call of `name`."""

    def __init__(self, redis: Any, name: str) -> None:
        super().__init__(redis)
        self.fail_name = name
        self.failed = 0

    async def run(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        if name.startswith(self.fail_name) and not self.failed:
            self.failed += 1
            raise RedisConnectionError("injected: connection lost before the script was sent")
        return await super().run(name, keys, args, client)


@pytest.fixture
async def gclient(redis_url: str) -> AsyncIterator[Client]:
    c = await Client.connect(redis_url, namespace=NS, registry=REGISTRY)
    await c.redis.set(c.keys.leader_lock, TOKEN)
    yield c
    await c.close()


def _scheduler(c: Client) -> Scheduler:
    return Scheduler(redis=c.redis, keys=c.keys, clock=SYSTEM_CLOCK, observer=Observer(), registry=REGISTRY, client=c)


async def _stage_due(c: Client, task: str, params: dict[str, Any]) -> None:
    await c.enqueue_at(time.time() - 2, task, params)


async def test_promoted_job_survives_a_term_that_ends_between_its_hook_and_unstage(gclient: Client) -> None:
    c = gclient
    await _stage_due(c, "qlocked", {"k": 1})
    sched = _scheduler(c)
    with pytest.raises(LeaseLost):
        await sched.tick(_term(valid_calls=1))  # promote runs, the term ends before unstage is sent
    assert await c.redis.llen(c.keys.promoting) == 1
    await _scheduler(c).tick(_term())  # the next leader
    assert await c.queued("default", 0, -1) == [{"class": "qlocked", "queue": "default", "args": [{"k": 1}]}]
    assert await c.redis.llen(c.keys.promoting) == 0
    assert await c.redis.exists(c.keys.queue_lock("qlocked", "default", '[{"k":1}]')) == 1
    # and the lock still refuses a real duplicate
    assert await c.enqueue("qlocked", {"k": 1}) is False


async def test_promoted_job_survives_a_connection_error_before_unstage(gclient: Client) -> None:
    c = gclient
    await _stage_due(c, "qlocked", {"k": 2})
    sched = _scheduler(c)
    sched.scripts = FailingOnce(c.redis, "unstage")
    with pytest.raises(RedisConnectionError):
        await sched.tick(_term())
    await sched.tick(_term())  # what LeaderDuties._guard does after a Redis error: the tick again
    assert await c.length("default") == 1
    assert await c.redis.llen(c.keys.promoting) == 0


async def test_enqueue_retried_after_a_connection_error_is_not_refused_by_its_own_lock(gclient: Client) -> None:
    c = gclient
    c.scripts = FailingOnce(c.redis, "enqueue")
    c._fast_enqueue = None  # the seam sits on Scripts; the guarded path never uses the fast one
    with pytest.raises(RedisConnectionError):
        await c.enqueue("qlocked", {"k": 3})
    assert await c.enqueue("qlocked", {"k": 3}) is True  # the caller's retry
    assert await c.length("default") == 1
    assert await c.enqueue("qlocked", {"k": 3}) is False  # a real duplicate is still refused
    assert await c.length("default") == 1


async def test_delay_queue_lock_guard_refuses_while_the_same_job_is_delayed(gclient: Client) -> None:
    c = gclient
    await c.enqueue_in(60, "dlocked", {"k": 4})
    assert await c.enqueue("dlocked", {"k": 4}) is False
    assert await c.enqueue("dlocked", {"k": 5}) is True
    assert await c.length("default") == 1
