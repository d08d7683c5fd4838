"""Corral's exceptions. One root, two levels, each error carries its subject.

    CorralError
    ├── ConfigError(message)            bad configuration value or unknown key
    ├── RedisUnavailable(url)           Redis cannot be reached
    ├── LeaseLost                       the leader's lease ended; leader work stopped
    ├── StaleLeader(epoch)              never raised; kept for importers (a refused fenced write raises LeaseLost)
    ├── JobDecodeError(raw, reason)     a queue entry is not a resque job
    ├── TaskNotFound(name)              no task registered under this name
    ├── DuplicateTask(name, files)      two task files define the same name
    ├── TaskDefinitionError(file, field, message)
    └── EnqueueError(message)           bad params or options given to enqueue

`Retry(delay)` is not an error: a task raises it to ask to run again later.
"""

from __future__ import annotations


class CorralError(Exception):
    """Root of every error Corral raises on purpose."""


class ConfigError(CorralError):
    """A configuration value is wrong; the message names the key and the value."""


class RedisUnavailable(CorralError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach Redis at {url}: {reason}")
        self.url = url
        self.reason = reason


class LeaseLost(CorralError):
    """The leader could not renew before its deadline."""


class StaleLeader(CorralError):
    """Never raised: a fenced write refused as STALE raises `LeaseLost` (cluster/leader.py). Kept
    because `cluster` exports it and code may name it in an `except`."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"leader write refused: term {epoch} no longer holds the lock")
        self.epoch = epoch


class JobDecodeError(CorralError):
    def __init__(self, raw: str, reason: str) -> None:
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        super().__init__(f"not a resque job ({reason}): {shown!r}")
        self.raw = raw
        self.reason = reason


class TaskNotFound(CorralError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no task named {name!r} is registered on this node")
        self.name = name


class DuplicateTask(CorralError):
    def __init__(self, name: str, files: list[str]) -> None:
        super().__init__(f"task {name!r} is defined more than once: {', '.join(files)}")
        self.name = name
        self.files = files


class TaskDefinitionError(CorralError):
    def __init__(self, file: str, field: str, message: str, *, line: int | None = None) -> None:
        super().__init__(f"{file}{'' if line is None else f':{line}'}: task field {field!r}: {message}")
        self.file = file
        self.field = field
        self.line = line


class EnqueueError(CorralError):
    """Bad params or options given to an enqueue call."""


class Retry(Exception):
    """Raised by a task to run again after `delay` seconds; counted as a retry, not a failure."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(f"retry in {delay}s")
        self.delay = delay
