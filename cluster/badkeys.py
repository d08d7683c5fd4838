"""Keys of the wrong type: skipped where they are met, and reported once each.

Anyone who can write to the namespace can leave a string at `queue:mail`, a hash at `failed` or
a set at `delayed:<ts>`. Corral skips such a key (the Lua scripts read it with `redis.pcall`, or
check its type before their first write) and keeps serving everything else; this reporter turns
each one into a single warning naming the key and its type, and a count per kind of key
(`corral_bad_keys_total{kind}`), however often the key is met afterwards.

    bad = BadKeys(keys, observer)
    bad.report("resque:queue:aaa", "string", where="worker")   # logs and counts the first time only
"""

from __future__ import annotations

import logging
import weakref

from .keys import Keys
from .observe import Observer

log = logging.getLogger("corral.badkeys")

REMEMBERED = 10_000  # distinct bad keys a node remembers having reported

# One memory per observer (= per node): the worker slots, the scheduler, the periodic enqueuer and
# the recovery of one node meet the same bad `failed` key, and it is still one report.
_SEEN: weakref.WeakKeyDictionary[Observer, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


class BadKeys:
    def __init__(self, keys: Keys, observer: Observer) -> None:
        self.keys = keys
        self.observer = observer
        self.seen = _SEEN.setdefault(observer, set())

    def report(self, key: str, type_: str, *, where: str, expected: str = "") -> bool:
        """Report `key` (holding a `type_`) the first time it is met; True if this was the first."""
        if (key, type_) in self.seen:
            return False
        if len(self.seen) >= REMEMBERED:
            self.seen.clear()
        self.seen.add((key, type_))
        kind = self.keys.kind(key)
        self.observer.bad_key(kind)
        log.warning("bad key skipped: %s holds a %s%s; Corral leaves it alone and serves everything else",
                    key, type_, f" (expected a {expected})" if expected else "",
                    extra={"event": "bad_key", "key": key, "type": type_, "kind": kind, "where": where})
        return True

    def report_lines(self, text: str | None, *, where: str) -> None:
        """Report the `key<TAB>type` lines a Lua script returned (None or "" = none)."""
        for line in (text or "").splitlines():
            key, _, type_ = line.partition("\t")
            if key:
                self.report(key, type_ or "unknown", where=where)
