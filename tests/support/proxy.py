"""A TCP fault proxy between one client (a `corral node`) and a target port on 127.0.0.1.

docs/FAULTS.md §2: per node a proxy between the node and Redis (or ZooKeeper) with four modes:

- `pass`: bytes forwarded both ways; new connections dialled through to the target.
- `blackhole`: existing connections kept open, nothing forwarded (bytes wait, as TCP would
  retransmit them); new connections accepted and held, the target dialled only after healing.
- `reset`: existing connections closed with `SO_LINGER 0`, so both peers see RST; new
  connections accepted and reset at once.
- `delay(mean_s, jitter_s)`: each chunk delivered `mean ± jitter` seconds later (uniform,
  never negative), per direction, byte order kept; new connections as in `pass`.

Healing (`pass` after `blackhole`) delivers what was held, in order, like a partition that ends
before TCP gives up. The proxy runs its own event loop in a daemon thread, so synchronous and
async tests drive it the same way; every control call returns once the change is in effect.

    with TcpProxy(redis_server.port) as proxy:
        node = NodeProcess(..., redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        proxy.blackhole()          # partition
        proxy.reset()              # RST every connection, refuse new ones
        proxy.delay(0.075, 0.05)   # +150 ± 100 ms per round trip
        proxy.pass_through()       # heal
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal, TypeVar

from . import wait_until

__all__ = ["Mode", "TcpProxy"]

Mode = Literal["pass", "blackhole", "reset", "delay"]
Direction = Literal["up", "down"]
T = TypeVar("T")

_CHUNK = 65536
_CONTROL_TIMEOUT = 10.0


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close at once; with `rst` set SO_LINGER 0 first, so the peer gets RST instead of FIN."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: the accepted client and, once dialled, the target."""

    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[Any] | None) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task = task
        self.closed = False

    def abort(self, *, rst: bool) -> None:
        if self.closed:
            return
        self.closed = True
        _abort(self.client, rst=rst)
        if self.upstream is not None:
            _abort(self.upstream, rst=rst)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target_host`:`target_port`, with injectable faults.

    `seed` makes the delay jitter replayable. Use as a context manager or call `start()` and
    `close()`. Counters: `connections_total`, `active_connections`, `bytes_up` (client →
    target), `bytes_down`.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *,
                 listen_port: int = 0, seed: int | None = None, name: str = "proxy") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.name = name
        self._listen_port = listen_port
        self._rng = random.Random(seed)
        self._mode: Mode = "pass"
        self._delays: dict[Direction, tuple[float, float]] = {"up": (0.0, 0.0), "down": (0.0, 0.0)}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self.port = 0
        self.connections_total = 0
        self.bytes_up = 0
        self.bytes_down = 0

    # -- control (any thread) -----------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Listen on 127.0.0.1 (a free port unless `listen_port` was given) and forward."""
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"tcp-{self.name}", daemon=True)
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop listening, close every connection, stop the loop thread (bounded)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive() and loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def active_connections(self) -> int:
        """Connections currently forwarded (or held by a blackhole)."""
        return len(self._links)

    def set_mode(self, mode: Mode, *, mean_s: float = 0.0, jitter_s: float = 0.0,
                 direction: Literal["both", "up", "down"] = "both") -> None:
        """Switch mode; `mean_s`/`jitter_s` (uniform ± jitter, never negative) only for delay.

        Returns when the mode is in force: after `reset`, every existing connection has
        been reset; after `blackhole`, nothing more is forwarded.
        """
        if mode not in ("pass", "blackhole", "reset", "delay"):
            raise ValueError(f"unknown proxy mode {mode!r}")
        if mean_s < 0 or jitter_s < 0:
            raise ValueError("delay mean and jitter must be >= 0")
        self._call(self._apply(mode, mean_s, jitter_s, direction))

    def pass_through(self) -> None:
        """Heal: forward everything again (held bytes first, in order)."""
        self.set_mode("pass")

    def blackhole(self) -> None:
        """Keep sockets open and forward nothing."""
        self.set_mode("blackhole")

    def reset(self) -> None:
        """RST every connection now and every new one until the mode changes."""
        self.set_mode("reset")

    def delay(self, mean_s: float, jitter_s: float = 0.0, *,
              direction: Literal["both", "up", "down"] = "both") -> None:
        """Deliver each chunk `mean_s ± jitter_s` later in each chosen direction, order kept."""
        self.set_mode("delay", mean_s=mean_s, jitter_s=jitter_s, direction=direction)

    def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait (bounded) until at least `count` connections go through the proxy."""
        wait_until(lambda: self.active_connections >= count, timeout,
                   message=f"{count} connection(s) through {self.name} on port {self.port}")

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    # -- the loop thread ----------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self._listen_port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._abort_all(rst=False)
        if self._server is not None:
            await self._server.wait_closed()

    async def _apply(self, mode: Mode, mean_s: float, jitter_s: float, direction: str) -> None:
        assert self._flowing is not None
        self._mode = mode
        if mode == "delay":
            for d in ("up", "down"):
                if direction in ("both", d):
                    self._delays[d] = (mean_s, jitter_s)  # type: ignore[index]
        else:
            self._delays = {"up": (0.0, 0.0), "down": (0.0, 0.0)}
        if mode in ("pass", "delay"):
            self._flowing.set()
            return
        self._flowing.clear()
        if mode == "reset":
            await self._abort_all(rst=True)

    async def _abort_all(self, *, rst: bool) -> None:
        """Abort every link and wait (bounded) until their handlers have cleaned up."""
        links = list(self._links)
        for link in links:
            link.abort(rst=rst)
            if link.task is not None:
                link.task.cancel()
        tasks = [link.task for link in links if link.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _sample_delay(self, direction: Direction) -> float:
        mean, jitter = self._delays[direction]
        if mean == 0 and jitter == 0:
            return 0.0
        return max(0.0, mean + self._rng.uniform(-jitter, jitter))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            _abort(writer, rst=True)
            return
        assert self._flowing is not None
        self.connections_total += 1
        link = _Link(writer, asyncio.current_task())
        self._links.add(link)
        try:
            await self._flowing.wait()  # blackhole: hold the accepted socket, dial nothing
            try:
                up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                link.abort(rst=True)  # the target refuses: so does the proxy
                return
            if link.closed:  # reset while dialling
                _abort(up_writer, rst=True)
                return
            link.upstream = up_writer
            await self._forward(link, reader, up_reader, up_writer)
        except (asyncio.CancelledError, ConnectionError, OSError):
            link.abort(rst=True)
        finally:
            link.close()
            self._links.discard(link)

    async def _forward(self, link: _Link, client_r: asyncio.StreamReader,
                       up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(client_r, up_w, "up"))
                group.create_task(self._pipe(up_r, link.client, "down"))
        except* (ConnectionError, OSError):
            # One side reset or broke: the other side sees a reset too.
            link.abort(rst=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    direction: Direction) -> None:
        """Read chunks, stamp each with its delivery time, deliver in order; b"" is EOF."""
        assert self._flowing is not None
        flowing = self._flowing
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            last = 0.0
            while True:
                await flowing.wait()
                data = await src.read(_CHUNK)
                last = max(last, loop.time() + self._sample_delay(direction))
                queue.put_nowait((last, data))
                if not data:
                    return
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)

        async def write() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await flowing.wait()
                if not data:
                    if dst.can_write_eof() and not dst.is_closing():
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()

        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            group.create_task(write())
