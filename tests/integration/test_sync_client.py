"""`cluster.SyncClient`, the blocking client for sync code, against real redis-servers: the same
bytes and keys as the async `Client` for the same calls, the same errors, a real node running
what it queued, and what a web server's threads and a pre-forking server do to it (threads, fork,
a stalled server, a flushed script cache), over ACL users, unix sockets and TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.exceptions

from cluster import Client, QueueLock, Registry, SyncClient, Task, UnknownTask
from cluster.connection import RedisSettings, make_redis
from cluster.errors import ConfigError, EnqueueError
from cluster.keys import Keys
from cluster.rawconn import pack
from cluster.testing import FakeClock
from cluster.wire import encode_job
from tests.integration.test_security import _tls_server, sentinel_factory, tls_dir  # noqa: F401 (fixtures)
from tests.support import free_port, wait_until
from tests.support.inproc import NodeFactory, wait_for
from tests.support.servers import RedisServer

K = Keys("resque")
NOW = 1_700_000_000.25


async def _noop(params: dict[str, Any], ctx: Any) -> None: ...


REGISTRY = Registry([Task(name="mailer", queue="mail", run=_noop),
                     Task(name="locked", queue="locks", run=_noop, plugins=[QueueLock])])


@pytest.fixture
def look(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()


@pytest.fixture
def sync(redis_url: str) -> Iterator[SyncClient]:
    with SyncClient.connect(redis_url) as c:
        yield c


def _dump(r: redis.Redis) -> dict[str, Any]:
    """Every key with its type and content; qtimes entries keep their count, not their ms."""
    out: dict[str, Any] = {}
    for k in sorted(r.keys("*")):
        t = r.type(k)
        if t == "list":
            v: Any = r.lrange(k, 0, -1)
            if ":qtimes:" in k:
                v = [x.split(":")[0] for x in v]
        elif t == "set":
            v = sorted(r.smembers(k))
        elif t == "zset":
            v = r.zrange(k, 0, -1, withscores=True)
        elif t == "hash":
            v = r.hgetall(k)
        else:
            v = r.get(k)
        out[k] = (t, v)
    return out


def _calls(c: Any) -> list[Any]:
    """The same calls for both clients (the async one's coroutines are awaited by the caller)."""
    return [
        lambda: c.enqueue("mailer", {"to": "evan@example.com", "ü": "\udcff"}),
        lambda: c.enqueue("other", None, queue="q2", unknown_ok=True),
        lambda: c.enqueue("other", raw_args=[1, "two", None], queue="q2"),
        lambda: c.enqueue_at(1_900_000_000.5, "mailer", {"n": 1}),
        lambda: c.enqueue_in(30, "mailer", {"n": 2}, queue="later"),
        lambda: c.enqueue_many([("mailer", {"i": i}) for i in range(7)] + [("other", {"j": 1})], queue="bulk"),
        lambda: c.enqueue_many([("mailer", {"i": i}) for i in range(3)], batch_size=2),
    ]


def test_same_bytes_and_keys_as_the_async_client(redis_url: str, look: redis.Redis) -> None:
    async def with_async() -> list[Any]:
        c = Client(make_redis(RedisSettings(url=redis_url)), registry=REGISTRY, clock=FakeClock(NOW))
        try:
            return [await call() for call in _calls(c)]
        finally:
            await c.close()

    async_results = asyncio.run(with_async())
    written_by_async = _dump(look)
    look.flushall()
    with SyncClient(RedisSettings(url=redis_url), registry=REGISTRY, clock=FakeClock(NOW)) as s:
        sync_results = [call() for call in _calls(s)]
    assert sync_results == async_results == [True, True, True, 1_900_000_001, int(NOW + 30) + 1, 8, 3]
    assert _dump(look) == written_by_async
    assert look.lrange(K.queue("mail"), 0, 0) == [encode_job("mailer", "mail", [{"to": "evan@example.com",
                                                                               "ü": "\udcff"}])]


def test_bad_input_raises_the_async_clients_errors_and_writes_nothing(sync: SyncClient, look: redis.Redis) -> None:
    for call, words in (
            (lambda: sync.enqueue("", {}), "non-empty string"),
            (lambda: sync.enqueue("t", [1]), "params must be a JSON object"),  # type: ignore[arg-type]
            (lambda: sync.enqueue("t", raw_args="x"), "raw_args must be a list"),
            (lambda: sync.enqueue_at(1_900_000_000_000, "t"), "looks like milliseconds"),
            (lambda: sync.enqueue_in(-1, "t"), "non-negative"),
            (lambda: sync.enqueue_many([("t",)]), "pairs"),  # type: ignore[list-item]
    ):
        with pytest.raises(EnqueueError, match=words):
            call()
    small = SyncClient(sync.settings, max_payload_bytes=100)
    with pytest.raises(EnqueueError, match="the limit is 100"):
        small.enqueue("t", {"x": "é" * 60})
    small.close()
    assert look.keys("*") == []
    with pytest.raises(ConfigError, match="unknown Redis option"):
        SyncClient.connect("redis://127.0.0.1:1/0", sockettimeout=1)
    with pytest.raises(ConfigError, match="must start with redis://"):
        SyncClient(RedisSettings(url="http://127.0.0.1/0"))


def test_a_wrong_type_queue_key_gives_badkey_and_writes_nothing(sync: SyncClient, look: redis.Redis) -> None:
    look.set(K.queue("q"), "not a list")
    before = _dump(look)
    with pytest.raises(redis.exceptions.ResponseError, match=f"BADKEY {K.queue('q')} holds a string"):
        sync.enqueue("t", {}, queue="q")
    with pytest.raises(redis.exceptions.ResponseError, match="BADKEY"):
        sync.enqueue_many([("t", {"i": 1})], queue="q")
    assert _dump(look) == before
    assert sync.enqueue("t", {}, queue="fine") is True  # the connection goes on


def test_a_queue_lock_task_refuses_the_second_enqueue(redis_url: str, look: redis.Redis) -> None:
    with SyncClient.connect(redis_url, registry=REGISTRY) as c:
        assert [c.enqueue("locked", {"a": 1}) for _ in range(2)] == [True, False]
        assert c.enqueue("locked", {"a": 2}) is True  # other args, other lock
        assert c.enqueue_many([("locked", {"a": 1}), ("locked", {"a": 3})]) == 1
        assert c.length("locks") == 3
        assert c.enqueue("mailer", {}) is True  # the plain path after the plugin path
        plugin_threads = [t for t in threading.enumerate() if t.name == "corral-sync-client-plugins"]
        assert len(plugin_threads) == 1
    assert len(look.keys(K.queue_lock("locked", "locks", "*"))) == 3
    plugin_threads[0].join(5)
    assert not plugin_threads[0].is_alive(), "close() stops the plugin loop's thread"


def test_sixteen_threads_each_enqueue_200(sync: SyncClient, look: redis.Redis) -> None:
    start = threading.Barrier(16)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait(10)
            for i in range(200):
                sync.enqueue("t", {"t": t, "i": i}, queue="many")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    assert sync._async._thread is None, "the plain path stays on blocking sockets: no plugin loop"
    jobs = look.lrange(K.queue("many"), 0, -1)
    assert len(jobs) == 3200 and len(set(jobs)) == 3200
    assert len(sync._pool._free) <= 16  # a connection per concurrent caller at most, all given back
    clients = [c for c in look.client_list() if c["cmd"] == "evalsha"]
    assert 1 <= len(clients) <= 16


def _client_id(c: SyncClient) -> int:
    return int(c._pool.run(lambda conn: conn.call(pack(["CLIENT", "ID"]))))


def _wait_child(pid: int, timeout: float) -> int:
    """The child's exit code; a child still running after `timeout` is killed (then -9)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9


def test_after_fork_the_child_uses_its_own_sockets_and_the_parents_still_work(redis_url: str,
                                                                               look: redis.Redis) -> None:
    sync = SyncClient(RedisSettings(url=redis_url), registry=REGISTRY)
    sync.enqueue("t", {"who": "parent"}, queue="f")
    assert sync.enqueue("locked", {"who": "parent"}) is True  # the plugin loop runs in the parent
    parent_id = _client_id(sync)
    with sync._async._lock, sync._pool._lock:  # held at the fork, as by other threads of a web server
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if it enqueued on connections of its own
            code = 1
            try:
                for i in range(50):
                    sync.enqueue("t", {"who": "child", "i": i}, queue="f")
                locked = [sync.enqueue("locked", {"who": "child"}) for _ in range(2)]  # its own plugin loop
                code = 0 if _client_id(sync) != parent_id and locked == [True, False] else 3
                sync.close()
            finally:
                os._exit(code)
    assert _wait_child(pid, 20) == 0
    assert _client_id(sync) == parent_id, "the parent's connection survived the child"
    sync.enqueue("t", {"who": "parent", "again": True}, queue="f")
    assert sync.enqueue("locked", {"who": "parent", "again": True}) is True  # the parent's plugin loop too
    sync.close()
    assert look.llen(K.queue("f")) == 52
    assert look.llen(K.queue("locks")) == 3


def test_a_server_that_never_answers_times_out_and_the_call_is_not_retried() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    received: list[bytes] = []
    accepted = 0

    def serve() -> None:  # accept and read, never answer
        nonlocal accepted
        listener.settimeout(5)
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            accepted += 1
            with conn:
                while data := conn.recv(65536):
                    received.append(data)

    server = threading.Thread(target=serve)
    server.start()
    c = SyncClient(RedisSettings(url=f"redis://127.0.0.1:{port}/0", socket_timeout=0.5), registry=REGISTRY)
    try:
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError) as e:
            c.enqueue("mailer", {"n": 1})
        took = time.monotonic() - t0
        assert "connecting" not in str(e.value).lower()
        assert 0.45 <= took < 3.0, took
        server.join(5)  # the client closed its connection: the reader saw EOF
        assert not server.is_alive()
        assert b"".join(received).count(b"EVALSHA") == 1 and accepted == 1, "sent once"
        listener.setblocking(False)  # a second connection would be in the backlog by now: never retried
        with pytest.raises(BlockingIOError):
            listener.accept()
        assert c._pool._free == []
    finally:
        c.close()
        listener.close()
    refused = SyncClient(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5),
                         registry=REGISTRY)
    with pytest.raises(redis.exceptions.ConnectionError, match="connecting"):
        refused.enqueue("mailer", {})
    refused.close()


def test_a_connect_that_hangs_ends_at_the_connect_timeout() -> None:
    full = socket.socket()  # a backlog of 0, taken by one connection: the next SYNs go unanswered
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    first = socket.create_connection(full.getsockname(), timeout=2)
    c = SyncClient(RedisSettings(url=f"redis://127.0.0.1:{full.getsockname()[1]}/0", connect_timeout=0.4,
                                 socket_timeout=30), registry=REGISTRY)
    try:
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError, match="connecting"):
            c.enqueue("mailer", {})
        assert 0.35 <= time.monotonic() - t0 < 5, "bounded by connect_timeout, not socket_timeout"
    finally:
        c.close()
        first.close()
        full.close()


def test_noscript_after_script_flush_recovers(sync: SyncClient, look: redis.Redis) -> None:
    sync.enqueue("t", {}, queue="q")
    sync.enqueue_at(1_900_000_000, "t", {}, queue="q")
    look.script_flush()
    assert sync.enqueue("t", {"n": 2}, queue="q") is True
    look.script_flush()
    assert sync.enqueue_at(1_900_000_001, "t", {"n": 2}, queue="q") == 1_900_000_001
    look.script_flush()
    assert sync.enqueue_many([("t", {"i": i}) for i in range(5)], queue="q", batch_size=2) == 5
    assert look.llen(K.queue("q")) == 7
    assert look.zcard(K.delayed_schedule) == 2


def test_an_acl_user_a_database_and_a_unix_socket(redis_factory: Callable[..., RedisServer],
                                                  tmp_path: Path) -> None:
    from node.acl import acl_rule

    sock = tmp_path / "r.sock"
    server = redis_factory(requirepass="admin-pw", user=[f"corral on >user-pw {acl_rule('resque')}"],
                           unixsocket=str(sock), unixsocketperm=700)
    admin = redis.Redis(port=server.port, password="admin-pw", decode_responses=True)
    try:
        with SyncClient.connect(server.url_for(0, username="corral", password="user-pw")) as c:
            assert c.enqueue("t", {"acl": 1}, queue="q") is True
            assert c.length("q") == 1
        with SyncClient.connect(f"unix://{sock}?db=4", password="admin-pw") as c:
            assert c.enqueue("t", {"unix": 1}, queue="q") is True
        assert admin.llen(K.queue("q")) == 1
        admin.select(4)
        assert admin.lrange(K.queue("q"), 0, -1) == [encode_job("t", "q", [{"unix": 1}])]
        assert admin.acl_log() == []
        with pytest.raises(redis.exceptions.AuthenticationError):
            SyncClient.connect(server.url_for(0, username="corral", password="wrong"))
    finally:
        admin.close()


def test_tls_with_a_client_certificate(redis_factory: Callable[..., RedisServer], tls_dir: Path) -> None:  # noqa: F811
    d = tls_dir
    _server, port = _tls_server(redis_factory, d, "yes")
    settings = RedisSettings(url=f"rediss://127.0.0.1:{port}/0", tls_ca_file=str(d / "ca.pem"),
                             tls_cert_file=str(d / "client.pem"), tls_key_file=str(d / "client.key"))
    with SyncClient(settings) as c:
        assert c.enqueue("t", {"tls": 1}, queue="q") is True
        assert c.length("q") == 1
    wrong_ca = RedisSettings(url=settings.url, tls_ca_file=str(d / "other-ca.pem"))
    with pytest.raises(redis.exceptions.ConnectionError, match="connecting"):
        SyncClient.connect(settings=wrong_ca)


NODE_TASKS = '''
from cluster import task


@task(name="mailer", queue="mail")
async def mailer(params, ctx):
    await ctx.client.redis.rpush("resque:test:ran", str(params["n"]))
'''


async def test_a_real_node_runs_what_it_queued_and_its_catalogue_refuses_unknown_names(
        inproc_node: NodeFactory, redis_url: str) -> None:
    look = make_redis(RedisSettings(url=redis_url))
    c = SyncClient(RedisSettings(url=redis_url))
    try:
        await inproc_node(NODE_TASKS, queues=("mail",))
        # no queue given: the task's queue, from the node's catalogue
        assert await asyncio.to_thread(c.enqueue, "mailer", {"n": 1}) is True
        await wait_for(lambda: _ran(look, ["1"]), 10, what="the node ran the job SyncClient queued")
        with pytest.raises(UnknownTask, match="did you mean 'mailer'") as e:
            await asyncio.to_thread(c.enqueue, "mailr", {"n": 2})
        assert e.value.close == ["mailer"]
        assert await asyncio.to_thread(c.enqueue, "mailr", {"n": 2}, queue="elsewhere", unknown_ok=True) is True
        assert await asyncio.to_thread(c.length, "elsewhere") == 1  # no node serves that queue
    finally:
        c.close()
        await look.aclose()


async def _ran(look: Any, expected: list[str]) -> bool:
    return bool(await look.lrange("resque:test:ran", 0, -1) == expected)


def test_sentinel_finds_the_primary_and_follows_a_failover(redis_factory: Callable[..., RedisServer],
                                                          sentinel_factory: Callable[..., RedisServer]) -> None:  # noqa: F811
    primary = redis_factory()
    replica = redis_factory(replicaof=f"127.0.0.1 {primary.port}")
    wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 15,
               message="the replica is in sync")
    sentinel = sentinel_factory(primary.port, requirepass="sentinel-pw")
    settings = RedisSettings(url="redis://ignored.invalid:1/0", sentinels=(f"127.0.0.1:{sentinel.port}",),
                             sentinel_master="mymaster", sentinel_password="sentinel-pw", socket_timeout=2.0)
    ask = redis.Redis(port=sentinel.port, password="sentinel-pw", decode_responses=True)
    with SyncClient(settings) as c:
        assert c.enqueue("t", {"n": 1}, queue="q") is True
        assert primary.client().llen(K.queue("q")) == 1
        def failover_started() -> bool:  # NOGOODSLAVE until the Sentinel has read the replica's INFO itself
            try:
                return bool(ask.sentinel_failover("mymaster"))
            except redis.exceptions.ResponseError as e:
                assert "NOGOODSLAVE" in str(e)
                return False

        wait_until(failover_started, 30, interval=0.2, message="the Sentinel starts a failover")
        wait_until(lambda: replica.info("replication").get("role") == "master", 30, message="the replica promoted")
        # the former primary takes writes until the Sentinel turns it into a replica (any Sentinel client's window)
        wait_until(lambda: primary.info("replication").get("role") == "slave", 30, message="the primary demoted")
        failures = 0

        def queued() -> bool:  # the connection to the former primary fails once (killed, or READONLY)
            nonlocal failures
            try:
                return c.enqueue("t", {"n": 2}, queue="q")
            except redis.exceptions.ConnectionError:
                failures += 1
                return False

        wait_until(queued, 30, interval=0.2, message="an enqueue reaches the new primary")
        assert replica.client(decode_responses=True).lrange(K.queue("q"), 0, -1) == [
            encode_job("t", "q", [{"n": 1}]), encode_job("t", "q", [{"n": 2}])]
        assert failures <= 1, "one call fails on the former primary's connection, then the Sentinels are asked again"
    ask.close()
    wrong = RedisSettings(url="redis://127.0.0.1:1/0", sentinels=(f"127.0.0.1:{sentinel.port}",),
                          sentinel_master="mymaster", sentinel_password="wrong", connect_timeout=1.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="No master found"):
        SyncClient.connect(settings=wrong)


def test_replies_larger_than_the_receive_buffer_and_pipelines(sync: SyncClient, look: redis.Redis) -> None:
    big = "é" * 300_000  # 600 KB: many recv_into calls of 64 KB for one reply
    look.set("resque:test:big", big)
    assert sync._pool.run(lambda c: c.call(pack(["GET", "resque:test:big"]))) == big
    replies = sync._pool.run(lambda c: c.pipeline([pack(["GET", "resque:test:big"]), pack(["LLEN", "x"]),
                                                   pack(["INCR", "resque:test:big"]), pack(["PING"])]))
    assert replies[0] == big and replies[1] == 0 and replies[3] == "PONG"
    assert isinstance(replies[2], redis.exceptions.ResponseError)  # an error reply is a value in a pipeline
    assert sync.enqueue("t", {}, queue="q") is True  # and the connection is still in step


def test_a_readonly_reply_from_a_stale_primary_asks_the_sentinels_again(
        redis_factory: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch) -> None:
    import cluster.syncconn

    primary = redis_factory()
    replica = redis_factory(replicaof=f"127.0.0.1 {primary.port}")
    answers = [("127.0.0.1", replica.port), ("127.0.0.1", primary.port)]  # a Sentinel's stale answer first
    asked: list[tuple[str, int]] = []

    def discover(settings: RedisSettings, tls: Any) -> tuple[str, int]:
        asked.append(answers[min(len(asked), 1)])
        return asked[-1]

    monkeypatch.setattr(cluster.syncconn, "discover_primary", discover)
    settings = RedisSettings(url="redis://ignored.invalid:1/0", sentinels=("127.0.0.1:1",), sentinel_master="m")
    with SyncClient(settings, registry=REGISTRY) as c:
        with pytest.raises(redis.exceptions.ConnectionError, match="read-only replica"):
            c.enqueue("mailer", {"n": 1})
        assert c.enqueue("mailer", {"n": 2}) is True
        assert c.enqueue("mailer", {"n": 3}) is True
    assert len(asked) == 2, "asked once more after READONLY, not at every call"
    with primary.client(decode_responses=True) as look:
        assert look.lrange(K.queue("mail"), 0, -1) == [encode_job("mailer", "mail", [{"n": n}]) for n in (2, 3)]


def test_sentinel_and_primary_over_tls(redis_factory: Callable[..., RedisServer],
                                       sentinel_factory: Callable[..., RedisServer], tls_dir: Path) -> None:  # noqa: F811
    d = tls_dir
    ca = str(d / "ca.pem")
    tls = {"tls_cert_file": str(d / "server.pem"), "tls_key_file": str(d / "server.key"), "tls_ca_cert_file": ca,
           "tls_auth_clients": "no"}
    primary_tls = free_port()
    primary = redis_factory(tls_port=primary_tls, **tls)
    sentinel_tls = free_port()
    sentinel_factory(primary_tls, tls_port=sentinel_tls, tls_replication="yes", **tls)
    settings = RedisSettings(url="redis://ignored.invalid:1/0", sentinels=(f"127.0.0.1:{sentinel_tls}",),
                             sentinel_master="mymaster", sentinel_tls=True, tls_ca_file=ca)
    with SyncClient.connect(settings=settings) as c:
        assert c.enqueue("t", {"tls": True}, queue="q") is True
    with primary.client(decode_responses=True) as look:  # the plain port the harness keeps open
        assert look.lrange(K.queue("q"), 0, -1) == [encode_job("t", "q", [{"tls": True}])]
    plain = RedisSettings(url=settings.url, sentinels=settings.sentinels, sentinel_master="mymaster",
                          connect_timeout=1.0, socket_timeout=1.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="No master found"):
        SyncClient.connect(settings=plain)  # a TLS Sentinel asked in plain text
