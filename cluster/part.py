"""`ClusterPart`: what each long-lived part of the cluster's machinery (membership, recovery, the
foreign-worker cleaner) holds: its Redis client, the key names, the scripts registered on that
client, the clock its decisions use and the observer it reports to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .clock import Clock
from .keys import Keys
from .observe import Observer
from .scripts import Scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis


class ClusterPart:
    def __init__(self, redis: Redis, keys: Keys, clock: Clock, observer: Observer) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)
        self.clock = clock
        self.observer = observer
