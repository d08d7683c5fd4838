"""What an enqueue sends, decided without I/O: shared by the async `Client` (cluster/client.py)
and the blocking `SyncClient` (cluster/sync_client.py), so both check the same input, resolve
the same queue and write the same bytes under the same keys.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from .catalogue import CatalogueView, TaskInfo, UnknownTask
from .errors import EnqueueError
from .keys import Keys
from .plugins import Plugin
from .task import Registry, Task
from .wire import encode_job, js_date

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
# A due time beyond this is a mistake (an epoch in milliseconds is ~50,000 years ahead), not a plan
HORIZON_SECONDS = 10 * 366 * 86400

Plan = tuple[str, list[Plugin]]  # the queue to use, the enqueue plugins to run


def job_args(params: Any, raw_args: Sequence[Any] | None) -> list[Any]:
    """The job's resque args: `[params]` (actionhero), or `raw_args` as given."""
    if raw_args is not None:
        if not isinstance(raw_args, list | tuple):
            raise EnqueueError(f"raw_args must be a list, got {type(raw_args).__name__}")
        return list(raw_args)
    if params is None:
        return [{}]
    if not isinstance(params, dict):
        raise EnqueueError(f"params must be a JSON object (dict), got {type(params).__name__}")
    return [params]


def epoch(when: float | int | dt.datetime) -> float:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise EnqueueError("enqueue_at needs an aware datetime (with tzinfo) or epoch seconds")
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise EnqueueError(f"when must be epoch seconds or a datetime, got {when!r}")
    return float(when)


def bucket(epoch: float) -> int:
    """The delayed second a job is filed under: rounded up, so a job never runs early."""
    return math.ceil(epoch)


def due_second(when: float | dt.datetime, now: float) -> int:
    """The delayed second for `when`, or EnqueueError for a time past the 10-year horizon."""
    at = epoch(when)
    if at - now > HORIZON_SECONDS:
        hint = ""
        if at / 1000 - now <= HORIZON_SECONDS:
            hint = f"; it looks like milliseconds: epoch seconds would be {at / 1000:.0f} ({js_date(at / 1000)})"
        raise EnqueueError(f"when {at:g} is more than 10 years ahead{hint}")
    return bucket(at)


def delay_seconds(delay: float | dt.timedelta) -> float:
    if isinstance(delay, dt.timedelta):
        delay = delay.total_seconds()
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
        raise EnqueueError(f"delay must be a non-negative number of seconds, got {delay!r}")
    return float(delay)


def checked_payload(task: str, queue: str, args: list[Any], limit: int) -> str:
    """The job's JSON, or EnqueueError when its UTF-8 size passes `limit`."""
    payload = encode_job(task, queue, args)
    if len(payload) * 4 > limit and (size := len(payload.encode(errors="surrogateescape"))) > limit:
        raise EnqueueError(f"job payload for {task!r} is {size} bytes; the limit is {limit}")
    return payload


def registry_plan(task: str, queue: str | None, registry: Registry | None) -> Plan | None:
    """The plan from a registry holding the task's code, checking the name first; None if it has none."""
    if not isinstance(task, str) or not task:
        raise EnqueueError(f"task name must be a non-empty string, got {task!r}")
    t: Task | None = registry.find(task) if registry else None
    if t is None:
        return None
    return t.queue if queue is None else queue, [p for p in t.plugin_instances() if p.has_enqueue_hooks]


def catalogue_plan(task: str, queue: str | None, unknown_ok: bool, info: TaskInfo | None,
                   view: CatalogueView) -> Plan:
    """The plan from the live nodes' catalogue, or UnknownTask (with close names)."""
    if info is not None:
        return info.queue if queue is None else queue, info.enqueue_plugins()
    # No live Corral node publishes anything: there is nothing to judge the name against, and
    # a queue must take work while its workers are down (a deploy, an outage).
    if not unknown_ok and view.nodes:
        raise UnknownTask(task, view.close_names(task), len(view.nodes))
    return "default" if queue is None else queue, []


def enqueue_keys(keys: Keys, q: str) -> list[str]:
    """KEYS of enqueue.lua (and the leading KEYS of enqueue_guarded.lua) for queue `q`."""
    return [keys.queues, keys.queue(q), keys.qtimes(q), keys.idle(q), keys.idle("*")]


def enqueue_head(keys: Keys, q: str) -> list[str]:
    """The ARGV of enqueue.lua before its payloads."""
    return [q, keys.wake_channel, keys.node_wake_prefix]


def enqueue_at_call(keys: Keys, ts: int, payload: str) -> tuple[list[str], list[Any]]:
    """(KEYS, ARGV) of enqueue_at.lua."""
    return ([keys.delayed_schedule, keys.delayed(ts), keys.timestamps(payload)],
            [ts, payload, keys.delayed_member(ts), keys.delayed_channel])
