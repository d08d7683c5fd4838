"""Test support shared by every suite: ports, bounded waits, HTTP, the skip-or-fail rule.

The servers (`servers.py`), the TCP fault proxy (`proxy.py`) and the `corral node` processes
(`nodes.py`) build on these. Fixtures that hand them out live in `tests/conftest.py`.

    port = free_port()
    wait_until(lambda: server.ping(), timeout=5, message="redis answers PING")
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

__all__ = [
    "REPO_ROOT",
    "WaitTimeout",
    "free_port",
    "http_get",
    "in_ci",
    "missing",
    "wait_until",
    "wait_until_async",
]

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]

_handed_out: set[int] = set()

# Loopback only: never route through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def in_ci() -> bool:
    """True when the `CI` environment variable is set (to anything but an explicit no).

        if in_ci(): ...   # CI=true in the CI run, unset on a developer's machine
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Skip the test because something it needs is missing; fail instead under CI.

    House rule 11 (docs/ARCHITECTURE.md): a missing server is a skip on a developer's machine, a failure in CI, where
    `scripts/install-test-deps.sh` must have installed it.

        if shutil.which("redis-server") is None:
            missing("redis-server is not installed")
    """
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping; "
                    "scripts/install-test-deps.sh should have installed it)", pytrace=False)
    pytest.skip(f"{reason} (run scripts/install-test-deps.sh)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, never the same twice per process.

        port = free_port()   # e.g. 41873
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port found in 100 tries")


class WaitTimeout(AssertionError):
    """`wait_until` ran out of time; the message says what was awaited and the last outcome."""


def _describe(message: str | None, predicate: object) -> str:
    if message:
        return message
    return getattr(predicate, "__qualname__", None) or repr(predicate)


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    *,
    message: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns something truthy and return that; bounded by `timeout`.

    Exceptions of the types in `ignore` count as "not yet". On timeout raises `WaitTimeout`
    naming `message` (or the predicate), the elapsed time and the last value or exception.
    Tests await events this way instead of sleeping.

        leader = wait_until(lambda: cluster.current_leader(), timeout=10, message="a leader")
    """
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {time.monotonic() - start:.2f}s waiting for "
                              f"{_describe(message, predicate)}; last outcome: {last!r}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,  # noqa: ASYNC109 (a bounded poll, not a cancellation scope)
    interval: float = 0.02,
    *,
    message: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`wait_until` for async tests: `predicate` may be a plain or an async function.

        await wait_until_async(lambda: client.length("default"), timeout=5, message="a job")
    """
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    last: object = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except ignore as exc:
            last = exc
        else:
            if value:
                return value  # type: ignore[return-value]
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {time.monotonic() - start:.2f}s waiting for "
                              f"{_describe(message, predicate)}; last outcome: {last!r}")
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET `url`; return (status, body) for any HTTP status, raise OSError if nothing answers.

        status, body = http_get("http://127.0.0.1:8080/readyz")   # (503, b'{"reason": ...}')
    """
    try:
        with _opener.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()
