"""The fault proxy of tests/support/proxy.py against a tiny threaded echo server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support import free_port, wait_until
from tests.support.proxy import TcpProxy


class EchoServer:
    """Echoes every byte back; counts connections, clean EOFs and resets it saw."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.eofs = 0
        self.resets = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            self.eofs += 1
            conn.shutdown(socket.SHUT_WR)
        except ConnectionResetError:
            self.resets += 1
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    with TcpProxy(echo.port, seed=7, name="test") as p:
        yield p


def connect(proxy: TcpProxy, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - start


def test_pass_forwards_both_ways(proxy: TcpProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        big = bytes(range(256)) * 4096  # 1 MiB, several chunks and drains
        sock.sendall(big)
        assert recv_exactly(sock, len(big)) == big
        assert proxy.bytes_up == proxy.bytes_down == len(big)
    assert proxy.connections_total == 1
    assert echo.accepted == 1
    wait_until(lambda: proxy.active_connections == 0, 5, message="the link to close")


def test_half_close_is_forwarded(proxy: TcpProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 10) == b"last words"
        assert sock.recv(10) == b""  # the echo server closed after seeing our EOF
    wait_until(lambda: echo.eofs == 1, 5, message="the echo server to see EOF")


def test_blackhole_holds_bytes_then_heals_in_order(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        round_trip(sock)
        proxy.blackhole()
        assert proxy.mode == "blackhole"
        sock.sendall(b"one ")
        sock.sendall(b"two")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)  # nothing forwarded, and the socket is still open (no EOF, no RST)
        proxy.pass_through()
        sock.settimeout(5)
        assert recv_exactly(sock, 7) == b"one two"


def test_blackhole_holds_new_connections_without_dialling(proxy: TcpProxy, echo: EchoServer) -> None:
    proxy.blackhole()
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert echo.accepted == 0
        assert proxy.active_connections == 1
        proxy.pass_through()
        sock.settimeout(5)
        assert recv_exactly(sock, 5) == b"hello"
        assert echo.accepted == 1


def test_reset_sends_rst_to_both_peers_and_refuses_new_connections(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    with connect(proxy) as sock:
        round_trip(sock)
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
    wait_until(lambda: echo.resets == 1, 5, message="the target to see RST")
    assert proxy.active_connections == 0

    with pytest.raises(ConnectionResetError), connect(proxy) as sock:  # the reset may beat connect()
        sock.sendall(b"x")
        sock.recv(10)
    assert echo.accepted == 1  # the reset connection never reached the target

    proxy.pass_through()
    with connect(proxy) as sock:
        round_trip(sock)


def test_reset_also_releases_held_blackhole_connections(proxy: TcpProxy) -> None:
    proxy.blackhole()
    with connect(proxy) as sock:
        wait_until(lambda: proxy.active_connections == 1, 5, message="the held connection")
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_delay_adds_latency_in_each_direction(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock) < 0.1
        proxy.delay(0.1)
        rtt = round_trip(sock)
        assert 0.2 <= rtt < 1.0, rtt  # 0.1 s up + 0.1 s down; loose upper bound for 2 busy cores
        proxy.delay(0.15, direction="up")
        rtt = round_trip(sock)
        assert 0.15 <= rtt < 0.3 + 0.5, rtt  # only the way up is slow now
        proxy.pass_through()
        assert round_trip(sock) < 0.1


def test_delay_with_jitter_keeps_byte_order(proxy: TcpProxy) -> None:
    proxy.delay(0.01, 0.01)
    messages = [f"{i:04d};".encode() for i in range(300)]
    with connect(proxy) as sock:
        for m in messages:
            sock.sendall(m)
        expected = b"".join(messages)
        assert recv_exactly(sock, len(expected)) == expected


def test_target_down_resets_the_client() -> None:
    with TcpProxy(free_port(), name="nowhere") as p, pytest.raises((ConnectionResetError, EOFError)), \
            connect(p) as sock:  # the reset may arrive before connect() returns
        sock.sendall(b"x")
        recv_exactly(sock, 1)


def test_close_ends_connections_and_frees_the_port(echo: EchoServer) -> None:
    p = TcpProxy(echo.port).start()
    port = p.port
    sock = connect(p)
    try:
        round_trip(sock)
        p.close()
        with pytest.raises((ConnectionResetError, EOFError)):
            sock.sendall(b"x")
            recv_exactly(sock, 1)
    finally:
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_listen_port_can_be_chosen(echo: EchoServer) -> None:
    port = free_port()
    with TcpProxy(echo.port, listen_port=port) as p, connect(p) as sock:
        assert p.port == port
        round_trip(sock)


def test_unknown_mode_is_rejected(proxy: TcpProxy) -> None:
    with pytest.raises(ValueError, match="unknown proxy mode"):
        proxy.set_mode("drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        proxy.delay(-1)


async def test_async_clients_use_the_same_proxy(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"async hello")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(11), 5) == b"async hello"
        proxy.blackhole()  # control calls are synchronous and quick, fine from a coroutine
        writer.write(b"?")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        proxy.pass_through()
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"?"
    finally:
        writer.close()
        await writer.wait_closed()
