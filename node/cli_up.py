"""`corral up`: the local demo cluster. An embedded Redis and `--nodes N` `corral node` processes on
consecutive HTTP ports, the example tasks loaded, private logs under `--data-dir`/logs; waits for
one leader, prints each node's URLs and the dashboard's, and stops everything on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .cli_checks import UP_STATE, Fail


def _get_json(url: str, timeout: float = 0.5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def cmd_up(args: argparse.Namespace) -> int:
    from .embedded import EmbeddedRedis

    if args.nodes < 1:
        raise Fail(f"--nodes must be at least 1, got {args.nodes}")
    if not Path(args.tasks_dir).is_dir():
        raise Fail(f"tasks dir {args.tasks_dir!r} not found (run from the repository root, or pass --tasks-dir)")
    data = Path(args.data_dir)
    (data / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)  # node logs name tasks and queues: private
    redis = EmbeddedRedis(data / "redis").start()
    procs: list[subprocess.Popen[bytes]] = []
    ports = [args.http_port + i for i in range(args.nodes)]
    # the local demo's dashboard can act: a fresh token unless one is set (loopback only)
    env = dict(os.environ)
    if not (env.get("CORRAL_UI_TOKEN") or env.get("CORRAL_UI_TOKEN_FILE")):
        import secrets

        env["CORRAL_UI_TOKEN"] = secrets.token_hex(16)
    stop = {"now": False}

    def on_signal(_sig: int, _frm: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for i, port in enumerate(ports):
            log = os.fdopen(os.open(data / "logs" / f"node{i + 1}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                    0o600), "ab")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "node", "node", "--redis-url", redis.url, "--http-port", str(port),
                 "--node-id", f"node{i + 1}", "--tasks-dir", args.tasks_dir, "--queues", args.queues,
                 "--shutdown-timeout", "10"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env))
            log.close()
        UP_STATE.parent.mkdir(parents=True, exist_ok=True)
        UP_STATE.write_text(json.dumps({"redis_url": redis.url, "ports": ports}))
        deadline = time.monotonic() + 30
        leader = None
        while time.monotonic() < deadline and not stop["now"]:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    raise Fail(f"node{i + 1} exited with status {p.returncode}; see {data / 'logs' / f'node{i + 1}.log'}")
            try:
                views = [_get_json(f"http://127.0.0.1:{port}/leader") for port in ports]
                ready = all(_get_json(f"http://127.0.0.1:{port}/readyz").get("ready") for port in ports)
            except OSError:
                time.sleep(0.1)
                continue
            leaders = [v for v in views if v["is_leader"]]
            if ready and len(leaders) == 1:
                leader = leaders[0]
                break
            time.sleep(0.1)
        if leader is None:
            if stop["now"]:
                return 0
            raise Fail(f"the cluster did not become ready with one leader in 30 s; see {data / 'logs'}")
        print(f"Corral is up: {args.nodes} nodes on an embedded Redis at {redis.url}")
        print(f"leader: {leader['node']} (epoch {leader['epoch']})")
        for i, port in enumerate(ports):
            view = _get_json(f"http://127.0.0.1:{port}/leader")
            mark = "  <- leader" if view["is_leader"] else ""
            print(f"  node{i + 1}  {view['node']:24s} http://127.0.0.1:{port}/status  /metrics  /leader{mark}")
        token_note = f"token {env['CORRAL_UI_TOKEN']}" if env.get("CORRAL_UI_TOKEN") else "token from CORRAL_UI_TOKEN_FILE"
        print(f"dashboard: http://127.0.0.1:{ports[0]}/ui/  ({token_note}; every node serves /ui/)")
        print(f"logs: {data / 'logs'}/node*.log    try: corral enqueue sendWelcomeEmail --params "
              "'{\"to\": \"evan@example.com\"}'    corral status")
        print("Ctrl-C stops the cluster.", flush=True)
        started = time.monotonic()
        gone: set[int] = set()
        while not stop["now"]:
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            for i, p in enumerate(procs):
                if p.poll() is not None and i not in gone:
                    gone.add(i)
                    print(f"node{i + 1} exited with status {p.returncode}; the others carry on "
                          f"(see {data / 'logs' / f'node{i + 1}.log'})", file=sys.stderr, flush=True)
            if len(gone) == len(procs):
                break
            time.sleep(0.2)
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        redis.stop()
        UP_STATE.unlink(missing_ok=True)
        print("stopped", flush=True)
