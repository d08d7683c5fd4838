"""A stop request always ends a node promptly, however early it comes.

Stopping a node right after it is ready used to hang about one time in three: redis-py (on
Python 3.11) can swallow a cancellation that races a reply, and the gauge refresher or the
notifier then looped on, so the node logged "stopped" and never exited (SIGTERM ignored for good).
Bounded: 12 starts and stops of an in-process node, each allowed 5 s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.config import NodeConfig
from node.loader import load_dir
from node.runtime import Node

ROUNDS = 12


async def test_stop_right_after_start_always_ends_the_node(redis_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "tasks"
    empty.mkdir()
    hung = []
    for i in range(ROUNDS):
        cfg = NodeConfig(redis_url=redis_url, tasks_dir=str(empty), http_port=0, shutdown_timeout=2.0,
                         poll_interval=0.001, metrics_refresh=5.0, node_id=f"stop{i}")
        node = Node(cfg, load_dir(cfg.tasks_dir), install_signals=False)
        ready = asyncio.Event()
        run = asyncio.create_task(node.run(ready))
        await asyncio.wait([run, asyncio.create_task(ready.wait())], timeout=15,
                           return_when=asyncio.FIRST_COMPLETED)
        assert ready.is_set(), "node did not start"
        node.request_stop()
        done, _ = await asyncio.wait([run], timeout=cfg.shutdown_timeout + 3)
        if not done:
            hung.append(i)
            run.cancel()
            for t in asyncio.all_tasks():  # what kept it alive, then clean up for the next round
                if t is not asyncio.current_task():
                    t.cancel()
            await asyncio.sleep(0.2)
    assert not hung, f"{len(hung)} of {ROUNDS} stops did not end the node"
