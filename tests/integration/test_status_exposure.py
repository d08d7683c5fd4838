"""/status never serves a secret: running jobs show task and queue only, unless the node runs with
`status_payloads` (`--status-payloads`); then their params are shown with every secret-looking
value replaced by ***."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from cluster.client import Client
from tests.support.inproc import NodeFactory, wait_for

TASKS = '''
import asyncio
from cluster import task


@task(name="nap")
async def nap(params, ctx):
    await asyncio.sleep(params.get("s", 0))
'''

SECRETS = {"api_token": "tok-7f3a91", "password": "pw-Secret-55", "nested": {"clientSecret": "cs-81b2"},
           "headers": {"Authorization": "Bearer bt-19c4"}, "dsn": "redis://app:dsn-Pw-3d@db:6379/0",
           "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-4e5f", "aws_secret_access_key": "ak-66d1"}
SECRET_VALUES = ["tok-7f3a91", "pw-Secret-55", "cs-81b2", "bt-19c4", "dsn-Pw-3d", "sig-4e5f", "ak-66d1"]
PLAIN = {"user": "bob", "s": 2}


def _status(port: int) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
        return json.loads(r.read())


async def _running_job(node: Any, client: Client) -> dict[str, Any]:
    await client.enqueue("nap", {**PLAIN, **SECRETS})
    found: dict[str, Any] = {}

    async def busy() -> bool:
        st = await asyncio.to_thread(_status, node.http_port)
        jobs = [w["job"] for w in st["node"]["workers"] if w["job"]]
        if jobs:
            found.update(jobs[0])
        return bool(jobs)

    await wait_for(busy, 10, what="the job shows in /status")
    return found


async def test_status_shows_no_params_by_default(inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node(TASKS)
    job = await _running_job(node, client)
    assert job["task"] == "nap" and job["queue"] == "default" and "payload" not in job
    text = json.dumps(job)
    assert not any(v in text for v in ("bob", "tok-7f3a91", "pw-Secret-55"))


async def test_status_payloads_on_show_params_but_never_secrets(inproc_node: NodeFactory, client: Client) -> None:
    node = await inproc_node(TASKS, status_payloads=True)
    job = await _running_job(node, client)
    shown = json.loads(job["payload"])
    params = shown["args"][0]
    assert params["user"] == "bob" and params["s"] == 2
    body = json.dumps(await asyncio.to_thread(_status, node.http_port))
    leaked = [s for s in SECRET_VALUES if s in body]
    assert not leaked, f"/status shows secrets: {leaked}"
    assert params["dsn"] == "redis://app:***@db:6379/0"
