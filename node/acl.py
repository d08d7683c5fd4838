"""The Redis ACL a node (and the `corral` client commands) needs, and a check of it at boot.

Every command Corral sends, directly or from its Lua scripts, is in `PROBES`, each with harmless
arguments on a scratch key under `<namespace>:corral:acl-check:`. `check_permissions` runs them
all in one pipeline when a node starts: a permission the Redis user lacks stops the boot with one
line naming the command (Redis' own NOPERM message), instead of a traceback later or a worker
retrying forever. `acl_rule` renders the minimal ACL (docs/REDIS_ACL.md):

    ACL SETUSER corral on >PASSWORD resetkeys ~resque:* resetchannels &resque:* -@all +time +evalsha ...
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import Redis

from cluster.errors import ConfigError
from cluster.keys import Keys
from cluster.redis_errors import NoPermissionError

# command -> arguments after the command name; "{k}" is a scratch key, "{c}" a namespace channel
PROBES: dict[str, tuple[str, ...]] = {
    # connection and server
    "ping": (), "time": (), "wait": ("0", "0"), "type": ("{k}:s",),
    # the leader's acquire script reads the server's run_id and uptime: a new Redis run (restart,
    # restore, failover) gets a lock-delay and a raised epoch (docs/DESIGN.md, election)
    "info": ("server",),
    # scripts: every job fetch, ack, enqueue and leader write is one
    "script|load": ("return 1",), "script|exists": ("e0e1f9fabfc9d4800c877a703b823ac0578ff8db",),
    "evalsha": ("e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"),
    # strings
    "set": ("{k}:s", "1"), "setnx": ("{k}:s", "1"),
    "get": ("{k}:s",), "mget": ("{k}:s",), "incr": ("{k}:s",), "incrby": ("{k}:s", "1"),
    "mset": ("{k}:s", "1"),  # fetch.lua: a worker's job record and its start time in one call
    "exists": ("{k}:s",),
    "pttl": ("{k}:s",), "pexpire": ("{k}:s", "60000"), "expire": ("{k}:s", "60"),
    # lists: queues, failed, in-flight
    "rpush": ("{k}:l", "x"), "lpush": ("{k}:l", "x"), "llen": ("{k}:l",), "lrange": ("{k}:l", "0", "0"),
    "lindex": ("{k}:l", "0"), "lset": ("{k}:l", "0", "x"), "lpos": ("{k}:l", "x"), "lrem": ("{k}:l", "0", "y"),
    "ltrim": ("{k}:l", "0", "-1"), "lpop": ("{k}:l",),
    # hashes: worker records, periodic records
    "hset": ("{k}:h", "f", "1"), "hget": ("{k}:h", "f"), "hmget": ("{k}:h", "f"), "hkeys": ("{k}:h",),
    "hgetall": ("{k}:h",), "hvals": ("{k}:h",),
    "hlen": ("{k}:h",), "hincrby": ("{k}:h", "f", "1"), "hdel": ("{k}:h", "g"),
    # sets: queues, workers
    "sadd": ("{k}:t", "m"), "smembers": ("{k}:t",), "sismember": ("{k}:t", "m"), "scard": ("{k}:t",), "srem": ("{k}:t", "z"),
    # sorted sets: delayed schedule, members
    "zremrangebyscore": ("{k}:z", "-inf", "(0"),
    "zadd": ("{k}:z", "1", "m"), "zscore": ("{k}:z", "m"), "zrange": ("{k}:z", "0", "0"),
    "zrangebyscore": ("{k}:z", "-inf", "+inf", "LIMIT", "0", "1"), "zrem": ("{k}:z", "y"),
    "zpopmin": ("{k}:z", "0"),
    # the audit stream (--audit)
    "xadd": ("{k}:x", "MAXLEN", "1", "*", "f", "v"),
    # wake-ups and inspection
    "publish": ("{c}", "acl-check"), "scan": ("0", "MATCH", "{k}*", "COUNT", "1"),
    "del": ("{k}:s", "{k}:l", "{k}:h", "{k}:t", "{k}:z", "{k}:x"),
}
# consistent reads of several keys (Client.details, stats, the ZooKeeper follower view): probed as
# one MULTI/EXEC of their own
TRANSACTION = ("multi", "exec")
# not probed (a pipeline cannot hold it): the wake-up channels are subscribed to
UNPROBED = ("subscribe",)
COMMANDS = (*PROBES, *TRANSACTION, *UNPROBED)


def acl_rule(namespace: str = "resque") -> str:
    """The minimal ACL rules for a Corral user confined to `namespace` (append `on >PASSWORD`)."""
    return f"resetkeys ~{namespace}:* resetchannels &{namespace}:* -@all " + " ".join(f"+{c}" for c in COMMANDS)


async def check_permissions(redis: Redis, keys: Keys, tag: str) -> None:
    """Run every probe once; raise ConfigError naming each command or key the user may not use.
    Other errors (wrong types on the scratch keys, no replicas for WAIT) do not matter here."""
    scratch = keys.corral(f"acl-check:{tag}")
    channel = keys.corral("acl-check")
    async with redis.pipeline(transaction=False) as pipe:
        for cmd, args in PROBES.items():
            pipe.execute_command(*cmd.upper().split("|"), *(a.format(k=scratch, c=channel) for a in args))
        results: list[Any] = await pipe.execute(raise_on_error=False)
    denied = [f"{cmd} (NOPERM {r})" for cmd, r in zip(PROBES, results, strict=True)
              if isinstance(r, NoPermissionError)]
    try:
        async with redis.pipeline(transaction=True) as tx:
            tx.ping()
            await tx.execute()
    except NoPermissionError as e:
        denied.append(f"multi/exec (NOPERM {e})")
    if denied:
        raise ConfigError(f"the Redis user may not run {len(denied)} command(s) Corral needs: {'; '.join(denied)}; "
                          "the ACL a node needs is in docs/REDIS_ACL.md")
