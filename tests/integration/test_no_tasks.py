"""A node whose tasks directory is empty (the image without task files) starts, says it has no
tasks, serves HTTP and may lead, and takes no jobs: a job waiting in the shared namespace stays
queued for a node that can run it instead of being failed as TaskNotFound."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.support import wait_until
from tests.support.nodes import NodeCluster


def test_node_without_tasks_starts_serves_and_takes_no_jobs(node_cluster: NodeCluster, redis_url: str,
                                                           tmp_path: Path) -> None:
    empty = tmp_path / "empty-tasks"
    empty.mkdir()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    job = '{"class":"sayHello","args":[{}]}'
    r.sadd("resque:queues", "default")
    r.rpush("resque:queue:default", job)

    node = node_cluster.add("bare", tasks_dir=empty, queues="default").wait_ready(30)
    wait_until(node.is_leader, 10, message="a node without tasks may still lead")
    warned = [rec for rec in node.log_records() if rec.get("event") == "no_tasks"]
    assert warned and str(empty) in warned[0]["msg"] and "takes no jobs" in warned[0]["msg"], \
        node.log_records()[:5]
    status = node.status()
    assert status["node"]["workers"] == [] and status["node"]["queues"] == [], status["node"]
    # One heartbeat later the job is still queued, and nothing was failed.
    nid = status["node"]["id"]
    beats = node.status()["cluster"]["members"][nid]["heartbeat_age_seconds"]
    wait_until(lambda: node.status()["cluster"]["members"][nid]["heartbeat_age_seconds"] < beats, 10,
               message="a later heartbeat")
    assert r.lrange("resque:queue:default", 0, -1) == [job]
    assert r.llen("resque:failed") == 0
