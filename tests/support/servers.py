"""Real servers for the tests: redis-server, ZooKeeper and Prometheus on free loopback ports.

Each server runs from Debian's package in its own temporary directory (config, data, one log
file), in its own session so a Ctrl-C or a `timeout` aimed at pytest does not reach it, and is
stopped by its pid. Every wait is bounded; a server that dies while starting raises
`ServerError` with the tail of its log.

    server = RedisServer(tmp_path, options={"appendonly": True, "appendfsync": "always"})
    server.start()
    server.kill(); server.start()           # same port, same data directory
    server.stop()

The fixtures in `tests/conftest.py` build these; tests rarely construct them directly.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import free_port, http_get, wait_until

__all__ = [
    "ManagedProcess",
    "PrometheusServer",
    "RedisServer",
    "ServerError",
    "ZooKeeperServer",
    "find_binary",
    "install_sigterm_cleanup",
    "run_node",
]

ConfigValue = str | int | float | bool | Sequence[str]


# Loopback only: never route through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """A server did not start, or died; the message carries the tail of its log."""


def find_binary(name: str, *candidates: str) -> str | None:
    """The path of executable `name` on PATH, else the first existing candidate path."""
    found = shutil.which(name)
    if found:
        return found
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return None


_live: dict[int, ManagedProcess] = {}


@atexit.register
def _kill_leftovers() -> None:
    # Safety net if a fixture's teardown never ran (e.g. pytest killed by a second Ctrl-C):
    # kill what this process started, by pid, and nothing else.
    for proc in list(_live.values()):
        proc.kill()


def install_sigterm_cleanup() -> None:
    """On SIGTERM, kill every process this test process started (by pid), then die of SIGTERM.

    Servers run in their own sessions, so a pytest run ended by SIGTERM (an outer `timeout`,
    CI's stop) would otherwise leave them behind; atexit does not run on a fatal signal. Does
    nothing off the main thread or when SIGTERM already has a handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: object) -> None:
        _kill_leftovers()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


class ManagedProcess:
    """A child process with its output in one log file, controlled only through its own pid.

        proc = ManagedProcess(["sleep", "60"], tmp_path / "sleep.log")
        proc.start(); proc.pause(); proc.resume(); proc.terminate(timeout=5)
    """

    def __init__(self, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the process (again, after it exited); output is appended to the log file."""
        if self.running:
            raise ServerError(f"{self.argv[0]} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            shown = re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", " ".join(self.argv))  # no passwords in logs
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {shown}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.cwd, env=self.env, start_new_session=True, close_fds=True,
            )
        _live[id(self)] = self

    @property
    def pid(self) -> int:
        """The pid of the current (or last) run."""
        if self._popen is None:
            raise ServerError("not started")
        return self._popen.pid

    @property
    def running(self) -> bool:
        """True while the process exists (a SIGSTOPped process is running)."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last run (negative: killed by that signal), None while running."""
        return None if self._popen is None else self._popen.poll()

    def send_signal(self, sig: int) -> None:
        """Send `sig` to this process's pid, if it is still running."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the process stops running but keeps its sockets (a stall)."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        """Wait (bounded) for the process to exit; return its status, raise on timeout."""
        if self._popen is None:
            raise ServerError("not started")
        try:
            code = self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ServerError(f"{self.argv[0]} (pid {self.pid}) still running after "
                              f"{timeout}s") from None
        _live.pop(id(self), None)
        return code

    def kill(self) -> None:
        """SIGKILL and reap. Works on a paused process too."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._popen.kill()
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover (SIGKILL is not ignorable)
                return
        _live.pop(id(self), None)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (SIGCONT first if paused), wait up to `timeout`, then SIGKILL.

        Returns the exit status (negative = killed by that signal)."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            self._popen.send_signal(signal.SIGCONT)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        _live.pop(id(self), None)
        return self._popen.poll()

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the log file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])

    def _check_alive(self, what: str) -> None:
        if not self.running:
            raise ServerError(f"{what} exited with status {self.returncode} while starting; "
                              f"log {self.log_path}:\n{self.log_tail()}")


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


def _conf_lines(options: Mapping[str, ConfigValue]) -> list[str]:
    lines = []
    for key, value in options.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            lines.append(f"{name} {'yes' if value else 'no'}")
        elif isinstance(value, str | int | float):
            lines.append(f"{name} {value}")
        else:
            lines.extend(f"{name} {item}" for item in value)
    return lines


class RedisServer(ManagedProcess):
    """One redis-server on 127.0.0.1, configured from a generated file in `workdir`.

    `options` are redis.conf directives; underscores become dashes, booleans yes/no, a list
    repeats the directive, strings are written as they are (quote them the redis.conf way):

        RedisServer(d, options={"appendonly": True, "appendfsync": "always"})
        RedisServer(d, options={"requirepass": "s3cret"})          # .url carries the password
        RedisServer(d, options={"user": ["alice on >pw ~* +@all"]})  # ACL users
        RedisServer(d, options={"enable_debug_command": "local"})   # DEBUG SLEEP for stalls

    The defaults: no RDB snapshots (`save ""`), `appendonly no`, data in `workdir/data`.
    """

    def __init__(self, workdir: Path, *, port: int | None = None,
                 options: Mapping[str, ConfigValue] | None = None,
                 binary: str = "redis-server") -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.conf_path = workdir / "redis.conf"
        self.options: dict[str, ConfigValue] = {
            "save": '""',
            "appendonly": False,
            "databases": 16,
            "loglevel": "notice",
        }
        self.options.update(options or {})
        if "port" in self.options:
            port = int(str(self.options.pop("port")))
        self.port = port or free_port()
        self._fixed_port = port is not None
        pw = self.options.get("requirepass")
        self.password: str | None = str(pw).strip('"') if pw is not None else None
        super().__init__([binary, str(self.conf_path)], workdir / "redis.log", cwd=workdir)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        """`redis://[:password@]127.0.0.1:<port>/0`."""
        return self.url_for()

    def url_for(self, db: int = 0, *, username: str | None = None,
                password: str | None = None) -> str:
        """A URL for database `db`, optionally as an ACL user.

            server.url_for(1)                                # redis://127.0.0.1:PORT/1
            server.url_for(username="alice", password="pw")  # redis://alice:pw@127.0.0.1:PORT/0
        """
        password = password if password is not None else (None if username else self.password)
        auth = ""
        if username or password:
            auth = urllib.parse.quote(username or "", safe="")
            if password:
                auth += ":" + urllib.parse.quote(password, safe="")
            auth += "@"
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "daemonize no",
            'logfile ""',
            f"dir {self.data_dir}",
            "protected-mode yes",
        ]
        self.conf_path.write_text("\n".join(base + _conf_lines(self.options)) + "\n")

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start (or start again on the same port) and wait until PING answers."""
        for attempt in range(3):
            self.write_config()
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except ServerError:
                # Someone took a port we picked ourselves between the check and the bind.
                if self._fixed_port or "Address already in use" not in self.log_tail() or attempt == 2:
                    raise
                self.kill()
                self.port = free_port()
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Graceful stop (SIGTERM; redis fsyncs its AOF), SIGKILL after `timeout`."""
        return self.terminate(timeout)

    def restart(self, *, wipe: bool = False, kill: bool = False, timeout: float = 15.0) -> RedisServer:
        """Stop (SIGKILL if `kill`), optionally delete the data files, start on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        if wipe:
            self.wipe_data()
        return self.start(timeout)

    def wipe_data(self) -> None:
        """Delete RDB and AOF files (server must be down): the next start is empty."""
        if self.running:
            raise ServerError("wipe_data needs the server stopped")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous redis-py client for this server (close it, or use it in `with`).

        No retries by default: a harness call fails at once and says why."""
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 2)
        return redis.Redis.from_url(self.url, **kwargs)

    def ping(self) -> bool:
        """True when the server answers PING now (False while loading or unreachable)."""
        try:
            with self.client(socket_timeout=1, socket_connect_timeout=1) as c:
                return bool(c.ping())
        except (redis.RedisError, OSError):
            return False

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            self._check_alive(f"redis-server on port {self.port}")
            return self.ping()

        wait_until(ready, timeout, 0.02, message=f"redis-server on port {self.port} to answer PING")

    def flushall(self) -> None:
        with self.client() as c:
            c.flushall()

    def info(self, section: str | None = None) -> dict[str, Any]:
        with self.client() as c:
            return dict(c.info(section) if section else c.info())


# ---------------------------------------------------------------------------------------------
# ZooKeeper
# ---------------------------------------------------------------------------------------------

ZOOKEEPER_JAR = os.environ.get("CORRAL_ZOOKEEPER_JAR", "/usr/share/java/zookeeper.jar")
SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar"


def four_letter_word(port: int, word: str, timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command (`ruok`, `srvr`, `stat`, ...) and return the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(word.encode())
        chunks = []
        while True:
            data = sock.recv(4096)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer(ManagedProcess):
    """A standalone ZooKeeper (Debian's jar, run with `java` directly, no service scripts).

    tickTime 1000 ms, so sessions may last 2 s to 20 s (tests use 6 s). Four-letter words are
    enabled, the admin server is off.

        zk = ZooKeeperServer(tmp_path); zk.start(); zk.hosts   # "127.0.0.1:PORT"
    """

    def __init__(self, workdir: Path, *, port: int | None = None,
                 options: Mapping[str, ConfigValue] | None = None,
                 java: str = "java", jar: str = ZOOKEEPER_JAR) -> None:
        self.workdir = workdir
        self.conf_dir = workdir / "conf"
        self.data_dir = workdir / "data"
        self.port = port or free_port()
        self.options: dict[str, ConfigValue] = {
            "tickTime": 1000,
            "initLimit": 10,
            "syncLimit": 5,
            "maxClientCnxns": 0,
            "admin.enableServer": "false",
            "4lw.commands.whitelist": "*",
        }
        self.options.update(options or {})
        classpath = [str(self.conf_dir), jar]
        if os.path.exists(SLF4J_SIMPLE_JAR):  # ZooKeeper logs through slf4j; without a binding it is silent
            classpath.append(SLF4J_SIMPLE_JAR)
        argv = [
            java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true", "-Dzookeeper.admin.enableServer=false",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp", ":".join(classpath),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.conf_dir / "zoo.cfg"),
        ]
        super().__init__(argv, workdir / "zookeeper.log", cwd=workdir)

    @property
    def hosts(self) -> str:
        """Connection string for kazoo and `--zookeeper-hosts`: `127.0.0.1:<port>`."""
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"dataDir={self.data_dir}", f"clientPort={self.port}", "clientPortAddress=127.0.0.1"]
        lines += [f"{k}={v}" for k, v in self.options.items()]
        (self.conf_dir / "zoo.cfg").write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 30.0) -> ZooKeeperServer:
        """Start and wait until `srvr` reports a serving standalone server."""
        self.write_config()
        self.spawn()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.terminate(timeout)

    def restart(self, *, kill: bool = False, timeout: float = 30.0) -> ZooKeeperServer:
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def serving(self) -> bool:
        try:
            reply = four_letter_word(self.port, "srvr")
        except OSError:
            return False
        return "Mode:" in reply

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self._check_alive(f"ZooKeeper on port {self.port}")
            return self.serving()

        wait_until(ready, timeout, 0.05, message=f"ZooKeeper on port {self.port} to serve")


# ---------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------

ScrapeTarget = str | Mapping[str, Any]


class PrometheusServer(ManagedProcess):
    """Debian's Prometheus scraping `scrape_targets` every second, optionally with rule files.

    A target is `"127.0.0.1:8081"` or a static_config mapping such as
    `{"targets": ["127.0.0.1:8081"], "labels": {"pod": "corral-0", "namespace": "ci"}}`.
    `str(server)` is its base URL.

        prom = PrometheusServer(tmp_path, ["127.0.0.1:8081"], rule_files=[rules]).start()
        prom.query_value("sum(corral_is_leader)")        # 1.0
        prom.alerts()                                     # /api/v1/alerts "alerts"
    """

    def __init__(self, workdir: Path, scrape_targets: Iterable[ScrapeTarget],
                 rule_files: Iterable[str | os.PathLike[str]] | None = None, *,
                 job: str = "corral", metrics_path: str = "/metrics",
                 scrape_interval: str = "1s", evaluation_interval: str = "1s",
                 scrape_config: Mapping[str, Any] | None = None,
                 port: int | None = None, binary: str = "prometheus") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.config_path = workdir / "prometheus.yml"
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.scrape_config = dict(scrape_config or {})
        self.scrape_targets = list(scrape_targets)
        self.rule_files = [str(Path(p).resolve()) for p in (rule_files or [])]
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        super().__init__(argv, workdir / "prometheus.log", cwd=workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __str__(self) -> str:
        return self.url

    def config(self) -> dict[str, Any]:
        plain = [t for t in self.scrape_targets if isinstance(t, str)]
        static = [dict(t) for t in self.scrape_targets if not isinstance(t, str)]
        if plain:
            static.insert(0, {"targets": plain})
        job: dict[str, Any] = {
            "job_name": self.job,
            "metrics_path": self.metrics_path,
            "scrape_interval": self.scrape_interval,
            "scrape_timeout": self.scrape_interval,
            "static_configs": static,
        }
        job.update(self.scrape_config)
        return {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.evaluation_interval},
            "rule_files": self.rule_files,
            "scrape_configs": [job],
        }

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no YAML library needed.
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start and wait until `/-/ready` answers 200."""
        self.write_config()
        self.spawn()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.terminate(timeout)

    def reload(self, scrape_targets: Iterable[ScrapeTarget] | None = None,
               rule_files: Iterable[str | os.PathLike[str]] | None = None) -> None:
        """Rewrite the config (new targets or rules) and ask Prometheus to reload it."""
        if scrape_targets is not None:
            self.scrape_targets = list(scrape_targets)
        if rule_files is not None:
            self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.write_config()
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with _opener.open(req, timeout=10) as resp:
            if resp.status != 200:
                raise ServerError(f"prometheus reload answered {resp.status}")

    def ready(self) -> bool:
        try:
            return http_get(f"{self.url}/-/ready", timeout=1.0)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self._check_alive(f"prometheus on port {self.port}")
            return self.ready()

        wait_until(ready, timeout, 0.05, message=f"prometheus on port {self.port} to be ready")

    def api(self, path: str, **params: str) -> Any:
        """GET `/api/v1/<path>` and return its `data`; raise ServerError unless status=success."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""), 10.0)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise ServerError(f"prometheus /api/v1/{path} {params}: {status} {body[:500]!r}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the vector's samples (`[{"metric": {...}, "value": [ts, "1"]}]`)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [
            {"metric": {}, "value": data["result"]}]
        return result

    def query_value(self, expr: str) -> float | None:
        """The single value of `expr` (None when the result is empty; error if several)."""
        samples = self.query(expr)
        if not samples:
            return None
        if len(samples) > 1:
            raise ServerError(f"{expr!r} returned {len(samples)} series, expected one")
        return float(samples[0]["value"][1])

    def targets(self) -> list[dict[str, Any]]:
        """The active targets with their `health` ("up", "down", "unknown")."""
        return list(self.api("targets")["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts currently pending or firing."""
        return list(self.api("alerts")["alerts"])


# ---------------------------------------------------------------------------------------------
# Node.js (node-resque interop)
# ---------------------------------------------------------------------------------------------


def run_node(interop_dir: Path, script: str, *args: str, timeout: float = 30.0,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a Node.js script (source text) in `interop_dir`, where node-resque is installed.

    Raises ServerError with its output when it exits non-zero; returns the completed process.

        out = run_node(node_resque_dir, "console.log(require('node-resque').Queue.name)")
    """
    node = find_binary("node")
    if node is None:
        raise ServerError("node is not installed")
    proc = subprocess.run(
        [node, "-e", script, "--", *args], cwd=interop_dir, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, check=False,
    )
    if proc.returncode != 0:
        raise ServerError(f"node exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc

