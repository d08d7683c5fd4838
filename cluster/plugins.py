"""Plugins with resque / node-resque semantics: named async hooks with no-op defaults.

Hooks run in list order; a before-hook returning False stops the chain and the job
(enqueue: not queued, `enqueue` returns False; perform: dropped without stats or failed entry).
Enqueue hooks also run when the leader promotes a delayed job. Options come from
`plugin_options["<PluginName>"]`, in seconds (node-resque uses ms), validated at load.

The built-in plugins write node-resque's keys, values and counters (node-resque 9's
plugins/*.ts), so a job that node-resque workers and Corral workers both handle obeys one lock
and one retry limit. Deliberate differences (docs/MIXED.md): JobLock's value carries the holder
(`<expiry>:<node>:<execution>`, node-resque reads no JobLock value) so recovery deletes only a
dead node's locks, and JobLock is released by compare-and-delete.

    Task(name="report", run=report, plugins=["JobLock", "Retry"],
         plugin_options={"Retry": {"limit": 3, "backoff": [1, 5, 30]}})
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .clock import SYSTEM_CLOCK, Clock
from .enqueuer import Enqueuer
from .keys import Keys
from .wire import js_dumps

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.plugins")


@dataclass
class PluginContext:
    """What a hook sees. After-perform hooks may clear `error` (swallow) or set `retry_in`; a
    before-perform hook that refuses the job may set `requeue_in` (the worker queues the same job
    again after that many seconds, node/perform.py)."""

    redis: Redis
    keys: Keys
    scripts: Any
    task: str
    queue: str
    args: list[Any]
    payload: str
    client: Enqueuer | None = None  # the Client at run time, for hooks that queue other jobs
    error: BaseException | None = None
    retry_in: float | None = None
    requeue_in: float | None = None  # set by a before-perform hook that refuses: the worker queues the job again
    rerun: bool = False  # the task raised Retry: its run ended neither in success nor in failure
    state: dict[str, Any] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK
    node_id: str = ""  # the worker's node and execution (JobLock's value names them); "" outside a worker
    execution_id: str = ""

    @property
    def args_key(self) -> str:
        """The args part of lock keys: the args JSON, as node-resque writes it."""
        return js_dumps(self.args)

    @property
    def retry_args_key(self) -> str:
        """node-resque Retry's `argsKey()`: each arg JSON if an object (or null), else as JS
        prints it, joined by "-"."""
        parts = []
        for a in self.args:
            parts.append(a if isinstance(a, str) else js_dumps(a, strict=False))
        return "-".join(parts)


def _node_resque_retry_key(key: str) -> str:
    # node-resque builds retry keys with `.replace(/\s/, "")`: the first whitespace goes
    return re.sub(r"\s", "", key, count=1)


def _leading_int(value: Any) -> int:
    """JavaScript's `parseInt` of a lock value (what node-resque's QueueLock reads)."""
    m = re.match(r"\s*([+-]?\d+)", str(value or ""))
    return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class EnqueueGuard:
    """An enqueue hook's effect in a form the script that moves the job checks and applies in the
    same atomic step (cluster/scripts/guards.lua): `lock` = refused while `key` holds an
    unexpired expiry second, else SET `value` EX `ttl`; `absent` = refused while `key` exists.
    A hook written as a guard cannot leave a lock behind for a move that never ran, nor refuse
    its own retried move (issue 20.1)."""

    kind: str
    key: str
    value: str = ""
    ttl: int = 0


def guard_script_args(guards: list[EnqueueGuard]) -> tuple[list[str], list[Any]]:
    """(extra KEYS, extra ARGV) for a script that includes guards.lua."""
    argv: list[Any] = []
    for g in guards:
        argv += [g.kind, g.value, g.ttl]
    return [g.key for g in guards], [*argv, len(guards)]


async def enqueue_checks(plugins: list[Plugin], ctx: PluginContext) -> tuple[bool, list[EnqueueGuard]]:
    """Run the enqueue hooks that cannot be guards; collect the guards of those that can.
    Returns (False, []) if a hook refused the job."""
    guards: list[EnqueueGuard] = []
    for p in plugins:
        guard = p.enqueue_guard(ctx)
        if guard is not None:
            guards.append(guard)
        elif not await p.before_enqueue(ctx):
            return False, []
    return True, guards


def runs_own_enqueue_hook(p: Plugin) -> bool:
    """Whether enqueueing runs this plugin's own `before_enqueue` code (a plugin that is a guard,
    QueueLock or DelayQueueLock, is applied by the enqueue scripts instead)."""
    return p.has_enqueue_hooks and type(p).enqueue_guard is Plugin.enqueue_guard


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

    def enqueue_guard(self, ctx: PluginContext) -> EnqueueGuard | None:
        """The hook as an atomic guard, if it can be one (then `before_enqueue` is not called by
        Corral's enqueue and promotion paths)."""
        return None

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
    """Never run the same task + queue + args twice at once (node-resque's `workerslock:` key,
    SET NX EX `lock_timeout`).

    A blocked copy is re-enqueued after `enqueue_timeout` s (`re_enqueue=True`) or dropped.
    The value is `<expiry>:<node>:<execution>` (node-resque writes the bare expiry and never
    reads it back), so the leader's recovery deletes only locks a dead node holds, inside its
    script; the release is a compare-and-delete, so a run whose lock expired cannot free a
    later holder's lock.
    """

    name = "JobLock"
    defaults = {"lock_timeout": 3600.0, "enqueue_timeout": 1.001, "re_enqueue": True}

    def validate(self) -> None:
        _positive(self.name, "lock_timeout", self.options["lock_timeout"])
        _positive(self.name, "enqueue_timeout", self.options["enqueue_timeout"], allow_zero=True)

    def key(self, ctx: PluginContext) -> str:
        return ctx.keys.job_lock(ctx.task, ctx.queue, ctx.args_key)

    def value(self, ctx: PluginContext) -> str:
        expiry = round(ctx.clock.time()) + int(self.options["lock_timeout"]) + 1  # node-resque's `timeout`
        holder = f"{ctx.node_id}:{ctx.execution_id}" if ctx.node_id else f"client:{id(ctx)}"
        return f"{expiry}:{holder}"

    async def before_perform(self, ctx: PluginContext) -> bool:
        value = self.value(ctx)
        got = await ctx.redis.set(self.key(ctx), value, nx=True, ex=max(1, int(self.options["lock_timeout"])))
        if got:
            ctx.state["JobLock"] = value
            return True
        if self.options["re_enqueue"]:  # the worker queues this copy again, as it does a Retry
            ctx.requeue_in = float(self.options["enqueue_timeout"])
        return False

    async def after_perform(self, ctx: PluginContext) -> None:
        value = ctx.state.get("JobLock")
        if value is not None:
            await ctx.scripts.run("compare_and_delete", [self.key(ctx)], [value])


class QueueLock(Plugin):
    """Never queue the same task + queue + args twice (node-resque's `lock:` key and value: the
    expiry second, SET NX + EXPIRE `lock_timeout`); released when popped. As in node-resque, a
    lock whose stored expiry has passed (a key left without a TTL) is taken over."""

    name = "QueueLock"
    has_enqueue_hooks = True
    defaults = {"lock_timeout": 3600.0}

    def validate(self) -> None:
        _positive(self.name, "lock_timeout", self.options["lock_timeout"])

    def key(self, ctx: PluginContext) -> str:
        return ctx.keys.queue_lock(ctx.task, ctx.queue, ctx.args_key)

    def enqueue_guard(self, ctx: PluginContext) -> EnqueueGuard:
        timeout = max(1, int(self.options["lock_timeout"]))
        return EnqueueGuard("lock", self.key(ctx), str(round(ctx.clock.time()) + timeout + 1), timeout)

    async def before_enqueue(self, ctx: PluginContext) -> bool:
        timeout = max(1, int(self.options["lock_timeout"]))
        now = round(ctx.clock.time())
        value = str(now + timeout + 1)
        key = self.key(ctx)
        if await ctx.redis.set(key, value, nx=True, ex=timeout):
            return True
        if now <= _leading_int(await ctx.redis.get(key)):
            return False
        await ctx.redis.set(key, value, ex=timeout)
        return True

    async def before_perform(self, ctx: PluginContext) -> bool:
        await ctx.redis.delete(self.key(ctx))
        return True


class DelayQueueLock(Plugin):
    """Refuse an immediate enqueue while the same job is already delayed."""

    name = "DelayQueueLock"
    has_enqueue_hooks = True

    def enqueue_guard(self, ctx: PluginContext) -> EnqueueGuard:
        return EnqueueGuard("absent", ctx.keys.timestamps(ctx.payload))

    async def before_enqueue(self, ctx: PluginContext) -> bool:
        return int(await ctx.redis.scard(ctx.keys.timestamps(ctx.payload))) == 0


class RetryPlugin(Plugin):
    """Run a failed job again. `limit` = number of retries after the first run (0 = never retry),
    i.e. node-resque's `retryLimit` (attempts) minus one.

    The counter is node-resque's, key and arithmetic: `resque-retry:<task>:<argsKey>` is set to
    -1 if missing and INCRed at each failure; with `attempts = limit + 1`, the job is retried
    while `attempts - counter - 1 > 0`. So a job that node-resque workers and Corral workers both
    fail runs `attempts` times in all, whoever runs which attempt. Delay before retry n is
    `backoff[n-1]` (the last value repeats) or `delay`. A retried attempt counts in
    `stat:failed` but writes no failed entry; the last failure does. The last error is kept under
    `failure-resque-retry:<task>:<argsKey>` in node-resque's shape.
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

    @staticmethod
    def counter_key(ctx: PluginContext) -> str:
        return _node_resque_retry_key(ctx.keys.retry_counter(ctx.task, ctx.retry_args_key))

    @staticmethod
    def failure_key(ctx: PluginContext) -> str:
        return _node_resque_retry_key(ctx.keys.retry_failure(ctx.task, ctx.retry_args_key))

    async def before_perform(self, ctx: PluginContext) -> bool:
        counter = await ctx.redis.get(self.counter_key(ctx))
        # retries already made: the counter holds failures - 1 (node-resque starts it at -1)
        ctx.state["retry"] = 0 if counter is None else max(0, _leading_int(counter) + 1)
        return True

    async def after_perform(self, ctx: PluginContext) -> None:
        if ctx.rerun:  # a Retry signal is its own re-run, counted by ctx.attempt; not a success to reset on
            return
        key = self.counter_key(ctx)
        if ctx.error is None:
            await ctx.redis.delete(key, self.failure_key(ctx))
            return
        attempts = int(self.options["limit"]) + 1
        ttl = int(sum(self.delay_for(i) for i in range(1, attempts)) + 3600)
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.setnx(key, -1)
            pipe.incr(key)
            pipe.expire(key, ttl)
            _, counter, _ = await pipe.execute()
        remaining = attempts - int(counter) - 1
        failed_at = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(ctx.clock.time()))  # node-resque's spelling
        await ctx.redis.set(self.failure_key(ctx), json.dumps({
            "failed_at": failed_at, "payload": ctx.args, "exception": repr(ctx.error), "error": str(ctx.error),
            "backtrace": [], "worker": ctx.task, "queue": ctx.queue}), ex=ttl)
        if remaining <= 0:
            await ctx.redis.delete(key, self.failure_key(ctx))
            return
        retry = int(counter) + 1
        ctx.retry_in = self.delay_for(retry)
        ctx.state["retry"] = retry


class Noop(Plugin):
    """Log a task's error and count the job as a success (no failed entry)."""

    name = "Noop"

    async def after_perform(self, ctx: PluginContext) -> None:
        if ctx.error is not None:
            log.warning("Noop plugin swallowed error in %s: %r", ctx.task, ctx.error)
            ctx.error = None


BUILTIN: dict[str, type[Plugin]] = {p.name: p for p in (JobLock, QueueLock, DelayQueueLock, RetryPlugin, Noop)}


def resolve_plugins(plugins: Sequence[Any], plugin_options: Mapping[str, Any]) -> list[Plugin]:
    """Instances for a task's `plugins` list (names, classes or instances) with its `plugin_options`."""
    out: list[Plugin] = []
    for p in plugins:
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
        opts = plugin_options.get(cls.name, {})
        if not isinstance(opts, Mapping):
            raise ValueError(f"plugin_options[{cls.name!r}] must be a mapping")
        out.append(cls(**dict(opts)))
    for name in plugin_options:
        if name not in {pl.name for pl in out}:
            raise ValueError(f"plugin_options names {name!r}, which is not in plugins")
    return out
