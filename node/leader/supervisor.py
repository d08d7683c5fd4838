"""The node's side of its leader process (`node/leader/child.py`): start it, feed it the node's
liveness, mirror its election view for /leader, /status and /healthz, apply its metrics, ask it to
release on SIGTERM, and start a new one when it exits while the node runs.

It offers what `Node` uses of an in-process elector: `state`, `term` (its deadline only),
`release()`, `stop()`; `run()` supervises the child until cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from cluster.election.base import ElectionState
from cluster.observe import Observer
from cluster.task import Registry

from ..config import NodeConfig
from .link import EXIT_STALLED, FORWARDED, hooks_may_need_tls, resp_serves

log = logging.getLogger("corral.leader_process")

PING_PERIOD = 0.2


@dataclass
class RemoteTerm:
    """The child's term as far as /healthz needs it: its deadline on the shared monotonic clock
    (CLOCK_MONOTONIC is system-wide on Linux, so the child's stamps compare with ours)."""

    deadline: float


def _child_env() -> dict[str, str]:
    """Our environment, with this very `node` package first on the path (a node started from a
    checkout that is not installed must start the same code)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class LeaderProcess:
    def __init__(self, cfg: NodeConfig, *, node_id: str, redis_url: str, observer: Observer,
                 registry: Registry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry
        self.node_id = node_id
        self.redis_url = redis_url
        self.observer = observer
        self.state = ElectionState(node=node_id, backend=cfg.election)
        self.term: RemoteTerm | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False

    def _start_record(self) -> bytes:
        config = {f.name: getattr(self.cfg, f.name) for f in fields(self.cfg)}
        start = {"config": config, "node_id": self.node_id, "redis_url": self.redis_url, "parent": os.getpid(),
                 **self._imports()}
        return json.dumps(start).encode() + b"\n"

    def _imports(self) -> dict[str, bool]:
        """What the leader process leaves out of its imports (node/leader/boot.py): redis-py when
        its own RESP clients serve (`resp`), the ssl module unless TLS is used or may be (`ssl`)."""
        resp = resp_serves(self.cfg, self.cfg.redis_settings(self.redis_url))
        return {"resp": resp, "ssl": not resp or self.registry is None or hooks_may_need_tls(self.registry)}

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            code = await self._run_once()
            self._child_gone()
            if self._stopping:
                return
            if code == EXIT_STALLED:
                backoff = 0.5  # this node's loop runs again (we are here): contend again at once
                delay = 0.0
            else:
                delay, backoff = backoff, min(backoff * 2, 10.0)
            log.warning("leader process exited (status %s); starting another in %.1f s", code, delay,
                        extra={"event": "leader_process_restart"})
            self.restarts += 1
            await asyncio.sleep(delay)

    async def _run_once(self) -> int | None:
        # stdout is our channel from the child; stderr (its logs) is the node's
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node.leader.boot", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 20, env=_child_env())
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(self._start_record())
            pinger = asyncio.create_task(self._ping(proc), name="leader-ping")
            try:
                while line := await proc.stdout.readline():
                    self._apply(line)
            except ValueError as e:  # a line past the limit: the channel is broken, start anew
                log.warning("leader process: unreadable channel (%r); restarting it", e)
            finally:
                pinger.cancel()
            return await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled (node stopping) or broken channel
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.shield(proc.wait())

    async def _ping(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError, RuntimeError):
            while proc.returncode is None:
                proc.stdin.write(b"ping\n")
                await asyncio.sleep(PING_PERIOD)

    def _apply(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("leader process: unreadable message %r", line[:200])
            return
        try:
            if not isinstance(msg, dict):
                raise TypeError(f"expected an object, got {type(msg).__name__}")
            if msg.get("obs") in FORWARDED:
                if not isinstance(msg.get("args"), list):
                    raise TypeError("args must be a list")
                getattr(self.observer, msg["obs"])(*msg["args"])
            elif "state" in msg:
                s = msg["state"]
                st = self.state
                st.is_leader, st.leader, st.epoch, st.since = s["is_leader"], s["leader"], s["epoch"], s["since"]
                st.transitions, st.extra = s["transitions"], s["extra"]
                self.term = RemoteTerm(s["deadline"]) if s["deadline"] is not None else None
        except (KeyError, TypeError, ValueError) as e:  # a malformed message costs a log line, not the node
            log.warning("leader process: bad message %r: %r", line[:200], e)

    def _child_gone(self) -> None:
        """Whatever the child last said, a dead child leads nothing."""
        self.proc = None
        self.term = None
        if self.state.is_leader:
            self.state.is_leader = False
            self.state.leader = None
            self.observer.leader_changed(False, self.state.epoch)

    async def release(self) -> None:
        """SIGTERM path: the child releases the lock (compare-and-delete + publish) and exits."""
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(b"release\n")
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 6.0)
        except TimeoutError:
            log.warning("leader process did not exit after release; killing it (its lease will expire)")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    def forward_signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
