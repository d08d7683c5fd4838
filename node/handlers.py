"""What a node answers on HTTP (served by node/http.py): `/healthz`, `/readyz`, `/leader`,
`/status`, `/metrics` and `/tasks`, each read from the node's parts (`NodeParts`) without blocking
its loop; every Redis read is bounded by a short timeout and answered with a 503 when it fails.

Leadership as told to the outside is `leads_now`: the elector says so *and* its term's deadline is
ahead, so a node resuming from a freeze does not claim to lead before its lease check has run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio.client import Redis

from cluster.aio import REDIS_FAILURES
from cluster.catalogue import listing
from cluster.catalogue_publish import CataloguePublisher
from cluster.client import Client
from cluster.clock import Clock
from cluster.keys import Keys
from cluster.membership import Membership

from .config import NodeConfig
from .executor import Executor
from .http import Handler, Response, json_response
from .leader.supervisor import LeaderProcess
from .metrics import NodeMetrics
from .redact import job_view
from .worker import WorkerPool


class NodeParts(Protocol):
    """What the handlers read of a node (node/runtime.py `Node`)."""

    cfg: NodeConfig
    node_id: str
    version: str
    clock: Clock
    redis: Redis
    keys: Keys
    client: Client
    elector: Any
    metrics: NodeMetrics
    metrics_registry: CollectorRegistry
    membership: Membership
    pool: WorkerPool
    executor: Executor
    catalogue: CataloguePublisher
    stopping: bool
    http_port: int | None
    started_mono: float

    @property
    def loop_lag(self) -> float: ...


class NodeHandlers:
    def __init__(self, node: NodeParts) -> None:
        self.node = node

    def routes(self) -> dict[str, Handler]:
        return {"/metrics": self.metrics, "/healthz": self.healthz, "/readyz": self.readyz, "/leader": self.leader,
                "/status": self.status, "/tasks": self.tasks}

    def leads_now(self) -> bool:
        """Leading as far as anyone outside may be told: the elector says so *and* its term's
        deadline is ahead. A node resuming from a freeze (SIGSTOP, a blocked loop) still holds the
        view it had before; until its lease check runs it must not say it leads (docs/FAULTS.md F2)."""
        e = self.node.elector
        if e is None or not e.state.is_leader:
            return False
        term = e.term
        return term is not None and self.node.clock.monotonic() < term.deadline

    def leader_view(self) -> dict[str, Any]:
        n = self.node
        e = n.elector
        if e is None:
            return {"node": n.node_id, "leader": None, "is_leader": False, "epoch": 0, "since": None,
                    "backend": n.cfg.election, "candidate": False}
        s = e.state
        leads = self.leads_now()
        return {"node": n.node_id, "leader": s.leader if leads or not s.is_leader else None, "is_leader": leads,
                "epoch": s.epoch, "since": s.since if leads else s.extra.get("since"), "backend": s.backend,
                "candidate": True}

    async def leader(self) -> Response:
        view = self.leader_view()
        client = self.node.client
        # no elector, or one that has not seen the holder yet (a leader process starting): ask Redis
        if self.node.elector is None or (not view["is_leader"] and view["leader"] is None):
            try:
                info = await asyncio.wait_for(client.leader_info(), 0.5)
                if info:
                    view.update(leader=info["node"], epoch=info["epoch"] or 0, since=info["since"])
            except REDIS_FAILURES:
                pass
        elif not view["is_leader"] and view["leader"] is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                info = await asyncio.wait_for(client.leader_info(), 0.5)
                if info and info["node"] == view["leader"]:
                    view["since"] = info["since"]
        return json_response(200, view)

    async def metrics(self) -> Response:
        n = self.node
        if n.elector is not None:  # corral_is_leader: the same lease check as /leader
            n.metrics.is_leader.set(1 if self.leads_now() else 0)
        age = n.membership.age()
        n.metrics.heartbeat_age.set(age if age is not None else -1)
        c = n.metrics.cluster
        n.metrics.gauges_age.set(-1 if c.refreshed_mono is None else n.clock.monotonic() - c.refreshed_mono)
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(n.metrics_registry)

    async def healthz(self) -> Response:
        n = self.node
        term = n.elector.term if n.elector is not None else None
        if term is not None and n.clock.monotonic() > term.deadline + n.cfg.lease_margin:
            return json_response(503, {"ok": False, "reason": "this node believes it leads past its lease"})
        problem = n.pool.health_problem() or n.executor.threads.stuck_problem()
        if problem is not None:
            return json_response(503, {"ok": False, "reason": problem})
        return json_response(200, {"ok": True, "loop_lag_seconds": round(n.loop_lag, 4)})

    async def readyz(self) -> Response:
        n = self.node
        if n.stopping:
            return json_response(503, {"ready": False, "reason": "node is shutting down"})
        try:
            await asyncio.wait_for(n.redis.ping(), 0.5)
        except REDIS_FAILURES as e:
            why = type(e).__name__
            return json_response(503, {"ready": False, "reason": f"Redis unreachable: {why}"})
        if n.membership.last_error is not None:
            return json_response(503, {"ready": False, "reason": f"heartbeat failing: {n.membership.last_error}"})
        age = n.membership.age()
        if age is None or age > n.cfg.dead_after:
            return json_response(503, {"ready": False, "reason": "membership heartbeat is stale"})
        return json_response(200, {"ready": True, "workers": len(n.pool.slots)})

    async def status(self) -> Response:
        return json_response(200, {"node": self._node_status(), "cluster": await self._cluster_status()})

    def _node_status(self) -> dict[str, Any]:
        n = self.node
        workers = []
        for s in n.pool.slots:
            job = None
            if s.current is not None:
                job = {**job_view(s.current, n.cfg.status_payloads),  # params only if asked, never secrets
                       "running_seconds": round(n.clock.time() - s.current["started"], 3)}
            workers.append({"name": s.name, "queues": s.spec, "busy": not s.idle, "job": job, "restarts": s.restarts})
        node = {"id": n.node_id, "is_leader": self.leader_view()["is_leader"], "workers": workers,
                "queues": list(n.cfg.queues), "uptime_seconds": round(n.clock.monotonic() - n.started_mono, 3),
                "version": n.version, "http_port": n.http_port,
                "task_threads": n.executor.threads.snapshot(), "task_processes": n.executor.processes.snapshot(),
                "task_coroutines_abandoned": len(n.executor.abandoned)}
        if isinstance(n.elector, LeaderProcess):
            proc = n.elector.proc
            node["leader_process"] = {"pid": proc.pid if proc is not None else None, "restarts": n.elector.restarts}
        return node

    async def _cluster_status(self) -> dict[str, Any]:
        n = self.node
        cluster: dict[str, Any] = {}
        try:
            members = await asyncio.wait_for(n.client.members(), 1.0)
            cluster["members"] = {m: {"heartbeat_age_seconds": round(a, 3), "alive": a < n.cfg.dead_after}
                                  for m, a in members.items()}
            c = n.metrics.cluster
            cluster["queues"] = dict(c.queue_lengths)
            cluster["delayed"] = c.delayed
            cluster["failed"] = c.failed
            cluster["leader"] = self.leader_view()["leader"]
            if n.catalogue.view is not None:
                cluster["catalogue"] = n.catalogue.view.summary()
        except REDIS_FAILURES as e:
            cluster["error"] = f"Redis unreachable: {type(e).__name__}"
        return cluster

    async def tasks(self) -> Response:
        n = self.node
        try:
            view = await asyncio.wait_for(n.client.catalogue.view(), 1.0)
        except REDIS_FAILURES as e:
            return json_response(503, {"error": f"Redis unreachable: {type(e).__name__}"})
        return json_response(200, await listing(n.redis, n.keys, view, n.clock.time()))
