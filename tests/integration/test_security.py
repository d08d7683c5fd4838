"""Security: Redis ACL users and TLS, secrets kept out of every output, only registered tasks run,
payloads are JSON only, params never steer which keys are touched, unsafe setups are refused.

- **ACL**: a user confined to `~resque:*` and `&resque:*` without `@dangerous` commands (but `INFO`) runs a
  whole cluster (workers, leader, delayed promotion, locks): Redis itself proves that no key or
  channel outside the namespace is touched (its ACL LOG stays empty). Credentials work as flags,
  in the URL and from `CORRAL_REDIS_PASSWORD`, for nodes and for `Client`. Wrong credentials stop
  the boot with exit status 2 and one line naming the problem, never the password.
- **TLS**: a CA, a server and a client certificate made with `openssl`; redis-server with
  `tls-port` and `tls-auth-clients no|yes` (through `redis_factory`, whose options are redis.conf
  directives; the plain port stays open only for the harness's readiness PING). Nodes and
  `Client` connect with `rediss://` and `--redis-tls-ca-file` (+ client certificate and key).
- **Secrets** (passwords) never appear in node logs (debug level), `/status`, `/metrics`,
  `/leader`, `/readyz`, `/healthz`, `corral status` or anything the node writes to Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.client import Client
from cluster.errors import EnqueueError
from cluster.redis_settings import RedisSettings
from cluster.task import Registry, Task
from cluster.tls_probe import explain_tls_failure
from cluster.wire import js_dumps
from tests.support import REPO_ROOT, free_port, wait_until, wait_until_async
from tests.support.inproc import NodeFactory
from tests.support.nodes import NodeCluster
from tests.support.servers import RedisServer

ADMIN_PW = "admin-Adm1nPw-7c2f"
USER = "corral"
USER_PW = "s3cret-Corral-Pw-91ab"
WRONG_PW = "Wr0ng-Guess-Pw-55d0"

TASKS = '''
import json
from cluster import Task, task


@task(name="mark")
async def mark(params, ctx):
    await ctx.client.redis.rpush("resque:test:marks", str(params.get("id")))


async def _record_locks(params, ctx):
    seen = [k async for k in ctx.client.redis.scan_iter(match="resque:workerslock:*", count=1000)]
    await ctx.client.redis.rpush("resque:test:locks", json.dumps({"id": params.get("id"), "seen": seen}))


locked = Task(name="locked", run=_record_locks, plugins=["JobLock", "QueueLock"])
'''


def _tasks_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir(exist_ok=True)
    (d / "sec.py").write_text(textwrap.dedent(TASKS))
    return d


def _plain_url(server: RedisServer) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def _admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=ADMIN_PW, decode_responses=True,
                       socket_timeout=5)


def _node_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    e["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "node", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=e, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)


def _finish(p: subprocess.Popen[str], timeout: float = 40) -> tuple[int, str]:
    try:
        _out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _out, err = p.communicate(timeout=5)
        return -9, err
    return p.returncode, err


async def _enqueue(client_factory: Callable[[], Any], jobs: list[tuple[str, dict[str, Any]]]) -> None:
    client = await client_factory()
    try:
        for name, params in jobs:
            assert await client.enqueue(name, params)
    finally:
        await client.close()


def _assert_no_secret(where: str, text: str | bytes, *secrets: str) -> None:
    data = text.decode(errors="replace") if isinstance(text, bytes) else text
    for s in secrets:
        assert s not in data, f"a secret appears in {where}"


# -- ACL -----------------------------------------------------------------------------------------


def test_acl_user_confined_to_the_namespace_runs_a_cluster_and_secrets_stay_hidden(
        redis_factory: Callable[..., RedisServer], node_cluster: NodeCluster, tmp_path: Path) -> None:
    server = redis_factory(requirepass=ADMIN_PW,
                           user=[f"{USER} on >{USER_PW} ~resque:* &resque:* +@all -@dangerous +info"])
    plain = _plain_url(server)
    tasks = _tasks_dir(tmp_path)
    common = {"tasks_dir": tasks, "queues": "default,default", "redis_url": plain}
    # wrong credentials first (each retries for a while before giving up): they run meanwhile
    wrong = {
        "wrong password flag": _node_cmd("node", "--redis-url", plain, "--redis-username", USER,
                                         "--redis-password", WRONG_PW, "--tasks-dir", str(tasks),
                                         "--http-port", str(free_port())),
        "wrong password in URL": _node_cmd("node", "--redis-url", server.url_for(username=USER, password=WRONG_PW),
                                           "--tasks-dir", str(tasks), "--http-port", str(free_port())),
        "unknown user": _node_cmd("node", "--redis-url", plain, "--redis-username", "mallory",
                                  "--tasks-dir", str(tasks), "--http-port", str(free_port()),
                                  env={"CORRAL_REDIS_PASSWORD": WRONG_PW}),
        "no credentials": _node_cmd("node", "--redis-url", plain, "--tasks-dir", str(tasks),
                                    "--http-port", str(free_port())),
    }
    wrong_started = time.monotonic()
    admin = _admin(server)
    admin.acl_log_reset()

    n1 = node_cluster.add("flags", extra_args=["--redis-username", USER, "--redis-password", USER_PW,
                                               "--log-level", "debug"], **common)
    n2 = node_cluster.add("url", **{**common, "redis_url": server.url_for(username=USER, password=USER_PW)})
    n3 = node_cluster.add("env", extra_args=["--redis-username", USER], env={"CORRAL_REDIS_PASSWORD": USER_PW},
                          **common)
    nodes = [n1, n2, n3]
    for n in nodes:
        n.wait_ready(30)
    node_cluster.wait_leader(15)

    def by_url() -> Any:
        return Client.connect(server.url_for(username=USER, password=USER_PW))

    def by_settings() -> Any:
        return Client.connect(settings=RedisSettings(url=plain, username=USER, password=USER_PW))

    asyncio.run(_enqueue(by_url, [("mark", {"id": f"u{i}"}) for i in range(5)]
                         + [("locked", {"id": "l1", "k": "a:b*c\nd"})]))
    asyncio.run(_enqueue(by_settings, [("mark", {"id": f"s{i}"}) for i in range(5)]))

    async def delayed() -> None:
        async with await by_settings() as c:
            await c.enqueue_in(0.5, "mark", {"id": "delayed"})

    asyncio.run(delayed())
    want = {f"u{i}" for i in range(5)} | {f"s{i}" for i in range(5)} | {"delayed"}
    wait_until(lambda: set(admin.lrange("resque:test:marks", 0, -1)) == want, 15,
               message="every job ran, the delayed one promoted by the leader")
    wait_until(lambda: admin.llen("resque:test:locks") == 1, 10, message="the locked job ran")
    assert admin.llen("resque:failed") == 0
    denied = [e for e in admin.acl_log() if e.get("reason") in ("key", "channel", "command")]
    assert not denied, f"Corral touched something outside its namespace or used a denied command: {denied[:3]}"

    # secrets: nowhere in what the nodes show, log or store
    for n in nodes:
        for path in ("/status", "/metrics", "/leader", "/readyz", "/healthz"):
            status, body = n.get(path)
            assert status == 200, (n.node_id, path, status)
            _assert_no_secret(f"{n.node_id} {path}", body, USER_PW, ADMIN_PW)
    st_out = subprocess.run([sys.executable, "-m", "node", "status", "--json", "--redis-url",
                             server.url_for(username=USER, password=USER_PW)], capture_output=True, text=True,
                            timeout=30, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert st_out.returncode == 0, st_out.stderr
    assert len(json.loads(st_out.stdout)["nodes"]) == 3
    _assert_no_secret("corral status", st_out.stdout + st_out.stderr, USER_PW)
    for key in admin.scan_iter(count=1000):
        kind = admin.type(key)
        value: Any = {"string": admin.get, "hash": admin.hgetall, "list": lambda k: admin.lrange(k, 0, -1),
                      "set": admin.smembers, "zset": lambda k: admin.zrange(k, 0, -1)}.get(kind, lambda k: "")(key)
        _assert_no_secret(f"Redis key {key}", json.dumps(value, default=str), USER_PW)
    for n in nodes:
        n.sigterm()
    for n in nodes:
        n.wait_exit(20)
        # the harness writes each start's command line (flags included) as a "=== start:" line: not the node's
        log = "\n".join(ln for ln in n.log_path.read_text(errors="replace").splitlines() if not ln.startswith("=== "))
        assert '"event": "node_stopped"' in log
        _assert_no_secret(f"{n.node_id} log", log, USER_PW, ADMIN_PW)
    assert '"level": "debug"' in n1.log_path.read_text(), "the debug log was checked too"

    # wrong credentials: exit 2, one line naming the problem, never the password
    problems = []
    for what, p in wrong.items():
        code, err = _finish(p)
        # the one error line; a password on the command line adds its own warning (visible in `ps`)
        lines = [ln for ln in err.splitlines() if ln.strip() and "visible in `ps`" not in ln]
        reason = lines[-1] if lines else ""
        if code != 2 or len(lines) != 1 or "Traceback" in err or WRONG_PW in err or not any(
                w in reason for w in ("invalid username-password pair", "authenticated", "NOAUTH")):
            problems.append(f"{what}: exit {code}: {err[-400:]!r}")
    took = time.monotonic() - wrong_started
    assert not problems, "\n".join(problems)
    print(f"\nACL cluster: 3 nodes as a namespace-confined user, 12 jobs, 0 ACL denials; "
          f"wrong credentials refused (exit 2) within {took:.1f}s")


def test_cli_error_never_shows_the_password(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(requirepass=ADMIN_PW, user=[f"{USER} on >{USER_PW} ~* &* +@all"])
    code, err = _finish(_node_cmd("enqueue", "mark", "--redis-url",
                                  server.url_for(username=USER, password=WRONG_PW)), 30)
    assert code == 2 and "invalid username-password pair" in err
    _assert_no_secret("corral enqueue stderr", err, WRONG_PW)


def test_wrong_password_fails_fast(redis_factory: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_factory(requirepass=ADMIN_PW)
    t0 = time.monotonic()
    code, err = _finish(_node_cmd("node", "--redis-url", _plain_url(server), "--redis-password", WRONG_PW,
                                  "--tasks-dir", str(_tasks_dir(tmp_path)), "--http-port", str(free_port())), 5)
    assert code == 2 and WRONG_PW not in err, f"still retrying after {time.monotonic() - t0:.1f}s"


# -- TLS -----------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=Corral test {name}", cwd=d)


def _make_cert(d: Path, name: str, ca: str, ext: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """ca.pem, server.{pem,key} (SAN 127.0.0.1), client.{pem,key}, and an unrelated other-ca.pem."""
    if subprocess.run(["which", "openssl"], capture_output=True).returncode != 0:
        pytest.skip("openssl is not installed")
    d = tmp_path / "tls"
    d.mkdir()
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_cert(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                  "extendedKeyUsage=serverAuth\n")
    _make_cert(d, "client", "ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _make_cert(d, "elsewhere", "ca", "subjectAltName=DNS:elsewhere.example\nbasicConstraints=CA:FALSE\n"
                                     "extendedKeyUsage=serverAuth\n")
    return d


def _tls_server(redis_factory: Callable[..., RedisServer], d: Path, auth_clients: str,
                cert: str = "server") -> tuple[RedisServer, int]:
    port = free_port()
    server = redis_factory(tls_port=port, tls_cert_file=str(d / f"{cert}.pem"), tls_key_file=str(d / f"{cert}.key"),
                           tls_ca_cert_file=str(d / "ca.pem"), tls_auth_clients=auth_clients)
    return server, port


def test_tls_nodes_and_clients(redis_factory: Callable[..., RedisServer], node_cluster: NodeCluster,
                               tls_dir: Path, tmp_path: Path) -> None:
    d = tls_dir
    ca, cert, key = str(d / "ca.pem"), str(d / "client.pem"), str(d / "client.key")
    verify_only, vport = _tls_server(redis_factory, d, "no")
    _mutual, mport = _tls_server(redis_factory, d, "yes")
    _misnamed, nport = _tls_server(redis_factory, d, "no", cert="elsewhere")
    tasks = _tasks_dir(tmp_path)
    # Misconfigured TLS stops a node at boot, and a CLI command, with one line saying in Corral's
    # words what failed (never the client library's wording, which changes between releases).
    # They run meanwhile.
    other_ca = str(d / "other-ca.pem")
    refused_boots = {
        "TLS handshake refused by the server: it requires a client certificate": _node_cmd(
            "node", "--redis-url", f"rediss://127.0.0.1:{mport}/0", "--redis-tls-ca-file", ca,
            "--tasks-dir", str(tasks), "--http-port", str(free_port())),
        f"certificate not trusted: the server's certificate does not verify against the CA file {other_ca}": _node_cmd(
            "node", "--redis-url", f"rediss://127.0.0.1:{vport}/0", "--redis-tls-ca-file", other_ca,
            "--tasks-dir", str(tasks), "--http-port", str(free_port())),
        "hostname mismatch: the server's certificate is not valid for 127.0.0.1": _node_cmd(
            "node", "--redis-url", f"rediss://127.0.0.1:{nport}/0", "--redis-tls-ca-file", ca,
            "--tasks-dir", str(tasks), "--http-port", str(free_port())),
        f"the server at 127.0.0.1:{vport} speaks TLS: use a rediss:// URL": _node_cmd(
            "status", "--redis-url", f"redis://127.0.0.1:{vport}/0"),
        "TLS handshake refused by the server: it does not accept the client certificate": _node_cmd(
            "status", "--redis-url", f"rediss://127.0.0.1:{mport}/0",
            env={"CORRAL_REDIS_TLS_CA_FILE": ca, "CORRAL_REDIS_TLS_CERT_FILE": str(d / "elsewhere.pem"),
                 "CORRAL_REDIS_TLS_KEY_FILE": str(d / "elsewhere.key")}),
    }

    a = node_cluster.add("tls-a", redis_url=f"rediss://127.0.0.1:{vport}/0", tasks_dir=tasks,
                         extra_args=["--redis-tls-ca-file", ca])
    b = node_cluster.add("tls-b", redis_url=f"rediss://127.0.0.1:{mport}/0", tasks_dir=tasks,
                         extra_args=["--redis-tls-ca-file", ca, "--redis-tls-cert-file", cert,
                                     "--redis-tls-key-file", key])
    for n in (a, b):
        n.wait_ready(30)
        wait_until(n.is_leader, 10, message=f"{n.node_id} leads its own Redis")

    async def jobs() -> None:
        for port, extra in ((vport, {}), (mport, {"tls_cert_file": cert, "tls_key_file": key})):
            s = RedisSettings(url=f"rediss://127.0.0.1:{port}/0", tls_ca_file=ca, **extra)
            async with await Client.connect(settings=s) as c:
                await c.enqueue("mark", {"id": f"tls-{port}"})
                await wait_until_async(lambda c=c: c.redis.lrange("resque:test:marks", 0, -1), 10,
                                       message=f"the job ran over TLS on port {port}")
                assert await c.redis.lrange("resque:test:marks", 0, -1) == [f"tls-{port}"]
        refused = [
            ("no client certificate", RedisSettings(url=f"rediss://127.0.0.1:{mport}/0", tls_ca_file=ca)),
            ("unknown CA", RedisSettings(url=f"rediss://127.0.0.1:{vport}/0", tls_ca_file=str(d / "other-ca.pem"))),
            ("plain text to the TLS port", RedisSettings(url=f"redis://127.0.0.1:{vport}/0")),
        ]
        for what, s in refused:
            with pytest.raises(redis.exceptions.ConnectionError):
                c = await Client.connect(settings=s)
                await c.close()
                raise AssertionError(f"{what}: connected")
        # what Corral says about each (the probe the node and the CLI use after a failed connect)
        said = {what: await explain_tls_failure(s) for what, s in refused}
        assert said["no client certificate"].startswith("TLS handshake refused by the server"), said
        assert said["unknown CA"].startswith("certificate not trusted"), said
        assert said["plain text to the TLS port"] == \
            f"the server at 127.0.0.1:{vport} speaks TLS: use a rediss:// URL (and --redis-tls-ca-file)", said
        misnamed = RedisSettings(url=f"rediss://127.0.0.1:{nport}/0", tls_ca_file=ca)
        assert (await explain_tls_failure(misnamed) or "").startswith("hostname mismatch"), "name not checked"
        working = RedisSettings(url=f"rediss://127.0.0.1:{vport}/0", tls_ca_file=ca)
        assert await explain_tls_failure(working) is None, "a working TLS setup has nothing to explain"

    asyncio.run(jobs())
    with verify_only.client() as plain_admin:
        tls_clients = [c for c in plain_admin.client_list() if int(c.get("laddr", ":0").rpartition(":")[2]) == vport]
    assert tls_clients, "the node's connections arrive on the TLS port"
    for words, proc in refused_boots.items():
        code, err = _finish(proc)
        # the one error line; a password given as a flag adds its own warning (visible in `ps`)
        lines = [ln for ln in err.splitlines() if ln.strip() and "visible in `ps`" not in ln]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (words, code, err[-500:])
        assert "cannot reach Redis at redis" in lines[0] and words in lines[0], (words, lines[0])


# -- what runs, what is read ---------------------------------------------------------------------


async def test_only_registered_tasks_run_and_payloads_are_json_only(inproc_node: NodeFactory, client: Client,
                                                                    tmp_path: Path) -> None:
    await inproc_node(TASKS)
    pwned = tmp_path / "pwned"
    names = ["os.system", "__import__", "eval", "exec", "builtins.print", "subprocess.run", "mark.run",
             "mark.__class__", "sec.mark", "tasks.sec.mark", "_record_locks", "Mark", "mark ", " mark", "mark\n",
             "../mark", "locked;mark", "*", "default"]
    for name in names:
        assert await client.enqueue(name, {"cmd": f"touch {pwned}", "args": [f"touch {pwned}"]}, unknown_ok=True)
    raw = [pickle.dumps({"class": "mark", "args": [{"id": "pickled"}]}),
           b"!!python/object/apply:os.system ['touch " + str(pwned).encode() + b"']",
           b"class: mark\nargs: [{id: yaml}]\n",
           b"\x04\x08{\x07:\x0aclassI\"\x09mark\x06:\x06ET",            # Ruby Marshal
           b"<job><class>mark</class></job>"]
    await client.redis.rpush(client.keys.queue("default"), *raw)
    await client.enqueue("mark", {"id": "after"})
    await wait_until_async(lambda: client.redis.lrange("resque:test:marks", 0, -1), 15, message="the last job ran")
    assert await client.redis.lrange("resque:test:marks", 0, -1) == ["after"], "only the registered task ran"
    await wait_until_async(lambda: _failed_at_least(client, len(names) + len(raw)), 10, message="all failed")
    entries = await client.failed()
    by_exc: dict[str, int] = {}
    for e in entries:
        by_exc[e["exception"]] = by_exc.get(e["exception"], 0) + 1
    assert by_exc == {"TaskNotFound": len(names), "JobDecodeError": len(raw)}, by_exc
    not_found = {e["payload"]["class"] for e in entries if e["exception"] == "TaskNotFound"}
    assert not_found == set(names)
    assert all("no task named" in e["error"] for e in entries if e["exception"] == "TaskNotFound")
    assert not pwned.exists()
    # the client refuses what is not JSON before anything is written
    before = await client.redis.dbsize()
    for bad in [{"b": b"bytes"}, {"s": {1, 2}}, {"o": object()}, {"f": float("nan")}, {"i": float("inf")},
                {1: "non-string key"}, {"t": __import__("datetime").datetime(2026, 1, 1)}, {"big": 2**60}]:
        with pytest.raises(EnqueueError):
            await client.enqueue("mark", bad)
    for bad_params in ["text", ["list"], 5]:
        with pytest.raises(EnqueueError):
            await client.enqueue("mark", bad_params)  # type: ignore[arg-type]
    assert await client.redis.dbsize() == before


async def _failed_at_least(client: Client, n: int) -> bool:
    return await client.failed_count() >= n


_TOKENS = [*":*?[]{}\\\r\n\t \x00\"'", "a", "é", "🙂", "queue", "resque:", "FLUSHALL", "\r\n*1\r\n$8\r\nFLUSHALL"]
HOSTILE_TEXT = st.lists(st.sampled_from(_TOKENS), max_size=8).map("".join)
HOSTILE_PARAMS = st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT | st.integers(-5, 5) | st.lists(HOSTILE_TEXT, max_size=2),
                                 min_size=1, max_size=3)


def test_params_never_change_which_queue_lock_key_is_written(redis_url: str) -> None:
    """QueueLock's key is `<ns>:lock:<task>:<queue>:<args JSON>`: one key, inside the namespace,
    whatever the params hold (`:`, `*`, newlines, RESP, hash tags, NUL...)."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)

    async def _noop(params: Any, ctx: Any) -> None:
        return None

    registry = Registry([Task(name="qlocked", run=_noop, plugins=["QueueLock"])])
    r.set("outside:canary", "1")

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(HOSTILE_PARAMS)
    def one_key(params: dict[str, Any]) -> None:
        for k in r.scan_iter(match="sec:*", count=1000):
            r.delete(k)
        before = set(r.scan_iter(count=1000))

        async def go() -> tuple[bool, bool, dict[str, str]]:
            async with await Client.connect(redis_url, "sec", registry=registry) as c:
                first = await c.enqueue("qlocked", params)
                again = await c.enqueue("qlocked", params)
                return first, again, await c.locks()

        first, again, locks = asyncio.run(go())
        assert first and not again, "the second identical enqueue is refused by the lock"
        created = set(r.scan_iter(count=1000)) - before
        lock_key = "sec:lock:qlocked:default:" + js_dumps([params])
        assert created == {"sec:queues", "sec:queue:default", "sec:corral:qtimes:default", lock_key}, created
        assert list(locks) == [lock_key.removeprefix("sec:")]
        assert r.get("outside:canary") == "1" and r.llen("sec:queue:default") == 1

    one_key()


async def test_params_never_change_which_job_lock_key_is_held(inproc_node: NodeFactory, client: Client) -> None:
    await inproc_node(TASKS)
    params_list: list[dict[str, Any]] = [
        {"id": 1, "k": "a:b:c"}, {"id": 2, "k": "*"}, {"id": 3, "k": "x\r\nFLUSHALL\r\n"},
        {"id": 4, "k": "resque:queue:default"}, {"id": 5, "k": "{hash}tag"}, {"id": 6, "k": "nul\x00byte"},
        {"id": 7, "k": "[a-z]?\\"}, {"id": 8, "a:b": {"c*": ["\n"]}}, {"id": 9, "k": "é🙂"},
    ]
    await client.redis.set("outside:canary", "1")
    for p in params_list:
        assert await client.enqueue("locked", p)
    await wait_until_async(lambda: _len_at_least(client, "resque:test:locks", len(params_list)), 15,
                           message="every locked job ran")
    runs = [json.loads(x) for x in await client.redis.lrange("resque:test:locks", 0, -1)]
    for p, run in zip(params_list, runs, strict=True):
        assert run["id"] == p["id"]
        assert run["seen"] == ["resque:workerslock:locked:default:" + js_dumps([p])], run
    assert await client.locks() == {}, "every lock was released"
    assert await client.redis.get("outside:canary") == "1"
    assert all(k.startswith("resque:") or k == "outside:canary" for k in await client.redis.keys("*"))


async def _len_at_least(client: Client, key: str, n: int) -> bool:
    return int(await client.redis.llen(key)) >= n


async def test_a_glob_namespace_does_not_read_other_namespaces(client: Client, redis_url: str) -> None:
    await client.redis.set("resque:lock:t:default:[{}]", "1")
    await client.redis.set("resque:stat:processed", "5")
    try:
        other = await Client.connect(redis_url, "res*")
    except (ValueError, EnqueueError):
        return  # refusing such a namespace is a fix too
    async with other:
        assert await other.locks() == {} and await other.stats() == {}


# -- unsafe setups -------------------------------------------------------------------------------


def test_unsafe_combinations_are_refused_with_a_reason(tmp_path: Path, redis_url: str) -> None:
    tasks = str(_tasks_dir(tmp_path))
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    cases = {
        "HTTP on every interface with the embedded Redis": (
            ["node", "--http-host", "0.0.0.0", "--tasks-dir", tasks], {}, "embedded Redis meant for local use"),
        "HTTP on every IPv6 interface with the embedded Redis": (
            ["node", "--tasks-dir", tasks], {"CORRAL_HTTP_HOST": "::"}, "embedded Redis meant for local use"),
        "TLS files with a plain-text URL": (
            ["node", "--redis-url", redis_url, "--redis-tls-ca-file", str(ca), "--tasks-dir", tasks], {},
            "TLS files are set but the redis url does not use rediss://"),
        "two passwords": (
            ["node", "--redis-url", "redis://u:pw1@127.0.0.1:1/0", "--tasks-dir", tasks],
            {"CORRAL_REDIS_PASSWORD": "pw2"}, "the Redis password is given more than once"),
        "sentinels without a master name": (
            ["node", "--redis-sentinels", "127.0.0.1:1", "--tasks-dir", tasks], {}, "must be set together"),
    }
    procs = {what: (_node_cmd(*argv, env=env), needle) for what, (argv, env, needle) in cases.items()}
    problems = []
    for what, (p, needle) in procs.items():
        code, err = _finish(p, 30)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if code != 2 or len(lines) != 1 or needle not in lines[0] or "pw1" in err or "pw2" in err:
            problems.append(f"{what}: exit {code}: {err[-300:]!r}")
    assert not problems, "\n".join(problems)


# -- Sentinel with its own password, ACL user and TLS (as bitnami/redis deploys it) ---------------

SENTINEL_PW = "S3ntinel-Pw-4e1a"
SENTINEL_USER = "watcher"
SENTINEL_USER_PW = "W4tcher-Pw-0b7d"


@pytest.fixture
def sentinel_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """`sentinel_factory(primary_port, **options)`: one `redis-server --sentinel` monitoring
    `mymaster` at 127.0.0.1:primary_port (quorum 1), with `options` as sentinel.conf directives."""
    started: list[RedisServer] = []

    def make(primary_port: int, *, monitor: Sequence[str] = (), **options: Any) -> RedisServer:
        binary = subprocess.run(["which", "redis-server"], capture_output=True, text=True).stdout.strip()
        s = RedisServer(tmp_path / f"sentinel{len(started)}", binary=binary, options={
            "sentinel": [f"monitor mymaster 127.0.0.1 {primary_port} 1", "down-after-milliseconds mymaster 5000",
                         *monitor], **options})
        s.argv.append("--sentinel")
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.kill()


def _sentinel_args(sentinel: RedisServer, *extra: str, port: int | None = None) -> list[str]:
    return ["--redis-sentinels", f"127.0.0.1:{port or sentinel.port}", "--redis-sentinel-master", "mymaster", *extra]


def test_password_protected_sentinels(redis_factory: Callable[..., RedisServer],
                                      sentinel_factory: Callable[..., RedisServer],
                                      node_cluster: NodeCluster, tmp_path: Path) -> None:
    """Sentinels with `requirepass` and an ACL user, the primary with a password of its own:
    nodes and the CLI reach the primary with the Sentinel credentials as flags, env or config
    file; without them, or wrong, the boot stops at once naming the Sentinel and what to set."""
    primary = redis_factory(requirepass=ADMIN_PW)
    sentinel = sentinel_factory(primary.port, monitor=[f"auth-pass mymaster {ADMIN_PW}"], requirepass=SENTINEL_PW,
                                user=[f"{SENTINEL_USER} on >{SENTINEL_USER_PW} allchannels +@all"])
    tasks = _tasks_dir(tmp_path)
    target = f"sentinel://127.0.0.1:{sentinel.port}/mymaster"
    common = ["--redis-password", ADMIN_PW, "--tasks-dir", str(tasks), "--http-port", str(free_port())]
    refused = {
        "it requires a password and none is configured for the Sentinels (--redis-sentinel-password)":
            _node_cmd("node", *_sentinel_args(sentinel), *common),
        "wrong Sentinel password for the default user":
            _node_cmd("node", *_sentinel_args(sentinel, "--redis-sentinel-password", WRONG_PW), *common),
        f"wrong Sentinel password for user {SENTINEL_USER!r}":
            _node_cmd("status", "--redis-url", _plain_url(primary),  # the CLI takes the CORRAL_REDIS_* env
                      env={"CORRAL_REDIS_SENTINELS": f"127.0.0.1:{sentinel.port}", "CORRAL_REDIS_SENTINEL_MASTER":
                           "mymaster", "CORRAL_REDIS_SENTINEL_USERNAME": SENTINEL_USER,
                           "CORRAL_REDIS_SENTINEL_PASSWORD": WRONG_PW, "CORRAL_REDIS_PASSWORD": ADMIN_PW}),
    }
    config = tmp_path / "corral.toml"
    config.write_text(f'[redis]\nsentinels = ["127.0.0.1:{sentinel.port}"]\nsentinel_master = "mymaster"\n'
                      f'sentinel_username = "{SENTINEL_USER}"\nsentinel_password = "{SENTINEL_USER_PW}"\n')
    plain = _plain_url(primary)
    a = node_cluster.add("sentinel-flags", redis_url=plain, tasks_dir=tasks, extra_args=_sentinel_args(
        sentinel, "--redis-password", ADMIN_PW, "--redis-sentinel-password", SENTINEL_PW, "--log-level", "debug"))
    b = node_cluster.add("sentinel-env", redis_url=plain, tasks_dir=tasks, extra_args=_sentinel_args(sentinel),
                         env={"CORRAL_REDIS_SENTINEL_PASSWORD": SENTINEL_PW, "CORRAL_REDIS_PASSWORD": ADMIN_PW})
    c = node_cluster.add("sentinel-file", redis_url=plain, tasks_dir=tasks, extra_args=["--config", str(config)],
                         env={"CORRAL_REDIS_PASSWORD": ADMIN_PW})
    for n in (a, b, c):
        n.wait_ready(30)
    node_cluster.wait_leader(15)
    s = RedisSettings(sentinels=(f"127.0.0.1:{sentinel.port}",), sentinel_master="mymaster", password=ADMIN_PW,
                      sentinel_password=SENTINEL_PW)

    async def job() -> None:
        async with await Client.connect(settings=s) as client:
            await client.enqueue("mark", {"id": "via-sentinel"})
            await wait_until_async(lambda: client.redis.lrange("resque:test:marks", 0, -1), 15,
                                   message="the job ran on a primary found through the Sentinel")

    asyncio.run(job())
    for words, proc in refused.items():
        code, err = _finish(proc)
        # the one error line; a password given as a flag adds its own warning (visible in `ps`)
        lines = [ln for ln in err.splitlines() if ln.strip() and "visible in `ps`" not in ln]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (words, code, err[-500:])
        assert f"cannot reach Redis at {target}: Sentinel 127.0.0.1:{sentinel.port} refused authentication: " \
               f"{words}" in lines[0], lines[0]
        _assert_no_secret("a refused boot", err, ADMIN_PW, SENTINEL_PW, SENTINEL_USER_PW)
    for n in (a, b, c):
        _assert_no_secret(f"{n.node_id}'s log", json.dumps(n.log_records()), ADMIN_PW, SENTINEL_PW, SENTINEL_USER_PW)
        _assert_no_secret(f"{n.node_id}'s /status", json.dumps(n.status()), ADMIN_PW, SENTINEL_PW, SENTINEL_USER_PW)


def test_sentinels_over_tls(redis_factory: Callable[..., RedisServer], sentinel_factory: Callable[..., RedisServer],
                            node_cluster: NodeCluster, tls_dir: Path, tmp_path: Path) -> None:
    """bitnami/redis with TLS: the primary and the Sentinel speak TLS only on their TLS ports (the
    Sentinel monitors the primary over TLS); `--redis-sentinel-tls` with the CA reaches both."""
    d = tls_dir
    ca = str(d / "ca.pem")
    tls = {"tls_cert_file": str(d / "server.pem"), "tls_key_file": str(d / "server.key"), "tls_ca_cert_file": ca,
           "tls_auth_clients": "no"}
    primary_tls = free_port()
    redis_factory(tls_port=primary_tls, **tls)
    sentinel_tls = free_port()
    sentinel = sentinel_factory(primary_tls, tls_port=sentinel_tls, tls_replication="yes", **tls)
    tasks = _tasks_dir(tmp_path)
    tls_args = ["--redis-sentinel-tls", "--redis-tls-ca-file", ca]
    wrong_ca = _node_cmd("node", *_sentinel_args(sentinel, "--redis-sentinel-tls", "--redis-tls-ca-file",
                                                 str(d / "other-ca.pem"), port=sentinel_tls),
                         "--tasks-dir", str(tasks), "--http-port", str(free_port()))
    no_tls = _node_cmd("node", *_sentinel_args(sentinel, port=sentinel_tls), "--tasks-dir", str(tasks),
                       "--http-port", str(free_port()))
    node = node_cluster.add("sentinel-tls", tasks_dir=tasks, extra_args=_sentinel_args(sentinel, *tls_args,
                                                                                    port=sentinel_tls))
    node.wait_ready(30)
    wait_until(node.is_leader, 10, message="the node leads through the TLS Sentinel")
    for proc, scheme, words in (
            (wrong_ca, "sentinels", f"Sentinel 127.0.0.1:{sentinel_tls}: certificate not trusted"),
            (no_tls, "sentinel", f"Sentinel 127.0.0.1:{sentinel_tls} speaks TLS: set --redis-sentinel-tls")):
        code, err = _finish(proc)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, (words, code, err[-500:])
        assert f"cannot reach Redis at {scheme}://127.0.0.1:{sentinel_tls}/mymaster: {words}" in lines[0], lines[0]
