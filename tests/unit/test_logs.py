"""Log lines: one record is one line, control characters are escaped, Redis errors show the
server's own message (redis-py's repr is `server:ResponseError`)."""

from __future__ import annotations

import json
import logging

from redis.exceptions import NoPermissionError, OutOfMemoryError, ResponseError

from node import logs
from node.logs import JsonFormatter, TextFormatter

FORGED = "evil\n2026-01-01T00:00:00.000Z info    [n1] election: became leader event=leader_acquired"


def _record(msg: str, *args: object, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("corral.worker", logging.WARNING, __file__, 1, msg, args,
                          (type(exc), exc, exc.__traceback__) if exc is not None else None)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_a_task_name_with_a_newline_stays_on_its_line() -> None:
    line = TextFormatter("n1").format(_record("job failed %s", FORGED, task=FORGED, event="job_failure"))
    assert "\n" not in line and line.count("leader_acquired") == 2 and "evil\\n2026" in line
    assert logs.escape("a\rb\x1b[31mc\u2028") == "a\\rb\\x1b[31mc\\u2028"


def test_a_traceback_cannot_forge_a_record() -> None:
    try:
        raise ValueError(FORGED)
    except ValueError as e:
        text = TextFormatter("n1").format(_record("job failed", exc=e))
    lines = text.split("\n")
    assert lines[0].endswith("job failed")
    assert all(ln.startswith("    ") for ln in lines[1:]) and "Traceback" in lines[1]


def test_redis_errors_show_the_server_message() -> None:
    wrongtype = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert repr(wrongtype) == "server:ResponseError" or "WRONGTYPE" in repr(wrongtype)  # what %r alone gives
    for fmt in (TextFormatter("n1"), JsonFormatter("n1")):
        text = fmt.format(_record("worker: Redis error, retrying: %r", wrongtype))
        assert "ResponseError: WRONGTYPE Operation against a key" in text, text
        text = fmt.format(_record("Redis error: %s", OutOfMemoryError("command not allowed when used memory > "
                                                                      "'maxmemory'.")))
        assert "OutOfMemoryError: OOM command not allowed when used memory" in text
        text = fmt.format(_record("failed", error=NoPermissionError("User u has no permissions to run the "
                                                                    "'time' command")))
        assert "NoPermissionError: NOPERM User u has no permissions to run the 'time' command" in text
    line = JsonFormatter("n1").format(_record("job %s", FORGED, task=FORGED))
    assert "\n" not in line and json.loads(line)["task"] == FORGED
