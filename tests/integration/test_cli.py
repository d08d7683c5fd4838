"""The `corral` command against a real Redis: enqueue, status, failed, generate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis


def corral(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=60,
                          env=e, cwd=cwd, stdin=subprocess.DEVNULL)


def test_enqueue_status_and_failed_commands(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    out = corral("enqueue", "sendWelcomeEmail", "--params", '{"to": "evan@example.com"}', "--redis-url", redis_url)
    assert out.returncode == 0, out.stderr
    assert r.lrange("resque:queue:default", 0, -1) == [
        '{"class":"sendWelcomeEmail","queue":"default","args":[{"to":"evan@example.com"}]}']
    later = time.time() + 100
    out = corral("enqueue", "sayHello", "--at", str(later), "--queue", "q2", env={"CORRAL_REDIS_URL": redis_url})
    assert out.returncode == 0 and "scheduled sayHello" in out.stdout
    assert r.zrange("resque:delayed_queue_schedule", 0, -1) == [str(int(later) + 1)]
    st = corral("status", "--json", "--redis-url", redis_url)
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert data["queues"] == {"default": 1} and data["delayed"] == 1 and data["failed"] == 0
    text = corral("status", "--redis-url", redis_url).stdout
    assert "leader   none" in text and "delayed  1" in text
    entry = json.dumps({"worker": "w", "queue": "default", "payload": {"class": "x", "queue": "default", "args": [{}]},
                        "exception": "E", "error": "bad", "backtrace": None, "failed_at": "now"})
    r.rpush("resque:failed", entry, entry.replace('"bad"', '"worse"'))
    listing = corral("failed", "list", "--redis-url", redis_url).stdout
    assert "[0] x queue=default E: bad" in listing and "2 failed" in listing
    assert corral("failed", "retry", "0", "--redis-url", redis_url).stdout.strip() == "retried 1"
    assert r.lrange("resque:queue:default", -1, -1) == ['{"class":"x","queue":"default","args":[{}]}']
    assert corral("failed", "remove", "--all", "--redis-url", redis_url).stdout.strip() == "removed 1"
    assert r.llen("resque:failed") == 0
    bad = corral("failed", "retry", "5", "--redis-url", redis_url)
    assert bad.returncode == 2 and "no failed entry at index 5" in bad.stderr and "Traceback" not in bad.stderr


def test_user_errors_are_one_line(redis_url: str) -> None:
    for args, needle in [
        (["enqueue", "x", "--params", "[1]", "--redis-url", redis_url], "--params must be a JSON object"),
        (["enqueue", "x", "--params", "{bad", "--redis-url", redis_url], "--params is not valid JSON"),
        (["enqueue", "x", "--redis-url", "redis://127.0.0.1:1/0"], "cannot reach Redis at redis://127.0.0.1:1/0"),
        (["node", "--redis-url", redis_url, "--lease", "abc"], "--lease: expected a number, got 'abc'"),
        (["node", "--redis-url", redis_url, "--tasks-dir", "/nonexistent"], "does not exist"),
    ]:
        out = corral(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_generate_task(tmp_path: Path) -> None:
    out = corral("generate", "task", "sendInvoice", "--tasks-dir", str(tmp_path / "tasks"))
    assert out.returncode == 0 and (tmp_path / "tasks" / "send_invoice.py").exists()
    again = corral("generate", "task", "sendInvoice", "--tasks-dir", str(tmp_path / "tasks"))
    assert again.returncode == 2 and "already exists" in again.stderr
