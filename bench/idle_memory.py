#!/usr/bin/env python3
"""Idle memory of one node at its defaults and of its leader process, page by page.

    python bench/idle_memory.py [--settle 10] [--runs 3] [-- NODE FLAGS]

Starts a real Redis (bench/servers.py) and one `corral node` with no tuning (`--tasks-dir` the
repo's tasks/, the log level aside), waits until it answers /readyz and its leader process leads,
lets it settle, then reads /proc/<pid>/smaps_rollup of the node and of its leader child:

- RSS counts every resident page a process maps, shared ones (the interpreter, libssl, hiredis)
  in each process; the issue's goal is their sum.
- PSS splits each shared page between the processes that map it: the PSS sum is what the two
  processes cost the machine together.
- Anonymous is the heap (Python objects, malloc arenas, thread stacks); the rest is file-backed
  (binaries and shared libraries, mostly shared).

Byte-code is compiled first (`compileall` into the gitignored __pycache__), as the image does at build
(deploy/Dockerfile): without .pyc files each process compiles Corral's modules at every start, and the
compiler's leftovers cost ≈ 1.4 MB more RSS (PYTHONDONTWRITEBYTECODE=1 on a checkout does that).

It also prints how many modules each side imports at start (a fresh interpreter importing the
node's and the leader child's entry modules, `sys.modules` before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import ROOT, start_redis

FIELDS = ("Rss", "Pss", "Anonymous", "Shared_Clean", "Private_Dirty")


def smaps_rollup(pid: int) -> dict[str, float]:
    """The rollup fields in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if name in FIELDS:
            out[name] = int(rest.split()[0]) / 1024
    return out


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def leader_child_of(pid: int) -> int | None:
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid and b"node.leader.boot" in (d / "cmdline").read_bytes():
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(port: int, path: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1.0) as r:
            return dict(json.loads(r.read()))
    except (OSError, ValueError):
        return None


def corral_argv() -> list[str]:
    script = Path(sys.executable).parent / "corral"
    return [str(script)] if script.exists() else [sys.executable, "-m", "node"]


def import_counts() -> dict[str, int]:
    """Modules each process has once started: its entry module, what it imports on the way to idle
    (the node: its runtime, the dashboard's history and metric, uvloop; the leader process on plain Redis: its lean start,
    task loader, logs and RESP client)."""
    code = "import sys; n = len(sys.modules)\nimport {m}\nprint(n, len(sys.modules))"
    counts = {"bare interpreter": 0}
    for label, module in (("node", "node.cli, node.runtime, node.ui.history, node.ui.metric, node.logs, node.loader, "
                                   "uvloop"),
                          ("leader child", "node.leader.lean as lean; lean.redis_exceptions_alone(); "
                                           "lean.asyncio_without_ssl()\nimport node.leader.child, node.loader, "
                                           "node.logs, cluster.resp")):
        out = subprocess.run([sys.executable, "-c", code.format(m=module)], capture_output=True, text=True,
                             check=True, cwd=ROOT, timeout=60).stdout.split()
        counts["bare interpreter"] = int(out[0])
        counts[label] = int(out[1])
    return counts


def measure_once(redis_url: str, workdir: Path, settle: float, extra: list[str]) -> dict[str, dict[str, float]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    log = open(workdir / f"node-{port}.log", "wb")
    node = subprocess.Popen([*corral_argv(), "node", "--redis-url", redis_url, "--tasks-dir", str(ROOT / "tasks"),
                             "--http-port", str(port), "--log-level", "warning", *extra],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if node.poll() is not None:
                raise RuntimeError(f"node exited: {(workdir / f'node-{port}.log').read_text()[-2000:]}")
            leader = get_json(port, "/leader")
            if leader is not None and leader.get("is_leader"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"node did not lead within 60 s: {leader}")
            time.sleep(0.1)
        time.sleep(settle)
        child = leader_child_of(node.pid)
        if child is None:
            raise RuntimeError("no leader process found (leader_process = false?)")
        node_mem, child_mem = smaps_rollup(node.pid), smaps_rollup(child)
        node_mem["threads"], child_mem["threads"] = threads(node.pid), threads(child)
        return {"node": node_mem, "leader child": child_mem}
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settle", type=float, default=10.0, help="seconds idle after the node leads (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="fresh nodes measured; the median is reported (default 3)")
    ap.add_argument("--json", action="store_true", help="print the medians as JSON")
    ap.add_argument("node_args", nargs="*", help="after --: more `corral node` flags, e.g. -- --concurrency 128")
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "cluster", "node"], cwd=ROOT, check=True, timeout=120)
    with tempfile.TemporaryDirectory(prefix="corral-idle-") as tmp:
        work = Path(tmp)
        redis = start_redis(work / "redis")
        try:
            runs = [measure_once(redis.url, work, args.settle, args.node_args) for _ in range(args.runs)]
        finally:
            redis.kill()
    med = {side: {f: statistics.median(r[side][f] for r in runs) for f in (*FIELDS, "threads")}
           for side in ("node", "leader child")}
    med["sum"] = {f: med["node"][f] + med["leader child"][f] for f in (*FIELDS, "threads")}
    modules = import_counts()
    if args.json:
        print(json.dumps({"median_mb": med, "modules": modules, "runs": runs}, indent=1))
        return 0
    flags = " ".join(args.node_args) or "defaults"
    print(f"idle node ({flags}), {args.settle:g} s after it leads; median of {args.runs} (MB)")
    print(f"{'':14}" + "".join(f"{f:>14}" for f in (*FIELDS, "threads")))
    for side, row in med.items():
        print(f"{side:14}" + "".join(f"{row[f]:14.1f}" for f in FIELDS) + f"{row['threads']:14.0f}")
    print("modules imported at start: " + ", ".join(f"{k} {v}" for k, v in modules.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
