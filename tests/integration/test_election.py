"""Election contract, run for each backend against real servers (docs/ARCHITECTURE.md, house rule 11).

`ElectionContract` holds the behaviour every elector must have; `TestRedisElection` and
`TestZooKeeperElection` run it. Electors run in-process (several in one test, each with its own
Redis clients and, for ZooKeeper, its own session) with short leases so a test takes seconds:
lease 2 s, margin 0.6 s, renew every 0.3 s with a 0.2 s timeout (lease - margin = 1.4 s > 0.5 s).

What each term did is recorded by the `lead` function the candidates run: the epoch, the token,
when the duties started and when they were cancelled (monotonic, one process). Overlap is the
old term's end minus the next term's start and must be <= 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from cluster.client import Client
from cluster.clock import SYSTEM_CLOCK
from cluster.connection import RedisSettings, make_redis
from cluster.election.base import ElectionConfig, Term
from cluster.election.redis import RedisElector
from cluster.errors import ConfigError, LeaseLost
from cluster.keys import Keys
from cluster.leader import fenced
from cluster.observe import NULL_OBSERVER
from cluster.scripts import Scripts
from cluster.wire import js_date
from tests.support import wait_until_async
from tests.support.nodes import with_port
from tests.support.proxy import TcpProxy

CFG = ElectionConfig(lease=2.0, renew_period=0.3, renew_timeout=0.2, margin=0.6, retry_period=0.25)
HANDOFF = 0.5  # docs/FAULTS.md: graceful handoff bound
ZK_SESSION = 4.0  # seconds; the test ZooKeeper (tickTime 1 s) allows 2..20


# ---- ElectionConfig (unit) -----------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"lease": 2.0, "renew_period": 0.3, "renew_timeout": 0.2, "margin": 0.6, "retry_period": 0.25},
    {"lease": 5.0, "renew_period": 1.0, "renew_timeout": 0.5, "margin": 1.5},
])
def test_election_config_accepts_valid_timing(kwargs: dict[str, float]) -> None:
    cfg = ElectionConfig(**kwargs)
    assert cfg.lease - cfg.margin > cfg.renew_period + cfg.renew_timeout


@pytest.mark.parametrize(("kwargs", "mentions"), [
    # lease - margin must exceed renew_period + renew_timeout
    ({"lease": 5.0, "renew_period": 2.0, "renew_timeout": 1.5, "margin": 1.5}, "lease - margin"),
    ({"lease": 2.0, "renew_period": 1.0, "renew_timeout": 0.5, "margin": 0.5}, "lease - margin"),  # equal
    ({"lease": 2.0, "renew_period": 0.3, "renew_timeout": 0.2, "margin": 2.0}, "lease - margin"),  # margin = lease
    ({"lease": 1.0, "renew_period": 1.0, "renew_timeout": 0.5, "margin": 0.1}, "lease - margin"),
    # every value positive, a number, not a bool
    ({"lease": 0}, "lease"),
    ({"margin": -1.0}, "margin"),
    ({"renew_period": True}, "renew_period"),
    ({"renew_timeout": "0.5"}, "renew_timeout"),
    # candidates must retry within the lease
    ({"retry_period": 5.0}, "retry_period"),
])
def test_election_config_rejects_bad_timing(kwargs: dict[str, Any], mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions):
        ElectionConfig(**kwargs)


# ---- harness -----------------------------------------------------------------------------


@dataclass
class Held:
    """One term as the duties saw it (monotonic seconds)."""

    epoch: int
    token: str
    start: float
    end: float | None = None


@dataclass
class Candidate:
    name: str
    elector: Any
    clients: list[Redis]
    terms: list[Held] = field(default_factory=list)
    current: Term | None = None
    task: asyncio.Task[None] | None = None
    proxy: TcpProxy | None = None  # between this candidate and Redis, when proxied
    zk_proxy: TcpProxy | None = None  # between this candidate and ZooKeeper, when proxied

    async def lead(self, term: Term) -> None:
        held = Held(term.epoch, term.token, time.monotonic())
        self.terms.append(held)
        self.current = term
        try:
            await asyncio.Event().wait()
        finally:
            held.end = time.monotonic()

    @property
    def leading(self) -> bool:
        return bool(self.elector.state.is_leader)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()


class Group:
    """Candidates of one election, started and torn down by the `group` fixture."""

    def __init__(self, make: Callable[[str, str, TcpProxy | None, TcpProxy | None], Awaitable[Candidate]],
                 redis_url: str, namespace: str, proxy_factory: Callable[..., TcpProxy]) -> None:
        self._make = make
        self.redis_url = redis_url
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.candidates: list[Candidate] = []
        self._proxy_factory = proxy_factory

    async def add(self, *, proxied: bool = False, zk_port: int | None = None) -> Candidate:
        name = f"c{len(self.candidates) + 1}"
        proxy = None
        if proxied:
            port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
            proxy = self._proxy_factory(port, name=f"redis-{name}")
        zk_proxy = self._proxy_factory(zk_port, name=f"zk-{name}") if zk_port else None
        cand = await self._make(name, self.namespace, proxy, zk_proxy)
        cand.proxy, cand.zk_proxy = proxy, zk_proxy
        cand.task = asyncio.create_task(cand.elector.run(cand.lead), name=f"elector-{name}")
        self.candidates.append(cand)
        return cand

    async def start(self, n: int, **kwargs: Any) -> list[Candidate]:
        return [await self.add(**kwargs) for _ in range(n)]

    def alive(self) -> list[Candidate]:
        return [c for c in self.candidates if c.alive]

    def leaders(self) -> list[Candidate]:
        return [c for c in self.alive() if c.leading]

    async def wait_leader(self, timeout: float, *, exclude: tuple[Candidate, ...] = ()) -> Candidate:  # noqa: ASYNC109
        def one() -> Candidate | None:
            found = self.leaders()
            if len(found) == 1 and found[0] not in exclude and found[0].terms:
                return found[0]
            return None

        return await wait_until_async(one, timeout, 0.005, message="exactly one leader")

    async def release(self, cand: Candidate) -> None:
        """SIGTERM's path: release, then the task ends."""
        await cand.elector.release()
        cand.elector.stop()
        assert cand.task is not None
        cand.task.cancel()
        await asyncio.wait([cand.task], timeout=5)

    def all_terms(self) -> list[Held]:
        return sorted((h for c in self.candidates for h in c.terms), key=lambda h: h.start)

    async def close(self) -> None:
        for c in self.candidates:
            c.elector.stop()
            if c.task is not None:
                c.task.cancel()
        # asyncio.wait, not wait_for: 3.11's wait_for keeps waiting after its timeout until the task
        # ends, so an elector that ignores its cancel hung the teardown (300 s) instead of failing it.
        tasks = [c.task for c in self.candidates if c.task is not None]
        _done, stuck = await asyncio.wait(tasks, timeout=10) if tasks else (set(), set())
        for c in self.candidates:
            for r in c.clients:  # bounded: a client behind a blackholed proxy must not hang teardown
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(r.aclose(), 5)
        assert not stuck, f"electors still running 10 s after stop() and cancel: {[t.get_name() for t in stuck]}"


class SwallowingScripts:
    """Stands in for an elector's `Scripts`: every call replies 0.1 s late, and a cancel that lands
    meanwhile is lost, the reply returned as if nothing happened. That is what redis-py's own
    `asyncio.wait_for` does on Python 3.11 when a cancel races the reply (rarely, so made certain)."""

    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self.in_flight = asyncio.Event()
        self.swallowed = 0

    async def run(self, name: str, keys: list[str], args: list[Any], client: Redis | None = None) -> Any:
        call = asyncio.ensure_future(self._scripts.run(name, keys, args, client))
        self.in_flight.set()
        try:
            res = await asyncio.shield(call)
            await asyncio.sleep(0.1)
            return res
        except asyncio.CancelledError:
            self.swallowed += 1
            return await call


def assert_terms_ordered(terms: list[Held]) -> None:
    """Epochs strictly increase across terms and no two terms overlap (end <= next start)."""
    epochs = [h.epoch for h in terms]
    assert epochs == sorted(set(epochs)), f"epochs not strictly increasing: {epochs}"
    for old, new in itertools.pairwise(terms):
        assert old.end is not None, f"term {old.epoch} still running when {new.epoch} started"
        assert old.end <= new.start, (f"overlap: term {old.epoch} ended {old.end - new.start:+.3f}s "
                                      f"after term {new.epoch} started")


def zk_lock_nodes(hosts: str, path: str) -> list[tuple[str, int]]:
    """(owner id, czxid) of every lock node under `path`, read with a separate session."""
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=hosts)
    zk.start(10)
    try:
        out = []
        for child in zk.get_children(path):
            with contextlib.suppress(Exception):
                data, stat = zk.get(f"{path}/{child}")
                out.append((data.decode(), int(stat.czxid)))
        return out
    finally:
        zk.stop()
        zk.close()


def zk_contenders(hosts: str, path: str) -> list[str]:
    return [owner for owner, _ in zk_lock_nodes(hosts, path)]


def redis_clients(url: str) -> tuple[Redis, Redis]:
    """(general client, election client with the renew timeout), as node.runtime builds them."""
    settings = RedisSettings(url=url)
    return make_redis(settings), make_redis(settings, socket_timeout=CFG.renew_timeout, max_connections=8)


# ---- the contract --------------------------------------------------------------------------


class ElectionContract:
    """Every backend: one leader, increasing epochs, fast graceful handoff, fenced stale terms,
    a leader cut off from Redis stops before anyone else starts."""

    @pytest.fixture
    def backend(self) -> dict[str, Any]:
        raise NotImplementedError

    async def make(self, name: str, namespace: str, proxy: TcpProxy | None, zk_proxy: TcpProxy | None,
                   redis_url: str, backend: dict[str, Any]) -> Candidate:
        raise NotImplementedError

    @pytest.fixture
    async def group(self, redis_url: str, backend: dict[str, Any],
                    tcp_proxy: Callable[..., TcpProxy]) -> AsyncIterator[Group]:
        async def make(name: str, namespace: str, proxy: TcpProxy | None, zk_proxy: TcpProxy | None) -> Candidate:
            url = with_port(redis_url, proxy.port) if proxy else redis_url
            return await self.make(name, namespace, proxy, zk_proxy, url, backend)

        g = Group(make, redis_url, f"t{uuid.uuid4().hex[:8]}", tcp_proxy)
        try:
            yield g
        finally:
            await g.close()

    async def test_exactly_one_leader(self, group: Group) -> None:
        cands = await group.start(3)
        leader = await group.wait_leader(5)
        # Over several renew periods: the same single leader, and Redis holds its token.
        async with Client(make_redis(RedisSettings(url=group.redis_url)), group.namespace) as client:
            redis = client.redis
            end = time.monotonic() + 5 * CFG.renew_period
            while time.monotonic() < end:
                assert group.leaders() == [leader]
                assert leader.current is not None
                assert await redis.get(group.keys.leader_lock) == leader.current.token
                await asyncio.sleep(0.05)
            info = await client.leader_info()
            assert info is not None and info["node"] == leader.name and info["epoch"] == leader.current.epoch
        # Followers learn who leads.
        for c in cands:
            if c is not leader:
                await wait_until_async(lambda c=c: c.elector.state.leader == leader.name, 3,  # type: ignore[misc]
                                       message=f"{c.name} to report {leader.name} as leader")
                assert not c.terms

    async def test_graceful_release_hands_over_fast_and_epochs_increase(self, group: Group) -> None:
        await group.start(4)
        leader = await group.wait_leader(5)
        handoffs = []
        for _ in range(3):
            t0 = time.monotonic()
            await group.release(leader)
            successor = await group.wait_leader(HANDOFF + 2, exclude=(leader,))
            handoffs.append(successor.terms[-1].start - t0)
            leader = successor
        assert max(handoffs) <= HANDOFF, f"handoff times {handoffs}"
        terms = group.all_terms()
        assert len(terms) == 4
        assert_terms_ordered(terms)

    async def test_stale_term_is_fenced_in_redis(self, group: Group) -> None:
        await group.start(2)
        old = await group.wait_leader(5)
        assert old.current is not None
        # A paused ex-leader that still believes in its term: old token, deadline far ahead.
        stale = Term(node=old.name, token=old.current.token, epoch=old.current.epoch, since=old.current.since,
                     deadline=time.monotonic() + 3600, clock=SYSTEM_CLOCK)
        await group.release(old)
        new = await group.wait_leader(HANDOFF + 2, exclude=(old,))
        assert new.current is not None and new.current.epoch > stale.epoch

        keys = group.keys
        async with Client(make_redis(RedisSettings(url=group.redis_url)), group.namespace) as client:
            redis = client.redis
            scripts = Scripts(redis)
            due = await client.enqueue_at(time.time() - 5, "sendWelcomeEmail", {"to": "a@b.c"}, queue="mail")

            async def promote(term: Term) -> list[Any]:
                now = time.time()
                return await fenced(scripts, "promote",
                                    [keys.leader_lock, keys.audit, keys.delayed_schedule, keys.queues,
                                     keys.promoting, keys.failed],
                                    [now, 100, keys.namespace + ":", keys.wake_channel, js_date(now)],
                                    term, NULL_OBSERVER, audit=True)

            with pytest.raises(LeaseLost, match="stale"):
                await promote(stale)
            assert stale.lost.is_set()
            # Nothing written: the job is still delayed, no queue, no audit record.
            assert await client.timestamps() == [due]
            assert await client.length("mail") == 0
            assert await redis.xlen(keys.audit) == 0
            # The raw script says STALE too (no local validity check in the way).
            now = time.time()
            raw = await scripts.run("promote", [keys.leader_lock, keys.audit, keys.delayed_schedule, keys.queues,
                                                keys.promoting, keys.failed],
                                    [stale.token, "1", stale.epoch, now, 100, keys.namespace + ":",
                                     keys.wake_channel, js_date(now)])
            assert raw == ["STALE"]
            assert await client.length("mail") == 0
            # Control: the current term's token is accepted and audited with its epoch.
            res = await promote(new.current)
            assert res[0] == "OK" and int(res[1]) == 1
            assert await client.length("mail") == 1
            records = await redis.xrange(keys.audit)
            assert [int(r[1]["epoch"]) for r in records] == [new.current.epoch]

    @pytest.mark.parametrize("mode", ["blackhole", "reset"])
    async def test_leader_cut_off_from_redis_stops_before_successor(self, group: Group, mode: str) -> None:
        await group.start(3, proxied=True)
        old = await group.wait_leader(5)
        assert old.proxy is not None
        t0 = time.monotonic()
        getattr(old.proxy, mode)()
        new = await group.wait_leader(CFG.lease + 1.0, exclude=(old,))
        took = new.terms[-1].start - t0
        assert took <= CFG.lease + 1.0
        held = old.terms[-1]
        assert held.end is not None, "the cut-off leader still runs its duties"
        assert held.end <= new.terms[-1].start, f"overlap {held.end - new.terms[-1].start:+.3f}s"
        if mode == "reset":
            assert held.end - t0 <= 1.0, f"stopped {held.end - t0:.2f}s after RST (F4: <= 1 s)"
        else:
            assert held.end - t0 <= CFG.lease - CFG.margin + CFG.renew_period, f"stopped after {held.end - t0:.2f}s"
        # Healed, it does not lead again without a new term.
        old.proxy.pass_through()
        await asyncio.sleep(3 * CFG.renew_period)
        assert group.leaders() == [new]
        assert len(old.terms) == 1
        assert_terms_ordered(group.all_terms())


class TestRedisElection(ElectionContract):
    @pytest.fixture
    def backend(self) -> dict[str, Any]:
        return {}

    async def make(self, name: str, namespace: str, proxy: TcpProxy | None, zk_proxy: TcpProxy | None,
                   redis_url: str, backend: dict[str, Any]) -> Candidate:
        general, election = redis_clients(redis_url)
        elector = RedisElector(node_id=name, keys=Keys(namespace), redis=general, election_redis=election,
                               config=CFG, clock=SYSTEM_CLOCK, observer=NULL_OBSERVER)
        return Candidate(name, elector, [general, election])

    async def test_crashed_leader_replaced_after_lease(self, group: Group) -> None:
        """No release (the task just dies): the lock expires, a successor leads within lease + 1 s."""
        await group.start(3)
        old = await group.wait_leader(5)
        t0 = time.monotonic()
        assert old.task is not None
        old.task.cancel()  # the elector stops renewing and never releases
        new = await group.wait_leader(CFG.lease + 1.0, exclude=(old,))
        assert new.terms[-1].start - t0 <= CFG.lease + 1.0
        assert_terms_ordered(group.all_terms())


    async def test_leader_stops_at_once_when_its_primary_refuses_writes(self, group: Group, redis_url: str) -> None:
        """min-replicas-to-write unmet (the isolated side of a Sentinel partition, docs/FAULTS.md F8b): the
        renew's NOREPLICAS ends the term at the next renew instead of at the lease deadline."""
        await group.start(1)
        leader = await group.wait_leader(5)
        admin = Redis.from_url(redis_url)
        try:
            await admin.config_set("min-replicas-to-write", 1)  # no replica here: every write is refused
            t0 = time.monotonic()
            await wait_until_async(lambda: not leader.leading, 3.0, 0.005, message="the leader to step down")
            stopped = time.monotonic() - t0
            # the deadline path would take lease - margin = 1.4 s after the last good renew
            assert stopped <= CFG.renew_period + CFG.renew_timeout + 0.3, f"stepped down {stopped:.2f}s after"
        finally:
            await admin.config_set("min-replicas-to-write", 0)
            await admin.aclose()


    async def test_a_follower_keeps_the_leader_it_saw_through_slow_reads(self, group: Group) -> None:
        """A read of the lock that times out (a loaded host) says nothing about who leads: the
        follower keeps the holder it saw (`/leader`, `/status`) for one lease without a read,
        then says it does not know (it reported None at the first timeout: CI beside a CPU hog)."""
        leader = await group.add()
        await group.wait_leader(5)
        follower = await group.add(proxied=True)
        assert follower.proxy is not None
        await wait_until_async(lambda: follower.elector.state.leader == leader.name, 3,
                               message="the follower to see the leader")
        follower.proxy.blackhole()
        cut = time.monotonic()
        try:
            # an injected duration: reads time out after 2 x renew_timeout, every retry_period
            await asyncio.sleep(CFG.lease / 2)
            assert follower.elector.state.leader == leader.name, "the view was dropped at a timed-out read"
            await wait_until_async(lambda: follower.elector.state.leader is None, CFG.lease * 2,
                                   message="no holder reported after a lease without a read")
            assert time.monotonic() - cut >= CFG.lease - 2 * CFG.retry_period  # the last read came before the cut
        finally:
            follower.proxy.pass_through()
        await wait_until_async(lambda: follower.elector.state.leader == leader.name, 3,
                               message="the follower to see the leader again")


class TestZooKeeperElection(ElectionContract):
    @pytest.fixture
    def backend(self, zookeeper_server: Any, zookeeper_hosts: str) -> dict[str, Any]:
        return {"hosts": zookeeper_hosts, "port": zookeeper_server.port}

    async def make(self, name: str, namespace: str, proxy: TcpProxy | None, zk_proxy: TcpProxy | None,
                   redis_url: str, backend: dict[str, Any]) -> Candidate:
        from cluster.election.zookeeper import ZooKeeperElector

        _general, election = redis_clients(redis_url)
        await _general.aclose()
        hosts = f"127.0.0.1:{zk_proxy.port}" if zk_proxy else backend["hosts"]
        elector = ZooKeeperElector(node_id=name, keys=Keys(namespace), redis=election, hosts=hosts, config=CFG,
                                   clock=SYSTEM_CLOCK, observer=NULL_OBSERVER, session_timeout=ZK_SESSION,
                                   namespace=namespace)
        return Candidate(name, elector, [election])

    async def test_release_with_redis_unreachable_is_still_a_release(self, group: Group,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
        """SIGTERM while the leader's Redis calls hang (a starved or cut-off node): the token's
        compare-and-delete times out, but deleting the lock node hands over, so the release is
        logged (`leader_released`) and the successor leads at once, not after the session expires."""
        old = await group.add(proxied=True)
        await group.wait_leader(5)
        await group.add()
        assert old.proxy is not None
        old.proxy.blackhole()
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO, logger="corral.election"):
            await group.release(old)
        assert [r for r in caplog.records if getattr(r, "event", None) == "leader_released"], \
            "the release was not logged"
        successor = await group.wait_leader(ZK_SESSION, exclude=(old,))
        assert successor.terms[-1].start - t0 <= 2 * CFG.renew_timeout + HANDOFF, "waited for the session to expire"

    async def test_epoch_is_the_lock_node_czxid(self, group: Group, backend: dict[str, Any]) -> None:
        await group.start(2)
        leader = await group.wait_leader(5)
        path = f"/corral/{group.namespace}/leader"

        async def both_contending() -> bool:  # the follower's lock node may come a moment after the leader
            return len(await asyncio.to_thread(zk_lock_nodes, backend["hosts"], path)) == 2

        await wait_until_async(both_contending, 10, message="both candidates' lock nodes")
        nodes = await asyncio.to_thread(zk_lock_nodes, backend["hosts"], path)
        owned = {owner: czxid for owner, czxid in nodes}
        assert sorted(owner for owner, _ in nodes) == sorted(c.name for c in group.candidates)
        assert leader.current is not None and owned[leader.name] == leader.current.epoch
        assert owned[leader.name] == min(owned.values())

    async def test_cancel_lost_in_a_renew_still_ends_the_elector(self, group: Group) -> None:
        """A node stopping while its renew is on the wire (teardown, SIGTERM's task cancel): redis-py
        loses that cancel on 3.11 and the renew returns normally. The elector must still step down,
        end its task and close its ZooKeeper session (it used to renew forever; teardown hung 300 s)."""
        await group.start(2)
        leader = await group.wait_leader(5)
        assert leader.task is not None and leader.current is not None
        term = leader.current
        stub = SwallowingScripts(leader.elector.scripts)
        leader.elector.scripts = stub
        try:
            await asyncio.wait_for(stub.in_flight.wait(), 2)  # the next renew is on its way
            leader.elector.stop()
            leader.task.cancel()
            done, _ = await asyncio.wait([leader.task], timeout=5)
            assert stub.swallowed >= 1, "the cancel did not land in the renew"
            assert done, "the elector still runs 5 s after stop() and a cancel its renew swallowed"
            assert term.lost.is_set() and not leader.leading
            assert leader.terms[-1].end is not None
            await wait_until_async(lambda: leader.elector.state.extra.get("zk_state") == "closed", 5,
                                   message="the ZooKeeper session to be closed")
        finally:
            term.lost.set()  # unsticks an elector that missed its cancel, so teardown does not hang

    async def test_suspended_leader_stops_before_session_expiry_then_recontends(
            self, group: Group, backend: dict[str, Any]) -> None:
        """F14 in-process: ZooKeeper unreachable from the leader. It stops at SUSPENDED (about 2/3 of
        the session timeout), the successor wins only after the server expires the session, and after
        the heal the old leader comes back as a candidate with a new lock node (a higher epoch)."""
        a, _b = await group.start(2, zk_port=backend["port"])
        old = await group.wait_leader(5)
        other = _b if old is a else a
        assert old.zk_proxy is not None
        t0 = time.monotonic()
        old.zk_proxy.blackhole()
        new = await group.wait_leader(ZK_SESSION + 2.0, exclude=(old,))
        assert new is other
        held = old.terms[-1]
        assert held.end is not None
        stopped, started = held.end - t0, new.terms[-1].start - t0
        assert stopped < ZK_SESSION, f"stopped {stopped:.2f}s after the cut, not before the session could expire"
        assert held.end <= new.terms[-1].start, f"overlap {held.end - new.terms[-1].start:+.3f}s"
        assert started <= ZK_SESSION + 2.0
        # Heal: LOST, a new session, a new contender node; it wins when the successor lets go.
        old.zk_proxy.pass_through()
        await wait_until_async(lambda: old.elector.state.extra.get("zk_state") == "connected", ZK_SESSION + 5,
                               message="the old leader's new session")
        path = f"/corral/{group.namespace}/leader"

        async def recontends() -> bool:
            return (await asyncio.to_thread(zk_contenders, backend["hosts"], path)).count(old.name) == 1

        await wait_until_async(recontends, 5, 0.1, message="the old leader's new lock node")
        assert group.leaders() == [new]
        await group.release(new)
        back = await group.wait_leader(HANDOFF + 2, exclude=(new,))
        assert back is old and len(old.terms) == 2
        assert_terms_ordered(group.all_terms())
