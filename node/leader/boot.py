"""The leader process's entry point: ``python -m node.leader.boot`` (started by
`node/leader/supervisor.py`). It reads the start record first, because what the process may leave
out of its imports depends on it (the node decides, `supervisor.LeaderProcess._imports`): with
plain-TCP Redis and a Redis election (`"resp": true`) the leader speaks RESP itself
(`cluster/resp.py`) and redis-py is not loaded; unless TLS is used or a task's enqueue plugin runs
code of its own while the leader promotes (`"ssl": true`), the ssl module is left out too and the
process runs on asyncio's own loop (uvloop needs the ssl module). `node/leader/lean.py` does both.
Then it runs `node/leader/child.py`.
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
    record = json.loads(line)
    resp, ssl = bool(record.get("resp")), bool(record.get("ssl", True))
    from . import lean

    if resp:
        lean.redis_exceptions_alone()
    if not ssl:
        lean.asyncio_without_ssl()
    from .child import run

    sys.exit(run(line, uvloop=ssl))


if __name__ == "__main__":
    main()
