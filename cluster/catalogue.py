"""The task catalogue: what every live node serves, published in Redis for producers without
the task code (the CLI, a web app holding only `Client.connect(url)`, another service).

Layout (keys in `cluster/keys.py`):

    corral:catalogue    hash  node id -> {"at": ms written, "dead_after": s, "tasks": {name: hash}}
    corral:taskdefs     hash  definition hash -> definition JSON (shared by the nodes serving it)

A node writes its entry at boot (before it registers as a member) and deletes it when it stops.
An entry counts only while its node is a live member (in `corral:members`, heartbeat younger
than the node's own `dead_after`), so a dead node's tasks leave the catalogue with it; the
publishers prune the entries of nodes gone from the members and the definitions no entry uses
(`cluster/catalogue_publish.py`, the node's side; this module is the readers' side).

    view = await read_catalogue(redis, keys)
    view.find("sendWelcomeEmail").queue        # "mail"
    view.close_names("sendWelcomEmail")        # ["sendWelcomeEmail"]

Two live nodes publishing different definitions of one name is a conflict: it is reported (the
publisher logs it, `/status` and `corral_task_definition_conflicts` show it) and producers follow
the definition of the most recently started node (a rolling deploy's new code), never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .aio import REDIS_FAILURES
from .clock import SYSTEM_CLOCK, Clock
from .digest import sha1_hex
from .errors import CorralError, EnqueueError
from .keys import Keys
from .plugins import BUILTIN, Plugin
from .task import Task

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.catalogue")


class UnknownTask(EnqueueError):
    """No live node serves this task name; `close` lists the names that look like it."""

    def __init__(self, name: str, close: list[str], nodes: int) -> None:
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(
            f"no live node serves a task named {name!r} ({nodes} node(s) publish their tasks){hint} "
            "To queue it anyway for workers outside Corral, pass unknown_ok=True (CLI: --allow-unknown).")
        self.name = name
        self.close = close


# ---- definitions ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Plugin options as JSON (tuples become lists; anything else JSON can't hold becomes its repr)."""
    return json.loads(json.dumps(value, default=repr))


def describe(t: Task) -> dict[str, Any]:
    """The published definition of a task, with `hash` over everything else in it."""
    plugins = [{"name": p.name, "options": _plain(p.options), "enqueue_hooks": bool(p.has_enqueue_hooks)}
               for p in t.plugin_instances()]
    d: dict[str, Any] = {
        "name": t.name, "description": t.description, "queue": t.queue, "plugins": plugins,
        "frequency": t.frequency or None, "cron": t.cron, "timezone": t.timezone if t.cron else None,
        "missed": t.missed, "catch_up_window": t.catch_up_window, "overlap": t.overlap,
        "cpu_bound": t.cpu_bound, "timeout": t.timeout,
    }
    d["hash"] = definition_hash(d)
    return d


def definition_hash(d: dict[str, Any]) -> str:
    body = {k: v for k, v in d.items() if k != "hash"}
    return sha1_hex(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())[:16]


def plugin_class(name: str) -> type[Plugin] | None:
    """A plugin class by its name: built in, or a `Plugin` subclass this process has imported."""
    if name in BUILTIN:
        return BUILTIN[name]
    pending: list[type[Plugin]] = [Plugin]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.name == name:
                return sub
            pending.append(sub)
    return None


def _not_here(params: dict[str, Any], ctx: Any) -> None:
    raise RuntimeError("a catalogue entry has no code: its task runs on the nodes that serve it")


@dataclass
class TaskInfo:
    """One task name as the live nodes publish it."""

    name: str
    definition: dict[str, Any]          # the one producers follow (newest node's on a conflict)
    nodes: dict[str, str]               # node id -> the hash that node publishes
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash -> definition
    _task: Task | None = None
    _missing: list[str] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return str(self.definition.get("queue") or "default")

    @property
    def periodic(self) -> bool:
        return bool(self.definition.get("frequency")) or self.definition.get("cron") is not None

    @property
    def conflict(self) -> bool:
        return len(set(self.nodes.values())) > 1

    def task(self) -> Task:
        """A code-less `Task` with the published fields: its plugins (rebuilt from name + options)
        run the enqueue hooks, its schedule gives the next occurrence."""
        if self._task is None:
            d = self.definition
            classes: list[type[Plugin]] = []
            options: dict[str, Any] = {}
            for p in d.get("plugins") or []:
                cls = plugin_class(str(p.get("name")))
                if cls is None:
                    if p.get("enqueue_hooks"):
                        self._missing.append(str(p.get("name")))
                    continue
                classes.append(cls)
                options[cls.name] = p.get("options") or {}
            try:
                self._task = Task(name=self.name, run=_not_here, description=str(d.get("description") or ""),
                                  queue=self.queue, frequency=d.get("frequency"), cron=d.get("cron"),
                                  timezone=d.get("timezone") or "UTC", plugins=classes, plugin_options=options,
                                  timeout=d.get("timeout"), missed=d.get("missed") or "catch_up",
                                  catch_up_window=float(d.get("catch_up_window") or 60.0),
                                  overlap=d.get("overlap") or "allow")
            except (CorralError, TypeError, ValueError) as e:
                raise EnqueueError(f"the published definition of task {self.name!r} cannot be rebuilt here: "
                                   f"{e}") from None
        return self._task

    def enqueue_plugins(self) -> list[Plugin]:
        """The enqueue-hook plugins a producer must run; refuses if one can't be rebuilt here."""
        t = self.task()
        if self._missing:
            raise EnqueueError(f"task {self.name!r} uses plugin(s) {self._missing} with enqueue hooks that this "
                               "process cannot build: import the module that defines them")
        return [p for p in t.plugin_instances() if p.has_enqueue_hooks]


@dataclass
class CatalogueView:
    tasks: dict[str, TaskInfo]
    nodes: list[str]                    # live nodes that publish a catalogue

    def find(self, name: str) -> TaskInfo | None:
        return self.tasks.get(name)

    def close_names(self, name: str, n: int = 5) -> list[str]:
        import difflib  # here: only a name not in the catalogue needs suggestions

        return difflib.get_close_matches(name, list(self.tasks), n=n, cutoff=0.6)

    def conflicts(self) -> list[TaskInfo]:
        return [t for t in self.tasks.values() if t.conflict]

    def summary(self) -> dict[str, Any]:
        """What `/status` shows: task names, the nodes serving each, the conflicting ones."""
        return {
            "nodes": self.nodes,
            "tasks": {n: {"queue": t.queue, "nodes": sorted(t.nodes), "hash": t.definition.get("hash")}
                      for n, t in sorted(self.tasks.items())},
            "conflicts": {t.name: variants(t) for t in self.conflicts()},
        }


def variants(t: TaskInfo) -> dict[str, list[str]]:
    """Definition hash -> the nodes publishing it."""
    out: dict[str, list[str]] = {}
    for node, h in sorted(t.nodes.items()):
        out.setdefault(h, []).append(node)
    return out


def differences(t: TaskInfo) -> dict[str, list[Any]]:
    """Field -> the values the variants give it, for the fields the variants disagree on."""
    variants = list(t.variants.values())
    keys = sorted({k for v in variants for k in v} - {"hash"})
    return {k: [v.get(k) for v in variants] for k in keys if len({json.dumps(v.get(k), sort_keys=True)
                                                                   for v in variants}) > 1}


# ---- reading -------------------------------------------------------------------------------------


async def read_catalogue(redis: Redis, keys: Keys, defs: dict[str, dict[str, Any]] | None = None) -> CatalogueView:
    """The live catalogue, in two round trips (one more when a definition is new to `defs`, a
    cache of definitions by hash: they never change under their hash)."""
    defs = {} if defs is None else defs
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zrange(keys.members, 0, -1, withscores=True)
        pipe.hgetall(keys.catalogue)
        now, members, entries = await pipe.execute()
    live = live_entries(now, members, entries)
    wanted = wanted_definitions(live, defs)
    if wanted:
        add_definitions(defs, wanted, await redis.hmget(keys.taskdefs, wanted))
    return build_view(live, defs)


def live_entries(now: Any, members: Any, entries: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """Node id -> {"started", "tasks"} for the catalogue entries of live nodes, from the replies of
    TIME, ZRANGE members WITHSCORES (score pairs) and HGETALL catalogue (a dict)."""
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    beats = {str(m): float(s) for m, s in members}
    live: dict[str, dict[str, Any]] = {}
    for node, raw in entries.items():
        node = str(node)
        try:
            entry = json.loads(raw)
            dead_after_ms = float(entry.get("dead_after", 8.0)) * 1000
            served = dict(entry["tasks"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        beat = beats.get(node)
        if beat is not None and now_ms - beat < dead_after_ms:
            live[node] = {"started": float(entry.get("started", 0)), "tasks": served}
    return live


def wanted_definitions(live: dict[str, dict[str, Any]], defs: dict[str, dict[str, Any]]) -> list[str]:
    """The definition hashes the live nodes name that `defs` does not hold yet (to HMGET)."""
    return sorted({str(h) for e in live.values() for h in e["tasks"].values()} - set(defs))


def add_definitions(defs: dict[str, dict[str, Any]], wanted: list[str], raws: list[Any]) -> None:
    for h, raw in zip(wanted, raws, strict=True):
        if raw is not None:
            with contextlib.suppress(ValueError, TypeError):
                defs[h] = dict(json.loads(raw))


def build_view(live: dict[str, dict[str, Any]], defs: dict[str, dict[str, Any]]) -> CatalogueView:
    tasks: dict[str, TaskInfo] = {}
    # newest node first: on a conflict its definition is the one producers follow
    for node in sorted(live, key=lambda n: (-live[n]["started"], n)):
        for name, h in live[node]["tasks"].items():
            d = defs.get(str(h))
            if d is None:
                continue
            info = tasks.get(name)
            if info is None:
                info = tasks[name] = TaskInfo(name=name, definition=d, nodes={})
            info.nodes[node] = str(h)
            info.variants[str(h)] = d
    return CatalogueView(tasks=tasks, nodes=sorted(live))


class CatalogueCopy:
    """A producer's copy of the catalogue and when it was read: re-read when older than
    `max_age`, or sooner when a name is missing (a node that just booted), at most every
    `miss_interval`. The reading is the subclass's (async `CatalogueCache`, blocking
    `SyncCatalogueCache` in cluster/sync_client.py); the freshness rules are these."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, max_age: float = 2.0, miss_interval: float = 0.2) -> None:
        self.clock = clock
        self.max_age = max_age
        self.miss_interval = miss_interval
        self._defs: dict[str, dict[str, Any]] = {}
        self._view: CatalogueView | None = None
        self._read_at = -math.inf

    def _stale(self, age: float) -> bool:
        return self._view is None or self.clock.monotonic() - self._read_at >= age

    def _read_failed(self) -> CatalogueView | None:
        """After a failed re-read: the copy we have (None: none yet, the caller raises). The
        enqueue's own write decides its outcome: a failed refresh must not add a way to fail."""
        if self._view is None:
            return None
        log.debug("catalogue: refresh failed; using the copy read %.1f s ago", self.clock.monotonic() - self._read_at)
        self._read_at = self.clock.monotonic()  # next try in max_age, not every call
        return self._view

    def _read_done(self, view: CatalogueView) -> CatalogueView:
        self._view = view
        self._read_at = self.clock.monotonic()
        return view

    def cached(self, name: str) -> tuple[TaskInfo | None, CatalogueView] | None:
        """What `find` would answer, from the copy held and without I/O, when that copy is
        fresh enough for the answer (a hit: within `max_age`; a miss: within `miss_interval` too);
        else None (then `find`). Enqueue asks this first: it is on every call's path."""
        view = self._view
        if view is None:
            return None
        age = self.clock.monotonic() - self._read_at
        info = view.find(name)
        if age < self.max_age and (info is not None or age < self.miss_interval):
            return info, view
        return None


class CatalogueCache(CatalogueCopy):
    """The copy read with an async redis client."""

    def __init__(self, redis: Redis, keys: Keys, *, clock: Clock = SYSTEM_CLOCK, max_age: float = 2.0,
                 miss_interval: float = 0.2) -> None:
        super().__init__(clock=clock, max_age=max_age, miss_interval=miss_interval)
        self.redis = redis
        self.keys = keys
        self._lock = asyncio.Lock()

    async def view(self, *, max_age: float | None = None) -> CatalogueView:
        age = self.max_age if max_age is None else max_age
        if self._stale(age):
            async with self._lock:
                if self._stale(age):
                    try:
                        return self._read_done(await read_catalogue(self.redis, self.keys, self._defs))
                    except REDIS_FAILURES:
                        if (kept := self._read_failed()) is None:
                            raise
                        return kept
        assert self._view is not None
        return self._view

    async def find(self, name: str) -> tuple[TaskInfo | None, CatalogueView]:
        view = await self.view()
        info = view.find(name)
        if info is None:
            view = await self.view(max_age=self.miss_interval)
            info = view.find(name)
        return info, view


# ---- the listing (`corral tasks`, `/tasks`) ------------------------------------------------------


async def listing(redis: Redis, keys: Keys, view: CatalogueView, now: float) -> dict[str, Any]:
    """Every task the live nodes serve: queue, schedule, next occurrence, paused, plugins, nodes."""
    from .periodic import next_slot

    periodic = [t for t in view.tasks.values() if t.periodic]
    records: list[Any] = []
    if periodic:
        async with redis.pipeline(transaction=False) as pipe:
            for t in periodic:
                pipe.hgetall(keys.periodic(t.name))
            records = await pipe.execute()
    state = {t.name: rec for t, rec in zip(periodic, records, strict=True)}
    tasks: dict[str, Any] = {}
    for name, t in sorted(view.tasks.items()):
        d = t.definition
        row: dict[str, Any] = {
            "queue": t.queue, "description": d.get("description") or "",
            "plugins": [{"name": p.get("name"), "options": p.get("options") or {}} for p in d.get("plugins") or []],
            "nodes": sorted(t.nodes), "hash": d.get("hash"), "cpu_bound": bool(d.get("cpu_bound")),
            "timeout": d.get("timeout"), "schedule": None, "next": None, "paused": False, "last": None,
            "conflict": variants(t) if t.conflict else None,
        }
        if t.periodic:
            rec = state.get(name) or {}
            row["schedule"] = ({"cron": d.get("cron"), "timezone": d.get("timezone") or "UTC"} if d.get("cron")
                               else {"frequency": d.get("frequency")})
            row.update(missed=d.get("missed"), overlap=d.get("overlap"))
            row["paused"] = rec.get("paused") == "1"
            last = float(rec["last"]) if rec.get("last") is not None else None
            row["last"] = last
            if not row["paused"]:
                with contextlib.suppress(EnqueueError):
                    row["next"] = next_slot(t.task(), max(now, last or now))
        tasks[name] = row
    return {"nodes": view.nodes, "tasks": tasks, "conflicts": sorted(c.name for c in view.conflicts())}
