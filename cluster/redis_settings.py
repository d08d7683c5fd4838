"""Where and as whom to reach Redis: the settings (URL, credentials, Sentinel, TLS files, timeouts),
their one parsed form (`RedisTarget`) and the redaction of secrets for logs.

No Redis client here: redis-py's clients are built in `cluster/connection.py`, the RESP clients of
`cluster/rawconn.py` and `cluster/resp.py` from the same parsed target. The leader process imports
this without redis-py.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def shown(self) -> str:
        """What errors and logs name as the Redis reached: the redacted URL, or with Sentinel
        `sentinel://host:port,host:port/<master>` (the URL is not used then)."""
        if self.sentinels:
            scheme = "sentinels" if self.sentinel_tls else "sentinel"
            return f"{scheme}://{','.join(self.sentinels)}/{self.sentinel_master or ''}"
        return self.redacted_url()

    def redacted_url(self) -> str:
        """The URL with every secret replaced by ***, safe for logs, /status and errors."""
        return redact_url(self.url)

    def target(self) -> RedisTarget:
        """The one parsed form of these settings that every connection is built from (redis-py
        and the fast path alike). Raises ConfigError naming what is wrong."""
        return parse_target(self)


# Query keys a redis URL may carry. Everything else is refused: redis-py would pass it on as a
# connection option the fast path never sees, so the two could end up talking differently.
URL_QUERY_KEYS = ("db", "password", "username")
# Query keys whose values are never shown (redact_url).
SECRET_WORDS = ("pass", "pwd", "secret", "token", "auth", "key", "credential")


@dataclass(frozen=True)
class RedisTarget:
    """Where and as whom to connect: host and port (redis://, rediss://) or a socket path (unix://),
    database, credentials (from the URL's user info or query, or from the settings)."""

    scheme: str
    host: str | None
    port: int | None
    path: str | None
    db: int
    username: str | None
    password: str | None


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in SECRET_WORDS)


def redact_url(url: str) -> str:
    """``redact_url("redis://u:pw@h:6379/0?password=x")`` -> ``"redis://u:***@h:6379/0?password=***"``.
    A URL that does not parse cleanly shows only its scheme: a stray '@' or ':' must not leak."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    scheme = url.partition("://")[0] if "://" in url else "redis"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return f"{scheme}://***"
    if "@" in parts.path + parts.fragment or ("@" in url and "@" not in parts.netloc):
        return f"{scheme}://***"  # an unencoded '/', '?' or '#' in a password split the URL elsewhere
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _pw = userinfo.partition(":")
        netloc = (f"{user}:***@" if colon else "***@") + hostport
    query = parts.query
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return f"{parts.scheme}://{netloc}{parts.path}?***"
        query = urlencode([(k, "***" if _is_secret_key(k) else v) for k, v in pairs], safe="*")
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + \
        (f"#{parts.fragment}" if parts.fragment else "")


def _one(kind: str, given: dict[str, str | None], shown: str) -> str | None:
    """One value that may be given in several places: all that are given must agree."""
    values = {where: v for where, v in given.items() if v is not None}
    if len(set(values.values())) > 1:
        raise ConfigError(f"the Redis {kind} is given more than once ({' and '.join(values)} of {shown}): "
                          f"give it once, either in redis_url or in redis_{kind}, not both")
    return next(iter(values.values()), None)


def parse_target(settings: RedisSettings) -> RedisTarget:
    from urllib.parse import parse_qs, unquote, urlsplit

    url, shown = settings.url, settings.redacted_url()
    if not url.lower().startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis url {shown!r} must start with redis://, rediss:// or unix://")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"redis url {shown!r}: {e}") from None
    scheme = parts.scheme.lower()
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"redis url {shown!r}: malformed query string") from None
    for key, values in query.items():
        if key not in URL_QUERY_KEYS:
            raise ConfigError(f"redis url {shown!r}: unsupported option {key!r} (a redis url may carry "
                              f"{', '.join(URL_QUERY_KEYS)}; timeouts and TLS have their own settings)")
        if len(values) > 1:
            raise ConfigError(f"redis url {shown!r}: {key!r} is given {len(values)} times")
    q = {k: v[0] for k, v in query.items()}
    url_user = unquote(parts.username) if parts.username else None
    url_password = unquote(parts.password) if parts.password else None
    username = _one("username", {"the url's user info": url_user, "the url's ?username=": q.get("username"),
                                 "redis_username": settings.username}, shown)
    password = _one("password", {"the url's user info": url_password, "the url's ?password=": q.get("password"),
                                 "redis_password": settings.password}, shown)
    # the database: ?db= wins over the path, as in redis-py, so a producer using redis-py's
    # from_url with the same URL writes the very database Corral works
    path_db = unquote(parts.path).strip("/") if scheme != "unix" else ""
    db_text = q.get("db", path_db) or "0"
    if not db_text.isdigit():
        raise ConfigError(f"redis url {shown!r}: the database must be a number >= 0, got {db_text!r}")
    db = int(db_text)
    if scheme == "unix":
        if not parts.path:
            raise ConfigError(f"redis url {shown!r}: a unix:// url needs a socket path")
        return RedisTarget(scheme, None, None, unquote(parts.path), db, username, password)
    if not parts.hostname:
        raise ConfigError(f"redis url {shown!r} has no host")
    return RedisTarget(scheme, unquote(parts.hostname), port or 6379, None, db, username, password)

