"""Leader election: one elector loop (`elector.LockElector`) over a `LeaderLock`, the Redis lock
(`redis.RedisElector`, default) or a ZooKeeper lock (`zookeeper.ZooKeeperElector`, kazoo)."""

from .base import Contender, ElectionConfig, ElectionState, LeaderLock, Term, parse_token

__all__ = ["Contender", "ElectionConfig", "ElectionState", "LeaderLock", "Term", "parse_token"]
