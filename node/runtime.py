"""One node process: wires the cluster library to workers, HTTP, metrics and signals.

Shutdown order on SIGTERM/SIGINT (docs/FAULTS.md): release leadership first (compare-and-delete +
publish, so a successor takes over in milliseconds), stop fetching, let running jobs finish
within `shutdown_timeout`, push back what could not finish (one atomic script per job),
deregister, exit. A pushed-back job still running in a task thread (Python cannot stop a thread)
ends with the process: task threads are daemons, so `corral node` exits right after the push
back instead of running the old copy next to the one another node picks up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics, generate_latest
from prometheus_client.process_collector import ProcessCollector
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from cluster.aio import REDIS_FAILURES
from cluster.catalogue import listing
from cluster.catalogue_publish import CataloguePublisher
from cluster.client import Client
from cluster.clock import Clock, SystemClock
from cluster.connection import close_redis, make_redis
from cluster.errors import RedisUnavailable
from cluster.keys import Keys
from cluster.membership import Membership
from cluster.notify import Notifier
from cluster.rawconn import FastScript
from cluster.rawconn import supported as rawconn_supported
from cluster.scripts import Scripts, source
from cluster.task import Registry

from .config import NodeConfig
from .executor import Executor
from .http import HttpServer, Response, json_response
from .leader_process import LeaderProcess
from .metrics import NodeMetrics, read_queue_stats
from .redact import job_view
from .worker import WorkerPool

if TYPE_CHECKING:
    from .leadership import Leadership

log = logging.getLogger("corral.node")


def version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.1.0"


class Node:
    def __init__(self, cfg: NodeConfig, registry: Registry, *, redis_url: str | None = None,
                 node_id: str | None = None, clock: Clock | None = None, install_signals: bool = True,
                 leader_process: bool = False, exit_process: bool = False) -> None:
        """`leader_process`: run the election and the leader duties in a child process (what
        `corral node` does, by `cfg.leader_process`); it loads the tasks from `cfg.tasks_dir`, so
        only use it when `registry` came from there. Off, they run on this loop (library use,
        in-process tests with their own clock).

        `exit_process`: this node owns its process (`corral node`): when a task thread still runs
        a job after the shutdown pushed it back, end the process at once (`os._exit`) right after
        the push back and the deregistration, so that copy stops before another node's copy
        starts. Off (a host program), `run()` returns and those threads run on in the host."""
        self.cfg = cfg
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.node_id = node_id or cfg.make_node_id()
        self.settings = cfg.redis_settings(redis_url)
        self.keys = Keys(cfg.namespace)
        self.stop_event = asyncio.Event()
        self.started_mono = self.clock.monotonic()
        self.started_wall = self.clock.time()
        self.stopping = False
        self.http_port: int | None = None
        self.loop_lag = 0.0
        self.install_signals = install_signals
        self.leader_process = leader_process
        self.exit_process = exit_process

    # ---- lifecycle ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        cfg = self.cfg
        slots = len(cfg.queues) * cfg.concurrency
        self.redis = make_redis(self.settings, max_connections=slots + 64)
        deadline = self.clock.monotonic() + 10.0
        while True:
            try:
                await self.redis.ping()
                return
            except (AuthenticationError, NoPermissionError) as e:
                raise RedisUnavailable(self.settings.shown(), f"authentication refused: {e}") from None
            except REDIS_FAILURES as e:
                from cluster.sentinel_probe import explain_sentinel_failure  # here: only on a failed connect
                from cluster.tls_probe import explain_tls_failure

                if "WRONGPASS" in str(e) or "NOAUTH" in str(e) or "NOPERM" in str(e):
                    raise RedisUnavailable(self.settings.shown(), f"authentication refused: {e}") from None
                # A TLS misconfiguration does not heal by retrying: say what failed, in our words.
                if tls_problem := await explain_tls_failure(self.settings, e):
                    raise RedisUnavailable(self.settings.shown(), tls_problem) from None
                # Nor do refused Sentinel credentials; a Sentinel without a primary yet may.
                final = self.clock.monotonic() > deadline
                sentinel = await explain_sentinel_failure(self.settings)
                if sentinel and (sentinel.permanent or final):
                    raise RedisUnavailable(self.settings.shown(), sentinel.reason) from None
                if final:
                    raise RedisUnavailable(self.settings.shown(), str(e) or type(e).__name__) from None
                await asyncio.sleep(0.25)

    def _build(self) -> None:
        cfg = self.cfg
        backend = cfg.election
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the exposition for no dashboard use
        self.metrics_registry = CollectorRegistry()
        ProcessCollector(registry=self.metrics_registry)
        self.metrics = NodeMetrics(self.metrics_registry, node_id=self.node_id, version=version(), backend=backend)
        self.metrics.leader_candidate.set(1 if cfg.scheduler else 0)
        self.client = Client(self.redis, cfg.namespace, registry=self.registry, clock=self.clock)
        self.executor = Executor(threads=cfg.threads, processes=cfg.pool_processes(), tasks_dir=cfg.tasks_dir,
                                 nice=cfg.task_nice)
        self.metrics.watch_task_threads(self.executor.threads)
        self.metrics.watch_task_processes(self.executor.processes)
        self.pool = WorkerPool(redis=self.redis, keys=self.keys, registry=self.registry, executor=self.executor,
                               client=self.client, node_id=self.node_id, queue_specs=cfg.queues,
                               concurrency=cfg.concurrency, clock=self.clock, observer=self.metrics,
                               poll_interval=cfg.poll_interval, failed_max=cfg.failed_max,
                               fast_fetch=FastScript(self.settings, source("fetch")) if rawconn_supported(self.settings)
                               else None)
        info = {"node": self.node_id, "host": socket.gethostname(), "pid": os.getpid(), "version": version(),
                "queues": list(cfg.queues), "concurrency": cfg.concurrency, "scheduler": cfg.scheduler,
                "started": self.started_wall, "http_port": None}
        self.info = info
        self.membership = Membership(redis=self.redis, keys=self.keys, clock=self.clock, observer=self.metrics,
                                     node_id=self.node_id, info=info, workers=self.pool.workers,
                                     interval=cfg.heartbeat_interval)
        # The leader side: in a process of its own by default (`corral node`), here when embedded.
        self.leadership: Leadership | None = None
        self.elector: Any = None
        channels: dict[str, Callable[[str], object]] = {
            self.keys.wake_channel: self.pool.on_wake, self.keys.node_wake(self.node_id): self.pool.on_targeted_wake}
        if cfg.scheduler and self.leader_process:
            self.elector = LeaderProcess(cfg, node_id=self.node_id, redis_url=self.settings.url, observer=self.metrics)
        elif cfg.scheduler:
            from .leadership import Leadership  # here: `corral node` leads in its leader process

            self.leadership = Leadership(cfg, node_id=self.node_id, settings=self.settings, registry=self.registry,
                                         clock=self.clock, observer=self.metrics, redis=self.redis, client=self.client)
            self.elector = self.leadership.elector
            channels[self.keys.delayed_channel] = self.leadership.scheduler.notify
        self.notifier = Notifier(self.redis, channels)
        self.http = HttpServer({"/metrics": self.h_metrics, "/healthz": self.h_healthz, "/readyz": self.h_readyz,
                                "/leader": self.h_leader, "/status": self.h_status}, cfg.http_host, cfg.http_port)
        self._build_catalogue()
        self._mount_dashboard()

    def _build_catalogue(self) -> None:
        """The task catalogue: published at boot, checked at the gauges' pace, `/tasks`, a metric."""
        conflicts = Gauge("corral_task_definition_conflicts",
                          "Task names that live nodes define differently (cluster-wide: aggregate with max)",
                          registry=self.metrics_registry)
        self.catalogue = CataloguePublisher(redis=self.redis, keys=self.keys, node_id=self.node_id,
                                            registry=self.registry, dead_after=self.cfg.dead_after,
                                            started=self.started_wall, interval=self.cfg.metrics_refresh,
                                            on_conflicts=lambda view: conflicts.set(len(view.conflicts())))
        self.http.routes["/tasks"] = self.h_tasks

    async def h_tasks(self) -> Response:
        try:
            view = await asyncio.wait_for(self.client.catalogue.view(), 1.0)
        except REDIS_FAILURES as e:
            return json_response(503, {"error": f"Redis unreachable: {type(e).__name__}"})
        return json_response(200, await listing(self.redis, self.keys, view, self.clock.time()))

    def _mount_dashboard(self) -> None:
        """The web dashboard at /ui/ (node/ui, docs/UI.md); its history sampler runs in `run`."""
        self.dashboard = None
        if self.cfg.ui:
            from .ui import Dashboard

            self.dashboard = Dashboard(self.client, registry=self.registry, metrics=self.metrics_registry,
                                       token=self.cfg.dashboard_token(), payloads=self.cfg.status_payloads,
                                       node_id=self.node_id, version=version(), dead_after=self.cfg.dead_after,
                                       backend=self.cfg.election)
            self.http.mount("/ui/", self.dashboard.handle)

    def request_stop(self) -> None:
        self.stop_event.set()

    def _apply_clock_offset(self) -> None:
        """Fault-test seam (docs/FAULTS.md F9): jump this node's wall clock; leases stay on the monotonic clock."""
        assert isinstance(self.clock, SystemClock) and self.cfg.clock_offset_file
        try:
            with open(self.cfg.clock_offset_file) as fh:
                self.clock.offset = float(fh.read().strip() or 0)
        except (OSError, ValueError) as e:
            log.warning("clock offset file unreadable: %r", e)
            return
        if isinstance(self.elector, LeaderProcess):
            self.elector.forward_signal(signal.SIGUSR1)
        log.warning("wall clock shifted for a fault test", extra={"event": "clock_jump", "offset": self.clock.offset})

    async def run(self, ready: asyncio.Event | None = None) -> int:
        await self._connect()
        self._build()
        self.http_port = await self.http.start()
        self.info["http_port"] = self.http_port
        await self.catalogue.publish()  # before registering: a member's tasks are known as soon as it is
        await self.membership.register()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if self.install_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        if self.cfg.clock_offset_file and self.install_signals and isinstance(self.clock, SystemClock):
            loop.add_signal_handler(signal.SIGUSR1, self._apply_clock_offset)
        background: list[asyncio.Task[Any]] = []
        log.info("node: started", extra={"event": "node_started", "http": f"{self.cfg.http_host}:{self.http_port}",
                                          "queues": ",".join(self.cfg.queues), "workers": len(self.pool.slots),
                                          "tasks": ",".join(self.registry.names()),
                                          "redis": self.settings.shown()})
        try:
            async with asyncio.TaskGroup() as tg:
                self.pool.start(tg)
                background.append(tg.create_task(self.membership.run(), name="membership"))
                background.append(tg.create_task(self.notifier.run(), name="notifier"))
                background.append(tg.create_task(self._refresh_gauges(), name="gauges"))
                background.append(tg.create_task(self._watch_loop(), name="loop-lag"))
                background.append(tg.create_task(self.catalogue.run(), name="catalogue"))
                if self.dashboard is not None:
                    from .ui import HistoryRecorder

                    background.append(tg.create_task(HistoryRecorder(self.redis, self.keys).run(), name="ui-history"))
                # in-process: the Leadership runs its elector; else the LeaderProcess supervises the child
                leader_side = self.leadership or self.elector
                if leader_side is not None:
                    background.append(tg.create_task(leader_side.run(), name="election"))
                if ready is not None:
                    ready.set()
                await self.stop_event.wait()
                await self._shutdown()
                if self.exit_process and self.executor.unstoppable:
                    self._exit_now()
                await cancel_until_done(background)
        finally:
            await self.http.close()
            self.executor.shutdown()
            if self.pool.fast_fetch is not None:
                self.pool.fast_fetch.close()
            with contextlib.suppress(Exception):
                await close_redis(self.redis)
            if self.leadership is not None:
                await self.leadership.close()
        return 0

    async def _shutdown(self) -> None:
        self.stopping = True
        t0 = self.clock.monotonic()
        log.info("node: stopping", extra={"event": "node_stopping"})
        if self.elector is not None:
            await self.elector.release()
        pushed = await self.pool.stop(self.cfg.shutdown_timeout)
        with contextlib.suppress(*REDIS_FAILURES):
            await self.catalogue.unpublish()
        try:
            left = await self.membership.deregister()
        except REDIS_FAILURES as e:
            left = -1
            log.warning("node: deregister failed: %r", e)
        running = self.executor.unstoppable
        if running:
            log.warning("node: %d task thread(s) or coroutine(s) still run code of jobs given up on (pushed back, "
                        "or timed out); they end when this process exits", running,
                        extra={"event": "threads_abandoned", "threads": running})
        log.info("node: stopped", extra={"event": "node_stopped", "pushed_back": pushed, "inflight_left": left,
                                          "seconds": round(self.clock.monotonic() - t0, 3)})

    def _exit_now(self) -> None:
        """End the process without waiting for task threads (they cannot be stopped otherwise).
        Leadership is released, jobs are pushed back and the node deregistered by now; `cpu_bound`
        workers are killed here, the leader process gets SIGTERM from the kernel (PDEATHSIG)."""
        self.executor.processes.shutdown()
        log.warning("node: exiting now; the task code still running ends with this process",
                    extra={"event": "node_exit", "threads": self.executor.threads.running,
                           "coroutines": len(self.executor.abandoned)})
        for h in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                h.flush()
        os._exit(0)

    # ---- background ----------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        """Loop lag: how late a 0.25 s sleep wakes. /healthz reports it."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.25)
            self.loop_lag = max(0.0, time.monotonic() - t - 0.25)

    async def _refresh_gauges(self) -> None:
        c = self.metrics.cluster
        self._qtimes_scripts = Scripts(self.redis)
        while True:
            try:
                c.queue_lengths, heads = await read_queue_stats(self.pool.scripts, self.pool.active_queues,
                                                                self.pool.bad_keys)
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zrange(self.keys.delayed_schedule, 0, 999)
                    pipe.llen(self.keys.failed)
                    pipe.time()
                    pipe.zrange(self.keys.members, 0, -1, withscores=True)
                    tss, failed, now, members = await pipe.execute(raise_on_error=False)
                for key, got in ((self.keys.delayed_schedule, tss), (self.keys.failed, failed)):
                    if isinstance(got, ResponseError):  # a key of the wrong type: reported, counted as empty
                        self.pool.bad_keys.report(key, str(await self.redis.type(key)), where="metrics")
                tss = [] if isinstance(tss, ResponseError) else [t for t in tss if _is_number(t)]  # not "garbage"
                failed = 0 if isinstance(failed, ResponseError) else failed
                for got in (now, members):
                    if isinstance(got, Exception):
                        raise got
                if heads:  # trims what other clients' pops left behind (cluster/scripts/qtimes_head.lua)
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for q in heads:
                            await self._qtimes_scripts.run("qtimes_head", [self.keys.queue(q), self.keys.qtimes(q)],
                                                           [1000], client=pipe)
                        trimmed = await pipe.execute(raise_on_error=False)
                    heads = {q: str(h) for q, h in zip(heads, trimmed, strict=True) if isinstance(h, str | bytes) and h}
                async with self.redis.pipeline(transaction=False) as pipe:
                    for ts in tss:
                        pipe.llen(self.keys.delayed(int(float(ts))))
                    c.delayed = sum(int(n) for n in await pipe.execute(raise_on_error=False)
                                    if not isinstance(n, ResponseError)) if tss else 0
                c.failed = int(failed)
                now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
                c.oldest_age = {}
                for q, length in c.queue_lengths.items():
                    if length > 0:
                        head = heads.get(q)
                        stamp = head.partition(":")[2] if head else ""
                        c.oldest_age[q] = max(0.0, (now_ms - float(stamp)) / 1000) if _is_number(stamp) else 0.0
                # scheduler lag, cluster-wide: how overdue the earliest delayed second is, on Redis' clock
                c_lag = max(0.0, now_ms / 1000 - float(tss[0])) if tss else 0.0
                self.metrics.lag.set(c_lag if c_lag > 1.0 else 0.0)
                c.members = sum(1 for _m, s in members if now_ms - float(s) < self.cfg.dead_after * 1000)
                c.refreshed_mono = self.clock.monotonic()
            except REDIS_FAILURES:
                self.metrics.redis_error("metrics")
            except Exception:  # data no one expected must not end the node: the gauges go stale, visibly
                log.exception("metrics: refreshing the cluster-wide gauges failed", extra={"event": "gauges_failed"})
            await asyncio.sleep(self.cfg.metrics_refresh)

    # ---- HTTP ------------------------------------------------------------------------------------

    def _leader_view(self) -> dict[str, Any]:
        e = self.elector
        if e is None:
            return {"node": self.node_id, "leader": None, "is_leader": False, "epoch": 0, "since": None,
                    "backend": self.cfg.election, "candidate": False}
        s = e.state
        leads = self._leads_now()
        return {"node": self.node_id, "leader": s.leader if leads or not s.is_leader else None, "is_leader": leads,
                "epoch": s.epoch, "since": s.since if leads else s.extra.get("since"), "backend": s.backend,
                "candidate": True}

    def _leads_now(self) -> bool:
        """Leading as far as anyone outside may be told: the elector says so *and* its term's
        deadline is ahead. A node resuming from a freeze (SIGSTOP, a blocked loop) still holds the
        view it had before; until its lease check runs it must not say it leads (docs/FAULTS.md F2)."""
        e = self.elector
        if e is None or not e.state.is_leader:
            return False
        term = e.term
        return term is not None and self.clock.monotonic() < term.deadline

    async def h_leader(self) -> Response:
        view = self._leader_view()
        # no elector, or one that has not seen the holder yet (a leader process starting): ask Redis
        if self.elector is None or (not view["is_leader"] and view["leader"] is None):
            try:
                info = await asyncio.wait_for(self.client.leader_info(), 0.5)
                if info:
                    view.update(leader=info["node"], epoch=info["epoch"] or 0, since=info["since"])
            except REDIS_FAILURES:
                pass
        elif not view["is_leader"] and view["leader"] is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                info = await asyncio.wait_for(self.client.leader_info(), 0.5)
                if info and info["node"] == view["leader"]:
                    view["since"] = info["since"]
        return json_response(200, view)

    async def h_metrics(self) -> Response:
        if self.elector is not None:  # corral_is_leader: the same lease check as /leader
            self.metrics.is_leader.set(1 if self._leads_now() else 0)
        age = self.membership.age()
        self.metrics.heartbeat_age.set(age if age is not None else -1)
        c = self.metrics.cluster
        self.metrics.gauges_age.set(-1 if c.refreshed_mono is None else self.clock.monotonic() - c.refreshed_mono)
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.metrics_registry)

    async def h_healthz(self) -> Response:
        e = self.elector
        term = e.term if e is not None else None
        if term is not None and self.clock.monotonic() > term.deadline + self.cfg.lease_margin:
            return json_response(503, {"ok": False, "reason": "this node believes it leads past its lease"})
        problem = self.pool.health_problem()
        if problem is not None:
            return json_response(503, {"ok": False, "reason": problem})
        return json_response(200, {"ok": True, "loop_lag_seconds": round(self.loop_lag, 4)})

    async def h_readyz(self) -> Response:
        if self.stopping:
            return json_response(503, {"ready": False, "reason": "node is shutting down"})
        try:
            await asyncio.wait_for(self.redis.ping(), 0.5)
        except REDIS_FAILURES as e:
            why = type(e).__name__
            return json_response(503, {"ready": False, "reason": f"Redis unreachable: {why}"})
        if self.membership.last_error is not None:
            return json_response(503, {"ready": False, "reason": f"heartbeat failing: {self.membership.last_error}"})
        age = self.membership.age()
        if age is None or age > self.cfg.dead_after:
            return json_response(503, {"ready": False, "reason": "membership heartbeat is stale"})
        return json_response(200, {"ready": True, "workers": len(self.pool.slots)})

    async def h_status(self) -> Response:
        workers = []
        for s in self.pool.slots:
            job = None
            if s.current is not None:
                job = {**job_view(s.current, self.cfg.status_payloads),  # params only if asked, never secrets
                       "running_seconds": round(self.clock.time() - s.current["started"], 3)}
            workers.append({"name": s.name, "queues": s.spec, "busy": not s.idle, "job": job, "restarts": s.restarts})
        node = {"id": self.node_id, "is_leader": self._leader_view()["is_leader"], "workers": workers,
                "queues": list(self.cfg.queues), "uptime_seconds": round(self.clock.monotonic() - self.started_mono, 3),
                "version": version(), "http_port": self.http_port,
                "task_threads": self.executor.threads.snapshot(), "task_processes": self.executor.processes.snapshot(),
                "task_coroutines_abandoned": len(self.executor.abandoned)}
        if isinstance(self.elector, LeaderProcess):
            proc = self.elector.proc
            node["leader_process"] = {"pid": proc.pid if proc is not None else None,
                                      "restarts": self.elector.restarts}
        cluster: dict[str, Any] = {}
        try:
            members = await asyncio.wait_for(self.client.members(), 1.0)
            cluster["members"] = {m: {"heartbeat_age_seconds": round(a, 3), "alive": a < self.cfg.dead_after}
                                  for m, a in members.items()}
            c = self.metrics.cluster
            cluster["queues"] = dict(c.queue_lengths)
            cluster["delayed"] = c.delayed
            cluster["failed"] = c.failed
            cluster["leader"] = self._leader_view()["leader"]
            if self.catalogue.view is not None:
                cluster["catalogue"] = self.catalogue.view.summary()
        except REDIS_FAILURES as e:
            cluster["error"] = f"Redis unreachable: {type(e).__name__}"
        return json_response(200, {"node": node, "cluster": cluster})


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


async def cancel_until_done(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that go on: redis-py (on 3.11) can
    swallow a cancellation that races a reply, and a loop around it (gauges, the notifier) would
    then run on and keep the node from exiting after SIGTERM."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.1)

