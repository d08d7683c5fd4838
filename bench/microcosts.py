"""CPU cost, in µs per job, of the per-job steps the drain profile shows, each timed alone in this
process (best of several repeats, so other load on the machine inflates it least):
`PYTHONPATH=. python bench/microcosts.py`.
"""

from __future__ import annotations

import asyncio
import secrets
import timeit
from typing import Any


def _best_us(fn: Any, number: int = 20_000, repeat: int = 5) -> float:
    return 1e6 * min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def measure() -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from cluster.task import Task
    from cluster.wire import decode_job, js_date
    from node.metrics import NodeMetrics

    reg = CollectorRegistry()
    m = NodeMetrics(reg, node_id="n", version="0", backend="redis")

    async def noop(params: Any, ctx: Any) -> None:
        return None

    t = Task(name="noop", run=noop, queue="bench")
    payload = '{"class":"noop","queue":"bench","args":[{}]}'
    child_c, child_h = m.processed.labels("bench", "noop"), m.duration.labels("bench", "noop")
    out = {
        "WorkerPool.report() x2 per job (4 labelled gauge sets)": _best_us(
            lambda: (m.worker_state(1, 31), m.worker_state(0, 32))),
        "NodeMetrics.job_finished (labels + inc + histogram observe)": _best_us(
            lambda: m.job_finished("bench", "noop", 0.0001, True)),
        "NodeMetrics.job_started with a wait (labels + histogram observe)": _best_us(
            lambda: m.job_started("bench", "noop", 0.002)),
        "cached children: counter inc + histogram observe": _best_us(
            lambda: (child_c.inc(), child_h.observe(0.0001))),
        "js_date(now) per fetch": _best_us(lambda: js_date(1_790_000_000.123)),
        "secrets.token_hex(8) per fetch": _best_us(lambda: secrets.token_hex(8)),
        "Task.plugin_instances() per job (no plugins)": _best_us(t.plugin_instances),
        "decode_job(payload)": _best_us(lambda: decode_job(payload)),
    }

    async def with_task() -> None:
        for _ in range(5000):
            task = asyncio.get_running_loop().create_task(noop({}, None))
            await asyncio.shield(task)

    async def direct() -> None:
        for _ in range(5000):
            await noop({}, None)

    import uvloop

    def run(coro_fn: Any) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = timeit.default_timer()
            uvloop.run(coro_fn())
            best = min(best, timeit.default_timer() - t0)
        return 1e6 * best / 5000

    out["create_task + shield per job, minus a direct await"] = run(with_task) - run(direct)
    return out


if __name__ == "__main__":
    for k, v in measure().items():
        print(f"{v:8.2f} us  {k}")
