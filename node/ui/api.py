"""The dashboard's HTTP surface under `/ui/`: the page, its static files, and the JSON API.

GET reads (every read goes through `Shared`, one Redis read per view per refresh period);
POST `/ui/api/actions/<action>` acts, only with the configured token in the `X-Corral-Token`
header (or `Authorization: Bearer`), never a cookie, so a page on another site cannot act for a
logged-in user. Every action calls a `Client` method (the same atomic scripts as the library and
the CLI), is logged with who and what, and counted in `corral_ui_actions_total`.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter

from cluster.aio import REDIS_FAILURES
from cluster.client import Client
from cluster.errors import CorralError
from cluster.periodic import next_slot
from cluster.task import Registry

from ..http import Request, Response, json_response
from .metric import actions_counter
from .snapshot import Overview, Shared, job_id, parse_job

log = logging.getLogger("corral.ui")

PREFIX = "/ui/"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
MAX_PAGE = 100
LOCKS_PERIOD = 10.0
SEARCH_WINDOW = 200  # how far from its shown position an entry is looked for when acting on it


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _static_files() -> dict[str, tuple[str, bytes]]:
    root = resources.files(__package__).joinpath("static")
    out = {}
    for f in root.iterdir():
        ext = "." + f.name.rpartition(".")[2]
        if ext in STATIC_TYPES:
            out[f.name] = (STATIC_TYPES[ext], f.read_bytes())
    return out


class Dashboard:
    def __init__(self, client: Client, *, registry: Registry | None, metrics: CollectorRegistry | None,
                 token: str | None, payloads: bool, node_id: str, version: str, dead_after: float,
                 backend: str | None, refresh: float = 2.0, actions_total: Counter | None = None) -> None:
        """`actions_total`: the action counter when it is already registered (a node registers it at
        start, before its dashboard is built); else one is registered in `metrics` (if any)."""
        self.client = client
        self.registry = registry
        self.token = token
        self.payloads = payloads
        self.node_id = node_id
        self.version = version
        self.refresh = refresh
        self.shared = Shared(refresh)
        self.overview = Overview(client.redis, client.keys, dead_after=dead_after, payloads=payloads, backend=backend,
                                 clock=client.clock)
        self.static = _static_files()
        if actions_total is None and metrics is not None:
            actions_total = actions_counter(metrics)
        self.actions_total = actions_total
        self.reads: dict[str, Callable[[dict[str, str]], Awaitable[Any]]] = {
            "session": self.r_session, "overview": self.r_overview, "queue": self.r_queue, "delayed": self.r_delayed,
            "periodic": self.r_periodic, "workers": self.r_workers, "failed": self.r_failed, "locks": self.r_locks}
        self.actions: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "queue.delete_job": self.a_queue_delete_job, "queue.clear": self.a_queue_clear,
            "delayed.delete": self.a_delayed_delete, "delayed.run_now": self.a_delayed_run_now,
            "periodic.pause": self.a_periodic_pause, "periodic.resume": self.a_periodic_resume,
            "periodic.run_now": self.a_periodic_run_now,
            "failed.retry": self.a_failed_retry, "failed.remove": self.a_failed_remove,
            "failed.retry_all": self.a_failed_retry_all, "failed.remove_all": self.a_failed_remove_all,
            "lock.delete": self.a_lock_delete}

    # ---- routing -------------------------------------------------------------------------------

    async def handle(self, req: Request) -> Response:
        path = req.path
        if req.method not in ("GET", "HEAD", "POST") or (req.method == "POST" and not path.startswith("/ui/api/")):
            return json_response(405, {"error": "the dashboard's pages are GET; actions are POST /ui/api/actions/<name>"})
        if path in ("/ui", "/ui/", "/ui/index.html"):
            ctype, body = self.static["index.html"]
            return 200, ctype, body
        if path.startswith("/ui/static/"):
            hit = self.static.get(path[len("/ui/static/"):])
            if hit is None or req.method not in ("GET", "HEAD"):
                return 404, "text/plain", b"no such file\n"
            return 200, hit[0], hit[1]
        if path.startswith("/ui/api/actions/"):
            if req.method != "POST":
                return json_response(405, {"error": "actions are POST requests"})
            return await self._act(path[len("/ui/api/actions/"):], req)
        if path.startswith("/ui/api/"):
            if req.method not in ("GET", "HEAD"):
                return json_response(405, {"error": "reads are GET requests; actions are POST /ui/api/actions/<name>"})
            read = self.reads.get(path[len("/ui/api/"):])
            if read is None:
                return json_response(404, {"error": "no such endpoint", "endpoints": sorted(self.reads),
                                           "actions": sorted(self.actions)})
            params = {k: v[0] for k, v in parse_qs(req.query, keep_blank_values=False).items()}
            try:
                return json_response(200, await read(params))
            except ApiError as e:
                return json_response(e.status, {"error": str(e)})
            except REDIS_FAILURES as e:
                return json_response(503, {"error": f"Redis unreachable: {type(e).__name__}"})
        return 404, "text/plain", b"no such page; the dashboard is at /ui/\n"

    # ---- reads ---------------------------------------------------------------------------------

    @staticmethod
    def _int(params: dict[str, str], name: str, default: int, lo: int = 0, hi: int = 1 << 31) -> int:
        raw = params.get(name)
        if raw is None:
            return default
        try:
            n = int(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer, got {raw!r}") from None
        if not lo <= n <= hi:
            raise ApiError(400, f"{name} must be between {lo} and {hi}, got {n}")
        return n

    async def r_session(self, _params: dict[str, str]) -> dict[str, Any]:
        return {"actions_enabled": self.token is not None, "payloads": self.payloads, "node": self.node_id,
                "version": self.version, "refresh_seconds": self.refresh}

    async def r_overview(self, _params: dict[str, str]) -> dict[str, Any]:
        snap: dict[str, Any] = await self.shared.get("overview", self.overview.build)
        return snap

    async def r_workers(self, params: dict[str, str]) -> dict[str, Any]:
        snap = await self.r_overview(params)
        return {"time": snap["time"], "workers": snap["workers"], "nodes": snap["nodes"]}

    async def r_queue(self, params: dict[str, str]) -> dict[str, Any]:
        q = params.get("name")
        if not q:
            raise ApiError(400, "name (the queue) is required")
        page = self._int(params, "page", 0)
        size = self._int(params, "size", 50, 1, MAX_PAGE)

        async def build() -> dict[str, Any]:
            start = page * size
            raws = await self.client.queued_raw(q, start, start + size - 1)
            return {"queue": q, "page": page, "size": size, "length": await self.client.length(q),
                    "jobs": [dict(parse_job(r, self.payloads), position=start + i) for i, r in enumerate(raws)]}

        return dict(await self.shared.get(f"queue\0{q}\0{page}\0{size}", build))

    async def r_delayed(self, params: dict[str, str]) -> dict[str, Any]:
        page = self._int(params, "page", 0)
        size = self._int(params, "size", 20, 1, MAX_PAGE)

        async def build() -> dict[str, Any]:
            rows = await self.client.delayed_page(page * size, size)
            total = int(await self.client.redis.zcard(self.client.keys.delayed_schedule))
            return {"page": page, "size": size, "seconds_total": total,
                    "seconds": [{"ts": ts, "count": n, "jobs": [parse_job(r, self.payloads) for r in raws]}
                                for ts, n, raws in rows]}

        return dict(await self.shared.get(f"delayed\0{page}\0{size}", build))

    def _periodic_tasks(self) -> list[Any]:
        return self.registry.periodic() if self.registry is not None else []

    async def r_periodic(self, _params: dict[str, str]) -> dict[str, Any]:
        async def build() -> dict[str, Any]:
            tasks = self._periodic_tasks()
            state = await self.client.periodic_state([t.name for t in tasks])
            now = self.client.clock.time()
            rows = []
            for t in tasks:
                st = state.get(t.name, {"last": None, "paused": False})
                rows.append({"task": t.name, "queue": t.queue, "frequency": t.frequency, "cron": t.cron,
                             "timezone": t.timezone if t.cron else None, "description": t.description,
                             "missed": t.missed, "overlap": t.overlap, "last": st["last"], "paused": st["paused"],
                             "next": None if st["paused"] else next_slot(t, now)})
            return {"time": now, "tasks": rows, "known": self.registry is not None}

        return dict(await self.shared.get("periodic", build))

    async def r_failed(self, params: dict[str, str]) -> dict[str, Any]:
        page = self._int(params, "page", 0)
        size = self._int(params, "size", 20, 1, MAX_PAGE)
        task, queue, error = params.get("task") or None, params.get("queue") or None, params.get("error") or None

        async def build() -> dict[str, Any]:
            found = await self.client.failed_filtered(task=task, queue=queue, error=error, start=page * size,
                                                      count=size)
            return {"page": page, "size": size, "filter": {"task": task, "queue": queue, "error": error},
                    "matched": found["matched"], "scanned": found["scanned"], "total": found["total"],
                    "entries": [self._failed_row(e) for e in found["entries"]]}

        return dict(await self.shared.get(f"failed\0{task}\0{queue}\0{error}\0{page}\0{size}", build))

    def _failed_row(self, e: dict[str, Any]) -> dict[str, Any]:
        payload = e.get("payload")
        row = {"id": job_id(e["raw"]), "position": e.get("index", 0),
               "task": payload.get("class") if isinstance(payload, dict) else None,
               "queue": e.get("queue"), "worker": e.get("worker"), "exception": e.get("exception"),
               "error": e.get("error"), "backtrace": e.get("backtrace"), "failed_at": e.get("failed_at")}
        if self.payloads:
            row["args"] = payload.get("args") if isinstance(payload, dict) else payload
        return row

    async def r_locks(self, _params: dict[str, str]) -> dict[str, Any]:
        async def build() -> dict[str, Any]:
            locks = await self.client.locks_with_ttl()
            for lock in locks:
                if not self.payloads:  # a lock key spells the job's args: show task and queue only
                    kind, _, rest = lock["key"].partition(":")
                    task, _, rest = rest.partition(":")
                    queue = rest.partition(":")[0]
                    lock["id"] = job_id(lock["key"])
                    lock["key"] = f"{kind}:{task}:{queue}:…"
                    lock["value"] = "…"
                else:
                    lock["id"] = job_id(lock["key"])
            return {"locks": locks}

        # SCANs the keyspace: read every 10 s at most, whatever the number of open pages
        return dict(await self.shared.get("locks", build, period=LOCKS_PERIOD))

    # ---- actions -------------------------------------------------------------------------------

    def _who(self, req: Request) -> str:
        fwd = req.headers.get("x-forwarded-for")
        return f"{req.peer or '?'}" + (f" (for {fwd[:100]})" if fwd else "") + \
            f" ua={req.headers.get('user-agent', '?')[:80]!r}"

    def _authorized(self, req: Request) -> bool:
        if self.token is None:
            return False
        given = req.headers.get("x-corral-token")
        if given is None and req.headers.get("authorization", "").lower().startswith("bearer "):
            given = req.headers["authorization"][7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _count(self, action: str, outcome: str) -> None:
        if self.actions_total is not None:
            self.actions_total.labels(action=action, outcome=outcome).inc()

    async def _act(self, action: str, req: Request) -> Response:
        fn = self.actions.get(action)
        if fn is None:
            return json_response(404, {"error": f"no such action {action[:100]!r}", "actions": sorted(self.actions)})
        who = self._who(req)
        if not self._authorized(req):
            self._count(action, "refused")
            reason = ("actions are disabled: no dashboard token is configured on this node (--ui-token)"
                      if self.token is None else "missing or wrong token (X-Corral-Token header)")
            log.warning("ui: action refused", extra={"event": "ui_action_refused", "action": action, "who": who,
                                                      "reason": reason})
            return json_response(403, {"error": reason})
        if not req.headers.get("content-type", "").startswith("application/json"):
            return json_response(415, {"error": "actions take a JSON body (Content-Type: application/json)"})
        try:
            body = json.loads(req.body or b"{}")
        except (ValueError, RecursionError):
            return json_response(400, {"error": "the body is not valid JSON"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "the body must be a JSON object"})
        try:
            result = await fn(body)
        except ApiError as e:
            self._count(action, "failed")
            log.warning("ui: action failed", extra={"event": "ui_action_failed", "action": action, "who": who,
                                                     "reason": str(e)})
            return json_response(e.status, {"error": str(e)})
        except CorralError as e:
            self._count(action, "failed")
            return json_response(409, {"error": str(e)})
        except REDIS_FAILURES as e:
            self._count(action, "failed")
            return json_response(503, {"error": f"Redis unreachable: {type(e).__name__}"})
        self.shared.invalidate()
        self.overview.invalidate()
        self._count(action, "ok")
        target = {k: v for k, v in body.items() if k in ("queue", "task", "ts", "id", "error", "key")}
        log.info("ui: action", extra={"event": "ui_action", "action": action, "who": who,
                                      "target": json.dumps(target, sort_keys=True)[:300], "result": str(result)[:100]})
        return json_response(200, {"ok": True, "action": action, "result": result})

    @staticmethod
    def _str(body: dict[str, Any], name: str) -> str:
        v = body.get(name)
        if not isinstance(v, str) or not v:
            raise ApiError(400, f"{name} is required (a non-empty string)")
        return v

    @staticmethod
    def _pos(body: dict[str, Any], name: str = "position") -> int:
        v = body.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ApiError(400, f"{name} must be a non-negative integer")
        return v

    async def _find(self, key: str, position: int, wanted: str) -> str:
        """The exact bytes of the list entry whose id is `wanted`, looked for around `position`."""
        lo = max(0, position - SEARCH_WINDOW)
        for raw in await self.client.redis.lrange(key, lo, position + SEARCH_WINDOW):
            if job_id(str(raw)) == wanted:
                return str(raw)
        raise ApiError(409, "that entry is gone (run, deleted or moved): refresh and try again")

    async def a_queue_delete_job(self, body: dict[str, Any]) -> int:
        q = self._str(body, "queue")
        raw = await self._find(self.client.keys.queue(q), self._pos(body), self._str(body, "id"))
        return await self.client.delete_raw(q, raw)

    async def a_queue_clear(self, body: dict[str, Any]) -> int:
        q = self._str(body, "queue")
        n = await self.client.length(q)
        await self.client.delete_queue(q)
        return n

    async def _delayed_raw(self, body: dict[str, Any]) -> tuple[int, str]:
        ts = body.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise ApiError(400, "ts (the job's due second) is required")
        wanted = self._str(body, "id")
        for raw in await self.client.redis.lrange(self.client.keys.delayed(ts), 0, -1):
            if job_id(str(raw)) == wanted:
                return ts, str(raw)
        raise ApiError(409, "that delayed job is gone (promoted or deleted): refresh and try again")

    async def a_delayed_delete(self, body: dict[str, Any]) -> int:
        _ts, raw = await self._delayed_raw(body)
        return len(await self.client.delete_delayed_raw(raw))

    async def a_delayed_run_now(self, body: dict[str, Any]) -> bool:
        ts, raw = await self._delayed_raw(body)
        if not await self.client.run_delayed_now(ts, raw):
            raise ApiError(409, "that delayed job is gone (promoted or deleted): refresh and try again")
        return True

    def _periodic(self, body: dict[str, Any]) -> Any:
        name = self._str(body, "task")
        for t in self._periodic_tasks():
            if t.name == name:
                return t
        raise ApiError(404, f"no periodic task named {name[:100]!r} is known to this node")

    async def a_periodic_pause(self, body: dict[str, Any]) -> int:
        t = self._periodic(body)
        return await self.client.stop_recurrent_job(t.name, t.queue)

    async def a_periodic_resume(self, body: dict[str, Any]) -> bool:
        t = self._periodic(body)
        return await self.client.enqueue_recurrent_job(t.name)

    async def a_periodic_run_now(self, body: dict[str, Any]) -> bool:
        t = self._periodic(body)
        return await self.client.run_periodic_now(t.name, t.queue)

    async def a_failed_retry(self, body: dict[str, Any]) -> bool:
        raw = await self._find(self.client.keys.failed, self._pos(body), self._str(body, "id"))
        return await self.client.retry_and_remove_failed(raw)

    async def a_failed_remove(self, body: dict[str, Any]) -> int:
        raw = await self._find(self.client.keys.failed, self._pos(body), self._str(body, "id"))
        return await self.client.remove_failed(raw)

    @staticmethod
    def _filter(body: dict[str, Any]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name in ("task", "queue", "error"):
            v = body.get(name)
            if v is not None and not isinstance(v, str):
                raise ApiError(400, f"{name} must be a string")
            out[name] = v or None
        return out

    async def a_failed_retry_all(self, body: dict[str, Any]) -> int:
        f = self._filter(body)
        return await self.client.retry_failed_matching(task=f["task"], queue=f["queue"], error=f["error"])

    async def a_failed_remove_all(self, body: dict[str, Any]) -> int:
        f = self._filter(body)
        return await self.client.remove_failed_matching(task=f["task"], queue=f["queue"], error=f["error"])

    async def a_lock_delete(self, body: dict[str, Any]) -> int:
        wanted = self._str(body, "id")
        for lock in await self.client.locks_with_ttl():
            if job_id(lock["key"]) == wanted:
                return await self.client.delete_lock(lock["key"])
        raise ApiError(409, "that lock is gone (expired or released): refresh and try again")
