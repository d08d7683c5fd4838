"""Why a connection to Redis failed at the TLS layer, in Corral's words.

Client libraries word TLS failures differently from one release to the next (redis-py 8.2 reports
a refused client certificate as "Connection closed by the server before write" when the server's
alert arrives after the client's first write), so a user-facing error must not be built from their
text. After a failed connect, Corral repeats the handshake itself with the `ssl` module, with the
same CA, client certificate and hostname check, and names what failed from the ssl exception:
certificate not trusted, hostname mismatch, handshake refused (no or unaccepted client
certificate), or no TLS at all on either side of the URL's scheme.

The probe runs only after a failure, in a thread, bounded by `timeout`; it sends one PING after
the handshake because under TLS 1.3 a server refuses a client certificate only after the
client's side of the handshake has completed.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
from urllib.parse import urlsplit

from .redis_settings import RedisSettings

# OpenSSL verify codes: X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = {62, 64}
# Alerts a server sends when it wants a client certificate, or does not accept the one it got
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "BAD_CERTIFICATE", "UNKNOWN_CA",
                       "UNSUPPORTED_CERTIFICATE", "CERTIFICATE_UNKNOWN", "ACCESS_DENIED", "CERTIFICATE_EXPIRED",
                       "DECRYPT_ERROR")


def _library_checks_hostname() -> bool:
    """Whether redis-py verifies the server's name by default (it does from 6.0 on)."""
    try:
        from redis.asyncio.connection import SSLConnection

        default = inspect.signature(SSLConnection.__init__).parameters["ssl_check_hostname"].default
        return bool(default)
    except (ImportError, KeyError, TypeError, ValueError):
        return True


def _context(ca_file: str | None, cert_file: str | None, key_file: str | None, check_hostname: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = check_hostname
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _refused(cert_file: str | None, detail: str) -> str:
    if cert_file:
        return f"TLS handshake refused by the server: it does not accept the client certificate {cert_file} ({detail})"
    return ("TLS handshake refused by the server: it requires a client certificate, and none is configured "
            f"(--redis-tls-cert-file and --redis-tls-key-file) ({detail})")


def probe_tls(host: str, port: int, *, ca_file: str | None = None, cert_file: str | None = None,
              key_file: str | None = None, check_hostname: bool = True, timeout: float = 3.0) -> str | None:
    """Handshake with host:port as a TLS client; a sentence saying what failed, or None when TLS
    works (or the server cannot be reached at all, which is not a TLS problem)."""
    for what, path in (("CA file", ca_file), ("client certificate", cert_file), ("client key", key_file)):
        if path:
            try:
                open(path, "rb").close()
            except OSError as e:
                return f"cannot read the TLS {what} {path}: {e.strerror or e}"
    try:
        ctx = _context(ca_file, cert_file, key_file, check_hostname)
    except ssl.SSLError as e:
        return f"cannot load the TLS client certificate {cert_file} with key {key_file}: {e.reason or e}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                tls.sendall(b"PING\r\n")
                if tls.recv(64):
                    return None  # any reply (+PONG, -NOAUTH): TLS is fine, the failure lies elsewhere
                return _refused(cert_file, "the server closed the connection after the handshake")
        except ssl.SSLCertVerificationError as e:
            if e.verify_code in _NAME_MISMATCH:
                return f"hostname mismatch: the server's certificate is not valid for {host} ({e.verify_message})"
            trusted_by = f"the CA file {ca_file}" if ca_file else "the system's CA certificates"
            return f"certificate not trusted: the server's certificate does not verify against {trusted_by} " \
                   f"({e.verify_message})"
        except ssl.SSLEOFError:
            return _refused(cert_file, "the server closed the connection during the handshake")
        except ssl.SSLError as e:
            reason = e.reason or str(e)
            if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
                return _refused(cert_file, reason.lower().replace("_", " "))
            if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
                return f"no TLS on {host}:{port}: the server did not answer the TLS handshake (a plain-text port?)"
            return f"TLS handshake with {host}:{port} failed ({reason})"
        except TimeoutError:
            return f"no TLS on {host}:{port}: no answer to the TLS handshake within {timeout:g}s (a plain-text port?)"
        except OSError as e:  # reset or EOF during the handshake
            return _refused(cert_file, f"the connection was closed during the handshake: {e.strerror or e}")


def probe_plain_port_speaks_tls(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when host:port completes a TLS handshake (certificates unchecked): a redis:// URL that
    should have been rediss://."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, ctx.wrap_socket(sock):
            return True
    except (OSError, ssl.SSLError):
        return False


def _not_tls_related(error: BaseException | None) -> bool:
    """The server answered (an error reply, still loading), or nothing listens: TLS worked or was
    never reached, and a probe would only add noise to the server's log."""
    from .redis_errors import BusyLoadingError, ResponseError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ResponseError, BusyLoadingError, ConnectionRefusedError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def explain_tls_failure(settings: RedisSettings, error: BaseException | None = None,
                              handshake_timeout: float = 3.0) -> str | None:
    """After a failed connect with `settings` (`error`: what the client raised): what failed at
    the TLS layer, or None. Only for a URL that names the server (a Sentinel-managed primary's
    address is not known here)."""
    if settings.sentinels or not settings.url.startswith(("redis://", "rediss://")) or _not_tls_related(error):
        return None
    parts = urlsplit(settings.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if parts.scheme == "rediss":
        return await asyncio.to_thread(
            probe_tls, host, port, ca_file=settings.tls_ca_file, cert_file=settings.tls_cert_file,
            key_file=settings.tls_key_file, check_hostname=_library_checks_hostname(), timeout=handshake_timeout)
    if await asyncio.to_thread(probe_plain_port_speaks_tls, host, port, min(handshake_timeout, 1.0)):
        return f"the server at {host}:{port} speaks TLS: use a rediss:// URL (and --redis-tls-ca-file)"
    return None
