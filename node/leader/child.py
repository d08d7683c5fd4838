"""The leader process: one per node (`leader_process = true`, the default), started and watched by
`node/leader/supervisor.py`. It holds the node's candidacy and, while it leads, the fenced duties.

Why a process: a node runs sync tasks in threads of its own process. Pure-Python loops in them
hold the GIL the node's event loop needs, so promotions and periodic claims fell due hundreds of ms
late although leadership held (docs/FAULTS.md F13b). Here the leader's loop shares its GIL with nothing.

Why it still follows the node's health: a frozen node (SIGSTOP, a task blocking its loop, docs/FAULTS.md
F2/F13) must not keep leading through a healthy child. The node writes `ping` on our stdin every
0.2 s; when none has come for `loop_stall_limit`, or stdin closes (the node died), or the node
asks (`release`, on SIGTERM), we release the lock (compare-and-delete + publish: a successor takes
over in milliseconds) and exit. The node starts a new candidate once its loop runs again.

Protocol: the first stdin line is the JSON start record (config, node id, Redis URL: secrets never
go through argv or the environment). We write JSON lines on the original stdout: `{"obs": method,
"args": [...]}` for the node's metrics and `{"state": {...}}` whenever our view of the election
changes; fd 1 itself is pointed at stderr, so a print in a task module cannot corrupt the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

from cluster.aio import within
from cluster.clock import SystemClock
from cluster.keys import Keys
from cluster.notify import Notifier
from cluster.observe import Observer
from cluster.resp import RespClient

from ..config import NodeConfig
from ..lifeline import die_with_parent
from ..loop_clock import LoopLag, apply_clock_offset
from .duties import Leadership, PluginClients, close_client
from .link import EXIT_STALLED, FORWARDED

log = logging.getLogger("corral.leader_process")



class ForwardingObserver(Observer):
    def __init__(self, send: Any, on_leader_changed: Any) -> None:
        self._send = send
        self._on_leader_changed = on_leader_changed


def _forward(name: str) -> Any:
    def method(self: ForwardingObserver, *args: Any) -> None:
        self._send({"obs": name, "args": list(args)})
        if name == "leader_changed":
            self._on_leader_changed()
    method.__name__ = name
    return method


for _name in FORWARDED:
    setattr(ForwardingObserver, _name, _forward(_name))


def config_from_record(record: dict[str, Any]) -> NodeConfig:
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    return NodeConfig(**values)


class LeaderChild:
    def __init__(self, start: dict[str, Any], out: asyncio.WriteTransport, stdin: asyncio.StreamReader) -> None:
        self.cfg = config_from_record(start["config"])
        self.node_id: str = start["node_id"]
        self.resp = bool(start.get("resp"))  # RESP clients only (node/leader/boot.py)
        self.url: str = start["redis_url"]
        self.out = out
        self.stdin = stdin
        self.clock = SystemClock()
        self.last_ping = time.monotonic()
        self.done = asyncio.Event()
        self.exit_code = 0
        self.sent_state: dict[str, Any] | None = None

    def send(self, msg: dict[str, Any]) -> None:
        # never block the leader's loop on a frozen node: past 1 MiB unread, drop (the node is
        # stalled and we are about to release anyway)
        if not self.out.is_closing() and self.out.get_write_buffer_size() < 1 << 20:
            self.out.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    def send_state(self) -> None:
        e = self.leadership.elector
        s = e.state
        term = e.term
        state = {"is_leader": s.is_leader, "leader": s.leader, "epoch": s.epoch, "since": s.since,
                 "transitions": s.transitions, "extra": {k: v for k, v in s.extra.items() if _plain(v)},
                 "deadline": term.deadline if term is not None else None}
        if state != self.sent_state:
            self.sent_state = state
            self.send({"state": state})

    async def run(self) -> int:
        from ..loader import load_dir

        cfg = self.cfg
        settings = cfg.redis_settings(self.url)
        registry = load_dir(cfg.tasks_dir)
        observer = ForwardingObserver(self.send, lambda: self.send_state())
        self.plugin_clients: PluginClients | None = None
        if self.resp:  # plain TCP: RESP clients of our own, redis-py only if an enqueue plugin runs
            self.redis: Any = RespClient.from_settings(settings)
            self.plugin_clients = PluginClients(settings, cfg.namespace, registry, self.clock)
            self.leadership = Leadership(cfg, node_id=self.node_id, settings=settings, registry=registry,
                                         clock=self.clock, observer=observer, redis=self.redis,
                                         client=self.plugin_clients, resp=True, hook_redis=self.plugin_clients.redis)
        else:
            from cluster.client import Client
            from cluster.connection import make_redis

            self.redis = make_redis(settings, max_connections=8)
            client = Client(self.redis, cfg.namespace, registry=registry, clock=self.clock)
            self.leadership = Leadership(cfg, node_id=self.node_id, settings=settings, registry=registry,
                                         clock=self.clock, observer=observer, redis=self.redis, client=client)
        notifier = Notifier(self.redis, {Keys(cfg.namespace).delayed_channel: self.leadership.scheduler.notify})
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: self._finish("the node process ended", 0))
        loop.add_signal_handler(signal.SIGINT, lambda: None)  # Ctrl-C reaches the node, which asks us
        if cfg.clock_offset_file:
            loop.add_signal_handler(signal.SIGUSR1, apply_clock_offset, self.clock, cfg.clock_offset_file, log)
        election = asyncio.create_task(self.leadership.run(), name="election")
        election.add_done_callback(self._election_ended)
        tasks = [election,
                 asyncio.create_task(notifier.run(), name="notifier"),
                 asyncio.create_task(self._read_node(), name="node-link"),
                 asyncio.create_task(LoopLag(0.05, self._on_wake).run(), name="watchdog")]
        try:
            await self.done.wait()
            await self._release()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.leadership.close()
            if self.plugin_clients is not None:
                await self.plugin_clients.aclose()
            with contextlib.suppress(Exception):
                await close_client(self.redis)
        return self.exit_code

    def _finish(self, why: str, code: int) -> None:
        if not self.done.is_set():
            self.exit_code = code
            level = logging.WARNING if code else logging.INFO
            log.log(level, "leader process: %s; giving up candidacy", why, extra={"event": "leader_process_exit"})
            self.done.set()

    def _election_ended(self, task: asyncio.Task[None]) -> None:
        """The elector contends until released: if it ends otherwise (a bug, a backend that gave
        up), exit non-zero so the node starts a new candidate instead of keeping a dead one."""
        error = None if task.cancelled() else task.exception()
        self._finish(f"the election ended ({error!r})" if error else "the election ended", 1)

    async def _release(self) -> None:
        # bounded: the elector's release is (renew timeout x 2 for Redis, a close wait for ZooKeeper)
        with contextlib.suppress(Exception):
            await within(5.0, self.leadership.elector.release())
        self.send_state()

    async def _read_node(self) -> None:
        while True:
            line = await self.stdin.readline()
            if not line:
                self._finish("the node closed its link (it exited)", 0)
                return
            cmd = line.strip()
            if cmd == b"ping":
                self.last_ping = time.monotonic()
            elif cmd == b"release":
                self._finish("the node is shutting down", 0)

    def _on_wake(self, lag: float) -> bool:
        """Every 0.05 s: warn when the host starves us, give up when the node has stalled."""
        if lag > 0.25:  # the host starves the leader of CPU: due seconds and slots fall due late
            log.warning("leader loop woke %.0f ms late", lag * 1000, extra={"event": "leader_loop_lag"})
        stalled = time.monotonic() - self.last_ping
        if stalled > self.cfg.stall_limit():
            self._finish(f"the node's event loop has not answered for {stalled:.2f} s", EXIT_STALLED)
            return True
        self.send_state()
        return False


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


async def _main(first_line: bytes) -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), os.fdopen(0, "rb", buffering=0))
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints (task modules) go to stderr, not into the channel
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(out_fd, "wb", buffering=0))
    start = json.loads(first_line)
    from .. import logs

    cfg = config_from_record(start["config"])
    logs.setup(start["node_id"], cfg.log_format, cfg.log_level)
    # A session of our own: where the kernel groups CPU time by session (autogroup), a leader in the
    # node's session shares one group's share with the node's busy task threads and wakes up to
    # hundreds of ms late under CPU-bound tasks (F13b: p99 88 ms with this, 110-140 ms without).
    # Ctrl-C still stops us: the node gets it and asks us to release.
    os.setsid()
    die_with_parent(int(start["parent"]), signal.SIGTERM)  # SIGTERM: release on the way out
    return await LeaderChild(start, out, stdin).run()


def run(first_line: bytes, *, uvloop: bool = True) -> int:
    """Run the leader process on its start record (node/leader/boot.py read it from stdin)."""
    if uvloop:
        import uvloop as loop_module

        return loop_module.run(_main(first_line))
    return asyncio.run(_main(first_line))
