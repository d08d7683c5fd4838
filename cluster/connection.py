"""Building redis-py clients from the settings (and Sentinel), with timeouts that never hang.

Every client decodes replies as UTF-8 with `surrogateescape`, so a job written with invalid
UTF-8 by another producer still round-trips byte for byte instead of breaking the reader.
The settings and their parsing live in `cluster/redis_settings.py` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio.client import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from .errors import ConfigError
from .redis_errors import ConnectionError as RedisConnectionError
from .redis_settings import RedisSettings, RedisTarget, parse_target, redact_url

__all__ = ["RedisSettings", "RedisTarget", "close_redis", "make_redis", "parse_target", "redact_url",
           "sentinel_connection_kwargs", "sentinel_hosts"]


async def close_redis(redis: Redis) -> None:
    """Close a client and, for a Sentinel-managed one, the Sentinel connections behind it."""
    await redis.aclose()
    manager = getattr(redis.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def _common(settings: RedisSettings, socket_timeout: float | None) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "surrogateescape",
        "socket_timeout": settings.socket_timeout if socket_timeout is None else socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "socket_keepalive": True,
        "retry_on_timeout": False,
    }
    target = settings.target()
    kw["db"] = target.db
    if target.password is not None:
        kw["password"] = target.password
    if target.username is not None:
        kw["username"] = target.username
    return kw


def sentinel_hosts(settings: RedisSettings) -> list[tuple[str, int]]:
    hosts = []
    for h in settings.sentinels:
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"sentinel address {h!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def sentinel_connection_kwargs(settings: RedisSettings, common: dict[str, Any] | None = None,
                               tls: dict[str, str] | None = None) -> dict[str, Any]:
    """Connection options for the Sentinels themselves: timeouts, their own user and password
    (never the primary's), and TLS with the same CA/client files when `sentinel_tls`."""
    common = common if common is not None else _common(settings, None)
    kw = {k: v for k, v in common.items() if k in ("socket_timeout", "socket_connect_timeout")}
    if settings.sentinel_password is not None:
        kw["password"] = settings.sentinel_password
    if settings.sentinel_username is not None:
        kw["username"] = settings.sentinel_username
    if settings.sentinel_tls:
        kw["ssl"] = True
        kw.update(tls if tls is not None else _tls_files(settings))
    return kw


def _tls_files(settings: RedisSettings) -> dict[str, str]:
    tls = {}
    if settings.tls_ca_file:
        tls["ssl_ca_certs"] = settings.tls_ca_file
    if settings.tls_cert_file:
        tls["ssl_certfile"] = settings.tls_cert_file
    if settings.tls_key_file:
        tls["ssl_keyfile"] = settings.tls_key_file
    return tls


def transport_reset(e: BaseException) -> bool:
    """uvloop's error for I/O on a transport the peer reset: RuntimeError("unable to perform
    operation on <TCPTransport closed=True ...>; the handler is closed")."""
    return type(e) is RuntimeError and str(e).startswith("unable to perform operation on")


class _ResetIsConnectionError(AbstractConnection):
    """redis-py lets uvloop's RuntimeError on a reset transport through; here it becomes the
    ConnectionError it is, so retry loops catch a lost link by its kind (`REDIS_FAILURES`) and a
    RuntimeError from a bug is never taken for one. (redis-py already dropped the connection.)"""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as e:
            if not transport_reset(e):
                raise
            raise RedisConnectionError(f"Redis connection reset: {e}") from e

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except RuntimeError as e:
            if not transport_reset(e):
                raise
            raise RedisConnectionError(f"Redis connection reset: {e}") from e


class TcpConnection(_ResetIsConnectionError, Connection):
    pass


class TlsConnection(_ResetIsConnectionError, SSLConnection):
    pass


class UnixConnection(_ResetIsConnectionError, UnixDomainSocketConnection):
    pass


class SentinelTcpConnection(_ResetIsConnectionError, SentinelManagedConnection):
    pass


class SentinelTlsConnection(_ResetIsConnectionError, SentinelManagedSSLConnection):
    pass


def make_redis(settings: RedisSettings, *, socket_timeout: float | None = None, max_connections: int | None = None) -> Redis:
    """A client for the configured primary. ``make_redis(RedisSettings("redis://127.0.0.1:6379/0"))``"""
    kw = _common(settings, socket_timeout)
    if max_connections:
        kw["max_connections"] = max_connections
    tls = _tls_files(settings)
    if settings.sentinels:
        if not settings.sentinel_master:
            raise ConfigError("redis sentinels are set but sentinel master name is missing")
        sentinel_kw = sentinel_connection_kwargs(settings, kw, tls)
        if settings.url.startswith("rediss://") or tls:
            kw["ssl"] = True
            kw.update(tls)
        kw["connection_class"] = SentinelTlsConnection if kw.get("ssl") else SentinelTcpConnection
        sentinel = Sentinel(sentinel_hosts(settings), sentinel_kwargs=sentinel_kw, **kw)
        master: Redis = sentinel.master_for(settings.sentinel_master)
        return master
    target = settings.target()
    if tls:
        if target.scheme != "rediss":
            raise ConfigError("TLS files are set but the redis url does not use rediss://")
        kw.update(tls)
    # built from the parsed target, not from the URL: the fast path (rawconn) reads the same one.
    # A pool made as `Redis.from_url` makes it (no retries: a retried script could run twice).
    if target.scheme == "unix":
        pool = ConnectionPool(connection_class=UnixConnection, path=target.path, **kw)
    else:
        pool = ConnectionPool(connection_class=TlsConnection if target.scheme == "rediss" else TcpConnection,
                              host=target.host, port=target.port, **kw)
    return Redis.from_pool(pool)
