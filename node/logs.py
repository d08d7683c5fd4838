"""Logging setup: text or JSON lines, each record with the node id and any structured fields
(`event`, `task`, `queue`, `worker`, `duration_ms`, `epoch`, ...) passed through `extra=`.

Levels: job_start debug; job_success, promoted, periodic_enqueued, leader_acquired info;
job_retry, leader_stepped_down, node_recovered, heartbeat_failed, job_pushed_back warning;
job_failure error.

One record is one line. Text lines escape control characters (a task name or error message with
a newline cannot forge a second record) and indent the lines of a traceback. An exception given
as a log argument shows its class and message (redis-py's own repr, `server:ResponseError`,
hides the server's reply such as WRONGTYPE, NOAUTH or OOM).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from cluster.redis_errors import CODE_OF

STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``escape("a\\nb")`` -> ``"a\\\\nb"``: control characters as visible escapes."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                                            else f"\\u{ord(m.group()):04x}"), text)




class ShownError:
    """An exception as a log argument: `Class: message`, the message being the server's own reply
    (with its error code: `OutOfMemoryError: OOM command not allowed ...`)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        message = str(self.error)
        code = CODE_OF.get(type(self.error))
        if code and not message.startswith(code):
            message = f"{code} {message}"
        return f"{type(self.error).__name__}: {message}" if message else type(self.error).__name__

    __str__ = __repr__


def describe_error(error: BaseException) -> str:
    """``describe_error(ResponseError("WRONGTYPE ..."))`` -> ``"ResponseError: WRONGTYPE ..."``."""
    return repr(ShownError(error))


def _message(record: logging.LogRecord) -> str:
    if isinstance(record.args, tuple) and any(isinstance(a, BaseException) for a in record.args):
        record.args = tuple(ShownError(a) if isinstance(a, BaseException) else a for a in record.args)
    return record.getMessage()


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: (ShownError(v) if isinstance(v, BaseException) else v)
            for k, v in vars(record).items() if k not in STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6), "level": record.levelname.lower(), "node": self.node_id,
            "logger": record.name, "msg": _message(record),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = escape(f"{t} {record.levelname.lower():7s} [{self.node_id}] {_message(record)}"
                      + (f" {extra}" if extra else ""))
        if record.exc_info:
            # indented: no line of a traceback (whose message may carry newlines) starts like a record
            line += "".join("\n    " + escape(ln) for ln in self.formatException(record.exc_info).splitlines())
        return line


def setup(node_id: str, fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id) if fmt == "json" else TextFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kazoo", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
