"""What the node and its leader process (`node/leader/child.py`) agree on over their pipe: the
observer calls the child forwards and its exit status for "the node's loop stalled". A module of
its own so the node's side (`node/leader/supervisor.py`) does not import the leader's code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster.rawconn import supported

if TYPE_CHECKING:
    from cluster.redis_settings import RedisSettings
    from cluster.task import Registry

    from ..config import NodeConfig

# Observer methods the leader side calls; the node applies them to its metrics.
FORWARDED = ("leader_changed", "stale_write_rejected", "promoted", "periodic_enqueued",
             "jobs_recovered", "redis_error", "bad_key")
EXIT_STALLED = 3  # the node's loop stopped answering: start a new candidate when it runs again


def resp_serves(cfg: NodeConfig, settings: RedisSettings) -> bool:
    """Whether the leader process can run on `cluster/resp.py`'s clients alone, without redis-py or
    the ssl module (node/leader/boot.py): plain-TCP Redis and a Redis election. TLS, unix sockets,
    Sentinel and ZooKeeper elections keep redis-py."""
    return cfg.election != "zookeeper" and supported(settings)


def hooks_may_need_tls(registry: Registry) -> bool:
    """Whether a task has an enqueue plugin whose own code runs while the leader promotes its jobs:
    user code may open TLS connections through asyncio, so the leader process then imports asyncio
    with the ssl module (node/leader/boot.py hides it otherwise, ≈ 4.5 MB)."""
    from cluster.plugins import runs_own_enqueue_hook

    return any(runs_own_enqueue_hook(p) for t in registry for p in t.plugin_instances())
