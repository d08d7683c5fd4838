"""The task catalogue on real `corral node` processes: every producer that uses Corral (a bare
`Client.connect(url)`, the CLI, the HTTP endpoints) follows what the live nodes serve, and the
seed's periodic and worker semantics are exact.

Each test starts its own nodes on the test's emptied Redis and drives them through the public
surface only (Client, `corral` CLI, HTTP).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from cluster import Client
from cluster.catalogue import UnknownTask
from cluster.keys import Keys
from node.cli import main
from tests.support import wait_until
from tests.support.jobtasks import TASKS, read_log
from tests.support.nodes import NodeCluster

K = Keys("resque")

CATALOGUE_TASKS = '''
import json, os, time
from cluster import Task, task

LOG_DIR = os.environ.get("JOBLOG_DIR", ".")


def record(kind, params, ctx):
    with open(os.path.join(LOG_DIR, f"{os.getpid()}.jsonl"), "a") as fh:
        fh.write(json.dumps({"kind": kind, "id": params.get("id"), "node": ctx.node_id, "pid": os.getpid(),
                             "t": time.time()}) + "\\n")


@task(name="mailer", queue="mail", description="Send one mail")
async def mailer(params, ctx):
    record("mailer", params, ctx)


async def run(params, ctx):
    record(ctx.task, params, ctx)


locked = Task(name="locked", queue="locks", run=run, plugins=["QueueLock"],
              plugin_options={"QueueLock": {"lock_timeout": 600}})
dlocked = Task(name="dlocked", queue="locks", run=run, plugins=["DelayQueueLock"])
tick = Task(name="tick", queue="other", frequency=1.0, run=run)
nightly = Task(name="nightly", cron="0 3 * * *", timezone="Europe/Paris", run=run)
'''


def _tasks_dir(tmp_path: Path, name: str, source: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "jobs.py").write_text(source)
    return d


def _with_defaults(cluster: NodeCluster, **defaults: Any) -> NodeCluster:
    """The `node_cluster` fixture (every node it starts is killed after the test) with our flags."""
    cluster.defaults.update(defaults)
    return cluster


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_producer_follows_the_catalogue(tmp_path: Path, redis_url: str, node_cluster: NodeCluster,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    tasks = _tasks_dir(tmp_path, "tasks", CATALOGUE_TASKS)
    # the nodes work a queue nobody uses: every job the test queues stays where it was put
    cluster = _with_defaults(node_cluster, tasks_dir=tasks, queues="unused",
                          extra_args=["--heartbeat-interval", "0.5", "--dead-after", "2", "--metrics-refresh", "0.5"])
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    n1, n2 = cluster.start(2)
    cluster.wait_leader(15)

    async def produce() -> None:
        async with await Client.connect(redis_url) as c:  # no registry: only the catalogue
            # the task's queue, not `default`
            assert await c.enqueue("mailer", {"to": "a@example.com"}) is True
            assert await c.queued("mail") == [{"class": "mailer", "queue": "mail", "args": [{"to": "a@example.com"}]}]
            # enqueue plugins rebuilt from the published name + options
            assert [await c.enqueue("locked", {"k": 1}) for _ in range(3)] == [True, False, False]
            assert await c.enqueue("locked", {"k": 2}) is True
            assert 500 < r.ttl('resque:lock:locked:locks:[{"k":1}]') <= 600
            await c.enqueue_in(60, "dlocked", {"d": 1})
            assert await c.enqueue("dlocked", {"d": 1}) is False
            assert await c.length("locks") == 2
            # a name no live node serves: refused with the close names, nothing written
            with pytest.raises(UnknownTask) as e:
                await c.enqueue("mailr", {"x": 1})
            assert e.value.close == ["mailer"] and "did you mean 'mailer'" in str(e.value)
            assert "unknown_ok=True" in str(e.value) and await c.length("default") == 0
            with pytest.raises(UnknownTask):
                await c.enqueue_many([("mailer", {}), ("nope", {})])
            with pytest.raises(UnknownTask):
                await c.enqueue_in(5, "nope")
            assert await c.enqueue("mailr", {"x": 1}, unknown_ok=True) is True  # for workers outside Corral
            assert await c.length("default") == 1

            # stop_recurrent_job looks in the task's queue and removes every instance, whatever the args
            await asyncio.to_thread(wait_until, lambda: r.llen("resque:queue:other") >= 2, 10, 0.05,
                                    message="two tick occurrences queued on `other`")
            await c.enqueue("tick", {"manual": True})
            await c.enqueue_in(120, "tick", {"later": 1})
            await c.enqueue_in(130, "tick")
            expected = await c.length("other") + 2
            assert await c.stop_recurrent_job("tick") == expected
            assert [j for j in await c.queued("other") if j["class"] == "tick"] == []
            assert all(j["class"] != "tick" for jobs in (await c.all_delayed()).values() for j in jobs)
            assert await c.enqueue_recurrent_job("mailer") is False  # not periodic
            assert await c.stop_recurrent_job("tick") == 0

    asyncio.run(produce())

    # corral tasks: queue, schedule, next occurrence, paused, plugins, nodes
    code, out, _ = _cli(capsys, "tasks", "--json", "--redis-url", redis_url)
    assert code == 0
    listing = json.loads(out)
    rows = listing["tasks"]
    assert set(rows) == {"mailer", "locked", "dlocked", "tick", "nightly"}
    assert rows["mailer"]["queue"] == "mail" and rows["mailer"]["description"] == "Send one mail"
    ids = sorted([n1.reported_id, n2.reported_id])
    assert rows["mailer"]["nodes"] == ids and rows["mailer"]["schedule"] is None
    assert rows["locked"]["plugins"] == [{"name": "QueueLock", "options": {"lock_timeout": 600}}]
    assert rows["tick"]["schedule"] == {"frequency": 1.0} and rows["tick"]["paused"] is True
    assert rows["tick"]["next"] is None
    night = rows["nightly"]
    assert night["schedule"] == {"cron": "0 3 * * *", "timezone": "Europe/Paris"} and night["paused"] is False
    assert time.time() < night["next"] <= time.time() + 86400
    assert time.gmtime(night["next"]).tm_min == 0 and time.gmtime(night["next"]).tm_hour in (1, 2)  # 03:00 Paris
    code, out, _ = _cli(capsys, "tasks", "--redis-url", redis_url)
    assert code == 0 and "tick" in out and "paused" in out and "every 1s" in out and "cron 0 3 * * * Europe/Paris" in out
    # pause/resume by the CLI; a resumed task is served again
    code, out, _ = _cli(capsys, "tasks", "resume", "tick", "--redis-url", redis_url)
    assert code == 0 and "resumed tick" in out
    assert r.hget("resque:corral:periodic:tick", "paused") is None
    code, _, err = _cli(capsys, "tasks", "pause", "mailer", "--redis-url", redis_url)
    assert code == 2 and "not periodic" in err
    code, _, err = _cli(capsys, "tasks", "resume", "tik", "--redis-url", redis_url)
    assert code == 2 and "no periodic task named 'tik'" in err
    code, out, _ = _cli(capsys, "tasks", "pause", "tick", "--redis-url", redis_url)
    assert code == 0 and out.startswith("paused tick")
    # corral enqueue: the task's queue, unknown names refused unless --allow-unknown
    code, out, _ = _cli(capsys, "enqueue", "mailer", "--redis-url", redis_url)
    assert code == 0 and "on mail" in out
    code, _, err = _cli(capsys, "enqueue", "mailr", "--redis-url", redis_url)
    assert code == 2 and "did you mean 'mailer'" in err
    code, out, _ = _cli(capsys, "enqueue", "mailr", "--allow-unknown", "--redis-url", redis_url)
    assert code == 0 and "on default" in out

    # HTTP: /tasks on every node, the catalogue in /status
    served = n2.get_json("/tasks")
    assert set(served["tasks"]) == set(rows) and served["tasks"]["tick"]["paused"] is True
    status = wait_until(lambda: n1.status()["cluster"].get("catalogue"), 5, 0.1, message="catalogue in /status")
    assert status["nodes"] == ids and status["conflicts"] == {}
    assert n1.metric("corral_task_definition_conflicts") == 0

    # the catalogue goes with the node: at once on SIGTERM, within dead_after on kill -9
    n2_id = n2.reported_id
    n2.terminate()
    assert not r.hexists(K.catalogue, n2_id)

    async def after_stop() -> None:
        async with await Client.connect(redis_url) as c:
            assert sorted((await c.task_info("mailer")).nodes) == [n1.reported_id]  # type: ignore[union-attr]

    asyncio.run(after_stop())
    n1.kill()
    t0 = time.monotonic()

    async def nobody_serves() -> bool:
        async with await Client.connect(redis_url) as c:
            return await c.task_info("mailer") is None

    wait_until(lambda: asyncio.run(nobody_serves()), 10, 0.2, message="mailer leaves with its last node")
    assert time.monotonic() - t0 < 2 + 1.5  # dead_after + a reader's slack

    async def with_no_live_node() -> None:
        async with await Client.connect(redis_url) as c:
            # nothing to judge against: a queue takes work while its workers are down
            assert await c.enqueue("mailer", {"n": 2}) is True

    asyncio.run(with_no_live_node())


def test_conflicting_definitions_are_reported_not_mixed(tmp_path: Path, redis_url: str, node_cluster: NodeCluster,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = "from cluster import Task\nasync def run(p, c): ...\nreport = Task(name='report', queue={q!r}, run=run)\n"
    a = _tasks_dir(tmp_path, "a", src.format(q="qa"))
    b = _tasks_dir(tmp_path, "b", src.format(q="qb"))
    cluster = _with_defaults(node_cluster, queues="unused", extra_args=["--metrics-refresh", "0.3"])
    n1 = cluster.add("n1", tasks_dir=a)
    n1.wait_ready(20)
    n2 = cluster.add("n2", tasks_dir=b)  # started later: producers follow it
    n2.wait_ready(20)
    for n in (n1, n2):
        wait_until(lambda n=n: n.metric("corral_task_definition_conflicts") == 1, 10, 0.1,
                   message=f"{n.node_id} reports the conflict")
    conflict = wait_until(lambda: n1.status()["cluster"]["catalogue"]["conflicts"].get("report"), 5, 0.1)
    assert sorted(node for nodes in conflict.values() for node in nodes) == sorted([n1.reported_id, n2.reported_id])
    assert len(conflict) == 2
    records = [x for x in n1.log_records() if x.get("event") == "task_definition_conflict"]
    assert records and records[0]["task"] == "report" and "qa" in records[0]["differences"]

    async def produce() -> None:
        async with await Client.connect(redis_url) as c:
            assert await c.enqueue("report") is True
            assert (await c.length("qb"), await c.length("qa")) == (1, 0)

    asyncio.run(produce())
    code, out, _ = _cli(capsys, "tasks", "--redis-url", redis_url)
    assert code == 0 and "CONFLICT" in out and "1 defined differently" in out
    n2.terminate()
    wait_until(lambda: n1.metric("corral_task_definition_conflicts") == 0, 10, 0.1, message="conflict over")


def test_resume_after_stop_does_not_back_fill(tmp_path: Path, redis_url: str, node_cluster: NodeCluster) -> None:
    tasks = _tasks_dir(tmp_path, "tasks", TASKS)
    logs = tmp_path / "joblog"
    logs.mkdir()
    cluster = _with_defaults(node_cluster, tasks_dir=tasks, queues="default",
                          env={"JOBLOG_DIR": str(logs)})
    cluster.start(1)
    cluster.wait_leader(15)

    def ticks() -> list[float]:
        return sorted(x["t"] for x in read_log(logs) if x["kind"] == "tick")

    wait_until(lambda: len(ticks()) >= 2, 10, 0.05, message="the 1 s tick runs")

    async def stop() -> int:
        async with await Client.connect(redis_url) as c:
            return await c.stop_recurrent_job("tick")

    asyncio.run(stop())
    time.sleep(4.5)  # the pause itself is what is measured: 4 occurrences fall in it
    paused_runs = ticks()

    async def resume() -> tuple[bool, bool]:
        async with await Client.connect(redis_url) as c:
            return await c.enqueue_recurrent_job("tick"), await c.enqueue_recurrent_job("work")

    t_resume = time.time()
    assert asyncio.run(resume()) == (True, False)  # `work` is not periodic
    wait_until(lambda: len(ticks()) >= len(paused_runs) + 3, 10, 0.05, message="three ticks after the resume")
    after = [t for t in ticks() if t >= t_resume]
    # one occurrence per second from the next slot on; back-fill ran the 4 missed ones at once
    first_second = [t for t in after if t < t_resume + 1.0]
    assert len(first_second) <= 1, f"missed occurrences were back-filled: {[round(t - t_resume, 2) for t in after]}"
    assert after[2] - after[0] >= 1.5, [round(t - t_resume, 2) for t in after]
    assert len([t for t in paused_runs if t > paused_runs[0] + 1.5]) <= 1  # nothing ran during the pause


def test_lone_jobs_rotate_over_named_and_star_nodes(tmp_path: Path, redis_url: str, node_cluster: NodeCluster) -> None:
    tasks = _tasks_dir(tmp_path, "tasks", TASKS.replace("tick = Task", "_tick = Task"))
    logs = tmp_path / "joblog"
    logs.mkdir()
    # a long poll: a job picked up at all within the bound was picked up by a wake-up
    cluster = _with_defaults(node_cluster, tasks_dir=tasks, env={"JOBLOG_DIR": str(logs)},
                          extra_args=["--log-level", "warning", "--poll-interval", "30"])
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    a = cluster.add("a", queues="default")
    b = cluster.add("b", queues="*")
    c = cluster.add("c", queues="*")
    for n in (a, b, c):
        n.wait_ready(20)
    r.sadd(K.queues, "default")  # the `*` nodes learn the queue name from the queues set

    def all_idle() -> bool:
        return r.zcard(K.idle("default")) == 1 and r.zcard(K.idle("*")) == 2

    wait_until(all_idle, 15, 0.05, message="all 3 nodes filed as idle")
    n = 30

    async def go() -> None:
        async with await Client.connect(redis_url) as client:
            for i in range(n):
                await client.enqueue("work", {"id": f"w{i}", "s": 0})
                await asyncio.to_thread(
                    wait_until, lambda i=i: any(x["id"] == f"w{i}" and x["kind"] == "end" for x in read_log(logs))
                    and all_idle(), 5.0, 0.005, message=f"job w{i} done, its node idle again")

    asyncio.run(go())
    per_node = collections.Counter(x["node"] for x in read_log(logs) if x["kind"] == "end")
    print(f"lone jobs per node: {dict(per_node)}")
    assert sum(per_node.values()) == n
    # the longest idle goes first: they rotate a, b, c (10 each); all 30 went to `a` before
    assert min(per_node.get(x.reported_id, 0) for x in (a, b, c)) >= 8, per_node


def test_clean_old_workers_never_removes_workers_of_live_nodes(tmp_path: Path, redis_url: str,
                                                               node_cluster: NodeCluster) -> None:
    cluster = _with_defaults(node_cluster, queues="default,other")  # heartbeat every 2 s
    cluster.start(2)

    async def go() -> list[dict[str, Any]]:
        async with await Client.connect(redis_url) as c:
            before = await c.workers()
            assert len(before) == 4
            removed = []
            # 2.5 heartbeat periods: the heartbeat and ping ages pass 1.5 s in between
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                removed.append(await c.clean_old_workers(1.5))
                await asyncio.sleep(0.25)
            assert await c.workers() == before
            return [x for x in removed if x]

    assert asyncio.run(go()) == []
