"""Seeded property test: good jobs mixed with hostile queue entries, keys of the wrong type of every
kind a node reads, and bad delayed buckets, against one real `corral node` process (`*` workers,
leader process on).

Each example plants, under names of its own (earlier examples' bad keys stay, so hostility piles
up): good jobs (immediate and delayed) on a few queues, raw entries that cannot be jobs, and a
selection of bad keys: a queue listed in `queues` holding a string/hash/set/zset, a delayed bucket
of the wrong type, a good queue's `corral:qtimes` of the wrong type, `stat:processed` as a hash,
`failed` itself as a hash (repaired at the end of the example, atomically, as an operator
would), the idle zset of `*` slots and `corral:recovered`. Pass: every good job ran exactly once,
every hostile entry ended in `failed` with its reason, every planted key was reported as a bad
key (a `bad_key` log line naming it), the node stayed alive and ready.

Wrong-type keys left out here, each with its own test in test_bad_keys.py: `queues` itself (the
test's own SADDs would fail), and keys whose bad type refuses the producer's call with an error
naming the key (nothing is written): a queue key at enqueue, `delayed_queue_schedule` and
`timestamps:<job>` at enqueue_at.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from cluster.client import Client
from cluster.keys import Keys
from tests.support import wait_until
from tests.support.nodes import NodeCluster, NodeProcess

K = Keys("resque")
TASKS = '''
from cluster import task


@task(name="mark")
async def mark(params, ctx):
    await ctx.client.redis.rpush("marks", str(params.get("id")))
'''

_not_a_job = st.one_of(
    st.binary(max_size=24).filter(lambda b: not b.strip().startswith((b"{", b"["))),
    st.text(max_size=24).filter(lambda s: not s.strip().startswith(("{", "["))),
    st.lists(st.integers(), max_size=3).map(json.dumps),
    st.sampled_from(["nope", "", "os.system", "Mark"]).map(
        lambda c: json.dumps({"class": c, "queue": "hostile", "args": [{}]})),
    st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)).map(
        lambda c: json.dumps({"class": c, "queue": "hostile", "args": [{}]})),
    st.integers(min_value=300, max_value=3000).map(lambda d: '{"class":"nope","args":[' + "[" * d + "]" * d + "]}"),
)
_wrong_types = st.sampled_from(["string", "hash", "set", "zset"])
bad_key_specs = st.lists(st.one_of(
    st.tuples(st.just("listed_queue"), _wrong_types),
    st.tuples(st.just("delayed_bucket"), _wrong_types),
    st.tuples(st.just("qtimes"), st.sampled_from(["string", "hash", "set"])),
    st.tuples(st.just("stat"), st.just("hash")),
    st.tuples(st.just("failed"), st.just("hash")),
    st.tuples(st.just("idle"), st.sampled_from(["string", "hash", "set"])),
    st.tuples(st.just("recovered"), st.sampled_from(["string", "set", "zset"])),
), max_size=4, unique_by=lambda s: s[0])
examples = st.tuples(
    st.lists(st.tuples(st.sampled_from(["g1", "g2", "default"]), st.sampled_from(["now", "past", "soon"])),
             min_size=1, max_size=8),
    st.lists(_not_a_job, max_size=5),
    bad_key_specs,
)


def _write_wrong(r: redis.Redis, key: str, kind: str) -> None:
    r.delete(key)
    if kind == "string":
        r.set(key, "hostile")
    elif kind == "hash":
        r.hset(key, "hostile", "1")
    elif kind == "set":
        r.sadd(key, "hostile")
    else:
        r.zadd(key, {"hostile": 1})


class Run:
    def __init__(self, node: NodeProcess, r: redis.Redis, url: str) -> None:
        self.node = node
        self.r = r
        self.url = url
        self.n = 0
        self.stats = Counter[str]()
        self.failed_seen = 0

    def example(self, goods: list[tuple[str, str]], hostile: list[Any], bad: list[tuple[str, str]]) -> None:
        assert self.node.running, f"the node died:\n{self.node.log_tail(30)}"
        self.n += 1
        n, r = self.n, self.r
        planted: list[str] = []
        now = int(float(r.time()[0]))
        for kind, typ in bad:
            if kind == "failed" and not hostile:
                continue  # nothing would fail: the key would never be met
            self.stats[kind] += 1
            if kind == "listed_queue":
                key = K.queue(f"bad{n}")
                _write_wrong(r, key, typ)
                r.sadd(K.queues, f"bad{n}")
            elif kind == "delayed_bucket":
                key = K.delayed(now - 100 - n)
                _write_wrong(r, key, typ)
                r.zadd(K.delayed_schedule, {str(now - 100 - n): now - 100 - n})
            elif kind == "qtimes":
                key = K.qtimes(f"g{n}q")
                _write_wrong(r, key, typ)
                goods = [*goods, (f"g{n}q", "now")]
            elif kind == "idle":  # where `*` slots file their node when they park
                key = K.idle("*")
                _write_wrong(r, key, typ)
            elif kind == "recovered":  # recovery counts, read by every fetch while it exists
                key = K.recovered
                _write_wrong(r, key, typ)
            elif kind == "stat":
                key = K.stat("processed")
                _write_wrong(r, key, typ)
            else:
                key = K.failed
                if r.exists(K.failed):
                    r.rename(K.failed, "saved-failed")
                _write_wrong(r, key, typ)
            planted.append(key)
        ids = [f"e{n}-{i}" for i in range(len(goods))]

        async def enqueue() -> None:
            async with await Client.connect(self.url) as c:
                for gid, (q, when) in zip(ids, goods, strict=True):
                    if when == "now":
                        await c.enqueue("mark", {"id": gid}, queue=q)
                    else:
                        await c.enqueue_at(now - 1 if when == "past" else now + 1, "mark", {"id": gid}, queue=q)

        asyncio.run(enqueue())
        r.sadd(K.queues, "hostile")
        if hostile:
            r.rpush(K.queue("hostile"), *[h if isinstance(h, bytes) else h.encode() for h in hostile])
        if K.failed in planted:
            # failing entries wait in flight while `failed` is not a list; then an operator repairs it
            if hostile:
                wait_until(lambda: self._reported(K.failed), 15, message="the bad failed key reported")
            self._repair_failed()

        target = self.failed_seen + len(hostile)

        def settled() -> bool:
            assert self.node.running, f"the node died:\n{self.node.log_tail(30)}"
            marks = Counter(x.decode() for x in r.lrange("marks", 0, -1))
            return all(marks[i] >= 1 for i in ids) and len(self._failed()) >= target

        wait_until(settled, 30, 0.05, message=f"example {n}: {len(goods)} good jobs ran and {len(hostile)} failed")
        marks = Counter(x.decode() for x in r.lrange("marks", 0, -1))
        assert all(marks[i] == 1 for i in ids), {i: marks[i] for i in ids}
        assert len(self._failed()) == target, "a hostile entry failed twice"
        self.failed_seen = target
        for key in planted:
            wait_until(lambda key=key: self._reported(key), 10, message=f"{key} reported as a bad key")
        assert self.node.readyz()[0] == 200

    def _repair_failed(self) -> None:
        with self.r.pipeline(transaction=True) as p:
            p.delete(K.failed)
            if self.r.exists("saved-failed"):
                p.rename("saved-failed", K.failed)
            p.execute()

    def _failed(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.r.lrange(K.failed, 0, -1):
            entry = json.loads(raw)
            if entry.get("queue") == "hostile":
                assert entry["exception"] in ("JobDecodeError", "TaskNotFound"), entry
                assert entry.get("error"), entry
                out.append(entry)
        return out

    def _reported(self, key: str) -> bool:
        return any(rec.get("event") == "bad_key" and rec.get("key") == key for rec in self.node.log_records())


def test_good_jobs_run_once_and_bad_things_stay_confined(node_cluster: NodeCluster, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.py").write_text(textwrap.dedent(TASKS))
    node = node_cluster.add("hk", tasks_dir=tasks, queues="*", concurrency=2,
                            extra_args=["--poll-interval", "0.1", "--processes", "1"]).wait_ready(30)
    r = redis.Redis.from_url(node_cluster.redis_url)
    run = Run(node, r, node_cluster.redis_url)
    started = time.monotonic()

    @seed(20261207)
    @settings(max_examples=20, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(examples)
    def property_confined(ex: tuple[list[tuple[str, str]], list[Any], list[tuple[str, str]]]) -> None:
        goods, hostile, bad = ex
        run.example(goods, hostile, bad)

    property_confined()
    assert node.running and node.healthz()
    # counted too, the leader process's finds (delayed buckets) included: it forwards them to the node
    kinds = {"listed_queue": "queue", "delayed_bucket": "delayed", "qtimes": "corral:qtimes", "stat": "stat",
             "failed": "failed", "idle": "corral:idle", "recovered": "corral:recovered"}
    for kind in run.stats:
        assert (node.metric("corral_bad_keys_total", {"kind": kinds[kind]}) or 0) >= 1, kind
    print(f"\n{run.n} examples, bad keys planted {dict(run.stats)}, {time.monotonic() - started:.1f}s")
