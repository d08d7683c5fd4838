"""The `corral` command. Every option of `corral node` (and `web`), and the connection options of
the client commands (enqueue, status, failed, tasks: `--redis-*`, `--namespace`, `--config`), also
reads `CORRAL_<OPTION>` (flag > env > config file > default), as do `corral up`'s flags; the client
commands' own flags (`--queue`, `--json`, ...) are flags only.

    corral up                      local demo cluster: embedded Redis + 3 nodes
    corral node --redis-url URL    one node
    corral enqueue sayHello --params '{"to": "x"}' [--queue q] [--at EPOCH | --in SECONDS]
    corral status [--json]
    corral failed list|retry|remove
    corral tasks [--json] | tasks pause NAME | tasks resume NAME
    corral generate task NAME
    corral web --redis-url URL     the web dashboard without a worker (docs/UI.md)
"""

from __future__ import annotations

# First, before anything imports redis-py: the `corral` process loads only the redis-py code it calls.
from . import redis_inits  # noqa: F401

# isort: split

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.aio import REDIS_FAILURES
from cluster.client import Client
from cluster.clock import SYSTEM_CLOCK
from cluster.errors import ConfigError, CorralError
from cluster.redis_errors import NoPermissionError
from cluster.wire import js_date

from .cli_checks import (
    UP_STATE,
    Fail,
    OneLineParser,
    checked_run,
    checked_time,
    client_config,
    permission_failure,
    positive_int,
    redis_failure,
    visible_secrets,
    with_client,
)
from .cli_tasks import cmd_tasks
from .config import NodeConfig
from .config_numbers import Number
from .options import BY_NAME, CONNECTION_OPTIONS, OPTIONS, Option, env_name, environ_options


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_option(p: argparse.ArgumentParser, o: Option) -> None:
    values = f"{o.parse.describe()}; " if isinstance(o.parse, Number) else ""
    help_text = f"{o.help} ({values}env {env_name(o.name)}; default {o.default!r})"
    if o.parse.__name__ == "_bool":
        p.add_argument(_flag(o.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                       help=help_text)
    else:
        p.add_argument(_flag(o.name), default=argparse.SUPPRESS, help=help_text, metavar=o.name.upper())


def add_node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (env CORRAL_CONFIG)")
    for o in OPTIONS:
        _add_option(p, o)


def _connection_args(p: argparse.ArgumentParser) -> None:
    """The node's connection options (flag > CORRAL_* env > --config file), read as the node reads
    them; with no Redis named, the `corral up` running here."""
    p.add_argument("--config", default=argparse.SUPPRESS,
                   help="TOML config file of the node (env CORRAL_CONFIG): its Redis settings and namespace")
    for name in CONNECTION_OPTIONS:
        _add_option(p, BY_NAME[name])


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="corral", description="Corral: resque-compatible background jobs on many nodes")
    sub = p.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run one node: workers, HTTP endpoints, leader candidacy")
    add_node_options(node)
    up = sub.add_parser("up", help="local demo cluster: embedded Redis and N nodes")
    up.add_argument("--nodes", type=int, default=os.environ.get("CORRAL_NODES", "3"))
    up.add_argument("--http-port", type=int, default=os.environ.get("CORRAL_HTTP_PORT", "8080"))
    up.add_argument("--tasks-dir", default=os.environ.get("CORRAL_TASKS_DIR", "tasks"))
    up.add_argument("--data-dir", default=os.environ.get("CORRAL_DATA_DIR", ".data"))
    up.add_argument("--queues", default=os.environ.get("CORRAL_QUEUES", "*,*"))
    up.add_argument("--for", dest="duration", type=float, default=None,
                    help="stop by itself after this many seconds (default: until Ctrl-C)")
    enq = sub.add_parser("enqueue", help="enqueue a job")
    enq.add_argument("task")
    enq.add_argument("--params", default=None, help="JSON object")
    enq.add_argument("--queue", default=None, help="default: the task's queue, as the live nodes publish it")
    enq.add_argument("--allow-unknown", action="store_true",
                     help="queue a task no live Corral node serves (for workers outside Corral)")
    when = enq.add_mutually_exclusive_group()
    when.add_argument("--at", type=float, default=None, help="epoch seconds")
    when.add_argument("--in", dest="delay", type=float, default=None, help="seconds from now")
    _connection_args(enq)
    st = sub.add_parser("status", help="the cluster at a glance")
    st.add_argument("--json", action="store_true")
    _connection_args(st)
    failed = sub.add_parser("failed", help="the failed list")
    fsub = failed.add_subparsers(dest="action", required=True)
    fl = fsub.add_parser("list")
    fl.add_argument("--json", action="store_true")
    fl.add_argument("--limit", type=positive_int, default=100, help="newest entries to show (>= 1)")
    _connection_args(fl)
    for action in ("retry", "remove"):
        fa = fsub.add_parser(action)
        fa.add_argument("index", nargs="?", type=int, help="entry index as shown by `failed list`")
        fa.add_argument("--all", action="store_true")
        _connection_args(fa)
    add_tasks_parser(sub)
    web = sub.add_parser("web", help="the web dashboard without a worker: connects to Redis, serves /ui/")
    add_node_options(web)
    gen = sub.add_parser("generate", help="write a skeleton")
    gsub = gen.add_subparsers(dest="what", required=True)
    gt = gsub.add_parser("task")
    gt.add_argument("name")
    gt.add_argument("--tasks-dir", default=os.environ.get("CORRAL_TASKS_DIR", "tasks"))
    return p


def cmd_enqueue(args: argparse.Namespace) -> int:
    params = None
    if args.params is not None:
        try:
            params = json.loads(args.params)
        except RecursionError:
            raise Fail("--params is nested too deeply") from None
        except ValueError as e:
            raise Fail(f"--params is not valid JSON: {e}") from None
        if not isinstance(params, dict):
            raise Fail(f"--params must be a JSON object, got {type(params).__name__}")

    if args.at is not None:
        checked_time("--at", args.at, SYSTEM_CLOCK.time())
    if args.delay is not None:
        checked_time("--in", args.delay, SYSTEM_CLOCK.time())

    async def go(client: Client) -> str:
        unknown_ok = args.allow_unknown
        if args.at is not None:
            ts = await client.enqueue_at(args.at, args.task, params, queue=args.queue, unknown_ok=unknown_ok)
            return f"scheduled {args.task} at {ts} ({js_date(ts)})"
        if args.delay is not None:
            ts = await client.enqueue_in(args.delay, args.task, params, queue=args.queue, unknown_ok=unknown_ok)
            return f"scheduled {args.task} at {ts} ({js_date(ts)})"
        ok = await client.enqueue(args.task, params, queue=args.queue, unknown_ok=unknown_ok)
        t = await client.task_info(args.task)
        q = args.queue if args.queue is not None else (t.queue if t is not None else "default")
        return f"enqueued {args.task} on {q}" if ok else f"{args.task}: refused by a plugin lock"

    print(asyncio.run(with_client(args, go)))
    return 0


async def gather_status(client: Client) -> dict[str, Any]:
    members = await client.members()
    nodes = {}
    for m, age in sorted(members.items()):
        info = await client.node_info(m) or {}
        nodes[m] = {"heartbeat_age_seconds": round(age, 3), "http_port": info.get("http_port"),
                    "host": info.get("host"), "queues": info.get("queues")}
    details = await client.details()
    return {
        "leader": await client.leader_info(),
        "nodes": nodes,
        "queues": {q: v["length"] for q, v in details["queues"].items()},
        "delayed": await client.delayed_count(),
        "failed": await client.failed_count(),
        "stats": details["stats"],
    }


def cmd_status(args: argparse.Namespace) -> int:
    st = asyncio.run(with_client(args, gather_status))
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    leader = st["leader"]
    if leader:
        print(f"leader   {leader['node']}  epoch {leader['epoch']}  since {js_date(leader['since'])}"
              if leader["since"] else f"leader   {leader['node']} (not a Corral node)")
    else:
        print("leader   none")
    print(f"nodes    {len(st['nodes'])}")
    for n, v in st["nodes"].items():
        print(f"  {n:32s} heartbeat {v['heartbeat_age_seconds']:6.2f}s ago  http :{v['http_port']}  queues {v['queues']}")
    print("queues   " + (", ".join(f"{q}={n}" for q, n in st["queues"].items()) or "none"))
    print(f"delayed  {st['delayed']}")
    print(f"failed   {st['failed']}")
    print(f"stats    processed={st['stats'].get('processed', 0)} failed={st['stats'].get('failed', 0)}")
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
    async def go(client: Client) -> int:
        if args.action == "list":
            entries = await client.failed(0, args.limit - 1)
            if args.json:
                print(json.dumps(entries, indent=2))
                return 0
            for i, e in enumerate(entries):
                p = e["payload"] if isinstance(e["payload"], dict) else {}
                print(f"[{i}] {p.get('class', '?')} queue={e['queue']} {e['exception']}: {e['error']}")
            print(f"{await client.failed_count()} failed")
            return 0
        entries = await client.failed(0, -1)
        if args.all:
            chosen = entries
        elif args.index is not None:
            if not 0 <= args.index < len(entries):
                raise Fail(f"no failed entry at index {args.index} (there are {len(entries)})")
            chosen = [entries[args.index]]
        else:
            raise Fail(f"failed {args.action}: give an INDEX or --all")
        n = 0
        for e in chosen:
            try:
                if args.action == "retry":
                    try:
                        n += int(await client.retry_and_remove_failed(e))
                    except CorralError as err:
                        print(f"skipped one entry: {err}", file=sys.stderr)
                else:
                    n += await client.remove_failed(e)
            except REDIS_FAILURES as err:  # each entry is one atomic step: say how far it got
                done = "retried" if args.action == "retry" else "removed"
                raise Fail(f"{redis_failure(err, client_config(args).redis_settings().redacted_url())} "
                           f"({done} {n} of {len(chosen)} before the error)") from None
        print(f"{'retried' if args.action == 'retry' else 'removed'} {n}")
        return 0

    return int(asyncio.run(with_client(args, go)))


# ---- corral tasks -----------------------------------------------------------------------------


def add_tasks_parser(sub: Any) -> None:
    tasks = sub.add_parser("tasks", help="every task the live nodes serve; pause or resume a periodic one")
    tasks.add_argument("--json", action="store_true")
    _connection_args(tasks)
    tsub = tasks.add_subparsers(dest="action")
    for action, text in (("pause", "stop_recurrent_job: pause the schedule, remove queued and delayed instances"),
                         ("resume", "enqueue_recurrent_job: resume from the next occurrence (no back-fill)")):
        ta = tsub.add_parser(action, help=text)
        ta.add_argument("name")
        # given before or after the action; SUPPRESS keeps one given before (`tasks --redis-url U pause X`)
        ta.add_argument("--redis-url", default=argparse.SUPPRESS, help="as for `corral tasks`")
        ta.add_argument("--namespace", default=argparse.SUPPRESS, help="as for `corral tasks`")


def cmd_up(args: argparse.Namespace) -> int:
    from .cli_up import cmd_up as run_up  # here: a node process never runs the demo cluster's code

    return run_up(args)


def cmd_generate(args: argparse.Namespace) -> int:
    from .loader import generate_task

    path = generate_task(args.tasks_dir, args.name)
    print(f"wrote {path}")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items() if k in BY_NAME}
    cfg = NodeConfig.from_sources(flags, os.environ, getattr(args, "config", None))
    # Sync tasks run in threads of this process: Python's default 5 ms switch interval makes every
    # wake-up of the event loop wait up to 5 ms (often several) for a thread spinning in Python
    # code, which is most of a periodic slot's lateness under CPU-bound sync jobs (docs/FAULTS.md F13b).
    # Set here, not in `Node`, so a host process embedding a node keeps its own setting.
    sys.setswitchinterval(cfg.switch_interval)
    from . import logs
    from .loader import load_dir
    from .runtime import Node

    registry = load_dir(cfg.tasks_dir)
    node_id = cfg.make_node_id()
    logs.setup(node_id, cfg.log_format, cfg.log_level)
    import logging

    for name in environ_options():
        logging.getLogger("corral.config").warning("ignoring unknown environment variable %s", name)
    if len(registry) == 0:
        # An image without task files must not take other nodes' jobs only to fail them (TaskNotFound).
        cfg = dataclasses.replace(cfg, queues=())
        logging.getLogger("corral.node").warning(
            "no tasks in %s: this node takes no jobs (it serves HTTP, heartbeats and may lead); add task files "
            "there to run jobs", cfg.tasks_dir, extra={"event": "no_tasks", "tasks_dir": cfg.tasks_dir})
    embedded = None
    url = cfg.redis_url
    if url is None and not cfg.redis_sentinels:
        from .embedded import EmbeddedRedis  # here: a node given a Redis never starts one

        embedded = EmbeddedRedis(Path(cfg.data_dir) / "redis").start()
        url = embedded.url
        logging.getLogger("corral.node").info("started embedded Redis", extra={"url": url})
    try:
        # exit_process: a job pushed back at the shutdown deadline must not run on in a task thread
        # (with the embedded Redis, the normal exit path stops the server first)
        node = Node(cfg, registry, redis_url=url, node_id=node_id, leader_process=cfg.leader_process,
                    exit_process=embedded is None)
        import uvloop

        try:
            return int(uvloop.run(checked_run(node, cfg, url, node_id, visible_secrets(flags))))
        except (NoPermissionError, BaseExceptionGroup) as e:  # the ACL changed after the boot check
            raise permission_failure(e) from None
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_web(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items() if k in BY_NAME}
    cfg = NodeConfig.from_sources(flags, os.environ, getattr(args, "config", None))
    from . import logs
    from .loader import load_dir
    from .runtime import version
    from .ui.web import serve

    url = cfg.redis_url
    if url is None and not cfg.redis_sentinels:
        if not UP_STATE.exists():
            raise Fail("no Redis to show: pass --redis-url (or CORRAL_REDIS_URL), or start `corral up` here")
        url = json.loads(UP_STATE.read_text()).get("redis_url")
    # the task files tell the periodic page each schedule; without them it lists none
    registry = load_dir(cfg.tasks_dir) if Path(cfg.tasks_dir).is_dir() else None
    node_id = f"web-{cfg.make_node_id()}"
    logs.setup(node_id, cfg.log_format, cfg.log_level)
    import uvloop

    return int(uvloop.run(serve(cfg, registry, redis_url=url or "redis://127.0.0.1:6379/0", node_id=node_id,
                                version=version())))


COMMANDS = {"node": cmd_node, "up": cmd_up, "enqueue": cmd_enqueue, "status": cmd_status, "failed": cmd_failed,
            "generate": cmd_generate, "tasks": cmd_tasks, "web": cmd_web}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (Fail, ConfigError, CorralError) as e:
        print(f"corral: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
