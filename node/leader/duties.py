"""The leader side of a node, built from its config: the elector and the three fenced duties
(scheduler, periodic enqueuer, recovery), each on Redis clients of its own. Delayed promotion runs
only while the term also holds node-resque's lock (`Promotion`); periodic and recovery run for the
whole term, fenced by Corral's own lock, whatever scheduler holds node-resque's.

Two hosts use it: `Node` when it leads in its own process (`leader_process = false`, library and
in-process test use), and the leader process (`node/leader/child.py`), the default for `corral
node`, where no task thread of the node can starve the leader's loop of the GIL (docs/FAULTS.md F13b).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from cluster.clock import Clock
from cluster.election.base import Term
from cluster.election.elector import LockElector
from cluster.election.redis import RedisElector
from cluster.foreign import ForeignWorkers
from cluster.keys import Keys
from cluster.leader import LeaderDuties, Promotion
from cluster.observe import Observer
from cluster.periodic import PeriodicEnqueuer
from cluster.recovery import Recovery
from cluster.redis_settings import RedisSettings
from cluster.resp import RespClient
from cluster.scheduler import Scheduler
from cluster.task import Registry

from ..config import NodeConfig

if TYPE_CHECKING:
    from cluster.enqueuer import Enqueuer

# Jobs per promote.lua call: a burst due in one second becomes runnable in steps of this many, so
# the first ones start while the rest are still being moved (1,000 in one call held Redis ~12 ms).
PROMOTE_BATCH = 200


class Leadership:
    def __init__(self, cfg: NodeConfig, *, node_id: str, settings: RedisSettings, registry: Registry, clock: Clock,
                 observer: Observer, redis: Any, client: Enqueuer, resp: bool = False,
                 hook_redis: Any = None) -> None:
        """`redis` is the general client the elector reads the lock holder with (shared with the
        node in-process); the renewals and each duty get clients of their own, so a leader write
        never waits for the worker slots' pool, nor pays for growing it when latency rises (a
        new connection's dial and handshake are round trips that make a due second late, F10).
        `resp`: those clients are `RespClient`s (the leader process, `link.resp_serves`), and
        `hook_redis()` gives the redis-py client enqueue plugins see while promoting."""
        keys = Keys(cfg.namespace)
        self.resp = resp
        if resp:
            self.election_redis: Any = RespClient.from_settings(settings, socket_timeout=cfg.renew_timeout)
            self.duty_redis: dict[str, Any] = {d: RespClient.from_settings(settings)
                                               for d in ("scheduler", "periodic", "recovery", "foreign")}
        else:
            from cluster.connection import make_redis

            self.election_redis = make_redis(settings, socket_timeout=cfg.renew_timeout, max_connections=8)
            self.duty_redis = {d: make_redis(settings, max_connections=4)
                               for d in ("scheduler", "periodic", "recovery", "foreign")}
        duty = self.duty_redis
        self.scheduler = Scheduler(redis=duty["scheduler"], keys=keys, clock=clock, observer=observer,
                                   registry=registry, client=client, reread=min(1.0, cfg.poll_interval * 2),
                                   batch=PROMOTE_BATCH, audit=cfg.audit, hook_redis=hook_redis)
        self.periodic = PeriodicEnqueuer(redis=duty["periodic"], keys=keys, clock=clock, observer=observer,
                                         registry=registry, audit=cfg.audit)
        self.recovery = Recovery(redis=duty["recovery"], keys=keys, clock=clock, observer=observer,
                                 registry=registry, dead_after=cfg.dead_after, max_recoveries=cfg.max_recoveries,
                                 audit=cfg.audit, self_id=node_id, start_grace=cfg.heartbeat_interval * 1.5)
        # stale workers of other resque clients (node-resque, Ruby): cluster/foreign.py
        self.foreign = None if not cfg.foreign_stuck_timeout else ForeignWorkers(
            redis=duty["foreign"], keys=keys, clock=clock, observer=observer, stuck_timeout=cfg.foreign_stuck_timeout,
            policy=cfg.foreign_stuck_jobs, audit=cfg.audit, node_id=node_id)
        self.elector: LockElector
        if cfg.election == "zookeeper":
            from cluster.election.zookeeper import ZooKeeperElector

            self.elector = ZooKeeperElector(
                node_id=node_id, keys=keys, redis=self.election_redis, hosts=cfg.zookeeper_hosts or "",
                config=cfg.election_config(), clock=clock, observer=observer,
                session_timeout=cfg.zookeeper_session_timeout, namespace=cfg.namespace)
        else:
            self.elector = RedisElector(node_id=node_id, keys=keys, redis=redis, election_redis=self.election_redis,
                                        config=cfg.election_config(), clock=clock, observer=observer)

    async def lead(self, term: Term) -> None:
        # Delayed promotion and the cleanup of other resque clients' stale workers are the resque
        # scheduler's duties (node-resque's scheduler does both): they run while this term also
        # holds node-resque's lock. Periodic tasks and recovery of Corral nodes are Corral's own.
        duties: list[Any] = [Promotion(self.scheduler), self.periodic, self.recovery]
        if self.foreign is not None:
            duties.append(Promotion(self.foreign))
        await LeaderDuties(duties).run(term)

    async def run(self) -> None:
        await self.elector.run(self.lead)

    async def close(self) -> None:
        for client in (self.election_redis, *self.duty_redis.values()):
            with contextlib.suppress(Exception):
                await close_client(client)


async def close_client(client: Any) -> None:
    """Close a `RespClient` or a redis-py client (and its Sentinel connections)."""
    if isinstance(client, RespClient):
        await client.aclose()
        return
    from cluster.connection import close_redis

    await close_redis(client)


class PluginClients:
    """What enqueue plugins get while the leader process promotes a job, when its duties run on
    `cluster/resp.py`: a redis-py client as `ctx.redis` (their hooks are written against it) and
    a `Client` as `ctx.client`, both built on first need, so a cluster whose delayed jobs have no
    enqueue plugins never loads redis-py into the leader process."""

    def __init__(self, settings: RedisSettings, namespace: str, registry: Registry, clock: Clock) -> None:
        self.settings, self.namespace, self.registry, self.clock = settings, namespace, registry, clock
        self._redis: Any = None
        self._client: Any = None

    def redis(self) -> Any:
        if self._redis is None:
            from cluster.connection import make_redis

            self._redis = make_redis(self.settings, max_connections=4)
        return self._redis

    def client(self) -> Any:
        if self._client is None:
            from cluster.client import Client

            self._client = Client(self.redis(), self.namespace, registry=self.registry, clock=self.clock)
        return self._client

    async def enqueue(self, *args: Any, **kwargs: Any) -> bool:
        return bool(await self.client().enqueue(*args, **kwargs))

    async def enqueue_at(self, *args: Any, **kwargs: Any) -> int:
        return int(await self.client().enqueue_at(*args, **kwargs))

    async def enqueue_in(self, *args: Any, **kwargs: Any) -> int:
        return int(await self.client().enqueue_in(*args, **kwargs))

    async def aclose(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await close_client(self._redis)
