"""The `corral` command against a real Redis: enqueue, status, failed, generate.

Client commands read the connection settings as the node does (flags > CORRAL_* env > --config
file); `--at`/`--in` are checked (finite, within 10 years, an epoch in ms named as such) before
anything is written; Redis errors (OOM, WRONGTYPE, NOPERM) are one line with the server's message
and exit status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support.servers import RedisServer


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


def test_enqueue_times_are_checked_before_anything_is_written(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    now = time.time()
    for args, needle in [
        (["--at", "1e20"], "--at 1e+20 is more than 10 years ahead"),
        (["--at", str(int(now * 1000))], "it looks like milliseconds: epoch seconds would be"),
        (["--at", "nan"], "--at must be a finite number of seconds"),
        (["--at", "-5"], "--at must be epoch seconds"),
        (["--in", "inf"], "--in must be a finite number"),
        (["--in", "-1"], "--in: delay must be a non-negative number of seconds"),
        (["--in", str(20 * 365 * 86400)], "more than 10 years ahead"),
    ]:
        out = corral("enqueue", "sayHello", *args, "--redis-url", redis_url)
        assert out.returncode == 2 and needle in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert r.keys("*") == [], "a refused enqueue wrote something"
    out = corral("enqueue", "sayHello", "--at", str(now + 9 * 365 * 86400), "--redis-url", redis_url)
    assert out.returncode == 0, out.stderr


def test_redis_errors_during_a_command_are_one_line(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    url = f"redis://127.0.0.1:{server.port}/0"
    admin = redis.Redis.from_url(url, decode_responses=True)
    admin.rpush("resque:queue:default", "x")
    admin.config_set("maxmemory", "1")  # every write is refused with OOM from now on
    out = corral("enqueue", "sayHello", "--redis-url", url)
    assert out.returncode == 2 and "OOM command not allowed" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    admin.config_set("maxmemory", "0")
    assert admin.lrange("resque:queue:default", 0, -1) == ["x"]
    admin.set("resque:failed", "not a list")
    for args in (["status"], ["failed", "list"]):
        out = corral(*args, "--redis-url", url)
        assert out.returncode == 2 and "WRONGTYPE" in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    out = corral("failed", "list", "--limit", "0", "--redis-url", url)
    assert out.returncode == 2 and "must be >= 1" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_client_commands_read_env_and_config_as_the_node(redis_factory: Callable[..., RedisServer],
                                                          tmp_path: Path) -> None:
    password = "cli-Pw-9d2a"
    server = redis_factory(requirepass=password)
    url = f"redis://127.0.0.1:{server.port}/2"
    admin = redis.Redis(host="127.0.0.1", port=server.port, password=password, db=2, decode_responses=True)
    pw_file = tmp_path / "pw"
    pw_file.write_text(password + "\n")
    conf = tmp_path / "corral.toml"
    conf.write_text(f'queues = ["a"]\n[redis]\nurl = "{url}"\nnamespace = "fromfile"\npassword_file = "{pw_file}"\n')
    out = corral("enqueue", "sayHello", "--config", str(conf))
    assert out.returncode == 0, out.stderr
    assert admin.llen("fromfile:queue:default") == 1
    out = corral("enqueue", "sayHello", env={"CORRAL_CONFIG": str(conf), "CORRAL_NAMESPACE": "fromenv"})
    assert out.returncode == 0, out.stderr
    assert admin.llen("fromenv:queue:default") == 1  # env beats the file, as for the node
    st = corral("status", "--json", env={"CORRAL_REDIS_URL": url, "CORRAL_REDIS_PASSWORD_FILE": str(pw_file),
                                         "CORRAL_NAMESPACE": "fromfile"})
    assert st.returncode == 0 and json.loads(st.stdout)["queues"] == {"default": 1}, st.stderr
    listing = corral("failed", "list", "--namespace", "fromenv", "--redis-url", url,
                     env={"CORRAL_REDIS_PASSWORD": password})
    assert listing.returncode == 0 and "0 failed" in listing.stdout, listing.stderr
    wrong = corral("status", "--redis-url", url.replace("/2", f"/2?password={password}x"))
    assert wrong.returncode == 2 and password not in wrong.stderr and "password=***" in wrong.stderr, wrong.stderr


def test_bad_numbers_stop_the_node_and_sigterm_ends_an_idle_node(redis_url: str, tmp_path: Path) -> None:
    import os
    import signal

    empty = tmp_path / "empty"
    empty.mkdir()
    for flag, value in [("--poll-interval", "nan"), ("--dead-after", "nan"), ("--concurrency", "1.9")]:
        out = corral("node", "--redis-url", redis_url, "--tasks-dir", str(empty), flag, value)
        assert out.returncode == 2 and flag in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    # an idle node with no tasks at all: SIGTERM ends it within its shutdown timeout
    e = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    log = tmp_path / "node.log"
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "node", "node", "--redis-url", redis_url, "--tasks-dir",
                              str(empty), "--http-port", "0", "--shutdown-timeout", "2", "--poll-interval", "0.001"],
                             stdout=subprocess.DEVNULL, stderr=fh, env=e)
    try:
        deadline = time.monotonic() + 30
        while "node_started" not in log.read_text() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None and "node_started" in log.read_text(), log.read_text()[-2000:]
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(15)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert p.returncode == 0 and took < 2 + 2, f"exit {p.returncode} after {took:.1f}s: {log.read_text()[-2000:]}"
