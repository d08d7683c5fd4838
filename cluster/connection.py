"""Building Redis clients from a URL (and Sentinel settings), with timeouts that never hang.

Every client decodes replies as UTF-8 with `surrogateescape`, so a job written with invalid
UTF-8 by another producer still round-trips byte for byte instead of breaking the reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from .errors import ConfigError


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis. `url` may be redis://, rediss:// or unix://; with `sentinels`
    (host:port list) and `sentinel_master`, the primary is looked up through Sentinel and
    followed after a failover."""

    url: str = "redis://127.0.0.1:6379/0"
    password: str | None = None
    username: str | None = None
    sentinels: tuple[str, ...] = ()
    sentinel_master: str | None = None
    # The Sentinels' own credentials and TLS (bitnami/redis protects them like the primary):
    # sentinel_tls uses the tls_* files below, as the primary's TLS does.
    sentinel_password: str | None = None
    sentinel_username: str | None = None
    sentinel_tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0

    def target(self) -> str:
        """What errors and logs name as the Redis reached: the redacted URL, or with Sentinel
        `sentinel://host:port,host:port/<master>` (the URL is not used then)."""
        if self.sentinels:
            scheme = "sentinels" if self.sentinel_tls else "sentinel"
            return f"{scheme}://{','.join(self.sentinels)}/{self.sentinel_master or ''}"
        return self.redacted_url()

    def redacted_url(self) -> str:
        """The URL with any password replaced, safe for logs and /status."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password:
            user = parts.username or ""
            netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url


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
    if settings.password is not None:
        kw["password"] = settings.password
    if settings.username is not None:
        kw["username"] = settings.username
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
        sentinel = Sentinel(sentinel_hosts(settings), sentinel_kwargs=sentinel_kw, **kw)
        master: Redis = sentinel.master_for(settings.sentinel_master)
        return master
    if not settings.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis url {settings.redacted_url()!r} must start with redis://, rediss:// or unix://")
    if tls:
        if not settings.url.startswith("rediss://"):
            raise ConfigError("TLS files are set but the redis url does not use rediss://")
        kw.update(tls)
    return Redis.from_url(settings.url, **kw)
