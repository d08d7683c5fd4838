"""Redis answering errors, and F8 short (Sentinel failover), with real `corral node` processes.

Cells (docs/FAULTS.md §2 topology, leader election is covered elsewhere):

- **OOM**: `maxmemory 1` with `noeviction` for longer than `dead_after`: enqueues are refused
  with OOM errors (never half-written), workers keep fetching and acking (Redis lets a script
  that already wrote finish), `/readyz` turns 503 with a reason, and after `maxmemory 0` every
  node is ready again by itself.
- **READONLY**: the node's Redis becomes a replica (`REPLICAOF` a second server that was its own
  replica a moment before, so no data is lost), then `REPLICAOF NO ONE`.
- **Connection resets**: every node's `TcpProxy` in `reset` mode (RST on every connection, new
  ones reset at once) for less than `dead_after`; producers keep enqueueing directly.

In each: nodes back off (bounded Redis error rate), `/readyz` says not ready and why, they recover
on their own (ready again, one leader), and every job whose enqueue was acknowledged runs exactly
once (jobs append to a per-process JSONL file, never to Redis); refused enqueues never run.

- **F8 short**: 1 primary + 1 replica + 3 sentinels (`redis-server <conf> --sentinel`,
  down-after 1000 ms); nodes started with `--redis-sentinels ... --redis-sentinel-master
  mymaster`; SIGKILL the primary: the nodes follow the promoted replica without a restart (a job
  enqueued through Sentinel after the failover runs) and a leader exists again.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from cluster.client import Client
from cluster.redis_settings import RedisSettings
from tests.support import wait_until
from tests.support.jobtasks import TASKS, read_log
from tests.support.nodes import NodeCluster, NodeProcess
from tests.support.servers import RedisServer, find_binary

FAST = ["--heartbeat-interval", "0.5", "--dead-after", "3", "--poll-interval", "0.1"]


def _tasks_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir(exist_ok=True)
    (d / "jobs.py").write_text(TASKS.replace("tick = Task", "_tick = Task"))  # no periodic task
    return d


@dataclass
class Ledger:
    """Every enqueue the harness tried: acknowledged, refused (with the error), or unknown."""

    acked: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


async def _enqueue(settings: RedisSettings, ledger: Ledger, ids: list[str], task: str = "work",
                   seconds: float = 0.0) -> None:
    client = await Client.connect(settings=settings)
    try:
        for job_id in ids:
            try:
                await client.enqueue(task, {"id": job_id, "s": seconds})
            except redis.exceptions.TimeoutError:
                ledger.unknown.append(job_id)
            except (redis.exceptions.RedisError, OSError) as e:
                ledger.refused[job_id] = f"{type(e).__name__}: {e}"
            else:
                ledger.acked.append(job_id)
    finally:
        await client.close()
        # Client.close() leaves the Sentinel's own connections open (product bug, see the report): close them
        manager = getattr(client.redis.connection_pool, "sentinel_manager", None)
        for sentinel_client in getattr(manager, "sentinels", []):
            await sentinel_client.aclose()


def enqueue(url: str, ledger: Ledger, ids: list[str], **kw: Any) -> None:
    asyncio.run(_enqueue(RedisSettings(url=url), ledger, ids, **kw))


def _runs(logdir: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    recs = read_log(logdir)
    return (collections.Counter(r["id"] for r in recs if r["kind"] == "start"),
            collections.Counter(r["id"] for r in recs if r["kind"] == "end"))


def check_exactly_once(logdir: Path, ledger: Ledger, timeout: float = 30.0) -> dict[str, Any]:
    """Wait (bounded) until every acknowledged job ended, then count lost, duplicated, unexpected."""
    def all_ended() -> bool:
        return all(_runs(logdir)[1][i] for i in ledger.acked)

    try:
        wait_until(all_ended, timeout, 0.1, message="every acknowledged job to run")
    except AssertionError:
        pass
    time.sleep(0.3)  # a straggling duplicate would show up here
    starts, ends = _runs(logdir)
    known = set(ledger.acked) | set(ledger.unknown)
    return {
        "acked": len(ledger.acked), "refused": len(ledger.refused), "unknown": len(ledger.unknown),
        "lost": sorted(i for i in ledger.acked if not ends[i]),
        "duplicated": sorted(i for i in ledger.acked if starts[i] > 1 or ends[i] > 1),
        "unexpected": sorted(i for i in set(starts) | set(ends) if i not in known),
    }


def _errors(node: NodeProcess) -> float:
    total = 0.0
    for line in node.metrics_text().splitlines():
        if line.startswith("corral_redis_errors_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_not_ready(nodes: list[NodeProcess], timeout: float) -> dict[str, str]:
    """Every node answers /readyz 503 with a reason (bounded); returns node -> reason."""
    reasons: dict[str, str] = {}

    def all_not_ready() -> bool:
        for n in nodes:
            if n.node_id in reasons:
                continue
            status, body = n.readyz()
            if status == 503:
                assert isinstance(body, dict) and body.get("ready") is False and body.get("reason"), body
                reasons[n.node_id] = body["reason"]
        return len(reasons) == len(nodes)

    wait_until(all_not_ready, timeout, 0.05, message="every node's /readyz to report not ready")
    return reasons


def _wait_ready(nodes: list[NodeProcess], timeout: float) -> None:
    wait_until(lambda: all(n.readyz()[0] == 200 for n in nodes), timeout, 0.05, message="every node ready again")


def _start(node_cluster: NodeCluster, url: str, tmp_path: Path, n: int = 2, **kw: Any) -> tuple[list[NodeProcess], Path]:
    logdir = tmp_path / "joblog"
    logdir.mkdir(exist_ok=True)
    nodes = [node_cluster.add(f"n{i + 1}", redis_url=url, tasks_dir=_tasks_dir(tmp_path), queues="default,default",
                              env={"JOBLOG_DIR": str(logdir)}, **kw) for i in range(n)]
    for node in nodes:
        node.wait_ready(30)
    node_cluster.wait_leader(15)
    return nodes, logdir


def _report(cell: str, result: dict[str, Any], **figures: Any) -> None:
    shown = {k: (len(v) if isinstance(v, list) else v) for k, v in result.items()}
    print(f"\n{cell}: {shown} " + " ".join(f"{k}={v}" for k, v in figures.items()))


def _assert_clean(result: dict[str, Any]) -> None:
    assert not result["lost"], f"acknowledged jobs lost: {result['lost']}"
    assert not result["unexpected"], f"jobs that were refused (or never enqueued) ran: {result['unexpected']}"


def _duplicates_after_a_long_outage(result: dict[str, Any]) -> None:
    assert not result["duplicated"], (
        f"after a Redis write outage the new leader declared live nodes dead: {result['duplicated']}")


# -- OOM -----------------------------------------------------------------------------------------


def test_oom_refuses_enqueues_cleanly_and_nodes_recover(redis_factory: Callable[..., RedisServer],
                                                        node_cluster: NodeCluster, tmp_path: Path) -> None:
    server = redis_factory(maxmemory_policy="noeviction")
    nodes, logdir = _start(node_cluster, server.url, tmp_path, extra_args=FAST)
    ledger = Ledger()
    enqueue(server.url, ledger, [f"pre{i}" for i in range(30)], seconds=0.3)  # some run across the fault
    wait_until(lambda: sum(_runs(logdir)[0].values()) >= 3, 10, message="jobs in flight")
    errors_before = {n.node_id: _errors(n) for n in nodes}
    admin = server.client()
    admin.config_set("maxmemory", "1")
    t0 = time.monotonic()
    ended_before = sum(_runs(logdir)[1].values())
    enqueue(server.url, ledger, [f"oom{i}" for i in range(20)], seconds=0.0)
    assert len(ledger.refused) == 20 and all("maxmemory" in why for why in ledger.refused.values()), ledger.refused
    reasons = _wait_not_ready(nodes, 8)
    not_ready_after = time.monotonic() - t0
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
    window = time.monotonic() - t0
    rates = {n.node_id: (_errors(n) - errors_before[n.node_id]) / window for n in nodes}
    ended_during = sum(_runs(logdir)[1].values()) - ended_before
    assert all(n.running for n in nodes)
    admin.config_set("maxmemory", "0")
    t_heal = time.monotonic()
    _wait_ready(nodes, 10)
    ready_after = time.monotonic() - t_heal
    node_cluster.wait_leader(10)
    enqueue(server.url, ledger, [f"post{i}" for i in range(20)])
    result = check_exactly_once(logdir, ledger)
    _report("OOM", result, not_ready_after=f"{not_ready_after:.1f}s", ready_again=f"{ready_after:.1f}s",
            errors_per_s=rates, reasons=set(reasons.values()), jobs_finished_during_oom=ended_during)
    _assert_clean(result)
    # fetch + ack is one script whose first write (HDEL/LPOP) may grow nothing: Redis lets it run under OOM
    assert ended_during > 0, "workers stopped under OOM"
    assert len(ledger.acked) == 50 and not ledger.unknown
    assert all(rate < 30 for rate in rates.values()), f"nodes do not back off: {rates} Redis errors/s"
    assert server.client().llen("resque:failed") == 0
    _duplicates_after_a_long_outage(result)


# -- READONLY ------------------------------------------------------------------------------------


def _replication(server: RedisServer) -> dict[str, Any]:
    return server.info("replication")


def test_readonly_replica_refuses_writes_and_nodes_recover(redis_factory: Callable[..., RedisServer],
                                                           node_cluster: NodeCluster, tmp_path: Path) -> None:
    primary = redis_factory()
    other = redis_factory()
    nodes, logdir = _start(node_cluster, primary.url, tmp_path, extra_args=FAST)
    ledger = Ledger()
    p, o = primary.client(), other.client()
    p.set("canary", "kept")
    # `other` copies the node's Redis first, so making the node's Redis its replica loses nothing
    o.replicaof("127.0.0.1", primary.port)
    wait_until(lambda: _replication(other).get("master_link_status") == "up", 10, message="other in sync")
    enqueue(primary.url, ledger, [f"pre{i}" for i in range(30)], seconds=0.3)
    wait_until(lambda: sum(_runs(logdir)[0].values()) >= 3, 10, message="jobs in flight")
    errors_before = {n.node_id: _errors(n) for n in nodes}
    p.client_pause(3000, all=False)  # writes wait; once `other` has every byte, swap the roles
    t0 = time.monotonic()
    wait_until(lambda: _replication(other).get("master_repl_offset") == _replication(primary).get(
        "master_repl_offset"), 2, message="other caught up")
    o.execute_command("REPLICAOF", "NO", "ONE")
    p.replicaof("127.0.0.1", other.port)
    p.client_unpause()  # the paused writes now meet a replica: READONLY
    wait_until(lambda: _replication(primary).get("role") == "slave", 5, message="the node's Redis is a replica")
    enqueue(primary.url, ledger, [f"ro{i}" for i in range(10)])
    ro_refused = [i for i in ledger.refused if i.startswith("ro")]
    assert len(ro_refused) == 10 and all("READONLY" in ledger.refused[i] or "read only" in ledger.refused[i]
                                         for i in ro_refused), ledger.refused
    reasons = _wait_not_ready(nodes, 8)
    not_ready_after = time.monotonic() - t0
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
    window = time.monotonic() - t0
    rates = {n.node_id: (_errors(n) - errors_before[n.node_id]) / window for n in nodes}
    assert all(n.running for n in nodes)
    p.execute_command("REPLICAOF", "NO", "ONE")
    t_heal = time.monotonic()
    _wait_ready(nodes, 10)
    ready_after = time.monotonic() - t_heal
    node_cluster.wait_leader(10)
    enqueue(primary.url, ledger, [f"post{i}" for i in range(20)])
    result = check_exactly_once(logdir, ledger)
    _report("READONLY", result, not_ready_after=f"{not_ready_after:.1f}s", ready_again=f"{ready_after:.1f}s",
            errors_per_s=rates, reasons=set(reasons.values()))
    assert p.get("canary") == b"kept", "the node's data survived the round trip through replication"
    _assert_clean(result)
    assert len(ledger.acked) == 50 and not ledger.unknown
    assert all(rate < 30 for rate in rates.values()), f"nodes do not back off: {rates} Redis errors/s"
    assert p.llen("resque:failed") == 0
    _duplicates_after_a_long_outage(result)


# -- connection resets ---------------------------------------------------------------------------


def test_connection_resets_nodes_back_off_and_lose_nothing(redis_factory: Callable[..., RedisServer],
                                                           node_cluster: NodeCluster, tmp_path: Path) -> None:
    server = redis_factory()
    nodes, logdir = _start(node_cluster, server.url, tmp_path, proxied=True)  # default timing: dead_after 8 s
    ledger = Ledger()
    enqueue(server.url, ledger, [f"pre{i}" for i in range(20)], seconds=0.5)
    wait_until(lambda: sum(_runs(logdir)[0].values()) >= 3, 10, message="jobs in flight")
    errors_before = {n.node_id: _errors(n) for n in nodes}
    for n in nodes:
        node_cluster.proxy(n).reset()
    t0 = time.monotonic()
    enqueue(server.url, ledger, [f"during{i}" for i in range(20)], seconds=0.1)  # producers reach Redis directly
    reasons = _wait_not_ready(nodes, 5)
    not_ready_after = time.monotonic() - t0
    time.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))  # < dead_after: nobody is declared dead
    window = time.monotonic() - t0
    rates = {n.node_id: (_errors(n) - errors_before[n.node_id]) / window for n in nodes}
    assert all(n.running for n in nodes)
    assert all(n.healthz() for n in nodes), "a node cut from Redis is still alive (liveness)"
    for n in nodes:
        node_cluster.proxy(n).pass_through()
    t_heal = time.monotonic()
    _wait_ready(nodes, 10)
    ready_after = time.monotonic() - t_heal
    node_cluster.wait_leader(10)
    enqueue(server.url, ledger, [f"post{i}" for i in range(10)])
    result = check_exactly_once(logdir, ledger)
    _report("reset", result, not_ready_after=f"{not_ready_after:.2f}s", ready_again=f"{ready_after:.1f}s",
            errors_per_s=rates, reasons=set(reasons.values()))
    _assert_clean(result)
    assert not result["duplicated"], f"duplicated: {result['duplicated']}"
    assert len(ledger.acked) == 50
    assert all("Redis unreachable" in r for r in reasons.values()), reasons
    assert not_ready_after < 2.0
    assert all(rate < 30 for rate in rates.values()), f"nodes do not back off: {rates} Redis errors/s"
    assert server.client().llen("resque:failed") == 0


# -- F8 short: Sentinel failover ------------------------------------------------------------------


class Sentinel(RedisServer):
    """`redis-server <conf> --sentinel` on a free port (RedisServer writes and rewrites its conf)."""

    def __init__(self, workdir: Path, primary_port: int, binary: str) -> None:
        super().__init__(workdir, binary=binary, options={"sentinel": [
            f"monitor mymaster 127.0.0.1 {primary_port} 2",
            "down-after-milliseconds mymaster 1000",
            "failover-timeout mymaster 5000",
            "parallel-syncs mymaster 1",
        ]})
        self.argv.append("--sentinel")


def _sentinel_view(s: Sentinel) -> tuple[int, int, str]:
    with s.client() as c:
        others = len(c.execute_command("SENTINEL", "SENTINELS", "mymaster"))
        replicas = len(c.execute_command("SENTINEL", "REPLICAS", "mymaster"))
        addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    return others, replicas, f"{addr[0].decode()}:{addr[1].decode()}"


def test_f8_sentinel_failover_nodes_follow_the_new_primary(redis_factory: Callable[..., RedisServer],
                                                           node_cluster: NodeCluster, tmp_path: Path) -> None:
    binary = find_binary("redis-server", "/usr/bin/redis-server")
    assert binary
    primary = redis_factory()
    replica = redis_factory(replicaof=f"127.0.0.1 {primary.port}")
    sentinels = [Sentinel(tmp_path / f"sentinel{i}", primary.port, binary) for i in range(3)]
    try:
        for s in sentinels:
            s.start()
        wait_until(lambda: _replication(replica).get("master_link_status") == "up", 10, message="replica in sync")
        wait_until(lambda: all(_sentinel_view(s)[:2] == (2, 1) for s in sentinels), 20,
                   message="each sentinel knows the two others and the replica", ignore=(redis.RedisError,))
        addrs = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        settings = RedisSettings(sentinels=tuple(addrs.split(",")), sentinel_master="mymaster")
        nodes, logdir = _start(node_cluster, primary.url, tmp_path,
                               extra_args=["--redis-sentinels", addrs, "--redis-sentinel-master", "mymaster"])
        ledger = Ledger()
        asyncio.run(_enqueue(settings, ledger, [f"pre{i}" for i in range(5)], task="noop"))
        wait_until(lambda: all(_runs(logdir)[1][f"pre{i}"] for i in range(5)), 10, message="jobs run via Sentinel")
        epoch_before = max(int(n.leader()["epoch"]) for n in nodes)

        primary.kill()
        t0 = time.monotonic()
        wait_until(lambda: all(_sentinel_view(s)[2] == f"127.0.0.1:{replica.port}" for s in sentinels), 20,
                   message="the sentinels promoted the replica", ignore=(redis.RedisError,))
        promoted = time.monotonic() - t0

        def post() -> bool:
            attempt = Ledger()
            asyncio.run(_enqueue(settings, attempt, ["post"], task="noop"))
            if attempt.acked:
                ledger.acked.append("post")
            return bool(attempt.acked)

        wait_until(post, 20, 0.2, message="an enqueue through Sentinel accepted by the new primary")
        accepted = time.monotonic() - t0
        wait_until(lambda: _runs(logdir)[1]["post"] >= 1, 20, 0.1,
                   message="the job enqueued after the failover ran (nodes follow the new primary)")
        ran = time.monotonic() - t0
        leader = node_cluster.wait_leader(20)
        led = time.monotonic() - t0
        assert int(leader.leader()["epoch"]) > epoch_before
        assert all(n.running for n in nodes), "no node restarted or died"
        _wait_ready(nodes, 10)
        result = check_exactly_once(logdir, ledger, timeout=10)
        _report("F8 short", result, promoted=f"{promoted:.1f}s", post_enqueue_accepted=f"{accepted:.1f}s",
                post_job_ran=f"{ran:.1f}s", leader_again=f"{led:.1f}s")
        _assert_clean(result)
        assert not result["duplicated"]
    finally:
        for s in sentinels:
            s.kill()
