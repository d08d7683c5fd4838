"""Real `corral node` processes for integration and fault tests.

A `NodeProcess` runs `python -m node node ...` (the same entry point as the `corral` console
script) with the flags of docs/INTERFACE.md §1, its output in a log file, and talks to it over its HTTP
port. A `NodeCluster` starts several, optionally each behind its own `TcpProxy` to Redis
(docs/FAULTS.md §2), and kills every process it started at teardown, by pid.

    cluster = NodeCluster(tmp_path, redis_url=redis_url)
    a, b, c = cluster.start(3, proxied=True)
    leader = cluster.wait_leader(timeout=10)
    cluster.proxy(leader).blackhole()
    leader.kill()                     # SIGKILL
    cluster.close()                   # also done by the `node_cluster` fixture

Signals: `kill()` SIGKILL, `stop()` SIGSTOP, `cont()` SIGCONT (each to the node and its leader
process), `terminate()` SIGTERM to the node and a bounded wait for the exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import REPO_ROOT, free_port, http_get, wait_until
from .proxy import TcpProxy
from .servers import ManagedProcess, ServerError

__all__ = ["NodeCluster", "NodeProcess", "with_port"]


def with_port(url: str, port: int) -> str:
    """The same URL (scheme, credentials, path) pointed at 127.0.0.1:`port`.

        with_port("redis://:pw@127.0.0.1:6379/0", 4242)   # "redis://:pw@127.0.0.1:4242/0"
    """
    parts = urllib.parse.urlsplit(url)
    auth, _, _ = parts.netloc.rpartition("@")
    netloc = (auth + "@" if auth else "") + f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class NodeProcess(ManagedProcess):
    """One `corral node` on 127.0.0.1:`http_port`.

    Only flags that are given are passed, besides the fixed ones (`--redis-url`,
    `--namespace`, `--tasks-dir`, `--queues`, `--http-host 127.0.0.1`, `--http-port`,
    `--node-id`, `--log-format json`). `CORRAL_*` variables of the test's own environment are
    not inherited, so a developer's settings never leak into a test.

        node = NodeProcess(tmp_path / "n1", redis_url=url, node_id="n1").start()
        node.wait_ready(20); node.leader()["is_leader"]
    """

    def __init__(
        self,
        workdir: Path,
        *,
        redis_url: str,
        node_id: str,
        namespace: str = "resque",
        tasks_dir: str | os.PathLike[str] = REPO_ROOT / "tasks",
        queues: str | Sequence[str] = "default",
        http_port: int | None = None,
        concurrency: int | None = None,
        scheduler: bool | None = None,
        election: str | None = None,
        zookeeper_hosts: str | None = None,
        log_format: str = "json",
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.node_id = node_id
        self.redis_url = redis_url
        self.http_port = http_port or free_port()
        self._reported: tuple[int, str] | None = None
        args = [
            "--redis-url", redis_url,
            "--namespace", namespace,
            "--tasks-dir", str(tasks_dir),
            "--queues", queues if isinstance(queues, str) else ",".join(queues),
            "--http-host", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--node-id", node_id,
            "--log-format", log_format,
        ]
        # one slot per entry unless asked: these tests were written against that (the product's
        # default is more); a --concurrency in extra_args comes later and wins
        args += ["--concurrency", str(concurrency if concurrency is not None else 1)]
        if scheduler is not None:
            args.append("--scheduler" if scheduler else "--no-scheduler")
        if election is not None:
            args += ["--election", election]
        if zookeeper_hosts is not None:
            args += ["--zookeeper-hosts", zookeeper_hosts]
        args += list(extra_args)
        self.args = args
        # `command` replaces `python -m node` (a stand-in node in the harness's own tests).
        prefix = list(command) if command is not None else [sys.executable, "-m", "node"]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        child_env.update(env or {})
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__([*prefix, "node", *args], workdir / f"{node_id}.log", cwd=workdir,
                         env=child_env)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else f"exited {self.returncode}"
        return f"<NodeProcess {self.node_id} :{self.http_port} {state}>"

    @property
    def url(self) -> str:
        """Base URL of the node's HTTP server."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def reported_id(self) -> str:
        """The id this run of the node reports in `/leader`, `/status` and its logs.

        Corral appends a per-start suffix to `--node-id` (`n1` runs as `n1-3fa2c1`), so match
        ids from Redis or `/leader` with `owns(id)` or `NodeCluster.owner_of(id)`."""
        if self._reported is None or self._reported[0] != self.pid:
            self._reported = (self.pid, str(self.leader()["node"]))
        return self._reported[1]

    def owns(self, reported_id: str | None) -> bool:
        """True if `reported_id` is this node's id (`n1` or `n1-<suffix>`, any run)."""
        return reported_id is not None and (
            reported_id == self.node_id or reported_id.startswith(self.node_id + "-"))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> NodeProcess:
        """Spawn the process (again after it exited: same flags, same port). Does not wait."""
        self.spawn()
        return self

    def wait_ready(self, timeout: float = 20.0) -> NodeProcess:
        """Wait (bounded) until `GET /readyz` answers 200; raise early if the process exits."""
        def ready() -> bool:
            if not self.running:
                raise ServerError(f"node {self.node_id} exited with status {self.returncode}; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            try:
                return self.get("/readyz", timeout=1.0)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, 0.05, message=f"node {self.node_id} to be ready")
        return self

    # A node is two processes: the node and its leader process (a session of its own). `kill`,
    # `stop` and `cont` signal both, as a container kill, an OOM kill or a frozen VM would;
    # `send_signal` (and `os.kill(node.pid, ...)`) reaches the node process alone.

    def leader_process_pid(self) -> int | None:
        """The pid of this node's leader process (its child running `node.leader.boot`), if any."""
        if not self.running:
            return None
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.pid and b"node.leader.boot" in (d / "cmdline").read_bytes():
                    return int(d.name)
            except (OSError, ValueError, IndexError):
                continue
        return None

    def _signal_both(self, sig: int) -> None:
        if not self.running:  # never after the reap: the pids could be reused by then
            return
        child = self.leader_process_pid()
        if child is not None:  # first: with the node gone first, it would release on the way out
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)
        self.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the node and its leader process at once (a crash: no graceful release)."""
        self._signal_both(signal.SIGKILL)
        super().kill()

    def stop(self) -> None:
        """SIGSTOP the node and its leader process: frozen with connections open (docs/FAULTS.md F2)."""
        self._signal_both(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT after `stop`."""
        self._signal_both(signal.SIGCONT)

    def terminate(self, timeout: float = 40.0) -> int | None:
        """SIGTERM and wait up to `timeout` for the exit (then SIGKILL); the exit status."""
        return super().terminate(timeout)

    def sigterm(self) -> None:
        """SIGTERM without waiting (to time a drain or a handoff yourself)."""
        self.send_signal(signal.SIGTERM)

    # -- HTTP ----------------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """GET `path` on the node: (status, body). OSError if nothing answers."""
        return http_get(self.url + path, timeout)

    def get_json(self, path: str, timeout: float = 2.0) -> Any:
        status, body = self.get(path, timeout)
        if status != 200:
            raise ServerError(f"node {self.node_id} GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def healthz(self, timeout: float = 1.0) -> bool:
        """True when `/healthz` answers 200 within `timeout`."""
        try:
            return self.get("/healthz", timeout)[0] == 200
        except OSError:
            return False

    def readyz(self, timeout: float = 1.0) -> tuple[int, Any]:
        """(status, JSON body or raw text) of `/readyz`."""
        status, body = self.get("/readyz", timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def leader(self, timeout: float = 2.0) -> dict[str, Any]:
        """`GET /leader`: {"node", "leader", "is_leader", "epoch", "since", "backend"}."""
        result: dict[str, Any] = self.get_json("/leader", timeout)
        return result

    def is_leader(self, timeout: float = 1.0) -> bool:
        """This node's own answer; False when it does not answer (stopped, dead)."""
        try:
            return bool(self.leader(timeout).get("is_leader"))
        except (OSError, ServerError, ValueError):
            return False

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        """`GET /status`."""
        result: dict[str, Any] = self.get_json("/status", timeout)
        return result

    def metrics_text(self, timeout: float = 2.0) -> str:
        """`GET /metrics` as text."""
        status, body = self.get("/metrics", timeout)
        if status != 200:
            raise ServerError(f"node {self.node_id} GET /metrics: {status}")
        return body.decode()

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The value of one sample in `/metrics` (labels must match exactly), None if absent.

            node.metric("corral_is_leader")                                  # 1.0
            node.metric("corral_jobs_processed_total", {"queue": "default", "task": "t"})
        """
        want = dict(labels or {})
        for line in self.metrics_text().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, label_text = head.partition("{")
            if metric != name:
                continue
            got = {}
            for part in label_text.rstrip("}").split(",") if label_text else []:
                if part:
                    k, _, v = part.partition("=")
                    got[k] = v.strip('"')
            if got == want:
                return float(value)
        return None

    # -- logs ----------------------------------------------------------------------------------

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON object line of the node's log (`--log-format json`); other lines skipped."""
        records = []
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records


class NodeCluster:
    """Starts `corral node`s against one Redis URL and kills every one of them at `close()`.

    With `proxied=True` each node reaches Redis through its own `TcpProxy` (docs/FAULTS.md §2), so a
    test can partition, reset or delay one node's link alone.

        cluster = NodeCluster(tmp_path, redis_url=redis_url)
        nodes = cluster.start(3, proxied=True, extra_args=["--lease", "5"])
        leader = cluster.wait_leader(10)
    """

    def __init__(self, workdir: Path, *, redis_url: str, **defaults: Any) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.defaults = defaults
        self.nodes: list[NodeProcess] = []
        self.proxies: dict[str, TcpProxy] = {}

    def add(self, node_id: str | None = None, *, proxied: bool = False, start: bool = True,
            **kwargs: Any) -> NodeProcess:
        """Create (and by default start, without waiting) one more node."""
        node_id = node_id or f"n{len(self.nodes) + 1}"
        if any(n.node_id == node_id for n in self.nodes):
            raise ValueError(f"node id {node_id!r} already used in this cluster")
        options = {**self.defaults, **kwargs}
        url = options.pop("redis_url", self.redis_url)
        if proxied:
            target = urllib.parse.urlsplit(url).port or 6379
            proxy = TcpProxy(target, name=f"redis-{node_id}").start()
            self.proxies[node_id] = proxy
            url = with_port(url, proxy.port)
        node = NodeProcess(self.workdir / node_id, redis_url=url, node_id=node_id, **options)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def start(self, n: int = 3, *, proxied: bool = False, wait: bool = True,
              timeout: float = 30.0, **kwargs: Any) -> list[NodeProcess]:
        """Start `n` nodes (ids n1, n2, ...) and, by default, wait until all are ready."""
        started = [self.add(proxied=proxied, **kwargs) for _ in range(n)]
        if wait:
            for node in started:
                node.wait_ready(timeout)
        return started

    def node(self, node_id: str) -> NodeProcess:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def owner_of(self, reported_id: str | None) -> NodeProcess | None:
        """The node whose (suffixed) id this is, e.g. `cluster.owner_of(n.leader()["leader"])`."""
        return next((n for n in self.nodes if n.owns(reported_id)), None)

    def proxy(self, node: NodeProcess | str) -> TcpProxy:
        """The proxy between `node` and Redis (the node must have been started `proxied`)."""
        return self.proxies[node if isinstance(node, str) else node.node_id]

    def running(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.running]

    def leaders(self) -> list[NodeProcess]:
        """The running nodes that answer `/leader` with is_leader true, now."""
        return [n for n in self.running() if n.is_leader()]

    def wait_leader(self, timeout: float = 15.0, *,
                    exclude: Iterable[NodeProcess] = ()) -> NodeProcess:
        """Wait (bounded) until exactly one node (not in `exclude`) says it leads; return it."""
        skip = {n.node_id for n in exclude}

        def one() -> NodeProcess | None:
            found = [n for n in self.leaders() if n.node_id not in skip]
            return found[0] if len(found) == 1 else None

        return wait_until(one, timeout, 0.05, message="exactly one leader")

    def close(self) -> None:
        """SIGKILL every node this cluster started (by pid) and close the proxies."""
        for node in self.nodes:
            node.kill()
        for proxy in self.proxies.values():
            proxy.close()
