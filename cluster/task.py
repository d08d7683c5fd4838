"""Task definitions: `Task`, the `@task` decorator and the registry a node fills from task files.

    @task(name="sendWelcomeEmail", queue="default", description="Welcome a new user")
    async def send_welcome_email(params, ctx): ...

    say_hello = Task(name="sayHello", frequency=1.0, run=hello)
    nightly = Task(name="nightly", cron="0 3 * * *", timezone="UTC", run=report)

Nothing registers itself at import: the loader collects every `Task` a file defines.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .enqueuer import Enqueuer
from .errors import DuplicateTask, EnqueueError, TaskDefinitionError, TaskNotFound
from .plugins import Plugin, resolve_plugins
from .wire import Job, check_queue_name

RunFn = Callable[..., Any]
MISSED_POLICIES = ("catch_up", "skip")
OVERLAP_POLICIES = ("allow", "skip")


@dataclass
class JobContext:
    """What a running task sees besides its params.

    `args` is the raw resque args list (jobs written by other clients may not follow
    actionhero's `[params]`); `attempt` counts every run of the job (1 = first run): each re-run
    after `raise Retry(delay)` or a Retry-plugin retry adds one (the node carries it in the re-run
    job's payload as `corral_attempt`).
    """

    job: Job
    queue: str
    worker: str
    node_id: str
    execution_id: str
    client: Enqueuer | None  # the node's Client: enqueue follow-up jobs
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    attempt: int = 1

    @property
    def args(self) -> list[Any]:
        return self.job.args

    @property
    def task(self) -> str:
        return self.job.task


def _bad(field_name: str, message: str) -> TaskDefinitionError:
    return TaskDefinitionError("<definition>", field_name, message)


# A periodic task fires at most 10 times a second: a smaller frequency is a unit mistake (actionhero
# counts milliseconds) that would flood the queues (0.0001 s made 11,081 jobs in 4 s).
MIN_FREQUENCY = 0.1
MIN_TIMEOUT = 0.001


def _check_seconds(field_name: str, value: Any, *, minimum: float, zero_ok: bool = False) -> None:
    """A finite number of seconds >= `minimum` (0 too when `zero_ok`: "not periodic")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field_name, f"must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise _bad(field_name, f"must be a finite number of seconds, got {value!r}")
    if value == 0 and zero_ok:
        return
    if value < minimum:
        zero = " (or 0 = not periodic)" if zero_ok else ""
        raise _bad(field_name, f"must be >= {minimum} seconds{zero}, got {value!r}")


@dataclass(frozen=True)
class Task:
    """One task. `frequency` (seconds, finite, >= 0.1; 0 = not periodic) or `cron` makes it periodic.

    Periodic policies: `missed` = "catch_up" (default: occurrences missed while no leader ran are
    enqueued once each when at most `catch_up_window` seconds late) or "skip" (only the newest);
    `overlap` = "allow" (default) or "skip" (no new occurrence while one is still queued or running).
    `cpu_bound=True` runs a sync function in the node's process pool (the function must be a
    top-level function of its task file).
    """

    name: str
    run: RunFn
    description: str = ""
    queue: str = "default"
    frequency: float | None = None
    cron: str | None = None
    timezone: str = "UTC"
    plugins: Sequence[Any] = ()
    plugin_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    timeout: float | None = None
    cpu_bound: bool = False
    missed: str = "catch_up"
    catch_up_window: float = 60.0
    overlap: str = "allow"
    source_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise _bad("name", f"must be a non-empty string without whitespace, got {self.name!r}")
        if not callable(self.run):
            raise _bad("run", f"must be a function, got {type(self.run).__name__}")
        try:
            check_queue_name(self.queue)
        except (ValueError, EnqueueError) as e:
            raise _bad("queue", str(e)) from None
        if self.frequency is not None:
            _check_seconds("frequency", self.frequency, minimum=MIN_FREQUENCY, zero_ok=True)
        if self.cron is not None:
            if self.frequency:
                raise _bad("cron", "set either frequency or cron, not both")
            from croniter import croniter

            if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
                raise _bad("cron", f"not a valid cron expression: {self.cron!r}")
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(self.timezone)
            except Exception:
                raise _bad("timezone", f"unknown time zone {self.timezone!r}") from None
        if self.timeout is not None:
            _check_seconds("timeout", self.timeout, minimum=MIN_TIMEOUT)
        _check_seconds("catch_up_window", self.catch_up_window, minimum=0.0)
        if self.missed not in MISSED_POLICIES:
            raise _bad("missed", f"must be one of {MISSED_POLICIES}, got {self.missed!r}")
        if self.overlap not in OVERLAP_POLICIES:
            raise _bad("overlap", f"must be one of {OVERLAP_POLICIES}, got {self.overlap!r}")
        if self.cpu_bound and inspect.iscoroutinefunction(self.run):
            raise _bad("cpu_bound", "an async function runs on the loop; cpu_bound needs a sync function")
        if not isinstance(self.plugin_options, Mapping):
            raise _bad("plugin_options", "must be a mapping of plugin name to options")
        try:
            resolve_plugins(self.plugins, self.plugin_options)
        except (TypeError, ValueError) as e:
            raise _bad("plugins", str(e)) from None

    @property
    def periodic(self) -> bool:
        return bool(self.frequency) or self.cron is not None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.run)

    def plugin_instances(self) -> list[Plugin]:
        """The task's plugins, built once (options were validated at definition)."""
        cached: list[Plugin] | None = self.__dict__.get("_plugins")
        if cached is None:
            cached = resolve_plugins(self.plugins, self.plugin_options)
            object.__setattr__(self, "_plugins", cached)
        return cached

    def has_enqueue_hooks(self) -> bool:
        return any(p.has_enqueue_hooks for p in self.plugin_instances())


def task(
    name: str | None = None, *, queue: str = "default", description: str = "", **options: Any
) -> Callable[[RunFn], Task]:
    """Decorator: turn a function `(params, ctx)` into a `Task`. ``@task(name="x", queue="mail")``."""

    def wrap(fn: RunFn) -> Task:
        return Task(name=name or fn.__name__, run=fn, queue=queue,
                    description=description or (inspect.getdoc(fn) or "").split("\n")[0], **options)

    return wrap


class Registry:
    """Tasks by name. ``registry.add(t)``; ``registry.get("sayHello")``."""

    def __init__(self, tasks: Sequence[Task] = ()) -> None:
        self._tasks: dict[str, Task] = {}
        for t in tasks:
            self.add(t)

    def add(self, t: Task) -> None:
        old = self._tasks.get(t.name)
        if old is not None and old is not t:
            raise DuplicateTask(t.name, [old.source_file or "<code>", t.source_file or "<code>"])
        self._tasks[t.name] = t

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise TaskNotFound(name) from None

    def find(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def periodic(self) -> list[Task]:
        return [t for t in self._tasks.values() if t.periodic]

