"""Redis election across a Redis that lost its data (docs/FAULTS.md F7c, issue 20 item 4).

Each test runs its own redis-server (it is killed and restarted) and in-process candidates with
the short timing of `test_election.py` (lease 2 s, margin 0.6 s).

- An emptied Redis cannot prove that the previous lease is over: the candidate that first looks at
  the lock in the new run keeps it from everyone for one lease (acquire.lua's lock-delay), so a
  leader that could not see the restart (cut off from Redis) has stopped before anyone else leads;
  a lock restored with little TTL left is kept lease - margin (its holder's latest deadline).
- An epoch counter restored from an older snapshot never reissues an epoch: the first acquire in a
  new run (a new `run_id`) floors the counter at Redis' time in ms.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cluster.client import Client
from cluster.clock import SYSTEM_CLOCK
from cluster.election.base import LOCK_DELAY_PREFIX, Term
from cluster.election.redis import RedisElector
from cluster.keys import Keys
from cluster.observe import NULL_OBSERVER
from tests.faults.harness import redis_binary
from tests.integration.test_election import CFG, Candidate, Group, assert_terms_ordered, redis_clients
from tests.support import missing, wait_until_async
from tests.support.nodes import with_port
from tests.support.proxy import TcpProxy
from tests.support.servers import RedisServer

LOCK_DELAY = CFG.lease  # lock absent in a new run
RESTORED_KEEP = CFG.lease - CFG.margin  # lock restored in a new run


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_binary()
    if binary is None:
        missing("redis-server is not installed")
    server = RedisServer(tmp_path / "redis", binary=binary).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def group(own_redis: RedisServer, tcp_proxy: Callable[..., TcpProxy]) -> AsyncIterator[Group]:
    async def make(name: str, namespace: str, proxy: TcpProxy | None, zk_proxy: TcpProxy | None) -> Candidate:
        url = with_port(own_redis.url, proxy.port) if proxy else own_redis.url
        general, election = redis_clients(url)
        elector = RedisElector(node_id=name, keys=Keys(namespace), redis=general, election_redis=election,
                               config=CFG, clock=SYSTEM_CLOCK, observer=NULL_OBSERVER)
        return Candidate(name, elector, [general, election])

    g = Group(make, own_redis.url, f"t{uuid.uuid4().hex[:8]}", tcp_proxy)
    try:
        yield g
    finally:
        await g.close()


async def _admin(server: RedisServer) -> Redis:
    return Redis.from_url(server.url, decode_responses=True)


async def test_a_leader_that_missed_an_empty_restart_stops_before_anyone_else_leads(
        group: Group, own_redis: RedisServer) -> None:
    """The old leader is cut off from Redis (blackholed) when Redis restarts empty, so it cannot
    learn of the loss: it leads on until its deadline. The candidate must not lead before that."""
    old = await group.add(proxied=True)
    await group.wait_leader(5 + LOCK_DELAY)
    new = await group.add()
    term: Term | None = old.current
    assert term is not None
    assert old.proxy is not None
    old.proxy.blackhole()
    own_redis.kill()
    own_redis.wipe_data()
    own_redis.start()
    t_up = time.monotonic()
    admin = await _admin(own_redis)
    try:  # meanwhile the lock holds the lock-delay placeholder, and nobody is reported leading
        held = await wait_until_async(lambda: admin.get(group.keys.corral_lock), 3.0, 0.01,
                                      message="the lock-delay placeholder")
        assert str(held).startswith(LOCK_DELAY_PREFIX), held
        assert await Client(admin, group.namespace).leader() is None
    finally:
        await admin.aclose()
    # the old term's deadline is what it counts on: Redis lost the lock long before it
    await group.wait_leader(LOCK_DELAY + CFG.lease + 2.0, exclude=(old,))
    started = new.terms[-1].start
    ended = old.terms[-1].end
    assert ended is not None, "the cut-off leader never stepped down"
    print(f"\nempty restart: old term ended {ended - t_up:.3f}s after Redis was up (deadline "
          f"{term.deadline - t_up:.3f}s), new term started {started - t_up:.3f}s after")
    assert ended <= term.deadline + CFG.renew_period + 0.5  # it stops by its deadline (loop wake-up allowed)
    assert_terms_ordered(group.all_terms())  # the new term starts after the old one ended: no overlap
    # and not much later: one lock-delay after the first look at the new run, plus a retry
    assert started - t_up <= LOCK_DELAY + CFG.retry_period + 1.0, f"new leader {started - t_up:.2f}s after up"


async def test_epochs_are_never_reissued_after_a_restore_from_an_older_snapshot(
        group: Group, own_redis: RedisServer) -> None:
    """Three terms, SAVE after the first, kill -9, restart from the RDB: the counter is back at the
    first term's epoch, yet the next term's epoch is above every epoch issued."""
    admin = await _admin(own_redis)
    try:
        issued = []
        first = await group.add()
        leader = await group.wait_leader(5 + LOCK_DELAY)
        assert leader.current is not None
        issued.append(leader.current.epoch)
        await admin.save()  # the snapshot holds the first term's epoch
        for _ in range(2):
            nxt = await group.add()
            await group.release(leader)
            leader = await group.wait_leader(5, exclude=(leader,))
            assert leader is nxt and leader.current is not None
            issued.append(leader.current.epoch)
        assert issued == sorted(set(issued)), issued
        await group.release(leader)
        own_redis.kill()  # kill -9: the RDB is the one SAVEd after the first term
        own_redis.start()
        await admin.aclose()
        admin = await _admin(own_redis)
        restored = int(await admin.get(group.keys.epoch) or 0)
        assert restored == issued[0], f"the restore did not bring the old counter back: {restored} vs {issued}"
        last = await group.add()
        leader = await group.wait_leader(5 + LOCK_DELAY + CFG.lease, exclude=(first,))
        assert leader is last and leader.current is not None
        print(f"\nepochs issued {issued}, counter restored to {restored}, next epoch {leader.current.epoch}")
        assert leader.current.epoch > max(issued), f"epoch {leader.current.epoch} reissued (issued {issued})"
        assert await admin.get(group.keys.epoch_run) == (await admin.info("server"))["run_id"]
    finally:
        await admin.aclose()


async def test_a_new_run_keeps_a_restored_lock_until_its_holders_latest_deadline(
        group: Group, own_redis: RedisServer) -> None:
    """A lock restored with little TTL left (its holder's later renewals may have been lost) is
    made to live until the latest deadline its holder can have: lease - margin after the run started."""
    admin = await _admin(own_redis)
    try:
        await admin.set(group.keys.corral_lock, "gone/7/ab", px=60_000)
        await admin.save()
        own_redis.kill()
        t_spawn = time.monotonic()  # the new run starts after this
        own_redis.start()
        await admin.aclose()
        admin = await _admin(own_redis)
        await admin.pexpire(group.keys.corral_lock, 100)  # as if restored 0.1 s before expiry
        cand = await group.add()
        await group.wait_leader(LOCK_DELAY + CFG.lease + 1.0)
        waited = cand.terms[-1].start - t_spawn
        print(f"\nrestored lock with 0.1 s left: the first term started {waited:.3f}s after the restart")
        # the old holder's deadline is at most lease - margin after the new run started
        assert waited >= RESTORED_KEEP, f"led {waited:.3f}s after the restart, kept {RESTORED_KEEP}s"
    finally:
        await admin.aclose()


async def test_a_long_running_redis_needs_no_lock_delay(group: Group, own_redis: RedisServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Every lease of a previous run ended one lease after this run started: a Redis up for longer
    than that lets the first candidate lead at once, with no lock-delay."""
    await asyncio.sleep(max(0.0, LOCK_DELAY + 1.0 - own_redis_uptime(own_redis)))
    caplog.set_level(logging.INFO, logger="corral.election")
    cand = await group.add()
    await wait_until_async(lambda: bool(cand.terms), LOCK_DELAY + 3.0, 0.005, message="the first candidate to lead")
    assert not [r for r in caplog.records if getattr(r, "event", None) == "leader_lock_delay"]
    admin = await _admin(own_redis)
    try:
        assert await admin.get(group.keys.epoch_run) == (await admin.info("server"))["run_id"]
    finally:
        await admin.aclose()


def own_redis_uptime(server: RedisServer) -> float:
    with server.client(decode_responses=True) as c:
        return float(c.info("server")["uptime_in_seconds"])
