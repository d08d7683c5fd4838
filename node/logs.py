"""Logging setup: text or JSON lines, each record with the node id and any structured fields
(`event`, `task`, `queue`, `worker`, `duration_ms`, `epoch`, ...) passed through `extra=`.

Levels: job_start debug; job_success, promoted, periodic_enqueued, leader_acquired info;
job_retry, leader_stepped_down, node_recovered, heartbeat_failed, job_pushed_back warning;
job_failure error.
"""

from __future__ import annotations

import json
import logging
import sys
import time

STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6), "level": record.levelname.lower(), "node": self.node_id,
            "logger": record.name, "msg": record.getMessage(),
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
        line = f"{t} {record.levelname.lower():7s} [{self.node_id}] {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(node_id: str, fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id) if fmt == "json" else TextFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kazoo", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
