"""Leader election backends. `RedisElector` (default) and `ZooKeeperElector` (kazoo)."""

from .base import ElectionConfig, ElectionState, Term, parse_token

__all__ = ["ElectionConfig", "ElectionState", "Term", "parse_token"]
