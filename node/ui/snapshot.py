"""One bounded read of the cluster per refresh period, shared by every dashboard on this node.

`Shared` coalesces readers: within a period every request for the same view gets the same
result, and a read already under way is joined rather than repeated, so ten open dashboards cost
what one does. Views are read only while someone looks (nothing runs for a closed dashboard).
`overview` is the view most pages use: leader, nodes, queues, delayed/failed counts, workers and
the chart's history, in two pipelined round trips, every list capped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from redis.asyncio.client import Redis

from cluster.clock import SYSTEM_CLOCK, Clock
from cluster.keys import Keys
from cluster.membership import node_of_worker

from .history import HistoryReader

MAX_QUEUES = 500
MAX_DELAYED_SECONDS = 1000
MAX_WORKERS = 2000
MAX_NODES = 500
NODE_INFO_TTL = 30.0
SLOW_TTL = 10.0  # Redis time offset, the queue set, the recovered count


def _int(v: Any) -> int:
    """A count read from Redis; a key someone filled with something else reads as 0, so one bad
    key never takes the whole overview down."""
    try:
        return int(float(v or 0))
    except (TypeError, ValueError):
        return 0


def _clean(results: list[Any]) -> list[Any]:
    return [None if isinstance(r, Exception) else r for r in results]


def job_id(raw: str) -> str:
    """A job's handle in the API: the hash of its exact bytes (the bytes themselves may hold args)."""
    return hashlib.sha1(raw.encode(errors="surrogateescape")).hexdigest()


class Shared:
    """A time-to-live cache that coalesces concurrent readers of one key."""

    def __init__(self, period: float, max_keys: int = 128) -> None:
        self.period = period
        self.max_keys = max_keys
        self.entries: OrderedDict[str, tuple[float, asyncio.Future[Any]]] = OrderedDict()
        self.builds = 0  # reads done (for tests and the bench)

    async def get(self, key: str, build: Callable[[], Awaitable[Any]], period: float | None = None) -> Any:
        """`period` overrides the refresh period for this key (a costly view read less often)."""
        now = time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and (not hit[1].done() or now - hit[0] < (period or self.period)):
            self.entries.move_to_end(key)
            return await asyncio.shield(hit[1])
        fut: asyncio.Future[Any] = asyncio.ensure_future(build())
        self.builds += 1
        self.entries[key] = (now, fut)
        while len(self.entries) > self.max_keys:
            self.entries.popitem(last=False)
        try:
            return await asyncio.shield(fut)
        except BaseException:
            if self.entries.get(key, (0, None))[1] is fut:
                del self.entries[key]  # a failed read is not cached: the next request tries again
            raise

    def invalidate(self) -> None:
        """After an action: the next request reads Redis again."""
        self.entries.clear()


def parse_job(raw: str, payloads: bool) -> dict[str, Any]:
    """A queued or delayed entry for the API: task and queue always; args only with payloads on."""
    out: dict[str, Any] = {"id": job_id(raw)}
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        out["task"] = str(obj.get("class")) if obj.get("class") is not None else None
        out["queue"] = obj.get("queue") if isinstance(obj.get("queue"), str) else None
        if payloads:
            out["args"] = obj.get("args")
    else:
        out["task"] = None
        out["queue"] = None
        out["undecodable"] = True
        if payloads:
            out["raw"] = raw[:2000]
    return out


@dataclass(eq=False)
class Overview:
    """The overview view: built from Redis in two pipelined round trips."""

    redis: Redis
    keys: Keys
    _: KW_ONLY
    dead_after: float
    payloads: bool
    backend: str | None = None
    clock: Clock = SYSTEM_CLOCK
    node_info: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict, init=False)
    leader_token: str | None = field(default=None, init=False)  # the lock's token when `leader_hash` was read
    leader_hash: dict[str, Any] = field(default_factory=dict, init=False)
    # read every SLOW_TTL (and after an action): what changes seldom
    recovering: int = field(default=0, init=False)  # jobs returned from dead nodes, not finished yet
    queue_names: list[str] = field(default_factory=list, init=False)  # the `queues` set (added by a first enqueue)
    offset: float = field(default=0.0, init=False)  # Redis clock - this process's clock
    slow_mono: float = field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        self.history = HistoryReader(self.keys)

    def invalidate(self) -> None:
        """After an action (a queue cleared, ...): the next read refreshes everything."""
        self.slow_mono = float("-inf")

    async def build(self) -> dict[str, Any]:
        k = self.keys
        key, lo, hi = self.history.query()
        read_slow = time.monotonic() - self.slow_mono >= SLOW_TTL
        read_history = read_slow or self.history.due(self.clock.time() + self.offset)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.leader_lock)
            pipe.zrange(k.members, 0, MAX_NODES - 1, withscores=True)
            pipe.zrange(k.delayed_schedule, 0, MAX_DELAYED_SECONDS - 1)
            pipe.llen(k.failed)
            pipe.mget([k.stat_processed, k.stat_failed])
            pipe.srandmember(k.workers, MAX_WORKERS)
            if read_slow:
                pipe.time()
                pipe.smembers(k.queues)
                pipe.hlen(k.recovered)
            if read_history:
                pipe.zrangebyscore(key, lo, hi, withscores=True)
            # a key of the wrong type (WRONGTYPE) reads as empty: one bad key must not blank the page
            (token, members, tss, failed, stats, workers, *rest) = _clean(
                await pipe.execute(raise_on_error=False))
        members, tss, workers = members or [], tss or [], workers or []
        if read_slow:
            t, queue_set, recovering = rest[:3]
            del rest[:3]
            # Redis' clock, read every SLOW_TTL: ages are on the clock the heartbeats are written with
            self.offset = int(t[0]) + int(t[1]) / 1e6 - self.clock.time()
            self.queue_names = sorted(map(str, queue_set or []))[:MAX_QUEUES]
            self.recovering, self.slow_mono = _int(recovering), time.monotonic()
        hist = [rest[0] or []] if rest else []
        now = self.clock.time() + self.offset
        queues = self.queue_names
        tss = [ts for ts in map(_int, tss) if ts > 0]
        worker_ids = sorted(map(str, workers))
        mono = time.monotonic()
        want_info = [str(m) for m, _s in members
                     if str(m) not in self.node_info or mono - self.node_info[str(m)][0] > NODE_INFO_TTL]
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.llen(k.queue(q))
                pipe.lindex(k.qtimes(q), 0)
            for ts in tss:
                pipe.llen(k.delayed(ts))
            if worker_ids:
                pipe.mget([k.worker(w) for w in worker_ids])
            for m in want_info:
                pipe.hget(k.node(m), "info")
            # the leader's record changes only with the term: read it when the lock's token does
            new_term = token is not None and token != self.leader_token
            if new_term:
                pipe.hgetall(k.leader)
            res = _clean(await pipe.execute(raise_on_error=False))
        if new_term:
            self.leader_hash = res.pop() or {}
            # a term whose record is not written yet is read again next time
            self.leader_token = token if self.leader_hash.get("token") == token else None
        nq, nt = 2 * len(queues), len(tss)
        records = (res[nq + nt] or []) if worker_ids else []
        for m, raw in zip(want_info, res[nq + nt + (1 if worker_ids else 0):], strict=True):
            try:
                info = json.loads(raw) if raw else {}
            except ValueError:
                info = {}
            self.node_info[m] = (mono, info if isinstance(info, dict) else {})
        self.history.add(list(hist[0]) if hist else [], now)
        live = {str(m) for m, _s in members}
        for gone in set(self.node_info) - live:
            del self.node_info[gone]

        queue_rows = []
        for i, q in enumerate(queues):
            length, head = _int(res[2 * i]), res[2 * i + 1]
            oldest = None
            if length > 0 and head:
                try:
                    oldest = max(0.0, round(now - float(str(head).partition(":")[2]) / 1000, 3))
                except ValueError:
                    oldest = None
            queue_rows.append({"name": q, "length": length, "oldest_age": oldest})
        leader_row = None
        leader = self.leader_hash
        if token is not None:
            if leader and leader.get("token") == token:
                leader_row = {"node": leader.get("node"), "epoch": _int(leader.get("epoch")),
                              "since": _int(leader.get("since")) or None, "backend": self.backend}
            else:
                leader_row = {"node": str(token), "epoch": None, "since": None, "backend": None}
        worker_rows = [self._worker(w, rec, now) for w, rec in zip(worker_ids, records, strict=False)]
        node_rows = []
        for m, score in members:
            m = str(m)
            info = self.node_info.get(m, (0, {}))[1]
            mine = [w for w in worker_rows if w["node"] == m]
            age = max(0.0, now - float(score) / 1000)
            node_rows.append({
                "id": m, "heartbeat_age": round(age, 3), "alive": age < self.dead_after,
                "version": info.get("version"), "host": info.get("host"), "queues": info.get("queues"),
                "candidate": bool(info.get("scheduler")), "started": info.get("started"),
                "http_port": info.get("http_port"), "is_leader": leader_row is not None and leader_row["node"] == m,
                "slots": len(mine), "busy": sum(1 for w in mine if w["job"] is not None)})
        return {
            "time": round(now, 3),
            "leader": leader_row,
            "nodes": node_rows,
            "queues": queue_rows,
            "queued": sum(q["length"] for q in queue_rows),
            "delayed": sum(_int(n) for n in res[nq:nq + nt]),
            "delayed_seconds": len(tss),
            "failed": _int(failed),
            "recovering": self.recovering,
            "processed_total": _int(stats[0]),
            "failed_total": _int(stats[1]),
            "workers": worker_rows,
            "history": self.history.rates(),
            "history_step": self.history.step,
        }

    def _worker(self, wid: str, record: Any, now: float) -> dict[str, Any]:
        name, _, queues = wid.rpartition(":")
        name = name or wid
        node = node_of_worker(name) if "+" in name else None  # Corral's "<node>:<pid>+<slot>"
        job = None
        if record is not None:
            from cluster.wire import parse_date

            try:
                rec = json.loads(record)
            except ValueError:
                rec = None
            if isinstance(rec, dict):
                payload: dict[str, Any] = rec["payload"] if isinstance(rec.get("payload"), dict) else {}
                since = parse_date(rec.get("run_at"))
                job = {"task": payload.get("class"), "queue": rec.get("queue"), "since": since,
                       "running_seconds": round(max(0.0, now - since), 3) if since else None}
                if self.payloads:
                    job["args"] = payload.get("args")
        return {"name": name, "queues": queues, "node": node, "job": job}
