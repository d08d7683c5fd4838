"""`corral web`: the dashboard without a worker. Connects to Redis, serves `/ui/` (plus
`/healthz`), and samples the chart's history like a node does; never leads, never runs a job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from cluster.client import Client
from cluster.connection import close_redis, make_redis
from cluster.task import Registry

from ..config import NodeConfig
from ..http import HttpServer, Response, json_response
from .api import Dashboard
from .history import HistoryRecorder

log = logging.getLogger("corral.ui")


async def serve(cfg: NodeConfig, registry: Registry | None, *, redis_url: str, node_id: str, version: str,
                ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> int:
    settings = cfg.redis_settings(redis_url)
    redis = make_redis(settings, max_connections=16)
    await redis.ping()
    client = Client(redis, cfg.namespace, registry=registry)
    metrics = CollectorRegistry()
    dash = Dashboard(client, registry=registry, metrics=metrics, token=cfg.dashboard_token(),
                     payloads=cfg.status_payloads, node_id=node_id, version=version, dead_after=cfg.dead_after,
                     backend=None)

    async def healthz() -> Response:
        return json_response(200, {"ok": True})

    async def metrics_page() -> Response:
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(metrics)

    http = HttpServer({"/healthz": healthz, "/metrics": metrics_page}, cfg.http_host, cfg.http_port)
    http.mount("/ui/", dash.handle)
    port = await http.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    log.info("web: dashboard up", extra={"event": "web_started", "url": f"http://{cfg.http_host}:{port}/ui/",
                                          "actions": dash.token is not None, "redis": settings.redacted_url()})
    print(f"dashboard: http://{cfg.http_host}:{port}/ui/" + ("" if dash.token else "  (read-only: no --ui-token)"),
          flush=True)
    recorder: asyncio.Task[Any] = asyncio.create_task(HistoryRecorder(redis, client.keys).run())
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        recorder.cancel()
        await http.close()
        await close_redis(redis)
    return 0
