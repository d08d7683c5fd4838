"""The leader process's entry point: ``python -m node.leader.boot`` (started by
`node/leader/supervisor.py`). It reads the start record first, because what the process may leave
out of its imports depends on it: with plain-TCP Redis and a Redis election (`"resp": true`, decided
by the node, `link.resp_serves`) the leader speaks RESP itself (`cluster/resp.py`), so neither
redis-py nor the ssl module is loaded (`node/leader/lean.py`), and it runs on asyncio's own loop
(uvloop needs the ssl module). Then it runs `node/leader/child.py`.
"""

from __future__ import annotations

import json
import os
import sys


def read_start_record() -> bytes:
    """The first line of stdin, read byte by byte so nothing after it is taken from the pipe the
    child's stream reader reads next (the node's pings)."""
    with os.fdopen(0, "rb", buffering=0, closefd=False) as stdin:
        return stdin.readline()


def main() -> None:
    line = read_start_record()
    if not line:
        sys.exit(0)
    resp = bool(json.loads(line).get("resp"))
    if resp:
        from .lean import asyncio_without_ssl, redis_exceptions_alone

        redis_exceptions_alone()
        asyncio_without_ssl()
    from .child import run

    sys.exit(run(line, uvloop=not resp))


if __name__ == "__main__":
    main()
