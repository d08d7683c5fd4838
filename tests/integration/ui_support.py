"""Shared by the dashboard's tests (test_ui_api.py, test_ui_browser.py): a task file with
periodic, failing, flaky and hostile-named tasks, and small HTTP helpers for /ui/api.

    tasks = write_tasks(tmp_path)
    (node,) = node_cluster.start(1, tasks_dir=tasks, env={"CORRAL_UI_TOKEN": TOKEN})
    status, body = ui_post(node.http_port, "failed.retry", {...}, token=TOKEN)
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

TOKEN = "test-token-0123456789abcdef"
HOSTILE_TASK = "<script>document.title='pwned'</script>"
HOSTILE_FAILED_TASK = "<img/src=x/onerror=document.title='pwned'>"
FAST = ["--heartbeat-interval", "0.5", "--dead-after", "3", "--poll-interval", "0.05", "--lease", "3",
        "--renew-period", "0.5", "--renew-timeout", "0.3", "--lease-margin", "1"]

TASKS_TEMPLATE = '''
import json
from cluster import Task, task


@task(name="record", queue="work")
async def record(params, ctx):
    await ctx.client.redis.rpush("uitest:ran", json.dumps(params, sort_keys=True))


@task(name="fails", queue="work")
async def fails(params, ctx):
    raise ValueError("kaboom <b>not bold</b> " + str(params.get("n", "")))


@task(name="flaky", queue="work")
async def flaky(params, ctx):
    # fails on its first run, succeeds on the next: a retry from the dashboard runs it
    if await ctx.client.redis.incr("uitest:flaky:" + str(params.get("n"))) == 1:
        raise RuntimeError("first run fails")
    await ctx.client.redis.rpush("uitest:ran", json.dumps(params, sort_keys=True))


async def _tick(params, ctx):
    await ctx.client.redis.rpush("uitest:ticks", str(ctx.args))


tick = Task(name="tick", run=_tick, queue="work", frequency=1.0)
hostile = Task(name=HOSTILE, run=_tick, queue="work", frequency=3600.0, description="<i>hostile</i> name")
nightly = Task(name="nightly", run=_tick, queue="work", cron="0 3 * * *", timezone="Europe/Paris")
'''
TASKS = TASKS_TEMPLATE.replace("name=HOSTILE", f"name={HOSTILE_TASK!r}")


def write_tasks(tmp_path: Path) -> Path:
    d = tmp_path / "ui_tasks"
    d.mkdir(exist_ok=True)
    (d / "ui.py").write_text(TASKS)
    return d


def ui_request(port: int, path: str, method: str = "GET", body: bytes | None = None,
               headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def ui_get(port: int, endpoint: str) -> Any:
    status, _h, body = ui_request(port, "/ui/api/" + endpoint)
    assert status == 200, (endpoint, status, body)
    return json.loads(body)


def ui_post(port: int, action: str, payload: dict[str, Any], token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Corral-Token"] = token
    status, _h, body = ui_request(port, "/ui/api/actions/" + action, "POST", json.dumps(payload).encode(), headers)
    return status, json.loads(body)
