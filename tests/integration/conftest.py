"""In-process nodes: a real `node.runtime.Node` on the test's own event loop, against real Redis.

    async def test_x(inproc_node, redis_url, tmp_path):
        node = await inproc_node(TASKS, queues=("default",))
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cluster.client import Client
from node.config import NodeConfig
from node.loader import load_dir
from node.runtime import Node
from tests.support.inproc import NodeFactory


@pytest.fixture
async def inproc_node(redis_url: str, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    started: list[tuple[Node, asyncio.Task[int]]] = []
    counter = 0

    async def make(tasks_source: str, **overrides: Any) -> Node:
        nonlocal counter
        counter += 1
        tasks_dir = tmp_path / f"tasks{counter}"
        tasks_dir.mkdir()
        (tasks_dir / "t.py").write_text(textwrap.dedent(tasks_source))
        options: dict[str, Any] = {"redis_url": redis_url, "tasks_dir": str(tasks_dir), "http_port": 0,
                                   "node_id": f"test{counter}", "queues": ("default",), "shutdown_timeout": 5.0,
                                   "poll_interval": 0.2, "metrics_refresh": 0.2, "processes": 1, "threads": 4,
                                   "concurrency": 1}  # one slot per entry unless a test asks for more
        options.update(overrides)
        cfg = NodeConfig(**options)
        node = Node(cfg, load_dir(cfg.tasks_dir), install_signals=False)
        ready = asyncio.Event()
        task = asyncio.create_task(node.run(ready))
        done, _ = await asyncio.wait([task, asyncio.create_task(ready.wait())], timeout=15,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready.is_set(), "node did not start within 15 s"
        started.append((node, task))
        return node

    yield make
    for node, _task in started:
        node.request_stop()
    for _node, task in started:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    c = await Client.connect(redis_url)
    yield c
    await c.close()


