"""Task file source used by multi-node tests: every execution is logged outside Redis.

Each node process appends one JSON line per execution to `$JOBLOG_DIR/<pid>.jsonl`
(docs/FAULTS.md §2: never to Redis, never shared between processes).
"""

TASKS = '''
import asyncio, json, os, signal, time
from cluster import Task, task

LOG_DIR = os.environ.get("JOBLOG_DIR", ".")


def record(kind, params, ctx):
    with open(os.path.join(LOG_DIR, f"{os.getpid()}.jsonl"), "a") as fh:
        fh.write(json.dumps({"kind": kind, "id": params.get("id"), "node": ctx.node_id, "pid": os.getpid(),
                             "exec": ctx.execution_id, "t": time.time()}) + "\\n")


@task(name="work")
async def work(params, ctx):
    record("start", params, ctx)
    await asyncio.sleep(params.get("s", 0))
    record("end", params, ctx)


@task(name="noop")
async def noop(params, ctx):
    record("end", params, ctx)


@task(name="suicide")
async def suicide(params, ctx):
    record("start", params, ctx)
    os.kill(os.getpid(), signal.SIGKILL)


async def tick_run(params, ctx):
    record("tick", params, ctx)


tick = Task(name="tick", frequency=1.0, run=tick_run)
'''


def read_log(directory: "object") -> list[dict]:
    import json
    from pathlib import Path

    out = []
    for p in Path(str(directory)).glob("*.jsonl"):
        text = p.read_text()
        # a job may be writing its line right now: only newline-terminated lines are complete
        for line in text[: text.rfind("\n") + 1].splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out
