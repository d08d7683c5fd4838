"""Smoke tests of the test harness itself: every server fixture answers, the node helpers work.

If one of these fails, the suites built on the fixtures cannot be trusted either.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tests.support import REPO_ROOT, http_get, wait_until
from tests.support.nodes import NodeCluster, NodeProcess, with_port
from tests.support.servers import (
    PrometheusServer,
    RedisServer,
    ZooKeeperServer,
    four_letter_word,
    run_node,
)

# -- Redis --------------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", [1, 2])
def test_redis_url_answers_ping_and_starts_empty(redis_url: str, round_: int) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        assert client.dbsize() == 0  # the second round proves the FLUSHALL between tests
        client.set("left-over", round_)


def test_redis_server_reports_its_address(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.running and redis_server.pid > 0
    assert redis_server.info("server")["tcp_port"] == redis_server.port
    assert redis_server.info("persistence")["aof_enabled"] == 0


def test_redis_kill_and_restart_keeps_port_and_fsynced_data(redis_factory) -> None:
    server = redis_factory(appendonly=True, appendfsync="always")
    port, pid = server.port, server.pid
    with server.client() as c:
        c.rpush("resque:queue:default", b"job-1")
    server.kill()
    assert not server.running and server.returncode == -signal.SIGKILL
    assert not server.ping()
    server.start()
    assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
    assert server.pid != pid
    with server.client() as c:
        assert c.lrange("resque:queue:default", 0, -1) == [b"job-1"]
    server.restart(wipe=True)
    with server.client() as c:
        assert c.dbsize() == 0


def test_redis_password_and_acl_users(redis_factory) -> None:
    server = redis_factory(requirepass="s3cret", user=["alice on >pw ~* +@all"])
    assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as anonymous:
        anonymous.sendall(b"PING\r\n")
        assert anonymous.recv(100).startswith(b"-NOAUTH")
    with redis.Redis.from_url(server.url) as c:
        assert c.ping()
    with redis.Redis.from_url(server.url_for(username="alice", password="pw")) as c:
        assert c.acl_whoami() == "alice"


def test_redis_pause_stalls_and_debug_command(redis_factory) -> None:
    server = redis_factory(enable_debug_command="local")
    with server.client(socket_timeout=0.3) as c:
        assert c.execute_command("DEBUG", "SLEEP", "0")
        server.pause()
        with pytest.raises(redis.TimeoutError):
            c.ping()
        server.resume()
    assert server.ping()


def test_sigterm_to_the_test_process_kills_its_servers(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from tests.support.servers import RedisServer, install_sigterm_cleanup
        install_sigterm_cleanup()
        server = RedisServer(Path({str(tmp_path)!r})).start()
        print(server.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        redis_pid = int(proc.stdout.readline())
        os.kill(redis_pid, 0)  # running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    wait_until(lambda: not os.path.exists(f"/proc/{redis_pid}"), 5, message="redis-server to be gone")


def test_redis_debug_command_is_off_by_default(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as c, pytest.raises(redis.ResponseError):
        c.execute_command("DEBUG", "SLEEP", "0")


# -- ZooKeeper ----------------------------------------------------------------------------------


def test_zookeeper_answers_kazoo(zookeeper_server: ZooKeeperServer, zookeeper_hosts: str) -> None:
    from kazoo.client import KazooClient

    assert zookeeper_hosts == f"127.0.0.1:{zookeeper_server.port}"
    assert "Mode: standalone" in four_letter_word(zookeeper_server.port, "srvr")
    zk = KazooClient(hosts=zookeeper_hosts, timeout=6.0)
    zk.start(timeout=15)
    try:
        path = zk.create("/corral-smoke/node-", b"hello", ephemeral=True, sequence=True,
                         makepath=True)
        data, stat = zk.get(path)
        assert data == b"hello" and stat.ephemeralOwner == zk.client_id[0]
    finally:
        zk.stop()
        zk.close()


# -- Prometheus ---------------------------------------------------------------------------------


class _Metrics(BaseHTTPRequestHandler):
    body = b"# TYPE corral_smoke_value gauge\ncorral_smoke_value 42\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metrics_target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_prometheus_scrapes_and_evaluates_rules(prometheus_factory, metrics_target: str,
                                                tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: smoke
            rules:
              - record: corral:smoke_value:doubled
                expr: corral_smoke_value * 2
        """))
    prom: PrometheusServer = prometheus_factory(
        [{"targets": [metrics_target], "labels": {"pod": "corral-0"}}], rule_files=[rules])
    assert str(prom) == prom.url
    assert http_get(f"{prom.url}/-/ready")[0] == 200
    wait_until(lambda: prom.query_value('corral_smoke_value{pod="corral-0",job="corral"}') == 42,
               15, 0.1, message="the first scrape")
    wait_until(lambda: prom.query_value("corral:smoke_value:doubled") == 84, 15, 0.1,
               message="the recording rule")
    assert [t["health"] for t in prom.targets()] == ["up"]
    assert prom.alerts() == []


# -- node-resque --------------------------------------------------------------------------------


def test_node_resque_enqueues_into_our_redis(node_resque_dir: Path, redis_server: RedisServer,
                                             redis_url: str) -> None:
    script = """
        const { Queue } = require("node-resque");
        (async () => {
          const queue = new Queue({ connection: { host: "127.0.0.1", port: Number(process.argv[1]) } });
          await queue.connect();
          await queue.enqueue("default", "sendWelcomeEmail", [{ to: "evan@example.com" }]);
          await queue.end();
          console.log(require("node-resque/package.json").version);
        })().catch((e) => { console.error(e); process.exit(1); });
    """
    out = run_node(node_resque_dir, script, str(redis_server.port), timeout=30)
    assert out.stdout.strip().startswith("9.")
    with redis.Redis.from_url(redis_url) as c:
        assert c.lrange("resque:queue:default", 0, -1) == [
            b'{"class":"sendWelcomeEmail","queue":"default","args":[{"to":"evan@example.com"}]}']


# -- node processes (with a stand-in for `corral node`) -----------------------------------------

FAKE_NODE = r'''
import json, signal, socket, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

argv = sys.argv[sys.argv.index("node") + 1:]
flags = dict(zip(argv[::2], argv[1::2]))
node_id = flags["--node-id"]
url = urllib.parse.urlsplit(flags["--redis-url"])
redis = socket.create_connection((url.hostname, url.port), timeout=5)  # held, like a pool
redis.sendall(b"PING\r\n")
assert redis.recv(16) == b"+PONG\r\n"
leader = node_id == "n1"
started = time.time()

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        docs = {
            "/healthz": {"ok": True},
            "/readyz": {"ok": True},
            "/leader": {"node": node_id, "leader": "n1", "is_leader": leader, "epoch": 1,
                        "since": started, "backend": "redis"},
            "/status": {"node": {"id": node_id}, "argv": argv},
        }
        if self.path == "/metrics":
            body = f'corral_is_leader {int(leader)}\ncorral_workers{{state="idle"}} 2\n'.encode()
        elif self.path in docs:
            body = json.dumps(docs[self.path]).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer((flags["--http-host"], int(flags["--http-port"])), H)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(json.dumps({"event": "ready", "node": node_id}), flush=True)
server.serve_forever(poll_interval=0.05)
'''


def test_node_process_runs_python_dash_m_node_with_spec_flags(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path, redis_url="redis://127.0.0.1:1/0", node_id="a", queues=["q1", "q2"],
                       scheduler=False, extra_args=["--lease", "5"])
    assert node.argv[:4] == [sys.executable, "-m", "node", "node"]
    flags = node.argv[4:]
    for flag, value in [("--redis-url", "redis://127.0.0.1:1/0"), ("--namespace", "resque"),
                        ("--queues", "q1,q2"), ("--http-host", "127.0.0.1"),
                        ("--http-port", str(node.http_port)), ("--node-id", "a"),
                        ("--log-format", "json"), ("--lease", "5")]:
        assert flags[flags.index(flag) + 1] == value
    assert "--no-scheduler" in flags
    assert with_port("redis://:pw@127.0.0.1:6379/2", 42) == "redis://:pw@127.0.0.1:42/2"


def test_node_cluster_controls_and_kills_its_nodes(tmp_path: Path, redis_url: str) -> None:
    fake = tmp_path / "fake_node.py"
    fake.write_text(FAKE_NODE)
    cluster = NodeCluster(tmp_path / "nodes", redis_url=redis_url, command=[sys.executable, str(fake)])
    try:
        n1, n2, n3 = cluster.start(3, proxied=True, timeout=20)
        for node in (n1, n2, n3):
            cluster.proxy(node).wait_connections(1, timeout=5)
            assert f"127.0.0.1:{cluster.proxy(node).port}" in node.status()["argv"][1]
        assert cluster.wait_leader(5) is n1
        assert n1.leader()["is_leader"] and not n2.leader()["is_leader"]
        assert cluster.owner_of(n2.leader()["leader"]) is n1 and n1.reported_id == "n1"
        assert n1.metric("corral_is_leader") == 1
        assert n2.metric("corral_workers", {"state": "idle"}) == 2
        assert n2.metric("corral_workers", {"state": "busy"}) is None
        assert n1.log_records() == [{"event": "ready", "node": "n1"}]

        n2.stop()  # SIGSTOP: alive, not answering
        assert n2.running and not n2.healthz(timeout=0.3)
        n2.cont()
        assert wait_until(n2.healthz, 5, message="n2 after SIGCONT")

        assert n3.terminate(timeout=10) == 0  # SIGTERM handled: clean exit
        n1.kill()
        assert n1.returncode == -signal.SIGKILL
        assert [n.node_id for n in cluster.running()] == ["n2"]
        pid = n2.pid
    finally:
        cluster.close()
    assert cluster.running() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
