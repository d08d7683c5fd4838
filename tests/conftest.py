"""Fixtures for every suite: real servers on free loopback ports, and `corral node` processes.

House rule 11 (docs/ARCHITECTURE.md): tests run against real servers through factory fixtures. A missing server
binary skips the test on a developer's machine and fails it when `CI` is set.

Session-scoped (one per run):
- `redis_server`: `RedisServer` (`.url`, `.port`, `.pid`, `.stop()`, `.kill()`, `.restart()`,
  `.pause()`, `.resume()`, `.client()`); `save ""`, `appendonly no`.
- `zookeeper_server`: `ZooKeeperServer` (`.hosts` = "127.0.0.1:PORT", `.port`, `.pid`, ...).
- `node_resque_dir`: `Path` of tests/interop with node-resque installed.

Per test:
- `redis_url`: the session server's URL after FLUSHALL (restarted first if a test stopped it).
- `redis_factory(**options) -> RedisServer`: an own, started server (redis.conf options).
- `zookeeper_hosts`: the session ZooKeeper's "127.0.0.1:PORT".
- `zookeeper_factory(**zoo_cfg_options) -> ZooKeeperServer`: an own ZooKeeper.
- `prometheus_factory(scrape_targets, rule_files=None, **kw) -> PrometheusServer`.
- `node_cluster`: a `NodeCluster` bound to `redis_url`: `.start(n)`, `.add()`, `.wait_leader()`.
- `tcp_proxy(target_port, **kw) -> TcpProxy`: a fault proxy, closed after the test.

    def test_failover(node_cluster):
        nodes = node_cluster.start(3, proxied=True)
        leader = node_cluster.wait_leader(10)
        leader.kill()
        node_cluster.wait_leader(7, exclude=[leader])
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:  # `tests.support` is imported by its full name everywhere
    sys.path.insert(0, _REPO)

from tests.support import REPO_ROOT, missing  # noqa: E402
from tests.support.nodes import NodeCluster  # noqa: E402
from tests.support.proxy import TcpProxy  # noqa: E402
from tests.support.servers import (  # noqa: E402
    ZOOKEEPER_JAR,
    PrometheusServer,
    RedisServer,
    ScrapeTarget,
    ZooKeeperServer,
    find_binary,
    install_sigterm_cleanup,
)


def pytest_configure(config: pytest.Config) -> None:
    # A pytest run ended by SIGTERM still kills the servers and nodes it started.
    install_sigterm_cleanup()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Long fault cells (`@pytest.mark.long`) run only when asked for: CORRAL_LONG=1, or a `-m`
    # expression naming `long` (`make long-faults`); the CI suite's default run leaves them out.
    if os.environ.get("CORRAL_LONG") == "1" or "long" in (config.getoption("markexpr", "") or ""):
        return
    long_items = [item for item in items if item.get_closest_marker("long") is not None]
    if long_items:
        config.hook.pytest_deselected(items=long_items)
        items[:] = [item for item in items if item.get_closest_marker("long") is None]

# -- Redis --------------------------------------------------------------------------------------


def _redis_binary() -> str:
    binary = find_binary("redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server")
    if binary is None:
        missing("redis-server is not installed")
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run (`save ''`, `appendonly no`) on a free port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary=_redis_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied (FLUSHALL) for this test.

    A test that killed or paused the session server gets it back here; tests that need to
    kill Redis should use `redis_factory` instead.
    """
    if redis_server.running:
        redis_server.resume()
        if not redis_server.ping():
            redis_server.kill()
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """`redis_factory(**options)` starts an own redis-server; all are stopped after the test.

        server = redis_factory(appendonly=True, appendfsync="always")
        server = redis_factory(requirepass="s3cret")               # server.url has the password
        server = redis_factory(enable_debug_command="local")       # DEBUG SLEEP
        server = redis_factory(port=4242)                          # a fixed port
        server = redis_factory(start=False, appendonly=True)       # configure, start later
    """
    binary = _redis_binary()
    servers: list[RedisServer] = []

    def make(*, start: bool = True, **options: Any) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis-own"), options=options, binary=binary)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.kill()


# -- ZooKeeper ----------------------------------------------------------------------------------


def _java() -> str:
    java = find_binary("java", "/usr/bin/java")
    if java is None or not Path(ZOOKEEPER_JAR).exists():
        missing(f"ZooKeeper is not installed (need java and {ZOOKEEPER_JAR})")
    return java


@pytest.fixture(scope="session")
def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One standalone ZooKeeper for the whole run, on a free port (tickTime 1 s)."""
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"), java=_java())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zookeeper_hosts(zookeeper_server: ZooKeeperServer) -> str:
    """The session ZooKeeper's connection string, restarted first if a test stopped it."""
    if zookeeper_server.running:
        zookeeper_server.resume()
    else:
        zookeeper_server.start()
    return zookeeper_server.hosts


@pytest.fixture
def zookeeper_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ZooKeeperServer]]:
    """`zookeeper_factory(**zoo_cfg_options)` starts an own ZooKeeper; killed after the test."""
    java = _java()
    servers: list[ZooKeeperServer] = []

    def make(**options: Any) -> ZooKeeperServer:
        server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper-own"), options=options, java=java)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


# -- Prometheus ---------------------------------------------------------------------------------


@pytest.fixture
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """`prometheus_factory(scrape_targets, rule_files=None, **kw)` starts Prometheus.

    Scrapes every 1 s and evaluates rules every 1 s; `str(prom)` / `prom.url` is the base URL;
    `prom.query(expr)`, `prom.query_value(expr)`, `prom.targets()`, `prom.alerts()`,
    `prom.reload(...)`. Keyword options: job, metrics_path, scrape_interval,
    evaluation_interval, scrape_config (merged into the job, e.g. relabel_configs).

        prom = prometheus_factory([node.url.removeprefix("http://") for node in nodes])
        wait_until(lambda: prom.query_value("sum(corral_is_leader)") == 1, 15)
    """
    binary = find_binary("prometheus", "/usr/bin/prometheus")
    if binary is None:
        missing("prometheus is not installed")
    servers: list[PrometheusServer] = []

    def make(scrape_targets: list[ScrapeTarget], rule_files: list[Any] | None = None,
             **kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), scrape_targets,
                                  rule_files, binary=binary, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


# -- node-resque --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_resque_dir() -> Path:
    """tests/interop, where `require('node-resque')` works (see `servers.run_node`)."""
    path = REPO_ROOT / "tests" / "interop"
    if shutil.which("node") is None:
        missing("node (Node.js) is not installed")
    if not (path / "node_modules" / "node-resque" / "package.json").exists():
        missing(f"node-resque is not installed in {path}")
    return path


# -- nodes and proxies --------------------------------------------------------------------------


@pytest.fixture
def node_cluster(tmp_path: Path, redis_url: str) -> Iterator[NodeCluster]:
    """A `NodeCluster` on the session Redis (flushed); every node it started is SIGKILLed after.

    Named `node_cluster`, not `cluster`, so it never shadows the `cluster` package in a test.
    Pass `redis_url=` to `add()`/`start()` to use another server (e.g. from `redis_factory`).
    """
    nodes = NodeCluster(tmp_path / "nodes", redis_url=redis_url)
    yield nodes
    nodes.close()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[..., TcpProxy]]:
    """`tcp_proxy(target_port, **kw)`: a started `TcpProxy`, closed after the test."""
    proxies: list[TcpProxy] = []

    def make(target_port: int, **kwargs: Any) -> TcpProxy:
        proxy = TcpProxy(target_port, **kwargs).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
