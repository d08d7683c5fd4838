"""One node process: wires the cluster library to workers, HTTP, metrics and signals, and runs
them from start to shutdown. What it answers on HTTP is node/handlers.py; the reads behind the
cluster-wide gauges are node/gauge_refresh.py.

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
import os
import signal
import socket
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

from cluster.aio import REDIS_FAILURES
from cluster.catalogue_publish import CataloguePublisher
from cluster.client import Client
from cluster.clock import Clock, SystemClock
from cluster.connection import close_redis, make_redis
from cluster.election.base import Contender
from cluster.errors import RedisUnavailable
from cluster.keys import Keys
from cluster.membership import Membership
from cluster.notify import Notifier
from cluster.rawconn import FastScript
from cluster.rawconn import supported as rawconn_supported
from cluster.redis_errors import AuthenticationError, NoPermissionError
from cluster.scripts import source
from cluster.task import Registry

from .config import NodeConfig
from .executor import Executor
from .gauge_refresh import GaugeRefresher
from .handlers import NodeHandlers
from .http import HttpServer, Request, Response
from .leader.supervisor import LeaderProcess
from .loop_clock import LoopLag, apply_clock_offset
from .metrics import NodeMetrics
from .worker import WorkerPool

if TYPE_CHECKING:
    from .leader.duties import Leadership
    from .ui.api import Dashboard

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
        self.loop_watch = LoopLag(0.25)  # how late this loop wakes: /healthz reports it
        self.version = version()
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
        self.metrics = NodeMetrics(self.metrics_registry, node_id=self.node_id, version=self.version, backend=backend)
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
        info = {"node": self.node_id, "host": socket.gethostname(), "pid": os.getpid(), "version": self.version,
                "queues": list(cfg.queues), "concurrency": cfg.concurrency, "scheduler": cfg.scheduler,
                "started": self.started_wall, "http_port": None}
        self.info = info
        self.membership = Membership(redis=self.redis, keys=self.keys, clock=self.clock, observer=self.metrics,
                                     node_id=self.node_id, info=info, workers=self.pool.workers,
                                     interval=cfg.heartbeat_interval)
        # The leader side: in a process of its own by default (`corral node`), here when embedded.
        self.leadership: Leadership | None = None
        self.elector: Contender | None = None
        channels: dict[str, Callable[[str], object]] = {
            self.keys.wake_channel: self.pool.on_wake, self.keys.node_wake(self.node_id): self.pool.on_targeted_wake}
        if cfg.scheduler and self.leader_process:
            self.elector = LeaderProcess(cfg, node_id=self.node_id, redis_url=self.settings.url, observer=self.metrics,
                                         registry=self.registry)
        elif cfg.scheduler:
            from .leader.duties import Leadership  # here: `corral node` leads in its leader process

            self.leadership = Leadership(cfg, node_id=self.node_id, settings=self.settings, registry=self.registry,
                                         clock=self.clock, observer=self.metrics, redis=self.redis, client=self.client)
            self.elector = self.leadership.elector
            channels[self.keys.delayed_channel] = self.leadership.scheduler.notify
        self.notifier = Notifier(self.redis, channels)
        self.gauges = GaugeRefresher(redis=self.redis, keys=self.keys, pool=self.pool, metrics=self.metrics,
                                     clock=self.clock, dead_after=cfg.dead_after, interval=cfg.metrics_refresh)
        self._build_catalogue()
        self.handlers = NodeHandlers(self)
        self.http = HttpServer(self.handlers.routes(), cfg.http_host, cfg.http_port)
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

    def _mount_dashboard(self) -> None:
        """The web dashboard at /ui/ (node/ui, docs/UI.md), built on its first request: a node nobody
        browses does without its code and pages (≈ 0.3 MB, bench/RESULTS.md "Idle memory"). Its token
        is read and its action counter registered here, at start; its history sampler runs in `run`."""
        self.dashboard: Dashboard | None = None
        if not self.cfg.ui:
            return
        from .ui.metric import actions_counter

        token = self.cfg.dashboard_token()
        actions_total = actions_counter(self.metrics_registry)

        async def handle(req: Request) -> Response:
            if self.dashboard is None:
                from .ui.api import Dashboard

                self.dashboard = Dashboard(self.client, registry=self.registry, metrics=self.metrics_registry,
                                           token=token, payloads=self.cfg.status_payloads, node_id=self.node_id,
                                           version=self.version, dead_after=self.cfg.dead_after,
                                           backend=self.cfg.election, actions_total=actions_total)
            return await self.dashboard.handle(req)

        self.http.mount("/ui/", handle)

    def request_stop(self) -> None:
        self.stop_event.set()

    def _apply_clock_offset(self) -> None:
        """Fault-test seam (docs/FAULTS.md F9): jump this node's wall clock; leases stay on the monotonic clock."""
        assert isinstance(self.clock, SystemClock) and self.cfg.clock_offset_file
        if not apply_clock_offset(self.clock, self.cfg.clock_offset_file, log):
            return
        if isinstance(self.elector, LeaderProcess):
            self.elector.forward_signal(signal.SIGUSR1)
        log.warning("wall clock shifted for a fault test", extra={"event": "clock_jump", "offset": self.clock.offset})

    @property
    def loop_lag(self) -> float:
        """How late this node's event loop woke last (0.25 s sleeps), seconds."""
        return self.loop_watch.seconds

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
                background.append(tg.create_task(self.gauges.run(), name="gauges"))
                background.append(tg.create_task(self.loop_watch.run(), name="loop-lag"))
                background.append(tg.create_task(self.catalogue.run(), name="catalogue"))
                if self.cfg.ui:
                    from .ui.history import HistoryRecorder

                    background.append(tg.create_task(HistoryRecorder(self.redis, self.keys).run(), name="ui-history"))
                # in-process: the Leadership runs its elector; else the LeaderProcess supervises the child
                leader_side = self.leadership or (self.elector if isinstance(self.elector, LeaderProcess) else None)
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


async def cancel_until_done(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that go on: redis-py (on 3.11) can
    swallow a cancellation that races a reply, and a loop around it (gauges, the notifier) would
    then run on and keep the node from exiting after SIGTERM."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.1)

