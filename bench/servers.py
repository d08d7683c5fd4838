"""The one Redis launcher of the benchmarks (bench/run.py, bench/peers/run.py, bench/scale/run.py):
tests/support/servers.py's RedisServer, i.e. a generated redis.conf in a temp dir, loopback, no
RDB or AOF, a free port, started and waited for until PING answers, stopped by its own pid.

    server = start_redis(tmp / "redis")   # .url, .port, .pid; server.kill() at the end
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: a harness's measured snapshot stays first for `cluster`/`node`

from tests.support.servers import RedisServer  # noqa: E402

REDIS_SERVER = "/usr/bin/redis-server"  # Debian's redis-server package

__all__ = ["REDIS_SERVER", "RedisServer", "start_redis"]


def start_redis(workdir: Path) -> RedisServer:
    return RedisServer(workdir, binary=REDIS_SERVER).start()
