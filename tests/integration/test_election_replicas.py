"""Leader renewals confirmed by replicas (`ElectionConfig.wait_replicas`, `--leader-wait-replicas`).

With Sentinel, a leader cut off from the majority together with the old primary can keep renewing
there (asynchronous replication) while a promoted replica elects another leader: periodic slots get
claimed on both sides (docs/FAULTS.md F8b). With `wait_replicas = N` a renew only extends the term once
`WAIT N` says N replicas have it, so a leader whose primary lost its replicas stops at its
deadline, before the lock on any promoted replica (which only has confirmed renewals) can expire.

Real servers: a primary and one replica started by the test; the replica is frozen with SIGSTOP
(the primary keeps its link open: it only stops getting acknowledgements, as across a partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aredis

from cluster.aio import wait_event
from cluster.clock import SystemClock
from cluster.election.base import ElectionConfig, Term
from cluster.election.redis import RedisElector
from cluster.keys import Keys
from tests.support import wait_until
from tests.support.servers import RedisServer

CFG = dict(lease=2.0, renew_period=0.3, renew_timeout=0.25, margin=0.6, retry_period=0.25)


async def _lead_until_lost(primary_url: str, config: ElectionConfig, freeze: Callable[[], None],
                           hold: float) -> tuple[float | None, int]:
    """Elect one node, call `freeze`, and return (seconds from freeze to step-down or None if it
    still led after `hold`, renewals confirmed while leading)."""
    general = aredis.Redis.from_url(primary_url, decode_responses=True)
    election = aredis.Redis.from_url(primary_url, decode_responses=True, socket_timeout=config.renew_timeout)
    elector = RedisElector(node_id="n1", keys=Keys("resque"), redis=general, election_redis=election,
                           config=config, clock=SystemClock(), observer=_Observer())
    led = asyncio.Event()
    stepped_down = asyncio.Event()
    ended: list[float] = []

    async def lead(term: Term) -> None:
        led.set()
        try:
            await term.lost.wait()
        finally:
            ended.append(time.monotonic())
            stepped_down.set()

    task = asyncio.create_task(elector.run(lead))
    try:
        await asyncio.wait_for(led.wait(), 10)
        await asyncio.sleep(config.renew_period * 3)  # a few confirmed renewals first
        t_freeze = time.monotonic()
        freeze()
        await wait_event(stepped_down, hold)
        return (ended[0] - t_freeze if ended else None), elector.confirmed_renewals
    finally:
        elector.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)
        await general.aclose()
        await election.aclose()


class _Observer:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


@pytest.fixture
def primary_and_replica(redis_factory: Callable[..., RedisServer]) -> tuple[RedisServer, RedisServer]:
    primary = redis_factory()
    replica = redis_factory(replicaof=f"127.0.0.1 {primary.port}")
    probe = replica.client()
    wait_until(lambda: probe.info("replication").get("master_link_status") == "up", 10, 0.05,
               message="the replica to sync")
    return primary, replica


async def test_unconfirmed_renewals_end_the_term_at_its_deadline(
        primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = primary_and_replica
    config = ElectionConfig(**CFG, wait_replicas=1)
    try:
        took, confirmed = await _lead_until_lost(primary.url, config, replica.pause, hold=6.0)
    finally:
        replica.resume()
    assert confirmed >= 2, "renewals were not confirmed while the replica was up"
    # the last confirmed renew was sent < renew_period before the freeze: the term ends
    # lease - margin after it at the latest
    bound = config.lease - config.margin + config.renew_timeout
    assert took is not None, "the leader kept leading with no replica acknowledging its renewals"
    assert took <= bound, f"stepped down {took:.2f} s after the replica froze (bound {bound:.2f} s)"
    print(f"\nwait_replicas=1: stepped down {took:.3f} s after the replica froze; {confirmed} renewals confirmed before")


async def test_without_wait_replicas_a_frozen_replica_changes_nothing(
        primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    """The control: the default (0) never waits, so the same freeze leaves the leader leading."""
    primary, replica = primary_and_replica
    config = ElectionConfig(**CFG)
    try:
        took, _ = await _lead_until_lost(primary.url, config, replica.pause, hold=3.0)
    finally:
        replica.resume()
    assert took is None, f"stepped down {took:.2f} s after a replica froze, with wait_replicas = 0"


async def test_a_term_no_replica_confirms_is_never_led(
        primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    """Won while the only replica is frozen: the lock is released at once and no duty starts, so a
    leader cut off from its replicas cannot lead even for one lease; once the replica answers
    again, a candidate leads."""
    primary, replica = primary_and_replica
    config = ElectionConfig(**CFG, wait_replicas=1)
    general = aredis.Redis.from_url(primary.url, decode_responses=True)
    election = aredis.Redis.from_url(primary.url, decode_responses=True, socket_timeout=config.renew_timeout)

    async def contend(led: asyncio.Event, seconds: float) -> bool:
        elector = RedisElector(node_id="n1", keys=Keys("resque"), redis=general, election_redis=election,
                               config=config, clock=SystemClock(), observer=_Observer())

        async def lead(term: Term) -> None:
            led.set()
            await term.lost.wait()

        task = asyncio.create_task(elector.run(lead))
        try:
            return await wait_event(led, seconds)
        finally:
            elector.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)

    try:
        replica.pause()
        try:
            assert not await contend(asyncio.Event(), config.lease * 1.5), "led a term no replica confirmed"
        finally:
            replica.resume()
        assert await contend(asyncio.Event(), 10), "did not lead once the replica was back"
    finally:
        await general.aclose()
        await election.aclose()
