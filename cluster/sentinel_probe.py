"""Why the primary could not be found through Sentinel, sentinel by sentinel, in Corral's words.

redis-py's Sentinel client tries every Sentinel, swallows each one's error and reports only
"No master found for 'mymaster'", which says nothing of a refused password or a TLS problem.
After such a failure Corral asks each Sentinel itself, with the same user, password and TLS
settings: PING, then SENTINEL GET-MASTER-ADDR-BY-NAME.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio.client import Redis

from .connection import RedisSettings, sentinel_connection_kwargs, sentinel_hosts
from .redis_errors import AuthenticationError, RedisError, ResponseError
from .tls_probe import probe_plain_port_speaks_tls, probe_tls

_AUTH_WORDS = ("NOAUTH", "WRONGPASS", "invalid password", "invalid username-password", "Authentication required")


@dataclass(frozen=True)
class SentinelDiagnosis:
    """`reason` names the Sentinel and what failed; `permanent` when retrying cannot help
    (credentials, TLS), as opposed to a Sentinel that is down or has no primary yet."""

    reason: str
    permanent: bool


def _auth_refused(settings: RedisSettings, addr: str) -> SentinelDiagnosis:
    if settings.sentinel_password is None:
        why = "it requires a password and none is configured for the Sentinels (--redis-sentinel-password)"
    else:
        who = f"user {settings.sentinel_username!r}" if settings.sentinel_username else "the default user"
        why = f"wrong Sentinel password for {who} (--redis-sentinel-password, --redis-sentinel-username)"
    return SentinelDiagnosis(f"Sentinel {addr} refused authentication: {why}", True)


async def _ask(settings: RedisSettings, host: str, port: int) -> SentinelDiagnosis | None:
    addr = f"{host}:{port}"
    client = Redis(host=host, port=port, **sentinel_connection_kwargs(settings))
    try:
        await client.ping()
        found = await client.sentinel_get_master_addr_by_name(settings.sentinel_master)
        if not found:
            return SentinelDiagnosis(f"Sentinel {addr} monitors no primary named {settings.sentinel_master!r}", False)
        return None
    except AuthenticationError:
        return _auth_refused(settings, addr)
    except ResponseError as e:
        if any(w.lower() in str(e).lower() for w in _AUTH_WORDS):
            return _auth_refused(settings, addr)
        return SentinelDiagnosis(f"Sentinel {addr} answered with an error: {e}", False)
    except (RedisError, OSError) as e:
        if settings.sentinel_tls:
            tls = await asyncio.to_thread(probe_tls, host, port, ca_file=settings.tls_ca_file,
                                          cert_file=settings.tls_cert_file, key_file=settings.tls_key_file)
            if tls:
                return SentinelDiagnosis(f"Sentinel {addr}: {tls}", True)
        elif await asyncio.to_thread(probe_plain_port_speaks_tls, host, port):
            return SentinelDiagnosis(f"Sentinel {addr} speaks TLS: set --redis-sentinel-tls", True)
        return SentinelDiagnosis(f"Sentinel {addr} unreachable: {type(e).__name__}: {e}", False)
    finally:
        await client.aclose()


async def explain_sentinel_failure(settings: RedisSettings) -> SentinelDiagnosis | None:
    """After a failed connect through Sentinel: what the Sentinels say, or None when at least one
    of them works and names the primary (the failure is then the primary's, not theirs)."""
    if not settings.sentinels or not settings.sentinel_master:
        return None
    found = [await _ask(settings, host, port) for host, port in sentinel_hosts(settings)]
    if any(d is None for d in found):
        return None
    problems = [d for d in found if d is not None]
    return SentinelDiagnosis("; ".join(d.reason for d in problems), any(d.permanent for d in problems))
