"""Plugins with resque / node-resque semantics: named async hooks with no-op defaults.

Hooks run in list order; a before-hook returning False stops the chain and the job
(enqueue: not queued, `enqueue` returns False; perform: dropped without stats or failed entry).
Enqueue hooks also run when the leader promotes a delayed job. Options come from
`plugin_options["<PluginName>"]`, in seconds (node-resque uses ms), validated at load.

    Task(name="report", run=report, plugins=["JobLock", "Retry"],
         plugin_options={"Retry": {"limit": 3, "backoff": [1, 5, 30]}})
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from redis.asyncio import Redis

from .clock import SYSTEM_CLOCK, Clock
from .keys import Keys
from .wire import js_dumps

if TYPE_CHECKING:
    from .client import Client
    from .task import Task

log = logging.getLogger("corral.plugins")


@dataclass
class PluginContext:
    """What a hook sees. After-perform hooks may clear `error` (swallow) or set `retry_in`."""

    redis: Redis
    keys: Keys
    scripts: Any
    task: str
    queue: str
    args: list[Any]
    payload: str
    client: Client | None = None
    error: BaseException | None = None
    retry_in: float | None = None
    state: dict[str, Any] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK

    @property
    def args_key(self) -> str:
        """The args part of lock keys: the args JSON, as node-resque writes it."""
        return js_dumps(self.args)


class Plugin:
    """Base class. Override what you need; every hook defaults to 'go on'."""

    name: ClassVar[str] = "Plugin"
    has_enqueue_hooks: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {sorted(unknown)}; known: {sorted(self.defaults)}")
        self.options = {**self.defaults, **options}
        self.validate()

    def validate(self) -> None: ...

    async def before_enqueue(self, ctx: PluginContext) -> bool:
        return True

    async def after_enqueue(self, ctx: PluginContext) -> None: ...

    async def before_perform(self, ctx: PluginContext) -> bool:
        return True

    async def after_perform(self, ctx: PluginContext) -> None: ...


def _positive(plugin: str, key: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{plugin}: option {key!r} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"number of seconds, got {value!r}")


class JobLock(Plugin):
    """Never run the same task + queue + args twice at once (`workerslock:` key, SET NX EX).

    A blocked copy is re-enqueued after `enqueue_timeout` s (`re_enqueue=True`) or dropped.
    The lock is released by compare-and-delete, so a run whose lock expired cannot free a later
    holder's lock; the leader deletes the locks of jobs it recovers from dead nodes.
    """

    name = "JobLock"
    defaults = {"lock_timeout": 3600.0, "enqueue_timeout": 1.001, "re_enqueue": True}

    def validate(self) -> None:
        _positive(self.name, "lock_timeout", self.options["lock_timeout"])
        _positive(self.name, "enqueue_timeout", self.options["enqueue_timeout"], allow_zero=True)

    def key(self, ctx: PluginContext) -> str:
        return ctx.keys.job_lock(ctx.task, ctx.queue, ctx.args_key)

    async def before_perform(self, ctx: PluginContext) -> bool:
        value = f"{ctx.clock.time() + self.options['lock_timeout']:.0f}:{id(ctx)}"
        got = await ctx.redis.set(self.key(ctx), value, nx=True, ex=int(self.options["lock_timeout"]))
        if got:
            ctx.state["JobLock"] = value
            return True
        if self.options["re_enqueue"] and ctx.client is not None:
            params = ctx.args[0] if len(ctx.args) == 1 and isinstance(ctx.args[0], dict) else None
            await ctx.client.enqueue_in(self.options["enqueue_timeout"], ctx.task, params, queue=ctx.queue,
                                        raw_args=ctx.args)
        return False

    async def after_perform(self, ctx: PluginContext) -> None:
        value = ctx.state.get("JobLock")
        if value is not None:
            await ctx.scripts.run("cad", [self.key(ctx)], [value])


class QueueLock(Plugin):
    """Never queue the same task + queue + args twice (`lock:` key, SET NX EX); released when popped."""

    name = "QueueLock"
    has_enqueue_hooks = True
    defaults = {"lock_timeout": 3600.0}

    def validate(self) -> None:
        _positive(self.name, "lock_timeout", self.options["lock_timeout"])

    def key(self, ctx: PluginContext) -> str:
        return ctx.keys.queue_lock(ctx.task, ctx.queue, ctx.args_key)

    async def before_enqueue(self, ctx: PluginContext) -> bool:
        timeout = int(self.options["lock_timeout"])
        return bool(await ctx.redis.set(self.key(ctx), f"{ctx.clock.time() + timeout:.0f}", nx=True, ex=timeout))

    async def before_perform(self, ctx: PluginContext) -> bool:
        await ctx.redis.delete(self.key(ctx))
        return True


class DelayQueueLock(Plugin):
    """Refuse an immediate enqueue while the same job is already delayed."""

    name = "DelayQueueLock"
    has_enqueue_hooks = True

    async def before_enqueue(self, ctx: PluginContext) -> bool:
        return int(await ctx.redis.scard(ctx.keys.timestamps(ctx.payload))) == 0


class Retry(Plugin):
    """Run a failed job again. `limit` = number of retries after the first run (0 = never retry).

    Delay before retry n is `backoff[n-1]` (the last value repeats) or `delay`. A retried
    attempt counts in `stat:failed` but writes no failed entry; the last failure does.
    The attempt counter is `resque-retry:<task>:<args>` (node-resque's key), expiring in seconds.
    """

    name = "Retry"
    defaults: ClassVar[Mapping[str, Any]] = {"limit": 1, "delay": 5.0, "backoff": None}

    def validate(self) -> None:
        limit = self.options["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"Retry: option 'limit' must be an integer >= 0 (retries), got {limit!r}")
        _positive(self.name, "delay", self.options["delay"], allow_zero=True)
        backoff = self.options["backoff"]
        if backoff is not None:
            if not isinstance(backoff, list | tuple) or not backoff:
                raise ValueError(f"Retry: option 'backoff' must be a non-empty list of seconds, got {backoff!r}")
            for b in backoff:
                _positive(self.name, "backoff", b, allow_zero=True)

    def delay_for(self, retry: int) -> float:
        backoff = self.options["backoff"]
        if backoff:
            return float(backoff[min(retry, len(backoff)) - 1])
        return float(self.options["delay"])

    async def before_perform(self, ctx: PluginContext) -> bool:
        done = await ctx.redis.get(ctx.keys.retry_counter(ctx.task, ctx.args_key))
        ctx.state["retry"] = int(done or 0)  # retries already made: the task sees attempt = this + 1
        return True

    async def after_perform(self, ctx: PluginContext) -> None:
        key = ctx.keys.retry_counter(ctx.task, ctx.args_key)
        if ctx.error is None:
            await ctx.redis.delete(key, ctx.keys.retry_failure(ctx.task, ctx.args_key))
            return
        limit = int(self.options["limit"])
        if limit == 0:
            return
        retry = int(await ctx.redis.incr(key))
        if retry > limit:
            await ctx.redis.delete(key)
            return
        delay = self.delay_for(retry)
        ttl = int(sum(self.delay_for(i) for i in range(1, limit + 1)) + 3600)
        await ctx.redis.expire(key, ttl)
        await ctx.redis.set(ctx.keys.retry_failure(ctx.task, ctx.args_key),
                            json.dumps({"error": str(ctx.error), "retry": retry}), ex=ttl)
        ctx.retry_in = delay
        ctx.state["retry"] = retry


class Noop(Plugin):
    """Log a task's error and count the job as a success (no failed entry)."""

    name = "Noop"

    async def after_perform(self, ctx: PluginContext) -> None:
        if ctx.error is not None:
            log.warning("Noop plugin swallowed error in %s: %r", ctx.task, ctx.error)
            ctx.error = None


BUILTIN: dict[str, type[Plugin]] = {p.name: p for p in (JobLock, QueueLock, DelayQueueLock, Retry, Noop)}


def resolve_plugins(t: Task) -> list[Plugin]:
    """Instances for a task's `plugins` list (names, classes or instances) with its options."""
    out: list[Plugin] = []
    for p in t.plugins:
        if isinstance(p, Plugin):
            out.append(p)
            continue
        if isinstance(p, str):
            cls = BUILTIN.get(p)
            if cls is None:
                raise ValueError(f"unknown plugin {p!r}; built in: {sorted(BUILTIN)}")
        elif isinstance(p, type) and issubclass(p, Plugin):
            cls = p
        else:
            raise TypeError(f"plugin must be a name, a Plugin class or instance, got {p!r}")
        opts = t.plugin_options.get(cls.name, {})
        if not isinstance(opts, Mapping):
            raise ValueError(f"plugin_options[{cls.name!r}] must be a mapping")
        out.append(cls(**dict(opts)))
    for name in t.plugin_options:
        if name not in {pl.name for pl in out}:
            raise ValueError(f"plugin_options names {name!r}, which is not in plugins")
    return out
