"""The node's HTTP endpoints on its own event loop: small, read-only, bounded.

A deliberately tiny HTTP/1.1 server (GET and HEAD only, one request per connection) so that
serving `/metrics`, `/healthz`, `/readyz`, `/leader` and `/status` needs no framework and never
blocks the loop. Bounded against slow or hostile clients, so that probes keep answering:
- at most `MAX_CONNECTIONS` open connections (and at most a quarter of the process's open-files
  limit); a new connection beyond that closes the oldest one still sending its request, so a
  flood of idle connections cannot keep a probe (which sends its request at once) out;
- the request line and headers must arrive within `HEADER_TIMEOUT` seconds, each line within
  `MAX_LINE` bytes and all of them within `MAX_HEADER_BYTES` (else 414 / 431);
- a client that does not read its response within `WRITE_TIMEOUT` is dropped.
Mounted prefixes (the dashboard at `/ui/`, node/ui) are the one exception to read-only: their
handler gets the request's headers and a POST body of at most `MAX_MOUNTED_BODY` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger("corral.http")

Response = tuple[int, str, bytes]
Handler = Callable[[], Awaitable[Response]]
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 409: "Conflict", 413: "Content Too Large", 414: "URI Too Long",
           415: "Unsupported Media Type", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}
MAX_LINE = 8192
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16384
MAX_CONNECTIONS = 256
HEADER_TIMEOUT = 2.0
HANDLER_TIMEOUT = 10.0
WRITE_TIMEOUT = 5.0
BACKLOG = 1024
MAX_MOUNTED_BODY = 64 * 1024
# every response: no sniffing, no framing, no referrer, nothing loaded from elsewhere (the dashboard's pages)
SECURITY_HEADERS = ("X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
                    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                    "base-uri 'none'; form-action 'self'\r\n")


@dataclass
class Request:
    """What a mounted prefix handler (the dashboard, node/ui) sees of a request."""

    method: str
    path: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    peer: str | None = None


MountedHandler = Callable[[Request], Awaitable[Response]]


def connection_cap() -> int:
    """MAX_CONNECTIONS, or a quarter of the open-files limit if that is lower: the node's Redis
    connections, task files and pools need the rest."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(8, min(MAX_CONNECTIONS, soft // 4))


def json_response(status: int, obj: Any) -> Response:
    return status, "application/json", (json.dumps(obj, sort_keys=True) + "\n").encode()


class _Reply(NamedTuple):
    status: int
    ctype: str
    body: bytes
    head_only: bool


class _Conn:
    __slots__ = ("reading", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.reading = True  # still receiving its request: first to go when the server is full


class HttpServer:
    def __init__(self, routes: dict[str, Handler], host: str, port: int) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None
        self.cap = connection_cap()
        self.open: dict[int, _Conn] = {}  # insertion order = age
        self.evicted = 0
        self.mounts: dict[str, MountedHandler] = {}

    def mount(self, prefix: str, handler: MountedHandler) -> None:
        """Serve every path under `prefix` (e.g. "/ui/") with `handler`, which also gets POST
        requests (with their headers and a body of at most 64 KB); the other routes stay read-only."""
        self.mounts[prefix] = handler

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE * 2,
                                                 reuse_address=True, backlog=BACKLOG)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in list(self.open.values()):
                conn.writer.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    def _make_room(self) -> None:
        """At the cap: close the oldest connection still sending its request (else the oldest)."""
        while len(self.open) >= self.cap:
            victim = next((k for k, c in self.open.items() if c.reading), next(iter(self.open)))
            self.open.pop(victim).writer.transport.abort()
            self.evicted += 1
            if self.evicted in (1, 100) or self.evicted % 10000 == 0:
                log.warning("http: %d connections open (the cap): closed the oldest slow one (%d so far)",
                            self.cap, self.evicted, extra={"event": "http_connection_evicted"})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._make_room()
        conn = _Conn(writer)
        self.open[id(conn)] = conn
        try:
            await self._exchange(reader, writer, conn)
        finally:
            self.open.pop(id(conn), None)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                request = await self._read_request(reader)
            conn.reading = False
            if isinstance(request, _Reply):
                status, ctype, body, head_only = request
            else:
                method, target, headers = request
                mounted = next((h for p, h in self.mounts.items() if target.startswith(p) or target == p.rstrip("/")),
                               None)
                async with asyncio.timeout(HANDLER_TIMEOUT):
                    if mounted is not None:
                        peer = writer.get_extra_info("peername")
                        req = Request(method, target, "", headers, peer=str(peer[0]) if peer else None)
                        status, ctype, body, head_only = await self._mounted(mounted, req, reader)
                    else:
                        status, ctype, body, head_only = await self._respond(method, target.split("?", 1)[0])
        except TimeoutError:
            status, ctype, body, head_only = 408, "text/plain", b"request timeout\n", False
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        conn.reading = False
        try:
            header = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
                      f"{SECURITY_HEADERS}\r\n")
            writer.write(header.encode() + (b"" if head_only else body))
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except (ConnectionError, OSError, TimeoutError):
            writer.transport.abort()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | _Reply:
        """(method, target, headers with lower-case names) of a well-formed request, or the error
        response to send."""
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            return _Reply(414, "text/plain", b"request line too long\n", False)
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _Reply(400, "text/plain", b"bad request line\n", False)
        method, target, _ = parts
        total = 0
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            try:
                h = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                return _Reply(431, "text/plain", b"header too long\n", False)
            total += len(h)
            if total > MAX_HEADER_BYTES:
                return _Reply(431, "text/plain", b"headers too large\n", False)
            if h in (b"\r\n", b"\n"):
                break
            name, _sep, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            return _Reply(431, "text/plain", b"too many headers\n", False)
        return method, target, headers

    async def _respond(self, method: str, path: str) -> tuple[int, str, bytes, bool]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"read-only endpoints: GET or HEAD\n", False
        handler = self.routes.get(path)
        if handler is None:
            return 404, "text/plain", f"no such path; try {', '.join(sorted(self.routes))}\n".encode(), False
        try:
            status, ctype, body = await handler()
        except Exception as e:
            log.exception("http: handler for %s failed", path)
            status, ctype, body = json_response(500, {"error": type(e).__name__})
        return status, ctype, body, method == "HEAD"

    async def _mounted(self, handler: MountedHandler, req: Request,
                       reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        req.path, _, req.query = req.path.partition("?")
        if req.method == "POST":
            try:
                length = int(req.headers.get("content-length", "0"))
            except ValueError:
                return 400, "text/plain", b"bad Content-Length\n", False
            if length < 0 or length > MAX_MOUNTED_BODY:
                return 413, "text/plain", f"body over {MAX_MOUNTED_BODY} bytes\n".encode(), False
            req.body = await reader.readexactly(length)
        try:
            status, ctype, out = await handler(req)
        except Exception as e:
            log.exception("http: handler for %s failed", req.path)
            status, ctype, out = json_response(500, {"error": type(e).__name__})
        return status, ctype, out, req.method == "HEAD"
