"""A leader whose own wall clock is off by ±1 h, with a real skewed process clock (Debian's
`faketime`, libfaketime preloaded into the node and its leader process; monotonic time untouched,
`FAKETIME_DONT_FAKE_MONOTONIC=1`), then a handover to a node with a correct clock.

Before: the +1 h leader promoted a job due in 30 min at once and claimed periodic slots an hour
ahead, writing `last` an hour into the future; after the handover nothing fired for an hour. The
-1 h leader claimed slots an hour late, and its successor replayed a minute of catch-up.

Pass: no delayed job promoted before its second and no periodic slot claimed before it (both on
Redis' clock, from the audit stream), the job due in 30 min still delayed, and after the handover
every slot claimed within 2 s of its time, one claim per slot, no gap.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from cluster.client import Client
from cluster.keys import Keys
from tests.support import missing, wait_until
from tests.support.nodes import NodeCluster

K = Keys("resque")
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
TASKS = '''
from cluster import Task, task


@task(name="later")
async def later(params, ctx):
    await ctx.client.redis.rpush("ran", str(params.get("id")))


async def _tick(params, ctx):
    pass


tick = Task(name="tick", frequency=1.0, run=_tick, queue="ticks")
'''


def _audit(r: redis.Redis) -> list[tuple[str, int, float, str]]:
    """(op, epoch, redis time in seconds, detail) of every fenced leader write."""
    return [(f["op"], int(f["epoch"]), int(f["redis_time_us"]) / 1e6, f["detail"]) for _id, f in r.xrange(K.audit)]


def _redis_now(r: redis.Redis) -> float:
    sec, usec = r.time()
    return int(sec) + int(usec) / 1e6


@pytest.mark.parametrize("skew", ["+1h", "-1h"])
def test_a_leader_with_a_skewed_process_clock_runs_nothing_early_and_hands_over_cleanly(
        tmp_path: Path, redis_url: str, skew: str) -> None:
    if not Path(LIBFAKETIME).exists():
        missing(f"libfaketime (Debian package faketime) is not installed: no {LIBFAKETIME}")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.py").write_text(TASKS)
    fast = ["--audit", "--lease", "3", "--renew-period", "0.5", "--renew-timeout", "0.4", "--lease-margin", "1",
            "--heartbeat-interval", "0.5", "--dead-after", "3"]
    cluster = NodeCluster(tmp_path, redis_url=redis_url, tasks_dir=tasks, queues="default", extra_args=fast)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # preloaded directly (not through the `faketime` wrapper, which forks and would take our
        # SIGTERM itself); the leader process inherits the environment, so both are skewed
        skewed = cluster.add("skewed", env={"LD_PRELOAD": LIBFAKETIME, "FAKETIME": skew,
                                            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"})
        skewed.wait_ready(30)
        wait_until(lambda: skewed.is_leader(), 20, message="the skewed node leads")
        info = skewed.status()["node"]
        assert info["id"] == skewed.reported_id
        correct = cluster.add("correct")
        correct.wait_ready(30)

        now = _redis_now(r)
        due = [int(now) + 3, int(now) + 4]

        async def enqueue() -> None:
            async with await Client.connect(redis_url) as c:
                for i, ts in enumerate(due):
                    await c.enqueue_at(ts, "later", {"id": f"d{i}"})
                await c.enqueue_at(int(now) + 1800, "later", {"id": "in-30-min"})

        asyncio.run(enqueue())
        wait_until(lambda: r.llen("ran") >= 2, 15, message="the two delayed jobs ran")
        time.sleep(2.0)  # a few more periodic slots under the skewed leader
        lead_epoch = int(skewed.leader()["epoch"])
        t_handover = _redis_now(r)
        skewed.terminate(20)  # releases the lock: the correct node takes over
        wait_until(lambda: correct.is_leader(), 10, message="the correct node leads")
        skew_s = float(skew[:-1]) * 3600
        started = [rec for rec in skewed.log_records() if rec.get("event") == "node_started"]
        assert started and abs(started[0]["ts"] - skew_s - time.time()) < 120, "the node's clock was not skewed"
        time.sleep(4.0)
        t_end = _redis_now(r)

        audit = _audit(r)
        promotions = [(int(b.partition(":")[0]), t) for op, _e, t, d in audit if op == "promote"
                      for b in d.split(",")]
        claims = [(float(d.rpartition("@")[2]), t, e) for op, e, t, d in audit if op == "periodic"]
        early_jobs = [(ts, t) for ts, t in promotions if t < ts]
        early_slots = [(s, t) for s, t, _e in claims if t < s]
        assert sorted(r.lrange("ran", 0, -1)) == ["d0", "d1"], "the job due in 30 min ran (or a due one did not)"
        assert r.zcard(K.delayed_schedule) == 1
        assert not early_jobs, f"delayed jobs promoted before their second: {early_jobs}"
        assert not early_slots, f"periodic slots claimed before their time: {early_slots}"
        assert any(e == lead_epoch for _s, _t, e in claims), "the skewed leader claimed nothing"
        after = sorted((s, t) for s, t, e in claims if e > lead_epoch)
        assert after, f"no periodic slot fired after the handover (record: {r.hgetall(K.periodic('tick'))})"
        late = [(s, round(t - s, 3)) for s, t in after if t - s > 2.0]
        assert not late, f"slots claimed more than 2 s after their time after the handover: {late}"
        slots = [s for s, _t in after]
        assert slots == [slots[0] + i for i in range(len(slots))], f"a gap or a double after the handover: {slots}"
        assert slots[0] <= t_handover + 4.0 and slots[-1] >= t_end - 2.0, (t_handover, slots, t_end)
        all_slots = [s for s, _t, _e in claims]
        assert len(all_slots) == len(set(all_slots)), "a slot claimed twice"
        print(f"\n{skew}: {len(claims)} claims ({len(after)} after the handover), promotions vs due "
              f"{[round(t - ts, 3) for ts, t in promotions]}, lateness after handover max "
              f"{max(t - s for s, t in after):.3f}s")
    finally:
        cluster.close()
