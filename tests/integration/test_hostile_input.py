"""Hostile input, property-based: what strangers can push at a node never kills it.

Three surfaces, each against the real thing:

- **Queues**: arbitrary bytes, text, JSON that is not a job, jobs with wrong types, unknown or
  non-string classes, deep nesting, megabyte payloads, invalid UTF-8 and JSON that JavaScript
  cannot represent (NaN, infinities, integers beyond 2**53), pushed raw (RPUSH, as any
  producer can) into a queue a real `corral node` process serves. Every entry ends as a
  successful run or a failed entry with a reason; the node survives and still runs a sentinel
  job afterwards; nothing is lost: processed + failed == pushed, the queue and the node's
  in-flight hash end empty.
- **CLI**: bad flags, bad env values, bad `--params`, bad TOML keys: exit status 2, one line
  that names the culprit, never a traceback.
- **HTTP**: random request lines, methods, paths and headers over raw sockets: a 200 or a 4xx
  (or nothing, for a request that never ends), never a 5xx; the node stays healthy and ready.

Hypothesis example counts are kept small (the whole file runs in well under a minute on two
cores); examples are drawn as small specs (`("deep", 5000, "unknown")`) and expanded to bytes
in the test, so a failing example prints short.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from node import cli
from tests.support import REPO_ROOT, wait_until
from tests.support.nodes import NodeCluster, NodeProcess

TASKS = '''
from cluster import Task, task


@task(name="ok")
async def ok(params, ctx):
    pass


@task(name="boom")
async def boom(params, ctx):
    raise ValueError("boom")


@task(name="mark")
async def mark(params, ctx):
    await ctx.client.redis.rpush("hostile:marks", str(params.get("id")))


async def _locked(params, ctx):
    pass


# lock and retry keys are built from the job's args: hostile args reach them
locked = Task(name="locked", run=_locked, plugins=["JobLock", "QueueLock", "Retry"],
              plugin_options={"Retry": {"limit": 0}, "JobLock": {"re_enqueue": False}})
'''

NS = "resque"
QUEUE_KEY = f"{NS}:queue:default"
CLASSES = ["ok", "boom", "locked", "mark", "nope", "", "__import__", "os.system", "tasks.t.ok", "ok\n", "OK"]


# -- strategies: small specs, expanded to bytes by `materialize` ---------------------------------

_scalar = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**53, max_value=2**80)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)
_cls = st.sampled_from(CLASSES) | st.text(max_size=10) | st.integers() | st.none() | st.lists(st.text(max_size=3),
                                                                                                  max_size=2)
_missing = object()

entry_specs = st.one_of(
    st.tuples(st.just("valid"), st.sampled_from(["ok", "ok", "locked", "boom"]),
              st.dictionaries(st.text(max_size=8), _json, max_size=4)),
    st.tuples(st.just("bytes"), st.binary(max_size=48)),
    st.tuples(st.just("text"), st.text(max_size=48)),
    st.tuples(st.just("json"), _json),
    st.tuples(st.just("job"), _cls, st.sampled_from(["default", "other", None, 5, _missing]),
              st.one_of(st.lists(_json, max_size=3), _json, st.just(_missing)),
              st.dictionaries(st.sampled_from(["class2", "id", "meta", "__proto__"]), _json, max_size=2)),
    st.tuples(st.just("deep"), st.integers(min_value=150, max_value=60_000),
              st.sampled_from(["bare", "unknown", "ok", "dict"])),
    st.tuples(st.just("mega"), st.sampled_from([64, 1024]), st.sampled_from(["ok", "nope", "boom"])),
    st.tuples(st.just("badutf8"), st.sampled_from(["class", "param", "key", "raw"]),
              st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80\x80"])),
    st.tuples(st.just("nonjs"), st.sampled_from(["ok", "nope", "boom", "locked"]),
              st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "9007199254740993", "-1e999",
                               "123456789012345678901234567890"])),
)


def materialize(spec: tuple[Any, ...]) -> bytes:
    kind = spec[0]
    if kind == "bytes":
        return bytes(spec[1])
    if kind == "text":
        return str(spec[1]).encode()
    if kind == "json":
        return json.dumps(spec[1]).encode()
    if kind == "valid":
        return json.dumps({"class": spec[1], "queue": "default", "args": [spec[2]]}).encode()
    if kind == "job":
        _, cls, queue, args, extra = spec
        obj: dict[str, Any] = {"class": cls}
        if queue is not _missing:
            obj["queue"] = queue
        if args is not _missing:
            obj["args"] = args
        obj.update(extra)
        return json.dumps(obj).encode()
    if kind == "deep":
        _, depth, shape = spec
        nest = "[" * depth + "]" * depth
        if shape == "bare":
            return nest.encode()
        if shape == "dict":
            return ('{"class":"ok","args":[' + '{"a":' * depth + "1" + "}" * depth + "]}").encode()
        cls = "nope" if shape == "unknown" else "ok"
        return ('{"class":"' + cls + '","queue":"default","args":[' + nest + "]}").encode()
    if kind == "mega":
        _, kb, cls = spec
        return ('{"class":"' + cls + '","queue":"default","args":[{"blob":"' + "x" * (kb * 1024) + '"}]}').encode()
    if kind == "badutf8":
        _, where, bad = spec
        if where == "class":
            return b'{"class":"ok' + bad + b'","queue":"default","args":[{}]}'
        if where == "param":
            return b'{"class":"ok","queue":"default","args":[{"s":"' + bad + b'"}]}'
        if where == "key":
            return b'{"class":"locked","queue":"default","args":[{"' + bad + b'":1}]}'
        return bad + b'{"class":"ok"}'
    if kind == "nonjs":
        _, cls, literal = spec
        return ('{"class":"' + cls + '","queue":"default","args":[{"n":' + literal + "}]}").encode()
    raise AssertionError(f"unknown spec {spec!r}")


def _short(data: bytes) -> str:
    return repr(data[:80]) + (f"... ({len(data)} bytes)" if len(data) > 80 else "")


# -- the node ------------------------------------------------------------------------------------


def _tasks_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir(exist_ok=True)
    (d / "hostile.py").write_text(textwrap.dedent(TASKS))
    return d


def _start_node(node_cluster: NodeCluster, tmp_path: Path) -> NodeProcess:
    node = node_cluster.add("hostile", tasks_dir=_tasks_dir(tmp_path), queues="default",
                            extra_args=["--processes", "1", "--threads", "2", "--poll-interval", "0.1"])
    return node.wait_ready(30)


def _counts(r: redis.Redis) -> tuple[int, int, int]:
    processed, failed, failed_len = r.get(f"{NS}:stat:processed"), r.get(f"{NS}:stat:failed"), r.llen(f"{NS}:failed")
    return int(processed or 0), int(failed or 0), int(failed_len)


def _assert_alive(node: NodeProcess, what: str) -> None:
    assert node.running, (f"the node died {what} (exit status {node.returncode}); log tail:\n"
                          f"{node.log_tail(25)}")


class Barrage:
    """Push a batch raw into queue:default and wait until each entry reached a terminal state."""

    def __init__(self, node: NodeProcess, r: redis.Redis) -> None:
        self.node = node
        self.r = r
        self.pushed = 0
        self.kinds: dict[str, int] = {}
        self.exceptions: dict[str, int] = {}
        r.sadd(f"{NS}:queues", "default")

    def push(self, specs: list[tuple[Any, ...]]) -> None:
        _assert_alive(self.node, "before this batch (an earlier example killed it)")
        items = [materialize(s) for s in specs]
        before = _counts(self.r)
        self.r.rpush(QUEUE_KEY, *items)
        self.pushed += len(items)
        for s in specs:
            self.kinds[s[0]] = self.kinds.get(s[0], 0) + 1
        want = before[0] + before[1] + len(items)

        def settled() -> bool:
            _assert_alive(self.node, "while working the batch " + ", ".join(_short(i) for i in items))
            p, f, _ = _counts(self.r)
            return p + f >= want

        wait_until(settled, 30, 0.01, message=f"{len(items)} hostile entries to be processed or failed")
        after = _counts(self.r)
        assert after[0] + after[1] == want, f"more outcomes than entries: {before} -> {after}, pushed {len(items)}"
        assert after[2] - before[2] == after[1] - before[1], "every failure wrote exactly one failed entry"
        assert self.r.llen(QUEUE_KEY) == 0
        for raw in self.r.lrange(f"{NS}:failed", before[2], -1):
            entry = json.loads(raw)
            assert isinstance(entry, dict), raw[:200]
            assert isinstance(entry.get("exception"), str) and entry["exception"], raw[:300]
            assert isinstance(entry.get("error"), str) and entry["error"], raw[:300]
            assert entry.get("queue") == "default" and entry.get("failed_at"), raw[:300]
            self.exceptions[entry["exception"]] = self.exceptions.get(entry["exception"], 0) + 1


KNOWN_NASTY: list[list[tuple[Any, ...]]] = [
    [("deep", 500, "unknown")],                     # failed entry nested deeper than the encoder allows
    [("deep", 60_000, "bare")],                     # beyond Python's recursion limit
    [("nonjs", "nope", "Infinity")],                # failed entry holding a number JSON cannot spell
    [("nonjs", "locked", "9007199254740993")],      # lock key from an integer JavaScript cannot hold
    [("badutf8", "key", b"\xff")],                  # lock key from invalid UTF-8
    [("mega", 1024, "nope")],                       # a megabyte in the failed list
    [("bytes", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94."), ("json", None), ("text", "")],
]


def test_hostile_queue_entries_never_kill_a_worker_and_nothing_is_lost(node_cluster: NodeCluster,
                                                                      tmp_path: Path) -> None:
    node = _start_node(node_cluster, tmp_path)
    r = redis.Redis.from_url(node_cluster.redis_url)  # raw bytes in and out
    barrage = Barrage(node, r)
    started = time.monotonic()

    @settings(max_examples=45, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(st.lists(entry_specs, min_size=1, max_size=6))
    def property_each_entry_ends_processed_or_failed(specs: list[tuple[Any, ...]]) -> None:
        barrage.push(specs)

    for batch in KNOWN_NASTY:
        property_each_entry_ends_processed_or_failed = example(batch)(property_each_entry_ends_processed_or_failed)
    property_each_entry_ends_processed_or_failed()

    processed, failed, failed_len = _counts(r)
    assert processed + failed == barrage.pushed and failed_len == failed
    assert r.llen(QUEUE_KEY) == 0
    inflight = [k for k in r.keys(f"{NS}:corral:inflight:*") if r.hlen(k)]
    assert not inflight, "a node's in-flight hash still holds a job"
    # reasons: not a job, no such task, the task's own error, or args a lock key cannot be built from
    assert set(barrage.exceptions) <= {"JobDecodeError", "TaskNotFound", "ValueError", "EnqueueError"}, \
        barrage.exceptions

    # the node still works: a sentinel job runs, the node is healthy and ready
    async def sentinel() -> None:
        from cluster.client import Client

        async with await Client.connect(node_cluster.redis_url) as c:
            assert await c.enqueue("mark", {"id": "sentinel"})

    import asyncio

    r.delete("hostile:marks")  # generated entries may name `mark` too: only the sentinel's counts
    asyncio.run(sentinel())
    wait_until(lambda: r.lrange("hostile:marks", 0, -1) == [b"sentinel"], 10, message="the sentinel job ran")
    _assert_alive(node, "after the barrage")
    assert node.healthz() and node.readyz()[0] == 200
    print(f"\nhostile queue entries: {barrage.pushed} pushed, {processed} processed, {failed} failed, "
          f"kinds {dict(sorted(barrage.kinds.items()))}, reasons {dict(sorted(barrage.exceptions.items()))}, "
          f"{time.monotonic() - started:.1f}s")


# -- CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.startswith("CORRAL_"):
            monkeypatch.delenv(k)
    return monkeypatch


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    import node.loader

    def must_not_boot(*_a: Any, **_k: Any) -> Any:
        raise AssertionError(f"{argv} passed validation and would have started a node")

    monkeypatch.setattr(node.loader, "load_dir", must_not_boot)
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.err


def _assert_one_clear_line(code: int, err: str, needle: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    # our own errors are exactly one line; argparse prints its usage (maybe wrapped) before it
    usage = lines[:-1]
    assert not usage or (usage[0].startswith("usage: ") and all(ln.startswith(" ") for ln in usage[1:])), err
    assert lines[-1].startswith("corral") and "error: " in lines[-1], err
    assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"


@pytest.mark.parametrize(("argv", "env", "needle"), [
    (["node", "--bogus-flag"], {}, "--bogus-flag"),
    (["node", "--lease", "abc"], {}, "--lease: expected a number, got 'abc'"),
    (["node"], {"CORRAL_LEASE": "abc"}, "env CORRAL_LEASE: expected a number, got 'abc'"),
    (["node"], {"CORRAL_QUEUES": ""}, "env CORRAL_QUEUES"),
    (["node"], {"CORRAL_QUEUES": "default,,other"}, "env CORRAL_QUEUES"),
    (["node", "--election", "paxos"], {}, "--election: must be one of redis, zookeeper; got 'paxos'"),
    (["node"], {"CORRAL_ELECTION": "Redis"}, "env CORRAL_ELECTION"),
    (["node", "--election", "zookeeper"], {}, "zookeeper_hosts"),
    (["node", "--concurrency", "0"], {}, "--concurrency"),
    (["node", "--concurrency", "1.5"], {}, "--concurrency: expected an integer"),
    (["node", "--queues", "a:b"], {}, "'a:b'"),
    (["node", "--lease", "2", "--renew-period", "1"], {}, "lease"),
    (["node", "--node-id", "bad id!"], {}, "node_id"),
    (["node", "--log-level", "loud"], {}, "--log-level"),
    (["node"], {"CORRAL_SCHEDULER": "maybe"}, "env CORRAL_SCHEDULER: expected true/false"),
    (["node", "--redis-url", "redis://u:pw@127.0.0.1:1/0", "--redis-password", "pw2"], {}, "given more than once"),
    (["node", "--redis-sentinels", "127.0.0.1:26379"], {}, "redis_sentinel_master"),
    (["node", "--http-host", "0.0.0.0"], {}, "embedded Redis"),
    (["enqueue", "x", "--params", "not json"], {}, "--params is not valid JSON"),
    (["enqueue", "x", "--params", "[1, 2]"], {}, "--params must be a JSON object, got list"),
    (["enqueue", "x", "--params", '"text"'], {}, "--params must be a JSON object, got str"),
    (["enqueue", "x", "--params", "null"], {}, "--params must be a JSON object"),
    (["enqueue", "x", "--params", '{"a": 1'], {}, "--params is not valid JSON"),
    (["enqueue", "x", "--at", "tomorrow"], {}, "--at"),
    (["enqueue", "x", "--at", "1", "--in", "2"], {}, "--in"),
    (["failed", "explode"], {}, "explode"),
])
def test_cli_bad_input_exits_2_with_one_line(argv: list[str], env: dict[str, str], needle: str,
                                             clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)  # no .data/up.json, no tasks/ from the repository
    for k, v in env.items():
        clean_env.setenv(k, v)
    code, err = _run_main(argv, capsys, clean_env)
    _assert_one_clear_line(code, err, needle)


@pytest.mark.parametrize(("toml", "needle"), [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[redis]\npasswd = 'x'\n", "unknown key redis.passwd"),
    ("[redis]\nurl = 5\n", "redis_url: expected a string"),
    ("lease = 'abc'\n", "lease: expected a number"),
    ("queues = 7\n", "queues: expected a comma-separated list"),
    ("queues = ['a', '']\n", "queues: empty item"),
    ("redis = 'x'\n", "[redis] must be a table"),
    ("lease = \n", "is not valid TOML"),
    ("scheduler = 'sometimes'\n", "scheduler: expected true/false"),
    ("[workers]\nn = 1\n", "unknown key 'workers'"),
])
def test_cli_bad_toml_exits_2_naming_the_key(toml: str, needle: str, clean_env: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    path = tmp_path / "corral.toml"
    path.write_text(toml)
    code, err = _run_main(["node", "--config", str(path)], capsys, clean_env)
    _assert_one_clear_line(code, err, needle)
    assert str(path) in err


def test_cli_missing_config_file(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                 tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("CORRAL_CONFIG", str(tmp_path / "nope.toml"))
    code, err = _run_main(["node"], capsys, clean_env)
    _assert_one_clear_line(code, err, "nope.toml")


def _corral(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    e["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "node", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=e, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)


def _finish(p: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=5)
        return -9, out, err
    return p.returncode, out, err


def test_cli_real_entry_point_bad_input(redis_url: str, tmp_path: Path) -> None:
    """The same rules through `python -m node` (the `corral` script), run in parallel."""
    tasks = _tasks_dir(tmp_path)
    cases = [
        (["node", "--lease", "abc", "--redis-url", redis_url], {}, "--lease: expected a number"),
        (["node", "--redis-url", redis_url, "--tasks-dir", str(tasks)], {"CORRAL_QUEUES": ""}, "env CORRAL_QUEUES"),
        (["node", "--redis-url", "http://127.0.0.1:1/0", "--tasks-dir", str(tasks)], {}, "must start with redis://"),
        (["node", "--redis-url", redis_url, "--tasks-dir", str(tasks), "--redis-tls-ca-file", str(tmp_path / "ca.pem")],
         {}, "rediss://"),
        (["enqueue", "x", "--params", "[1]", "--redis-url", redis_url], {}, "--params must be a JSON object"),
        (["enqueue", "x", "--params", '{"a": NaN}', "--redis-url", redis_url], {}, "nan"),
        (["enqueue", "x", "--params", '{"a": ' + "[" * 300 + "]" * 300 + "}", "--redis-url", redis_url], {},
         "nested more than 200 levels"),
        (["enqueue", "x", "--queue", "a:b", "--redis-url", redis_url], {}, "queue name 'a:b'"),
        (["enqueue", "x", "--in", "-5", "--redis-url", redis_url], {}, "delay must be a non-negative"),
    ]
    procs = [(_corral(*argv, env=env), argv, needle) for argv, env, needle in cases]
    problems = []
    for p, argv, needle in procs:
        code, _out, err = _finish(p)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        ok = code == 2 and "Traceback" not in err and len(lines) == 1 and needle in lines[0]
        if not ok:
            problems.append(f"{' '.join(a[:40] for a in argv)}: exit {code}, stderr tail {err[-300:]!r}")
    assert not problems, "\n".join(problems)
    r = redis.Redis.from_url(redis_url)
    assert r.dbsize() == 0, "a refused command wrote something"


def test_cli_params_nested_too_deep_is_one_line(redis_url: str) -> None:
    deep = "[" * 5000 + "]" * 5000
    code, _out, err = _finish(_corral("enqueue", "x", "--params", deep, "--redis-url", redis_url))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and "--params" in lines[0], err[-500:]


def test_cli_http_port_out_of_range_is_refused(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    code, err = _run_main(["node", "--http-port", "99999", "--redis-url", "redis://127.0.0.1:1/0"], capsys,
                          clean_env)
    _assert_one_clear_line(code, err, "--http-port")


# -- HTTP ----------------------------------------------------------------------------------------

_methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "get",
                            "G ET", "", "\x00", "GET\t"]) | st.text(max_size=12)
_paths = st.sampled_from(["/metrics", "/healthz", "/readyz", "/leader", "/status", "/", "*", "/status?x=1",
                          "/../../etc/passwd", "/%00", "/metrics#frag", "http://evil/metrics", "//status", "/STATUS",
                          "/readyz/", "/" + "a" * 9000, "/" + "b" * 20000]) | st.text(max_size=30)
_versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/9.9", "http/1.1", "", "HTTP/1.1 extra"])
_header = st.tuples(st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Connection", "X-A", "",
                                     "Bad Name", "\x00"]) | st.text(max_size=10),
                    st.sampled_from(["", "127.0.0.1", "-1", "99999999999999999999", "chunked", "close",
                                     "x" * 9000, "a\rb"]) | st.text(max_size=20))
_request = st.one_of(
    st.builds(lambda m, p, v, hs, body, sep: (
        f"{m} {p} {v}{sep}" + "".join(f"{k}: {val}{sep}" for k, val in hs) + sep).encode("utf-8", "surrogatepass")
        + body,
        _methods, _paths, _versions, st.lists(_header, max_size=6), st.binary(max_size=32),
        st.sampled_from(["\r\n", "\n"])),
    st.binary(max_size=200),
    st.builds(lambda n: b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * n + b"\r\n", st.integers(90, 140)),
    st.builds(lambda n: b"G" * n + b"\r\n\r\n", st.integers(8000, 40000)),
)
_ALLOWED = {200, 400, 404, 405, 408, 414, 431}


def _must_answer(data: bytes) -> bool:
    """A head that ends (an empty line after the request line) within the server's limits gets a reply."""
    return len(data) <= 16000 and (b"\n\n" in data or b"\n\r\n" in data)


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer (414/431) and close before reading everything
            pass
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_random_http_requests_get_4xx_or_200_and_the_node_stays_healthy(node_cluster: NodeCluster,
                                                                        tmp_path: Path) -> None:
    node = _start_node(node_cluster, tmp_path)
    seen: dict[int | None, int] = {}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(_request)
    @example(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    @example(b"DELETE /metrics HTTP/1.1\r\n\r\n")
    @example(b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n")
    @example(b"\r\n\r\n")
    @example(b"GET /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
    def property_never_a_crash(data: bytes) -> None:
        reply = _exchange(node.http_port, data)
        status: int | None = None
        if reply:
            head = reply.split(b"\r\n", 1)[0].decode("latin-1")
            assert head.startswith("HTTP/1.1 "), head
            status = int(head.split(" ")[1])
            assert status in _ALLOWED, f"{status} for {_short(data)}"
        else:
            # only a request whose head never ended (or that overran the limits and was cut) may go unanswered
            assert not _must_answer(data), f"no answer to {_short(data)}"
        seen[status] = seen.get(status, 0) + 1
        _assert_alive(node, f"after {_short(data)}")

    property_never_a_crash()
    # slow clients: connections that send nothing do not block anyone else
    idle = [socket.create_connection(("127.0.0.1", node.http_port), timeout=5) for _ in range(30)]
    try:
        t0 = time.monotonic()
        assert node.healthz(timeout=2.0)
        assert time.monotonic() - t0 < 1.0
    finally:
        for s in idle:
            s.close()
    _assert_alive(node, "after the HTTP barrage")
    assert node.healthz() and node.readyz()[0] == 200
    assert node.status()["node"]["id"] == node.reported_id
    print(f"\nHTTP statuses seen: {dict(sorted(seen.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))}")
