"""Checks and helpers of the `corral` command: what a command reads to reach Redis, what it
refuses before writing anything, and how a Redis error becomes one line.

    cfg = client_config(args)            # flags > CORRAL_* env > --config, as for the node
    checked_time("--at", 1.7e12, now)    # Fail: "... looks like milliseconds ..."
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, NoReturn

from cluster.aio import REDIS_FAILURES
from cluster.client import HORIZON_SECONDS, Client
from cluster.errors import CorralError
from cluster.redis_errors import NoPermissionError, ResponseError
from cluster.redis_settings import redact_url
from cluster.wire import js_date

from .config import NodeConfig
from .logs import describe_error
from .options import CONNECTION_OPTIONS

UP_STATE = Path(".data") / "up.json"


class Fail(Exception):
    """A user error: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (`corral: error: ...; see --help`), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def client_config(args: argparse.Namespace) -> NodeConfig:
    """Connection settings of a client command: flags, CORRAL_* env and --config, as for the node."""
    flags = {k: v for k, v in vars(args).items() if k in CONNECTION_OPTIONS}
    cfg = NodeConfig.from_sources(flags, os.environ, getattr(args, "config", None), only=CONNECTION_OPTIONS)
    if cfg.redis_url is None and not cfg.redis_sentinels:
        url = json.loads(UP_STATE.read_text()).get("redis_url") if UP_STATE.exists() else None
        if not url:
            raise Fail("no Redis to talk to: pass --redis-url (or CORRAL_REDIS_URL, or a --config file), "
                       "or start `corral up` here")
        cfg = dataclasses.replace(cfg, redis_url=url)
    return cfg


def redis_failure(e: BaseException, shown: str) -> Fail:
    """One line for a Redis error during a command, with the server's own message."""
    if isinstance(e, NoPermissionError):
        return Fail(f"Redis at {shown} refused a command: {describe_error(e)} "
                    "(the ACL Corral needs: docs/REDIS_ACL.md)")
    if isinstance(e, ResponseError):
        return Fail(f"Redis at {shown} refused the command: {describe_error(e)}")
    return Fail(f"Redis at {shown} failed: {describe_error(e)}")




def checked_time(flag: str, value: float, now: float) -> float:
    """A `--at` epoch or `--in` delay checked before anything is written."""
    if not math.isfinite(value):
        raise Fail(f"{flag} must be a finite number of seconds, got {value!r}")
    at = value if flag == "--at" else now + value
    if flag == "--in" and value < 0:
        raise Fail(f"--in: delay must be a non-negative number of seconds, got {value!r}")
    if flag == "--at" and value < 0:
        raise Fail(f"--at must be epoch seconds (>= 0), got {value!r}")
    if at - now > HORIZON_SECONDS:
        hint = ""
        if flag == "--at" and value / 1000 - now <= HORIZON_SECONDS:
            hint = f"; it looks like milliseconds: epoch seconds would be {value / 1000:.0f} ({js_date(value / 1000)})"
        raise Fail(f"{flag} {value:g} is more than 10 years ahead{hint}")
    return value


async def checked_run(node: Any, cfg: NodeConfig, url: str | None, node_id: str, warnings: list[str]) -> int:
    """Check the Redis user's permissions (node/acl.py), then run the node. A Redis that does not
    answer yet, or refuses the credentials, is left to the node's own connect, which reports it in
    one line; `warnings` (secrets on the command line) are logged once Redis accepted the user."""
    import logging

    from cluster.connection import close_redis, make_redis
    from cluster.keys import Keys

    from .acl import check_permissions

    redis = make_redis(cfg.redis_settings(url))
    try:
        await check_permissions(redis, Keys(cfg.namespace), node_id)
        for warning in warnings:
            logging.getLogger("corral.config").warning(warning, extra={"event": "secret_on_command_line"})
    except REDIS_FAILURES:
        pass
    finally:
        await close_redis(redis)
    return int(await node.run())


def visible_secrets(flags: dict[str, Any]) -> list[str]:
    """Warnings for secrets given as flags: every user of the machine reads them in `ps`."""
    out = []
    if flags.get("redis_password"):
        out.append("--redis-password is visible in `ps` to every user of this machine: "
                   "use CORRAL_REDIS_PASSWORD or --redis-password-file")
    url = flags.get("redis_url")
    if url and redact_url(str(url)) != url:
        out.append("--redis-url carries a password, visible in `ps` to every user of this machine: "
                   "use CORRAL_REDIS_PASSWORD or --redis-password-file")
    return out


def permission_failure(e: BaseException) -> BaseException:
    """A NoPermissionError (alone or in a TaskGroup's exception group) as one line; anything else as is."""
    first: BaseException = e
    while isinstance(first, BaseExceptionGroup):
        sub = first.subgroup(NoPermissionError)
        if sub is None:
            return e
        first = sub.exceptions[0]
    if not isinstance(first, NoPermissionError):
        return e
    return Fail(f"Redis refused a command: {describe_error(first)} (the ACL a node needs: docs/REDIS_ACL.md)")


async def with_client(args: argparse.Namespace, fn: Any) -> Any:
    cfg = client_config(args)
    settings = cfg.redis_settings()
    shown = settings.redacted_url()
    try:
        client = await Client.connect(settings.url, cfg.namespace, settings=settings)
    except CorralError:
        raise
    except Exception as e:
        from cluster.sentinel_probe import explain_sentinel_failure  # here: only on a failed connect
        from cluster.tls_probe import explain_tls_failure

        shown = settings.shown()
        if tls_problem := await explain_tls_failure(settings, e):
            raise Fail(f"cannot reach Redis at {shown}: {tls_problem}") from None
        if sentinel := await explain_sentinel_failure(settings):
            raise Fail(f"cannot reach Redis at {shown}: {sentinel.reason}") from None
        raise Fail(f"cannot reach Redis at {shown}: {describe_error(e).replace(settings.url, shown)}") from None
    try:
        return await fn(client)
    except REDIS_FAILURES as e:
        raise redis_failure(e, shown) from None
    finally:
        await client.close()
