"""Lua scripts, one per multi-key change; each file opens with its KEYS / ARGV / returns header.

`Scripts(redis)` registers them all on a client (redis-py's, or `cluster/resp.py`'s in the leader
process); calls go out as EVALSHA and are reloaded transparently after a Redis restart (the
client's script object handles NOSCRIPT).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import sha1_hex
from ..redis_errors import NoScriptError

if TYPE_CHECKING:
    from redis.asyncio import Redis


NAMES = (
    "enqueue", "enqueue_at", "fetch", "pushback", "heartbeat", "register", "deregister",
    "acquire", "renew", "release", "install_term", "promote", "unstage", "periodic_claim", "recover",
    "compare_and_delete", "delete_delayed", "foreign_clean", "qtimes_head", "enqueue_guarded", "queue_stats",
)


@cache  # one copy of each text: a node registers the scripts on several objects (pool, client, ...)
def source(name: str) -> str:
    """A script's text; a line `--#include NAME` is replaced by NAME.lua (shared Lua functions)."""
    text = Path(__file__).with_name(f"{name}.lua").read_text()
    return re.sub(r"^--#include (\w+)$", lambda m: source(m.group(1)), text, flags=re.M)


def script_sha(text: str) -> str:
    """The SHA-1 that EVALSHA names a script by."""
    return sha1_hex(text.encode())


class Scripts:
    """Every script registered on one client. ``await scripts.run("renew", [lock], [token, 5000])``."""

    def __init__(self, redis: Redis) -> None:
        self._scripts = {name: redis.register_script(source(name)) for name in NAMES}

    def sha(self, name: str) -> str:
        return str(self._scripts[name].sha)

    async def run(self, name: str, keys: list[str], args: list[Any], client: Redis | None = None) -> Any:
        return await run_script(self._scripts[name], keys, args, client)


async def run_script(script: Any, keys: list[Any], args: list[Any], client: Any = None) -> Any:
    """Run a script object from `register_script`: ``await run_script(script, keys, args)``.

    redis-py's (`AsyncScript`) is run here as its `__call__` does for a client or a pipeline,
    because that `__call__` also imports redis-py's cluster client on every call (≈ 1.6 MB that
    a node never uses otherwise): EVALSHA, the script loaded again on NOSCRIPT (Redis restarted or
    flushed its scripts: it did not run); a pipeline loads its scripts itself when it runs.
    Another (cluster/resp.py's `RespScript`, in the leader process) is called as it is."""
    if getattr(script, "registered_client", None) is None:  # not redis-py's
        return await script(keys=keys, args=args, client=client)
    from redis.asyncio.client import Pipeline  # loaded with the client that registered the script

    target = client if client is not None else script.registered_client
    if isinstance(target, Pipeline):
        target.scripts.add(script)
    try:
        return await target.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        script.sha = await target.script_load(script.script)
        return await target.evalsha(script.sha, len(keys), *keys, *args)
