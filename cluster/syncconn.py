"""Blocking RESP connections for `SyncClient` (cluster/sync_client.py): no event loop, no redis-py
command layer, one `sendall` and a `recv_into` a reused buffer per call, replies parsed by hiredis.

`SyncPool` hands each calling thread a connection of its own from a small lock-protected free
list (Flask / Django threaded servers), and after `os.fork` (gunicorn's pre-fork) forgets the
parent's connections in the child without touching them. Every connection is built from the
settings' one parsed target (`RedisSettings.target()`): plain TCP (TCP_NODELAY), TLS (rediss://,
the settings' CA / certificate / key), unix sockets; AUTH (ACL user or password), SELECT; with
Sentinel settings the primary is asked of the Sentinels (their own credentials and TLS) and asked
again after a connection failure or a READONLY reply (a failover happened).

Errors are redis-py's classes, as in cluster/rawconn.py: an error reply through the same
mapping (`_error`); a refused or timed-out connect is a ConnectionError whose message says
"connecting" (nothing was sent); a timeout or a lost connection after sending is a TimeoutError /
ConnectionError (the outcome is unknown) and the connection is discarded. Nothing is retried here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import hiredis

from .connection import sentinel_hosts
from .errors import ConfigError
from .rawconn import pack
from .redis_errors import ConnectionError as RedisConnectionError
from .redis_errors import NoScriptError, ReadOnlyError, ResponseError
from .redis_errors import TimeoutError as RedisTimeoutError
from .redis_errors import reply_error as _error
from .redis_settings import RedisSettings, RedisTarget

if TYPE_CHECKING:
    import ssl

_ReplyError = hiredis.ReplyError
_forks = 0  # bumped in every child at fork: a pool made before it holds the parent's sockets


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def fork_count() -> int:
    """How many forks this process descends from (since this module was imported)."""
    return _forks


class SyncConnection:
    """One blocking connection. `call` sends one packed command and returns its reply (an error
    reply raised as redis-py's class); `pipeline` sends several at once and returns every reply
    (error replies as `ResponseError` values). A connection-level failure marks it `broken`."""

    __slots__ = ("broken", "buf", "generation", "reader", "sock", "where")

    def __init__(self, sock: socket.socket, where: str, generation: int) -> None:
        self.sock = sock
        self.where = where
        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.buf = bytearray(65536)
        self.broken = False
        self.generation = generation

    def call(self, cmd: bytes) -> Any:
        """The hot path, kept lean: one sendall, one recv_into (a reply seldom needs two)."""
        sock, buf = self.sock, self.buf
        try:
            sock.sendall(cmd)
            n = sock.recv_into(buf)
            if not n:
                raise ConnectionResetError("closed by the server")
            reader = self.reader
            reader.feed(buf, 0, n)  # type: ignore[arg-type]  # any buffer, by its stub str | bytes
            reply = reader.gets()
            if reply is False:
                reply = self._read()
        except BaseException as e:
            self._failed(e)
            raise
        if type(reply) is _ReplyError:
            raise _error(str(reply))
        return reply

    def _read(self) -> Any:
        """The next reply, received as it comes."""
        sock, reader, buf = self.sock, self.reader, self.buf
        reply = reader.gets()
        while reply is False:
            n = sock.recv_into(buf)
            if not n:
                raise ConnectionResetError("closed by the server")
            reader.feed(buf, 0, n)  # type: ignore[arg-type]
            reply = reader.gets()
        return reply

    def _failed(self, e: BaseException) -> None:
        """Whatever stopped an exchange, the stream is out of step now: close, and raise a timeout
        or a socket error as redis-py's class (anything else, e.g. KeyboardInterrupt, goes on as is)."""
        self.close()
        if isinstance(e, TimeoutError):
            raise RedisTimeoutError(f"Timeout reading from {self.where}") from e
        if isinstance(e, OSError):
            raise RedisConnectionError(f"Redis connection to {self.where} lost: {e!r}") from e

    def pipeline(self, cmds: list[bytes]) -> list[Any]:
        """Send every command at once, then read every reply (error replies as values)."""
        try:
            self.sock.sendall(b"".join(cmds))
            replies = [self._read() for _ in cmds]
        except BaseException as e:
            self._failed(e)
            raise
        return [_error(str(r)) if type(r) is _ReplyError else r for r in replies]

    def close(self) -> None:
        self.broken = True
        try:
            self.sock.close()  # in a forked child this closes only the child's descriptor
        except OSError:
            pass


def _tls_context(settings: RedisSettings) -> ssl.SSLContext:
    import ssl  # only when TLS is used

    ctx = ssl.create_default_context(cafile=settings.tls_ca_file)  # hostname checked, as redis-py does
    if settings.tls_cert_file:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return ctx


def open_connection(address: tuple[str, int] | str, *, tls: ssl.SSLContext | None, username: str | None,
                    password: str | None, db: int, connect_timeout: float | None, socket_timeout: float | None,
                    generation: int = 0) -> SyncConnection:
    """Connect (TCP with TCP_NODELAY, or a unix socket path), TLS, AUTH, SELECT."""
    where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
    try:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(connect_timeout)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(address, timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_hostname=address[0])
                except BaseException:
                    sock.close()
                    raise
    except OSError as e:  # refused, unreachable, timed out, TLS handshake refused: nothing was sent
        raise RedisConnectionError(f"Error connecting to {where}: {e!r}") from e
    conn = SyncConnection(sock, where, generation)
    try:
        if password is not None or db:  # AUTH and SELECT in one round trip, bounded by the connect timeout
            cmds = [pack(["AUTH", username, password] if username else ["AUTH", password])] if password is not None \
                else []
            if db:
                cmds.append(pack(["SELECT", db]))
            for reply in conn.pipeline(cmds):
                if isinstance(reply, ResponseError):
                    raise reply
        sock.settimeout(socket_timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def discover_primary(settings: RedisSettings, tls: ssl.SSLContext | None) -> tuple[str, int]:
    """The primary's address, from the first Sentinel that knows it (SENTINEL get-master-addr-by-name)."""
    from redis.sentinel import MasterNotFoundError

    errors = []
    for host, port in sentinel_hosts(settings):
        try:
            conn = open_connection((host, port), tls=tls if settings.sentinel_tls else None,
                                   username=settings.sentinel_username, password=settings.sentinel_password, db=0,
                                   connect_timeout=settings.connect_timeout, socket_timeout=settings.socket_timeout)
        except RedisConnectionError as e:
            errors.append(f"{host}:{port}: {e}")
            continue
        try:
            reply = conn.call(pack(["SENTINEL", "get-master-addr-by-name", settings.sentinel_master]))
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as e:
            errors.append(f"{host}:{port}: {e}")
            continue
        finally:
            conn.close()
        if reply:
            return str(reply[0]), int(reply[1])
        errors.append(f"{host}:{port}: does not know {settings.sentinel_master!r}")
    raise MasterNotFoundError(f"No master found for {settings.sentinel_master!r} ({'; '.join(errors)})")


class SyncPool:
    """Connections for many threads: `get()` takes a free one or opens one, `put()` gives it back
    (a broken one, or one to a former primary, is dropped). Thread-safe and fork-safe."""

    def __init__(self, settings: RedisSettings, *, max_idle: int = 64) -> None:
        self.settings = settings
        self.target: RedisTarget = settings.target()  # the one parsed form (ConfigError if wrong)
        if settings.sentinels and not settings.sentinel_master:
            raise ConfigError("redis sentinels are set but sentinel master name is missing")
        self._tls_wanted = self.target.scheme == "rediss" or bool(settings.sentinels and (
            settings.tls_ca_file or settings.tls_cert_file or settings.tls_key_file))
        if not settings.sentinels and not self._tls_wanted and (settings.tls_ca_file or settings.tls_cert_file):
            raise ConfigError("TLS files are set but the redis url does not use rediss://")
        self._tls: ssl.SSLContext | None = None
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._free: list[SyncConnection] = []
        self._forks = _forks
        self._generation = 0  # bumped when the primary may have moved: older connections are dropped
        self._primary: tuple[str, int] | None = None
        self.closed = False

    def _tls_context(self) -> ssl.SSLContext | None:
        if self._tls is None and (self._tls_wanted or self.settings.sentinel_tls):
            self._tls = _tls_context(self.settings)
        return self._tls

    def _address(self) -> tuple[str, int] | str:
        t = self.target
        if self.settings.sentinels:
            if self._primary is None:
                self._primary = discover_primary(self.settings, self._tls_context())
            return self._primary
        if t.path is not None:
            return t.path
        assert t.host is not None and t.port is not None
        return t.host, t.port

    def open(self) -> SyncConnection:
        s, t = self.settings, self.target
        generation = self._generation
        try:
            return open_connection(self._address(), tls=self._tls_context() if self._tls_wanted else None,
                                   username=t.username, password=t.password, db=t.db,
                                   connect_timeout=s.connect_timeout, socket_timeout=s.socket_timeout,
                                   generation=generation)
        except RedisConnectionError:
            self.primary_lost(generation)
            raise

    def get(self) -> SyncConnection:
        if self._forks != _forks:
            self._after_fork()
        try:
            return self._free.pop()  # atomic (as append is): the hot path takes no lock
        except IndexError:
            pass
        if self.closed:
            raise RedisConnectionError("the client is closed")
        return self.open()

    def put(self, conn: SyncConnection) -> None:
        if conn.broken:
            self.primary_lost(conn.generation)
            return
        free = self._free
        if conn.generation != self._generation or len(free) >= self.max_idle:
            conn.close()
            return
        free.append(conn)
        if self.closed or free is not self._free:  # close(), a new primary or a fork raced with us
            with contextlib.suppress(ValueError):
                free.remove(conn)
                conn.close()

    def primary_lost(self, generation: int) -> None:
        """A connection failed (or a reply said READONLY): with Sentinel, ask for the primary again
        and drop every connection made before (they may all point at the former primary)."""
        if not self.settings.sentinels:
            return
        with self._lock:
            if generation != self._generation:
                return  # another thread already did
            self._generation += 1
            self._primary = None
            stale, self._free = self._free, []
        for c in stale:
            c.close()

    def _after_fork(self) -> None:
        """In a forked child: the inherited sockets are the parent's. Close only this process's
        descriptors (never a shutdown, nor a TLS close_notify: the parent's connections go on),
        and start with a fresh lock (the parent's may have been held by a thread that is gone)."""
        inherited, self._free = self._free, []
        self._lock = threading.Lock()
        self._forks = _forks
        for c in inherited:
            c.close()

    def close(self) -> None:
        if self._forks != _forks:
            self._after_fork()
        with self._lock:
            self.closed = True
            free, self._free = self._free, []
        for c in free:
            c.close()

    def run(self, use: Callable[[SyncConnection], Any]) -> Any:
        """`use(conn)` on a connection of this thread's own, given back after (dropped if broken)."""
        conn = self.get()
        try:
            return use(conn)
        except ReadOnlyError as e:
            self._readonly(conn, e)
            raise
        finally:
            self.put(conn)

    def evalsha(self, cmd: bytes, load: bytes) -> Any:
        """One packed EVALSHA; on NOSCRIPT, `load` (its SCRIPT LOAD) and that call once more: NOSCRIPT
        means it did not run. The hot path: no closure, one connection taken and given back."""
        conn = self.get()
        try:
            try:
                return conn.call(cmd)
            except NoScriptError:
                conn.call(load)
                return conn.call(cmd)
        except ReadOnlyError as e:
            self._readonly(conn, e)
            raise
        finally:
            self.put(conn)

    def _readonly(self, conn: SyncConnection, e: ReadOnlyError) -> None:
        """READONLY: nothing was written. With Sentinel the primary moved: raise a ConnectionError,
        as redis-py's Sentinel connections do, and the next call asks the Sentinels again."""
        if self.settings.sentinels:
            conn.broken = True
            raise RedisConnectionError(f"{conn.where} is a read-only replica now (the previous primary, after a "
                                       f"failover?): {e}") from e
