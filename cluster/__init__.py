"""Corral's cluster library: wire format, keys, Lua scripts, client, tasks, plugins, election
and the leader duties. Usable without running a node:

    from cluster import Client
    async with await Client.connect("redis://127.0.0.1:6379/0") as client:
        await client.enqueue("sendWelcomeEmail", {"to": "evan@example.com"})

From sync code (Flask, Django, scripts), `SyncClient` enqueues with blocking sockets:

    from cluster import SyncClient
    with SyncClient.connect("redis://127.0.0.1:6379/0") as client:
        client.enqueue("sendWelcomeEmail", {"to": "evan@example.com"})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .catalogue import UnknownTask
from .election.base import ElectionConfig
from .enqueuer import Enqueuer
from .errors import (
    ConfigError,
    CorralError,
    DuplicateTask,
    EnqueueError,
    JobDecodeError,
    LeaseLost,
    RedisUnavailable,
    Retry,
    StaleLeader,
    TaskDefinitionError,
    TaskNotFound,
)
from .keys import Keys
from .plugins import DelayQueueLock, JobLock, Noop, Plugin, PluginContext, QueueLock, RetryPlugin
from .redis_settings import RedisSettings
from .task import JobContext, Registry, Task, task

if TYPE_CHECKING:
    from .client import Client
    from .sync_client import SyncClient


def __getattr__(name: str) -> Any:
    """The clients load on first use (PEP 562): `import cluster.keys` must not load them, and with
    them redis-py, into the leader process (node/leader/boot.py), which speaks RESP itself."""
    if name == "Client":
        from .client import Client

        globals()["Client"] = Client
        return Client
    if name == "SyncClient":
        from .sync_client import SyncClient

        globals()["SyncClient"] = SyncClient
        return SyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Client", "ConfigError", "CorralError", "DelayQueueLock", "DuplicateTask", "ElectionConfig", "EnqueueError",
    "Enqueuer",
    "JobContext", "JobDecodeError", "JobLock", "Keys", "LeaseLost", "Noop", "Plugin", "PluginContext", "QueueLock",
    "RedisSettings", "RedisUnavailable", "Registry", "Retry", "RetryPlugin", "StaleLeader", "SyncClient", "Task",
    "TaskDefinitionError", "TaskNotFound", "UnknownTask", "task",
]
