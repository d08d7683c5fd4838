"""Leader election on a ZooKeeper lock, fenced in Redis with the lock node's zxid.

Why this shape:
- ZooKeeper decides who leads: kazoo's `Lock` recipe under `/corral/<namespace>/leader`, one
  ephemeral sequential node per attempt, identified by the node id. A crashed leader's node
  goes when its session expires (`session_timeout`); a graceful one deletes it and closes the
  session, so the next contender's watch fires within milliseconds.
- The epoch of a term is the `czxid` of the winning lock node: zxids grow across the whole
  ensemble, and every term uses a node created for it, so epochs strictly increase.
- The writes still happen in Redis, so Redis still fences them: the winner installs its token
  (`<node>/<epoch>/<random>`) as Corral's lock `corral:leader_lock` with `install_term.lua`,
  which refuses a term older than the newest installed (`corral:zk_epoch`), and also takes
  node-resque's `resque_scheduler_leader_lock` (delayed promotion) unless another scheduler holds
  it, as the Redis backend does. Every leader script then
  compares the token exactly as with the Redis backend; installing a newer term overwrites the
  lock, so a deposed leader's next write is refused as STALE even before its lease runs out.
- The elector loop (elector.py) re-runs install_term every `renew_period` (`ZooKeeperLock.renew`)
  and keeps the Redis backend's deadline: `last renew sent + lease - margin` (monotonic).
- kazoo's `Election.run` never interrupts the leader on connection loss (kazoo's docs), so the
  term is ours: SUSPENDED (about 2/3 of the session timeout without an answer, before the
  server can expire the session) ends it at once, and so does LOST. Every term ends by deleting
  its lock node (if the session still lives) and contending again with a new node.
- kazoo has no asyncio handler: it runs with its threading handler; state listeners only hand
  the event to the loop with `call_soon_threadsafe`, and blocking kazoo calls run in daemon
  threads whose results come back the same way (a stuck ZooKeeper never holds up the exit).
- A loop blocked past the deadline cannot step down by itself, while kazoo's own thread keeps
  the session (and the lock) alive: a watchdog thread deletes the lock node then, so a
  successor can win; the blocked node's writes are refused by the fencing when it wakes.
- Redis calls go through `within` (cluster/aio.py): on Python 3.11 redis-py's own `wait_for` can
  lose a cancellation that races the reply, and a renewals task that missed its cancel would keep
  the term and hang the node's shutdown.
- Limit: epochs come from ZooKeeper's zxids. A ZooKeeper rebuilt from empty restarts them low;
  install_term then refuses every term until `corral:zk_epoch` is deleted (logged as an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.retry import KazooRetry

from ..aio import REDIS_FAILURES, within
from ..clock import Clock
from ..errors import LeaseLost
from ..keys import Keys
from ..observe import Observer
from ..scripts import Scripts
from .base import ElectionConfig, SeenFn, Term, lock_holder, release_token
from .elector import LockElector

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.election")

T = TypeVar("T")

_CLOSE_WAIT = 3.0  # bound on closing the ZooKeeper session (release, shutdown)
_ZK_CALL_WAIT = 2.0  # bound on one short blocking ZooKeeper call awaited from the loop
# a follower's read of the holder that failed: Redis did not answer, or `corral:leader` is malformed
_UNREADABLE: tuple[type[BaseException], ...] = (*REDIS_FAILURES, ValueError, KeyError)


class ZooKeeperElector(LockElector):
    """``ZooKeeperElector(node_id=, keys=, redis=, hosts="127.0.0.1:2181", config=, clock=, observer=)``:
    the elector loop over `ZooKeeperLock`. `redis` is the dedicated election client (short socket
    timeout)."""

    def __init__(self, *, node_id: str, keys: Keys, redis: Redis, hosts: str, config: ElectionConfig,
                 clock: Clock, observer: Observer, session_timeout: float = 10.0,
                 namespace: str = "resque") -> None:
        lock = ZooKeeperLock(node_id=node_id, keys=keys, redis=redis, hosts=hosts, config=config, clock=clock,
                             observer=observer, session_timeout=session_timeout, namespace=namespace)
        super().__init__(lock, config=config, clock=clock, observer=observer)
        self.hosts = hosts


class ZooKeeperLock:
    """kazoo's `Lock` recipe under `/corral/<namespace>/leader`, its term installed in Redis."""

    backend = "zookeeper"

    def __init__(self, *, node_id: str, keys: Keys, redis: Redis, hosts: str, config: ElectionConfig,
                 clock: Clock, observer: Observer, session_timeout: float, namespace: str) -> None:
        if not hosts:
            raise ValueError("ZooKeeperElector needs ZooKeeper hosts (host:port,...)")
        self.node_id, self.keys, self.redis, self.hosts = node_id, keys, redis, hosts
        self.config, self.clock, self.observer = config, clock, observer
        self.scripts: Scripts = Scripts(redis)
        self.session_timeout = session_timeout
        self.path = f"/corral/{namespace}/leader"
        self.extra: dict[str, Any] = {"zk_state": "not started"}
        self.lost_reason: str | None = None
        self._seen: SeenFn = lambda leader, epoch, since: None
        self.term: Term | None = None  # from the win on: a SUSPENDED/LOST event ends it
        self._zk: Any = None
        self._lock: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self._closed = False
        self._closing = threading.Event()  # ends the watchdog thread
        self._watched: tuple[Term, str] | None = None  # the term and its lock node path, for the watchdog
        self._deleted: set[str] = set()  # lock node paths ZooKeeper told us were deleted

    # ---- threads <-> loop ------------------------------------------------------------------

    def _in_thread(self, fn: Callable[[], T], name: str) -> asyncio.Future[T]:
        """Run a blocking kazoo call in a daemon thread; its outcome resolves a loop future."""
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def work() -> None:
            try:
                res: Any = fn()
                ok = True
            except BaseException as e:  # handed to the loop, never raised in the thread
                res, ok = e, False
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, ok, res)

        threading.Thread(target=work, name=f"corral-zk-{name}", daemon=True).start()
        return fut

    async def _zk_call(self, fn: Callable[[], T], name: str) -> T:
        return await within(_ZK_CALL_WAIT, self._in_thread(fn, name))

    def _listener(self, state: Any) -> None:
        """kazoo's connection thread: never block here (python-zk/kazoo#381)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_state, str(state))

    def _on_state(self, state: str) -> None:
        self.extra["zk_state"] = state.lower()
        if state == KazooState.CONNECTED:
            self._connected.set()
            log.info("election: ZooKeeper connected", extra={"event": "zk_connected"})
            return
        self._connected.clear()
        if self._stopping:
            return
        reason = ("ZooKeeper connection suspended" if state == KazooState.SUSPENDED
                  else "ZooKeeper session lost")
        term = self.term
        if term is not None and not term.lost.is_set():
            self.lost_reason = reason
            term.lost.set()  # fenced() refuses from now on; the renew loop cancels the duties
        log.warning("election: %s", reason, extra={"event": "zk_" + state.lower(),
                                                    "epoch": term.epoch if term else None})

    def _node_watch(self, event: Any) -> None:
        """kazoo's event thread: a watch on our winning lock node fired."""
        loop = self._loop
        if loop is not None and event.type == "DELETED":
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_node_deleted, str(event.path))

    def _on_node_deleted(self, path: str) -> None:
        self._deleted.add(path)
        watched = self._watched
        if watched is not None and watched[1] == path and not watched[0].lost.is_set():
            self.lost_reason = "our ZooKeeper lock node was deleted"
            watched[0].lost.set()

    def _watchdog(self) -> None:
        """Daemon thread: if the loop is stuck past the term's deadline, give up the lock node."""
        handled: Term | None = None
        while not self._closing.wait(0.1):
            watched = self._watched
            if watched is None:
                continue
            term, path = watched
            if term is handled or self.clock.monotonic() < term.deadline + self.config.renew_period:
                continue
            handled = term
            with contextlib.suppress(Exception):
                self._zk.delete(path)
                log.warning("election: event loop stuck past the deadline; lock node deleted",
                            extra={"event": "zk_watchdog_release", "epoch": term.epoch})

    # ---- candidate -------------------------------------------------------------------------

    async def open(self, seen: SeenFn) -> None:
        """Start the ZooKeeper session (kazoo's own threads) and the watchdog."""
        self._seen = seen
        self._loop = asyncio.get_running_loop()
        self._zk = KazooClient(
            hosts=self.hosts, timeout=self.session_timeout, handler=SequentialThreadingHandler(),
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_jitter=0.05, max_delay=1.0),
            command_retry=KazooRetry(max_tries=3, delay=0.05, backoff=2, max_jitter=0.05, max_delay=0.5),
        )
        self._zk.add_listener(self._listener)
        self._zk.start_async()
        threading.Thread(target=self._watchdog, name="corral-zk-watchdog", daemon=True).start()

    async def acquire(self) -> Term | None:
        """Wait for the ZooKeeper lock (with a fresh node), then install its term in Redis."""
        if not self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                await within(self.config.retry_period, self._connected.wait())
            return None
        lock = self._zk.Lock(self.path, identifier=self.node_id)
        self._lock = lock
        try:
            epoch = await self._in_thread(lambda: self._acquire(lock), "acquire")
        except (KazooException, OSError) as e:
            if not self._stopping:
                log.info("election: ZooKeeper lock attempt failed: %r", e)
                await asyncio.sleep(self.config.retry_period)
            return None
        if epoch is None or self._stopping or not self._connected.is_set():
            await self._release_zk(lock)
            return None
        node_path = f"{self.path}/{lock.node}"
        token = f"{self.node_id}/{epoch}/{secrets.token_hex(4)}"
        sent = self.clock.monotonic()
        term = Term(node=self.node_id, token=token, epoch=epoch, since=self.clock.time(),
                    deadline=sent + self.config.lease - self.config.margin, clock=self.clock)
        self.term = term  # from here a SUSPENDED/LOST event ends it
        self.lost_reason = None
        try:
            installed = await within(self.config.renew_timeout * 2, self._install(term))
        except REDIS_FAILURES as e:
            self.observer.redis_error("election")
            log.warning("election: won the ZooKeeper lock but cannot install the term in Redis: %r", e,
                        extra={"epoch": epoch})
            installed = None
        if not installed or term.lost.is_set() or self._stopping:
            self.term = None
            if installed == 0:
                log.error("election: Redis holds a newer term than ZooKeeper's epoch %s (was ZooKeeper rebuilt "
                          "from empty? delete %s to recover)", epoch, self.keys.corral("zk_epoch"),
                          extra={"event": "zk_epoch_behind", "epoch": epoch})
            await self._release_zk(lock)
            if not self._stopping:
                await asyncio.sleep(self.config.retry_period)
            return None
        self._watched = (term, node_path)
        if node_path in self._deleted:  # deleted before the term began
            self.lost_reason = "our ZooKeeper lock node was deleted"
            term.lost.set()
        return term

    def _acquire(self, lock: Any) -> int | None:
        """Thread: drop lock nodes left by our earlier terms, wait for the lock, return its czxid."""
        zk = self._zk
        zk.ensure_path(self.path)
        mine = self.node_id.encode()
        for child in zk.get_children(self.path):
            with contextlib.suppress(NoNodeError):
                data, _stat = zk.get(f"{self.path}/{child}")
                if data == mine:
                    zk.delete(f"{self.path}/{child}")
        if not lock.acquire(blocking=True):
            return None
        stat = zk.exists(f"{self.path}/{lock.node}", watch=self._node_watch)
        if stat is None:  # the session expired between the win and now
            return None
        return int(stat.czxid)

    async def _install(self, term: Term) -> int:
        res = await self.scripts.run(
            "install_term", [self.keys.corral_lock, self.keys.corral("zk_epoch"), self.keys.leader,
                             self.keys.leader_lock],
            [self.node_id, term.token, term.epoch, self.config.lease_ms, term.since])
        if int(res) == 2:  # node-resque's lock holds our token: delayed promotion is ours
            term.promotes.set()
        elif int(res) == 1:
            term.promotes.clear()
        return int(res)

    async def observe(self) -> None:
        """Keep the follower's view of the leader: Redis `corral:leader`, else the lock's contenders."""
        while True:
            if self.term is None:
                await self._refresh_follower()
            await asyncio.sleep(self.config.retry_period)

    async def _refresh_follower(self) -> None:
        leader: str | None = None
        epoch: int | None = None
        since: float | None = None
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.corral_lock)
                pipe.hgetall(self.keys.leader)
                token, info = await within(self.config.renew_timeout * 2, pipe.execute())
            if token is not None:
                leader, epoch, since = lock_holder(str(token), info)
        except _UNREADABLE:
            self.observer.redis_error("election")
            lock = self._lock
            if lock is not None and self._connected.is_set():
                with contextlib.suppress(KazooException, OSError, TimeoutError):
                    contenders = await self._zk_call(lock.contenders, "contenders")
                    leader = str(contenders[0]) if contenders else None
        if self.term is None:
            self._seen(leader, epoch, since)

    # ---- leader ----------------------------------------------------------------------------

    async def renew(self, term: Term) -> bool:
        """Re-install the term; a newer one installed ends ours (its next write would be STALE)."""
        if not await self._install(term):
            raise LeaseLost("Redis holds a newer term")
        return True

    async def release(self, term: Term, *, shutdown: bool) -> bool:
        """Compare-and-delete our token in Redis (True if it was ours); after a term, also delete
        its lock node, both at once: a leader cut off from Redis must not hold the ZooKeeper lock
        while its Redis release times out (the lock being overwritten by the next term is enough)."""
        if not shutdown:
            self._watched = None
            self.term = None
        released, deleted = await asyncio.gather(self._release_redis(term), self._release_zk(self._lock))
        # At shutdown the lock node going is the release too (the successor's term overwrites a
        # token a starved Redis call left behind), so either one counts as `leader_released`.
        return released or (shutdown and deleted)

    async def _release_redis(self, term: Term) -> bool:
        try:
            return bool(await release_token(self.scripts, self.keys, term.token, self.config.renew_timeout * 2))
        except REDIS_FAILURES as e:
            log.warning("election: Redis release failed (the lock will expire): %r", e, extra={"epoch": term.epoch})
            return False

    async def _release_zk(self, lock: Any) -> bool:
        """Delete this attempt's lock node (bounded); a node left behind goes with the session or the
        next attempt's clean-up. True if the node was ours and is gone."""
        if lock is None:
            return False

        def release() -> bool:
            lock.cancel()
            return bool(lock.is_acquired and lock.release())

        try:
            return await self._zk_call(release, "release")
        except (KazooException, OSError, TimeoutError):
            return False

    def stop(self) -> None:
        self._stopping = True
        lock = self._lock
        if lock is not None:
            lock.cancel()

    async def close(self) -> None:
        """Cancel a pending acquire, delete our lock node and end the session (bounded, once)."""
        self._stopping = True
        if self._closed or self._zk is None:
            self._closed = True
            self._closing.set()
            return
        self._closed = True
        self._closing.set()
        zk, lock = self._zk, self._lock

        def close() -> None:
            if lock is not None:
                lock.cancel()
                with contextlib.suppress(Exception):
                    if lock.is_acquired:
                        lock.release()
            try:
                zk.stop()  # the server deletes our ephemeral nodes with the session
            finally:
                zk.close()

        with contextlib.suppress(Exception):
            await within(_CLOSE_WAIT, asyncio.shield(self._in_thread(close, "close")))
        self._connected.clear()
        self.extra["zk_state"] = "closed"
