"""`corral tasks`: every task the live nodes serve (from the task catalogue, `--json` for scripts),
and `tasks pause NAME` / `tasks resume NAME` for a periodic one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from cluster.client import Client

from .cli_checks import Fail, with_client


def _schedule_text(row: dict[str, Any]) -> str:
    sch = row["schedule"]
    if sch is None:
        return "-"
    return f"cron {sch['cron']} {sch['timezone']}" if "cron" in sch else f"every {sch['frequency']:g}s"


def _when(ts: float, row: dict[str, Any]) -> str:
    """A next occurrence in the schedule's own time zone (UTC for a frequency)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    tz = (row["schedule"] or {}).get("timezone") or "UTC"
    return dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def cmd_tasks(args: argparse.Namespace) -> int:
    from cluster.catalogue import listing

    async def go(client: Client) -> int:
        if args.action in ("pause", "resume"):
            t = await client.task_info(args.name)
            if t is not None and not t.periodic:
                raise Fail(f"task {args.name!r} is not periodic: nothing to {args.action}")
            if args.action == "pause":
                if t is None and not await client.redis.exists(client.keys.periodic(args.name)):
                    view = await client.catalogue.view()
                    close = view.close_names(args.name)
                    raise Fail(f"no periodic task named {args.name!r}"
                               + (f"; did you mean {', '.join(close)}?" if close else ""))
                n = await client.stop_recurrent_job(args.name)
                print(f"paused {args.name}; removed {n} queued or delayed instance(s)")
            else:
                if not await client.enqueue_recurrent_job(args.name):
                    raise Fail(f"no periodic task named {args.name!r}")
                print(f"resumed {args.name} from its next occurrence")
            return 0
        view = await client.catalogue.view(max_age=0)
        out = await listing(client.redis, client.keys, view, client.clock.time())
        if args.json:
            print(json.dumps(out, indent=2, sort_keys=True))
            return 0
        if not out["tasks"]:
            print("no live node publishes its tasks")
            return 0
        for name, row in out["tasks"].items():
            state = "paused" if row["paused"] else (f"next {_when(row['next'], row)}" if row["next"] else "")
            plugins = ",".join(p["name"] for p in row["plugins"]) or "-"
            print(f"{name:24s} queue {row['queue']:12s} {_schedule_text(row):28s} {state:30s} plugins {plugins}")
            print(f"{'':24s} nodes {', '.join(row['nodes'])}")
            if row["conflict"]:
                for h, nodes in row["conflict"].items():
                    print(f"{'':24s} CONFLICT definition {h} on {', '.join(nodes)}")
        print(f"{len(out['tasks'])} task(s) on {len(out['nodes'])} node(s)"
              + (f"; {len(out['conflicts'])} defined differently by live nodes" if out["conflicts"] else ""))
        return 0

    return int(asyncio.run(with_client(args, go)))
