"""The TLS probe stays out of the way when TLS is not the problem: a server that answered (an
error reply, still loading) or nothing listening gets no probe and no explanation."""

from __future__ import annotations

from pathlib import Path

from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError

from cluster.redis_settings import RedisSettings
from cluster.tls_probe import explain_tls_failure, probe_plain_port_speaks_tls, probe_tls
from tests.support import free_port


async def test_no_explanation_when_the_server_answered_or_nothing_listens() -> None:
    port = free_port()
    for url in (f"rediss://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        s = RedisSettings(url=url)
        assert await explain_tls_failure(s, ResponseError("WRONGTYPE")) is None
        assert await explain_tls_failure(s, BusyLoadingError("LOADING")) is None
        refused = ConnectionError("Error 111 connecting")
        refused.__cause__ = ConnectionRefusedError(111, "refused")
        assert await explain_tls_failure(s, refused) is None
        assert await explain_tls_failure(s) is None, "a closed port is not a TLS problem"
    assert probe_tls("127.0.0.1", port) is None and not probe_plain_port_speaks_tls("127.0.0.1", port)


async def test_unreadable_tls_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    said = probe_tls("127.0.0.1", free_port(), ca_file=str(missing))
    assert said == f"cannot read the TLS CA file {missing}: No such file or directory"
