"""The node's HTTP server under a connection flood (docs/INTERFACE.md §3: probes must keep answering).

1,500 clients connect to a real `corral node` (started with the common 1,024 open-files limit)
and send half a request line, then nothing; others trickle their headers a byte at a time or
send oversized headers. Meanwhile `/healthz` probes on fresh connections must all answer 200
within 100 ms each. Bounded: 1,500 sockets, 30 probes, ~10 s.
"""

from __future__ import annotations

import resource
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support.nodes import NodeCluster

FLOOD = 1500
PROBES = 30
PROBE_BUDGET = 0.1


def _probe(port: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return time.perf_counter() - t0, int(data.split(b" ", 2)[1]) if data else 0


def test_probes_answer_within_100ms_with_1500_slow_connections_open(node_cluster: NodeCluster,
                                                                     tmp_path: Path) -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("needs prlimit (util-linux) to give the node a 1,024 open-files limit")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD + 200:
        pytest.skip(f"the test process may open only {hard} files")
    node = node_cluster.add("flood", queues="default", scheduler=False,
                            command=["prlimit", "--nofile=1024:1024", sys.executable, "-m", "node"])
    node.wait_ready(30)
    port = node.http_port
    assert _probe(port)[1] == 200
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, FLOOD + 500) if hard != resource.RLIM_INFINITY
                                                else FLOOD + 500, hard))
    socks: list[socket.socket] = []
    try:
        for i in range(FLOOD):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            socks.append(s)
            if i % 100 == 99:
                time.sleep(0.01)  # let the node accept: a flood, not a SYN storm
        time.sleep(0.3)
        for s in socks:
            try:
                s.send(b"GET /healthz HTTP/1.1\r\nX-Slow: ")  # and never the rest
            except OSError:
                pass  # closed by the server already: that is allowed
        timings = []
        for _ in range(PROBES):
            took, status = _probe(port)
            timings.append(took)
            assert status == 200
            time.sleep(0.02)
        worst = max(timings)
        print(f"\n{FLOOD} slow connections: {PROBES} /healthz probes, worst {worst * 1000:.1f} ms, "
              f"median {sorted(timings)[PROBES // 2] * 1000:.1f} ms")
        assert worst < PROBE_BUDGET, f"a probe took {worst * 1000:.0f} ms"
        # oversized headers are refused, not buffered
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 431")
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert node.running
