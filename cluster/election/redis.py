"""Leader election on a Redis lock, fenced by a per-term token.

Why this shape:
- Two locks, two roles (docs/DESIGN.md "Mixed clusters: roles"): Corral's own lock
  `corral:leader_lock` elects the leader of Corral's duties (periodic, recovery); node-resque's
  `resque_scheduler_leader_lock` goes with delayed promotion. Corral's leader takes the resque
  lock whenever it is free (in acquire and in every renew), so a node-resque scheduler and Corral
  on one namespace never both promote, and a node-resque scheduler holding it stops only
  Corral's promotion (a scope of the term, `Term.promotes`), never its other duties.
- Acquire is one `SET NX PX` with a token never used before (`<node>/<epoch>/<random>`), and the
  epoch (`corral:epoch`) grows by one per term. No lock ever exists without a TTL.
- Renew is compare-and-PEXPIRE in Lua, sent by the elector loop (elector.py) every `renew_period`
  on a dedicated connection with a `renew_timeout` socket timeout. The term ends at `last renew
  sent + lease - margin`, strictly before Redis can expire the key for anyone else; a refused
  renew, a read-only Redis or one without its replicas (NOREPLICAS) ends it at once.
- Lease safety is not enough (client-go says as much): every leader write is a Lua script that
  compares the token first (see scheduler, periodic, recovery), so a stale leader cannot write.
- SIGTERM: compare-and-delete plus a publish on `corral:leader_released` wakes the candidates,
  which take the lock within milliseconds.
- `wait_replicas` (Sentinel): a renew counts only once `WAIT n` confirms n replicas have it, sent
  in one pipeline with the renew (WAIT waits for the calling connection's own writes). A leader
  whose primary is cut off from its replicas then stops at its deadline, before the lock on a
  promoted replica (which only ever had confirmed renewals) expires. A new term starts with one
  confirmed renew, or is released at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from typing import TYPE_CHECKING, Any

from ..aio import REDIS_FAILURES, wait_event, within
from ..clock import Clock
from ..errors import LeaseLost
from ..keys import Keys
from ..observe import Observer
from ..redis_errors import NoScriptError, ReadOnlyError, ResponseError
from ..scripts import Scripts, source
from .base import LOCK_DELAY_PREFIX, ElectionConfig, SeenFn, Term, parse_token, release_token
from .elector import LockElector

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("corral.election")


class RedisElector(LockElector):
    """``RedisElector(node_id=, keys=, redis=, election_redis=, config=, clock=, observer=)``: the
    elector loop over `RedisLock`; `redis` is the general client (release notices), `election_redis`
    the dedicated one (short socket timeout)."""

    def __init__(self, *, node_id: str, keys: Keys, redis: Redis, election_redis: Redis, config: ElectionConfig,
                 clock: Clock, observer: Observer) -> None:
        lock = RedisLock(node_id=node_id, keys=keys, redis=redis, election_redis=election_redis,
                         config=config, clock=clock, observer=observer)
        super().__init__(lock, config=config, clock=clock, observer=observer)
        self.redis_lock = lock

    @property
    def confirmed_renewals(self) -> int:
        """Renewals WAIT confirmed (wait_replicas > 0)."""
        return self.redis_lock.confirmed_renewals


class RedisLock:
    """Corral's Redis lock `corral:leader_lock` (and node-resque's, see the module's docstring)."""

    backend = "redis"

    def __init__(self, *, node_id: str, keys: Keys, redis: Redis, election_redis: Redis, config: ElectionConfig,
                 clock: Clock, observer: Observer) -> None:
        self.node_id, self.keys, self.config = node_id, keys, config
        self.redis, self.election_redis = redis, election_redis
        self.clock, self.observer = clock, observer
        self.scripts: Scripts = Scripts(election_redis)
        self.extra: dict[str, Any] = {}
        self.lost_reason: str | None = None
        self._seen: SeenFn = lambda leader, epoch, since: None
        self._released = asyncio.Event()
        self._orphans: list[str] = []
        self._stopping = False
        self._pttl = -1
        self.confirmed_renewals = 0  # renewals WAIT confirmed (wait_replicas > 0)
        self._delaying = False  # the lock holds acquire.lua's lock-delay placeholder
        self._read_mono = float("-inf")  # when an acquire last read the lock

    async def open(self, seen: SeenFn) -> None:
        self._seen = seen

    # ---- candidate -----------------------------------------------------------------------

    async def acquire(self) -> Term | None:
        """One `acquire.lua`; when it does not win, report the holder and wait for the retry."""
        term = await self._try_acquire()
        if term is None:
            await self._wait_retry()
        return term

    async def _try_acquire(self) -> Term | None:
        sent = self.clock.monotonic()
        since = self.clock.time()
        suffix = os.urandom(4).hex()  # secrets.token_hex(4), without hmac → hashlib → libcrypto
        try:
            res = await within(
                self.config.renew_timeout * 2,
                self.scripts.run("acquire", [self.keys.corral_lock, self.keys.epoch, self.keys.leader,
                                             self.keys.epoch_run, self.keys.leader_lock],
                                 [self.node_id, suffix, self.config.lease_ms, since, self.config.deadline_ms]),
            )
        except REDIS_FAILURES as e:
            # The script may still run once Redis answers (a stall): remember its token's suffix so
            # the lock it takes is adopted instead of blocking everyone for a whole lease.
            self._orphans.append(suffix)
            del self._orphans[:-8]
            self.observer.redis_error("election")
            # One slow or failed read says nothing about who leads: keep the last holder seen
            # until a whole lease passes without a read (it may be gone by then)
            if sent - self._read_mono > self.config.lease:
                self._seen(None, None, None)
            log.debug("election: acquire failed: %r", e)
            return None
        self._read_mono = sent
        if int(res[0]) == 1:
            epoch, token = int(res[1]), str(res[2])
            term = Term(node=self.node_id, token=token, epoch=epoch, since=since,
                        deadline=sent + self.config.lease - self.config.margin, clock=self.clock)
            if len(res) > 3 and int(res[3]):
                term.promotes.set()
            if self.config.wait_replicas and not await self._confirm_new_term(term):
                return None
            return term
        holder, holder_epoch = parse_token(str(res[2]))
        self._pttl = int(res[1])
        token = str(res[2])
        if holder == self.node_id and holder_epoch is not None and token.rsplit("/", 1)[-1] in self._orphans:
            self._orphans.clear()
            log.info("election: adopting the lock a timed-out acquire took", extra={"epoch": holder_epoch})
            return Term(node=self.node_id, token=token, epoch=holder_epoch, since=since,
                        deadline=sent + max(0, self._pttl) / 1000 - self.config.margin, clock=self.clock)
        if holder != self.node_id:
            self._orphans.clear()
        if token.startswith(LOCK_DELAY_PREFIX):
            # a new Redis run: nobody leads until every lease of the previous run is surely over
            if not self._delaying:
                log.warning("election: Redis restarted or failed over (new run_id): no leader for %.1f s, "
                            "until any lease of the previous run is over", max(0, self._pttl) / 1000,
                            extra={"event": "leader_lock_delay"})
            self._delaying = True
            self._seen(None, None, None)
            return None
        self._delaying = False
        self._seen(holder, holder_epoch, None)
        return None

    async def _wait_retry(self) -> None:
        self._released.clear()
        delay = self.config.retry_period
        if 0 < self._pttl / 1000 < delay:
            delay = self._pttl / 1000
        delay += random.uniform(0, 0.05)
        await wait_event(self._released, delay)

    async def observe(self) -> None:
        """Wake candidates when a leader releases (graceful handoff in milliseconds); the holder
        itself is seen by every acquire."""
        while not self._stopping:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.released_channel)
                while not self._stopping:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        self._released.set()
            except REDIS_FAILURES:
                await asyncio.sleep(self.config.retry_period)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # ---- leader ----------------------------------------------------------------------------

    async def renew(self, term: Term) -> bool:
        """Compare-and-PEXPIRE; False when fewer than `wait_replicas` replicas confirmed it in time
        (the term keeps its deadline: it ends there unless a replica confirms first)."""
        try:
            res = await self._renew(term)
        except ReadOnlyError:
            # a Sentinel failover demoted our primary: whoever leads now, it is not us
            raise LeaseLost("Redis became a read-only replica") from None
        except ResponseError as e:
            if "NOREPLICAS" not in str(e):
                raise
            # the primary lost its replicas (min-replicas-to-write): it is the isolated side of a
            # partition, and no renew can succeed there; stop now, not at the deadline
            self.observer.redis_error("election")
            raise LeaseLost("Redis refuses writes: not enough good replicas") from None
        if res == "lost":
            raise LeaseLost("lock no longer holds our token")
        if res == "unconfirmed":
            self.observer.redis_error("election")
            log.warning("election: renew not confirmed by %d replica(s)", self.config.wait_replicas,
                        extra={"epoch": term.epoch, "event": "renew_unconfirmed"})
            return False
        if self.config.wait_replicas:
            self.confirmed_renewals += 1
        return True

    async def _renew(self, term: Term) -> str:
        """Compare-and-PEXPIRE: "ok", "lost" (the lock holds another token), or "unconfirmed"
        (renewed, but fewer than `wait_replicas` replicas acknowledged it in time)."""
        cfg = self.config
        locks = [self.keys.corral_lock, self.keys.leader_lock]
        if not cfg.wait_replicas:
            ok = await self.scripts.run("renew", locks, [term.token, cfg.lease_ms])
            _promotes(term, ok)
            return "ok" if ok else "lost"
        wait_ms = max(1, int(cfg.renew_timeout * 800))  # leave a fifth of the timeout for the replies
        for attempt in (1, 2):
            try:
                async with self.election_redis.pipeline(transaction=False) as pipe:
                    pipe.evalsha(self.scripts.sha("renew"), 2, *locks, term.token, cfg.lease_ms)
                    pipe.execute_command("WAIT", cfg.wait_replicas, wait_ms)
                    ok, acked = await pipe.execute()
                break
            except NoScriptError:  # a restarted or promoted Redis: load it, once
                if attempt == 2:
                    raise
                await self.election_redis.script_load(source("renew"))
        if not ok:
            return "lost"
        _promotes(term, ok)
        return "ok" if int(acked) >= cfg.wait_replicas else "unconfirmed"

    async def _confirm_new_term(self, term: Term) -> bool:
        """With `wait_replicas`, lead only once a renew of the new term is confirmed; else release."""
        try:
            res = await within(self.config.renew_timeout, self._renew(term))
        except REDIS_FAILURES:
            res = "unconfirmed"
        if res == "ok":
            self.confirmed_renewals += 1
            return True
        log.warning("election: won the lock, but %d replica(s) did not confirm it; releasing",
                    self.config.wait_replicas, extra={"epoch": term.epoch, "event": "leader_unconfirmed"})
        with contextlib.suppress(*REDIS_FAILURES):
            await release_token(self.scripts, self.keys, term.token, self.config.renew_timeout * 2)
        self._seen(None, term.epoch, None)
        return False

    async def release(self, term: Term, *, shutdown: bool) -> bool:
        """On a graceful stop, compare-and-delete and wake the candidates; a term that ended
        otherwise leaves the lock to expire (or to its new holder)."""
        if not shutdown:
            return False
        try:
            await release_token(self.scripts, self.keys, term.token, self.config.renew_timeout * 2)
            return True
        except REDIS_FAILURES as e:
            log.warning("election: release failed (lock will expire): %r", e, extra={"epoch": term.epoch})
            return False

    def stop(self) -> None:
        self._stopping = True

    async def close(self) -> None:
        self._stopping = True


def _promotes(term: Term, renewed: int) -> None:
    """renew.lua's 2: node-resque's lock holds our token too (delayed promotion is ours); 1: another
    scheduler (node-resque) holds it, so our promotion scope stops until it is free again."""
    if int(renewed) == 2:
        term.promotes.set()
    else:
        term.promotes.clear()
