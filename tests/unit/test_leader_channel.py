"""The node <-> leader process channel, as pure units: a malformed message from the child costs a
log line, never the node; an election that ends on its own makes the child exit non-zero (so the
node starts a new candidate) rather than linger as a dead one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from node.config import NodeConfig
from node.leader.child import LeaderChild
from node.leader.supervisor import LeaderProcess


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def _proc() -> tuple[LeaderProcess, Recorder]:
    rec = Recorder()
    return LeaderProcess(NodeConfig(), node_id="n1", redis_url="redis://127.0.0.1:1/0", observer=rec), rec  # type: ignore[arg-type]


def _line(msg: Any) -> bytes:
    return json.dumps(msg).encode() + b"\n"


def test_messages_reach_the_metrics_and_the_view() -> None:
    lp, rec = _proc()
    lp._apply(_line({"obs": "promoted", "args": [2, [0.01, 0.02]]}))
    lp._apply(_line({"state": {"is_leader": True, "leader": "n1", "epoch": 7, "since": 1.0, "transitions": 1,
                               "extra": {}, "deadline": 123.0}}))
    assert rec.calls == [("promoted", (2, [0.01, 0.02]))]
    assert lp.state.is_leader and lp.state.epoch == 7 and lp.term is not None and lp.term.deadline == 123.0


def test_malformed_messages_are_dropped_not_raised() -> None:
    lp, rec = _proc()
    for bad in (b"not json\n", _line({"obs": "promoted", "args": "x"}), _line({"obs": "__init__", "args": []}),
                _line({"state": {"is_leader": True}}), _line([1, 2]), _line({"obs": "redis_error", "args": 5})):
        lp._apply(bad)
    assert rec.calls == [] and not lp.state.is_leader


def test_a_dead_child_leads_nothing() -> None:
    lp, rec = _proc()
    lp._apply(_line({"state": {"is_leader": True, "leader": "n1", "epoch": 7, "since": 1.0, "transitions": 1,
                               "extra": {}, "deadline": 123.0}}))
    lp._child_gone()
    assert not lp.state.is_leader and lp.term is None and rec.calls == [("leader_changed", (False, 7))]


async def test_an_election_that_ends_by_itself_ends_the_child_non_zero() -> None:
    start = {"config": {}, "node_id": "n1", "redis_url": "redis://127.0.0.1:1/0", "parent": 1}
    child = LeaderChild(start, out=None, stdin=None)  # type: ignore[arg-type]

    async def broken() -> None:
        raise RuntimeError("backend gave up")

    task = asyncio.create_task(broken())
    await asyncio.gather(task, return_exceptions=True)
    child._election_ended(task)
    assert child.done.is_set() and child.exit_code == 1
