"""The dashboard's JSON API (`/ui/api/`) on real `corral node` processes and real Redis.

- Numbers equal Redis: queue lengths, delayed, failed, processed totals, nodes and leader.
- Actions need the configured token in a header: without a configured token every POST is 403
  (and the session says so), with one a missing or wrong token is 403, a GET never acts; each
  action is counted in `corral_ui_actions_total` and logged with who and what.
- Every action does what the Client method does: retry a failed job (it runs), remove, retry/remove
  all matching a filter, delete one queued job, clear a queue, run a delayed job now (it runs within
  a second), delete a delayed job, pause/resume/run a periodic task, delete a lock.
- Without the payloads option, no job args leave the node (queued, delayed, failed, locks).
- Cheap: 10 concurrent readers for 6 s cause at most one overview read per 2 s period.
- History: one sample per 10 s bucket cluster-wide, whatever the node count.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import redis

from cluster.wire import encode_failed, encode_job
from tests.integration.ui_support import FAST, TOKEN, ui_get, ui_post, ui_request, write_tasks
from tests.support import wait_until
from tests.support.nodes import NodeCluster, NodeProcess


def _node(node_cluster: NodeCluster, tmp_path: Path, *, token: str | None = TOKEN, payloads: bool = False,
          queues: str = "work", n: int = 1) -> list[NodeProcess]:
    env = {"CORRAL_UI_TOKEN": token} if token else {}
    if payloads:
        env["CORRAL_STATUS_PAYLOADS"] = "true"
    nodes = node_cluster.start(n, tasks_dir=write_tasks(tmp_path), queues=queues, extra_args=FAST, env=env)
    node_cluster.wait_leader(15)
    return nodes


def _r(node_cluster: NodeCluster) -> redis.Redis:
    return redis.Redis.from_url(node_cluster.redis_url, decode_responses=True)


def _failed_entry(task: str, queue: str, error: str, params: dict[str, object]) -> str:
    return encode_failed(worker="w", queue=queue, payload_raw=encode_job(task, queue, [params]),
                         exception="ValueError", error=error, backtrace=["at line 1", "at line 2"],
                         failed_at=time.time())


def test_overview_numbers_equal_redis(node_cluster: NodeCluster, tmp_path: Path) -> None:
    nodes = _node(node_cluster, tmp_path, n=2)
    r = _r(node_cluster)
    r.hset("resque:corral:periodic:tick", "paused", "1")  # so stat:processed holds still
    time.sleep(1.5)  # a tick already queued or running finishes
    for i in range(7):
        r.rpush("resque:queue:parked", encode_job("record", "parked", [{"i": i}]))
    r.sadd("resque:queues", "parked")
    for i in range(3):
        ts = int(time.time()) + 600 + i
        r.rpush(f"resque:delayed:{ts}", encode_job("record", "work", [{"d": i}]))
        r.rpush(f"resque:delayed:{ts}", encode_job("record", "work", [{"d2": i}]))
        r.zadd("resque:delayed_queue_schedule", {str(ts): ts})
    for i in range(4):
        r.rpush("resque:failed", _failed_entry("fails", "work", f"e{i}", {"i": i}))

    def settled() -> dict[str, object] | None:
        o = ui_get(nodes[1].http_port, "overview")
        return o if o["delayed"] == 6 and o["failed"] == 4 and len(o["nodes"]) == 2 else None

    o = wait_until(settled, 10, 0.1, message="the overview to show the seeded state")
    assert {q["name"]: q["length"] for q in o["queues"]}["parked"] == r.llen("resque:queue:parked") == 7
    assert o["delayed_seconds"] == r.zcard("resque:delayed_queue_schedule") == 3
    assert o["failed"] == r.llen("resque:failed")
    assert o["processed_total"] == int(r.get("resque:stat:processed") or 0)
    leader = r.hgetall("resque:corral:leader")
    assert o["leader"]["node"] == leader["node"] and o["leader"]["epoch"] == int(leader["epoch"])
    assert sorted(n["id"] for n in o["nodes"]) == sorted(r.zrange("resque:corral:members", 0, -1))
    assert sum(n["is_leader"] for n in o["nodes"]) == 1
    assert all(n["alive"] and n["slots"] == 1 and n["candidate"] for n in o["nodes"]), o["nodes"]
    # both nodes show the same cluster
    other = ui_get(nodes[0].http_port, "overview")
    assert other["queues"] == o["queues"] and other["leader"] == o["leader"]


def test_action_counter_is_scraped_before_the_dashboard_is_first_built(node_cluster: NodeCluster,
                                                                        tmp_path: Path) -> None:
    # the node builds its dashboard on the first /ui/ request (node/runtime.py); the counter is there from the start
    (node,) = _node(node_cluster, tmp_path)
    assert "# TYPE corral_ui_actions_total counter" in node.metrics_text()
    status, _h, body = ui_request(node.http_port, "/ui/")
    assert status == 200 and b"<html" in body.lower()
    status, _b = ui_post(node.http_port, "queue.clear", {"queue": "work"})
    assert status == 200
    assert node.metric("corral_ui_actions_total", {"action": "queue.clear", "outcome": "ok"}) == 1


def test_actions_refused_without_a_configured_token(node_cluster: NodeCluster, tmp_path: Path) -> None:
    (node,) = _node(node_cluster, tmp_path, token=None)
    r = _r(node_cluster)
    r.rpush("resque:failed", _failed_entry("record", "work", "x", {"n": 1}))
    assert ui_get(node.http_port, "session")["actions_enabled"] is False
    entry = ui_get(node.http_port, "failed")["entries"][0]
    for token in (None, TOKEN, ""):
        status, body = ui_post(node.http_port, "failed.retry", {"id": entry["id"], "position": 0}, token=token)
        assert status == 403 and "no dashboard token is configured" in body["error"]
    assert r.llen("resque:failed") == 1 and r.llen("resque:queue:work") == 0
    assert node.metric("corral_ui_actions_total", {"action": "failed.retry", "outcome": "refused"}) == 3


def test_actions_need_the_right_token_in_a_header(node_cluster: NodeCluster, tmp_path: Path) -> None:
    (node,) = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    r.rpush("resque:queue:parked", encode_job("record", "parked", [{}]))
    r.sadd("resque:queues", "parked")
    assert ui_get(node.http_port, "session")["actions_enabled"] is True
    for token in (None, "wrong-token-0123456789", TOKEN[:-1]):
        status, body = ui_post(node.http_port, "queue.clear", {"queue": "parked"}, token=token)
        assert status == 403 and "missing or wrong token" in body["error"]
    # a GET on an action path never acts; a cookie is not a token
    assert ui_request(node.http_port, "/ui/api/actions/queue.clear?queue=parked")[0] == 405
    status, _h, _b = ui_request(node.http_port, "/ui/api/actions/queue.clear", "POST", b'{"queue": "parked"}',
                                {"Content-Type": "application/json", "Cookie": f"token={TOKEN}"})
    assert status == 403
    # the token must come with a JSON body (a cross-site form cannot send one without a preflight)
    status, _h, _b = ui_request(node.http_port, "/ui/api/actions/queue.clear", "POST", b"queue=parked",
                                {"Content-Type": "application/x-www-form-urlencoded", "X-Corral-Token": TOKEN})
    assert status == 415
    assert r.llen("resque:queue:parked") == 1
    status, body = ui_post(node.http_port, "queue.clear", {"queue": "parked"})
    assert status == 200 and body["result"] == 1 and r.llen("resque:queue:parked") == 0
    # Authorization: Bearer works too
    r.rpush("resque:queue:parked", encode_job("record", "parked", [{}]))
    status, _h, _b = ui_request(node.http_port, "/ui/api/actions/queue.clear", "POST", b'{"queue": "parked"}',
                                {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and r.llen("resque:queue:parked") == 0
    assert node.metric("corral_ui_actions_total", {"action": "queue.clear", "outcome": "ok"}) == 2
    assert node.metric("corral_ui_actions_total", {"action": "queue.clear", "outcome": "refused"}) == 4
    logged = [rec for rec in node.log_records() if rec.get("event") == "ui_action"]
    assert logged and logged[-1]["action"] == "queue.clear" and "127.0.0.1" in logged[-1]["who"]
    assert '"parked"' in logged[-1]["target"]


def test_failed_retry_runs_the_job_and_filters_act_on_matches_only(node_cluster: NodeCluster,
                                                                    tmp_path: Path) -> None:
    (node,) = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    r.rpush("resque:queue:work", encode_job("flaky", "work", [{"n": 1}]))
    wait_until(lambda: r.llen("resque:failed") == 1, 10, message="flaky's first run to fail")
    entry = ui_get(node.http_port, "failed")["entries"][0]
    assert entry["task"] == "flaky" and entry["exception"] == "RuntimeError" and entry["backtrace"]
    assert "args" not in entry  # payloads are off
    status, body = ui_post(node.http_port, "failed.retry", {"id": entry["id"], "position": entry["position"]})
    assert status == 200 and body["result"] is True
    wait_until(lambda: r.lrange("uitest:ran", 0, -1) == ['{"n": 1}'], 10, message="the retried job to run")
    assert r.llen("resque:failed") == 0
    # acting on an entry that is gone is a clear 409, not a silent success
    status, body = ui_post(node.http_port, "failed.retry", {"id": entry["id"], "position": 0})
    assert status == 409 and "gone" in body["error"]
    # filters: by task, queue and error text; retry/remove all matching touch only the matches
    for i in range(3):
        r.rpush("resque:failed", _failed_entry("record", "work", f"timeout talking to db {i}", {"m": i}))
    r.rpush("resque:failed", _failed_entry("record", "other", "timeout", {"o": 1}))
    r.rpush("resque:failed", _failed_entry("fails", "work", "disk full", {"f": 1}))
    f = ui_get(node.http_port, "failed?task=record&queue=work&error=TIMEOUT")
    assert f["matched"] == 3 and f["total"] == 5 and {e["error"] for e in f["entries"]} == {
        f"timeout talking to db {i}" for i in range(3)}
    status, body = ui_post(node.http_port, "failed.retry_all", {"task": "record", "queue": "work", "error": "timeout"})
    assert status == 200 and body["result"] == 3
    wait_until(lambda: r.llen("uitest:ran") == 4, 10, message="the 3 retried jobs to run")
    status, body = ui_post(node.http_port, "failed.remove_all", {"error": "disk"})
    assert status == 200 and body["result"] == 1
    left = [json.loads(x) for x in r.lrange("resque:failed", 0, -1)]
    assert [e["queue"] for e in left] == ["other"]


def test_queue_delayed_and_lock_actions(node_cluster: NodeCluster, tmp_path: Path) -> None:
    (node,) = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    for i in range(3):
        r.rpush("resque:queue:parked", encode_job("record", "parked", [{"secret": f"s{i}"}]))
    r.sadd("resque:queues", "parked")
    page = ui_get(node.http_port, "queue?name=parked&page=0&size=2")
    assert page["length"] == 3 and len(page["jobs"]) == 2 and page["jobs"][1]["position"] == 1
    assert "s1" not in json.dumps(page)  # args hidden without the payloads option
    status, _b = ui_post(node.http_port, "queue.delete_job", {"queue": "parked", "id": page["jobs"][1]["id"],
                                                               "position": 1})
    assert status == 200
    assert [json.loads(x)["args"][0]["secret"] for x in r.lrange("resque:queue:parked", 0, -1)] == ["s0", "s2"]

    ts = int(time.time()) + 3600
    job = encode_job("record", "work", [{"late": 1}])
    other = encode_job("record", "work", [{"late": 2}])
    r.rpush(f"resque:delayed:{ts}", job, other)
    r.sadd(f"resque:timestamps:{job}", f"delayed:{ts}")
    r.sadd(f"resque:timestamps:{other}", f"delayed:{ts}")
    r.zadd("resque:delayed_queue_schedule", {str(ts): ts})
    d = ui_get(node.http_port, "delayed")
    assert d["seconds"][0]["ts"] == ts and d["seconds"][0]["count"] == 2
    ids = [j["id"] for j in d["seconds"][0]["jobs"]]
    t0 = time.monotonic()
    status, _b = ui_post(node.http_port, "delayed.run_now", {"ts": ts, "id": ids[0]})
    assert status == 200
    wait_until(lambda: r.lrange("uitest:ran", 0, -1) == ['{"late": 1}'], 5, message="the delayed job to run now")
    assert time.monotonic() - t0 < 2.0
    assert r.smembers(f"resque:timestamps:{job}") == set()
    status, _b = ui_post(node.http_port, "delayed.delete", {"ts": ts, "id": ids[1]})
    assert status == 200
    assert r.zcard("resque:delayed_queue_schedule") == 0 and not r.exists(f"resque:delayed:{ts}")
    assert not r.exists(f"resque:timestamps:{other}")

    r.set("resque:lock:record:work:[{\"k\":1}]", "123", ex=300)
    locks = ui_get(node.http_port, "locks")["locks"]
    assert len(locks) == 1 and 290 < locks[0]["ttl"] <= 300 and "{" not in locks[0]["key"]
    status, body = ui_post(node.http_port, "lock.delete", {"id": locks[0]["id"]})
    assert status == 200 and body["result"] == 1 and r.keys("resque:lock:*") == []


def test_payloads_option_shows_args(node_cluster: NodeCluster, tmp_path: Path) -> None:
    (node,) = _node(node_cluster, tmp_path, payloads=True)
    r = _r(node_cluster)
    r.rpush("resque:queue:parked", encode_job("record", "parked", [{"to": "evan@example.com"}]))
    r.sadd("resque:queues", "parked")
    assert ui_get(node.http_port, "session")["payloads"] is True
    assert ui_get(node.http_port, "queue?name=parked")["jobs"][0]["args"] == [{"to": "evan@example.com"}]


def test_periodic_pause_resume_and_run_once(node_cluster: NodeCluster, tmp_path: Path) -> None:
    (node,) = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    p = {t["task"]: t for t in ui_get(node.http_port, "periodic")["tasks"]}
    assert p["tick"]["frequency"] == 1.0 and p["nightly"]["cron"] == "0 3 * * *"
    assert p["nightly"]["timezone"] == "Europe/Paris" and p["nightly"]["next"] > time.time()
    wait_until(lambda: r.llen("uitest:ticks") >= 2, 10, message="tick to run")
    status, _b = ui_post(node.http_port, "periodic.pause", {"task": "tick"})
    assert status == 200
    assert ui_get(node.http_port, "periodic")["tasks"][[t["task"] for t in ui_get(
        node.http_port, "periodic")["tasks"]].index("tick")]["paused"] is True
    time.sleep(0.3)  # a run already popped may still finish
    paused_at = r.llen("uitest:ticks")
    time.sleep(2.5)
    assert r.llen("uitest:ticks") == paused_at, "a paused task kept running"
    status, body = ui_post(node.http_port, "periodic.run_now", {"task": "tick"})
    assert status == 200 and body["result"] is True
    wait_until(lambda: r.llen("uitest:ticks") == paused_at + 1, 5, message="the one-off run")
    status, _b = ui_post(node.http_port, "periodic.resume", {"task": "tick"})
    assert status == 200
    wait_until(lambda: r.llen("uitest:ticks") >= paused_at + 3, 10, message="tick to run again")
    status, body = ui_post(node.http_port, "periodic.pause", {"task": "no-such-task"})
    assert status == 404


def test_ten_readers_share_one_read_per_period(node_cluster: NodeCluster, tmp_path: Path) -> None:
    (node,) = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    ui_get(node.http_port, "overview")
    base = r.info("commandstats").get("cmdstat_srandmember", {}).get("calls", 0)  # one per overview read
    stop = time.monotonic() + 6.0
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while time.monotonic() < stop:
                ui_get(node.http_port, "overview")
                time.sleep(0.05)
        except BaseException as e:  # reported below
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=reader) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    assert not errors, errors
    reads = r.info("commandstats")["cmdstat_srandmember"]["calls"] - base
    assert 1 <= reads <= elapsed / 2.0 + 2, (reads, elapsed)


def test_history_one_sample_per_bucket_whatever_the_node_count(node_cluster: NodeCluster, tmp_path: Path) -> None:
    nodes = _node(node_cluster, tmp_path, n=3)
    r = _r(node_cluster)
    wait_until(lambda: r.zcard("resque:corral:history") >= 3, 35, 0.2, message="three history samples")
    rows = r.zrange("resque:corral:history", 0, -1, withscores=True)
    buckets = [int(m.split(":")[0]) for m, _s in rows]
    assert len(set(buckets)) == len(buckets), rows  # three nodes, still one sample per bucket
    assert all(b2 - b1 == 1 for b1, b2 in itertools.pairwise(buckets)), buckets
    o = ui_get(nodes[2].http_port, "overview")
    assert len(o["history"]) == len(rows) - 1 and all(p[1] is not None and p[1] >= 0 for p in o["history"])
    # a restart loses nothing: the history lives in Redis
    nodes[2].kill()
    nodes[2].start().wait_ready(20)
    assert len(ui_get(nodes[2].http_port, "overview")["history"]) >= len(rows) - 1


def test_corral_web_serves_the_dashboard_without_a_worker(node_cluster: NodeCluster, tmp_path: Path) -> None:
    import os
    import sys

    from tests.support import REPO_ROOT, free_port
    from tests.support.servers import ManagedProcess

    (node,) = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    r.rpush("resque:failed", _failed_entry("record", "work", "x", {"n": 1}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(PYTHONPATH=str(REPO_ROOT), CORRAL_UI_TOKEN=TOKEN)
    web = ManagedProcess([sys.executable, "-m", "node", "web", "--redis-url", node_cluster.redis_url,
                          "--http-port", str(port), "--tasks-dir", str(write_tasks(tmp_path)), "--log-format", "json"],
                         tmp_path / "web.log", cwd=tmp_path, env=env)
    web.spawn()
    try:
        o = wait_until(lambda: ui_get(port, "overview"), 20, 0.1, ignore=(OSError, AssertionError),
                       message="corral web to serve the overview")
        # it shows the cluster but is not a member and runs no worker
        assert [n["id"] for n in o["nodes"]] == [node.reported_id] and o["failed"] == 1
        assert not any(w["name"].startswith("web-") for w in o["workers"])
        assert {t["task"] for t in ui_get(port, "periodic")["tasks"]} >= {"tick", "nightly"}
        entry = ui_get(port, "failed")["entries"][0]
        status, _b = ui_post(port, "failed.remove", {"id": entry["id"], "position": entry["position"]})
        assert status == 200 and r.llen("resque:failed") == 0
        status, _h, body = ui_request(port, "/metrics")
        assert status == 200 and b'corral_ui_actions_total{action="failed.remove",outcome="ok"} 1.0' in body
    finally:
        web.kill()


def test_corral_up_prints_the_dashboard_url_and_a_working_token(tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys

    from tests.support import REPO_ROOT, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "node", "up", "--nodes", "1", "--for", "20", "--http-port", str(port),
                             "--tasks-dir", str(write_tasks(tmp_path)), "--data-dir", str(tmp_path / "data")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        out = "".join(lines)
        m = re.search(rf"dashboard: http://127\.0\.0\.1:{port}/ui/  \(token ([0-9a-f]{{32}});", out)
        assert m, out
        assert ui_get(port, "session")["actions_enabled"] is True
        assert ui_post(port, "queue.clear", {"queue": "nothing"}, token=m.group(1))[0] == 200
        assert ui_post(port, "queue.clear", {"queue": "nothing"}, token=None)[0] == 403
    finally:
        proc.send_signal(2)
        proc.wait(30)


def test_a_leader_change_shows_within_a_refresh(node_cluster: NodeCluster, tmp_path: Path) -> None:
    """The overview re-reads the leader's record only when the lock's token changes: a new term
    must still show, with its own epoch and since."""
    nodes = _node(node_cluster, tmp_path, n=2)
    leader = node_cluster.wait_leader(15)
    survivor = next(n for n in nodes if n is not leader)
    before = ui_get(survivor.http_port, "overview")["leader"]
    assert leader.owns(before["node"])
    leader.kill()

    def new_term() -> dict[str, object] | None:
        row = ui_get(survivor.http_port, "overview")["leader"]
        return row if row is not None and survivor.owns(str(row["node"])) else None

    row = wait_until(new_term, 20, 0.2, message="the survivor to show itself as the new leader")
    r = _r(node_cluster)
    assert row["epoch"] == int(r.hget("resque:corral:leader", "epoch")) > before["epoch"]
    assert row["since"] > before["since"]


def test_hostile_keys_do_not_blank_the_overview_or_stop_the_history(node_cluster: NodeCluster,
                                                                    tmp_path: Path) -> None:
    r = _r(node_cluster)
    r.set("resque:stat:processed", "not a number")
    r.rpush("resque:failed:x", "1")
    r.lpush("resque:failed", "{not json")  # a failed entry that is not JSON
    r.zadd("resque:delayed_queue_schedule", {"garbage": 1})
    r.set("resque:corral:history:last", "zz")
    r.rpush("resque:resque_scheduler_leader_lock:x", "1")
    r.sadd("resque:queues", "weird")
    r.set("resque:queue:weird", "a string, not a list")  # WRONGTYPE for LLEN
    (node,) = _node(node_cluster, tmp_path)
    o = ui_get(node.http_port, "overview")
    assert o["processed_total"] == 0 and o["failed"] == 1 and o["leader"] is not None
    assert {q["name"]: q["length"] for q in o["queues"]}["weird"] == 0
    f = ui_get(node.http_port, "failed")
    assert f["total"] == 1 and f["entries"][0]["task"] is None
    # the sampler reads "zz" as no sample yet and writes the bucket
    wait_until(lambda: r.zcard("resque:corral:history") >= 1, 15, 0.2, message="a history sample")
    assert node.running
