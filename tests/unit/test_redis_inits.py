"""node/redis_inits.py: `corral` defers redis-py's package inits (`redis`, `redis.asyncio`) until a
name they define is looked up; what code then sees is what a plain `import redis` gives. Each case
runs in a fresh interpreter (the deferral only acts before redis-py is imported)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_node_imports_no_redis_cluster_client_and_defers_the_inits() -> None:
    out = _run("import sys, json\nimport node.cli, node.runtime, node.ui.history, node.ui.metric, uvloop\n"
               "print(json.dumps([sorted(sys.modules), 'Redis' in vars(sys.modules['redis']), "
               "'Redis' in vars(sys.modules['redis.asyncio'])]))")
    modules, redis_init_ran, asyncio_init_ran = json.loads(out)
    assert [m for m in modules if m in ("redis.cluster", "redis.asyncio.cluster", "redis.keyspace_notifications")] == []
    assert not redis_init_ran and not asyncio_init_ran


def _public_names(prelude: str) -> dict[str, list[str]]:
    code = (f"{prelude}\nimport json, types, redis, redis.asyncio\n"
            "print(json.dumps({m.__name__: sorted(k for k, v in vars(m).items() if not k.startswith('__') or k in "
            "('__version__', '__all__')) for m in (redis, redis.asyncio)}))")
    return dict(json.loads(_run(code)))


def test_after_first_use_the_packages_hold_what_a_plain_import_gives() -> None:
    plain = _public_names("")
    deferred = _public_names("import node.redis_inits\nimport redis\nredis.Redis\nimport redis.asyncio\n"
                             "redis.asyncio.Redis")
    assert deferred == plain


def test_names_load_the_init_once_and_are_the_classes_corral_uses() -> None:
    out = _run("import node.redis_inits, sys, importlib.metadata\n"
               "from redis.asyncio.client import Redis as CorralRedis\n"  # what cluster/ imports
               "import redis\n"
               "assert 'redis.cluster' not in sys.modules\n"
               "assert redis.__version__ == importlib.metadata.version('redis')\n"
               "from redis.asyncio import Redis, RedisCluster, Sentinel\n"
               "assert Redis is CorralRedis and redis.asyncio.Redis is CorralRedis\n"
               "from redis import Redis as SyncRedis, exceptions\n"
               "assert SyncRedis is redis.client.Redis and exceptions.ConnectionError is redis.ConnectionError\n"
               "assert 'redis.cluster' in sys.modules and 'RedisCluster' in dir(redis)\n"
               "assert not {'__getattr__', '__dir__'} & (set(vars(redis)) | set(vars(redis.asyncio)))\n"
               "try:\n    redis.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
               "else:\n    raise SystemExit('no AttributeError')\n"
               "ns = {}\nexec('from redis import *', ns)\nassert ns['Redis'] is SyncRedis\n"
               "print('ok')")
    assert out == "ok"


def test_dir_and_threads_see_the_whole_package() -> None:
    out = _run("import node.redis_inits, threading, redis\n"
               "assert 'StrictRedis' in dir(redis)\n"
               "import redis.asyncio as aio\n"
               "seen, go = [], threading.Barrier(8)\n"
               "def look():\n    go.wait()\n    seen.append(aio.StrictRedis)\n"
               "ts = [threading.Thread(target=look) for _ in range(8)]\n"
               "[t.start() for t in ts]; [t.join() for t in ts]\n"
               "assert len(seen) == 8 and len(set(seen)) == 1\n"
               "print('ok')")
    assert out == "ok"


def test_no_op_once_redis_is_imported() -> None:
    out = _run("import redis, sys\nimport node.redis_inits\nprint('Redis' in vars(sys.modules['redis']))")
    assert out == "True"
