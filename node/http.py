"""The node's HTTP endpoints on its own event loop: small, read-only, bounded.

A deliberately tiny HTTP/1.1 server (GET and HEAD only, one request per connection, request
line and headers capped, 5 s read timeout) so that serving `/metrics`, `/healthz`, `/readyz`,
`/leader` and `/status` needs no framework and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("corral.http")

Response = tuple[int, str, bytes]
Handler = Callable[[], Awaitable[Response]]
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 409: "Conflict", 413: "Content Too Large", 414: "URI Too Long",
           415: "Unsupported Media Type", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}
MAX_LINE = 8192
MAX_HEADERS = 100
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


def json_response(status: int, obj: Any) -> Response:
    return status, "application/json", (json.dumps(obj, sort_keys=True) + "\n").encode()


class HttpServer:
    def __init__(self, routes: dict[str, Handler], host: str, port: int) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None
        self.mounts: dict[str, MountedHandler] = {}

    def mount(self, prefix: str, handler: MountedHandler) -> None:
        """Serve every path under `prefix` (e.g. "/ui/") with `handler`, which also gets POST
        requests (with their headers and a body of at most 64 KB); the other routes stay read-only."""
        self.mounts[prefix] = handler

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE * 2,
                                                 reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body, head_only = await asyncio.wait_for(self._handle(reader, writer), 5.0)
        except TimeoutError:
            status, ctype, body, head_only = 408, "text/plain", b"request timeout\n", False
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        try:
            header = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
                      f"{SECURITY_HEADERS}\r\n")
            writer.write(header.encode() + (b"" if head_only else body))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter | None = None) -> tuple[int, str, bytes, bool]:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            return 414, "text/plain", b"request line too long\n", False
        except asyncio.IncompleteReadError:
            raise
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request line\n", False
        method, target, _ = parts
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            try:
                h = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                return 431, "text/plain", b"header too long\n", False
            if h in (b"\r\n", b"\n"):
                break
            name, _sep, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            return 431, "text/plain", b"too many headers\n", False
        mounted = next((h for p, h in self.mounts.items() if target.startswith(p) or target == p.rstrip("/")), None)
        if mounted is not None:
            peer = writer.get_extra_info("peername") if writer is not None else None
            return await self._mounted(mounted, Request(method, target, "", headers, peer=str(peer[0]) if peer else None),
                                       reader)
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"read-only endpoints: GET or HEAD\n", False
        path = target.split("?", 1)[0]
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
