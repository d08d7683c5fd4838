"""Runs one real pyres 1.5 worker (its own venv, .tools/pyres-venv) until it has forked `expect`
jobs or `seconds` passed, then unregisters it the way pyres does on shutdown.

    .tools/pyres-venv/bin/python tests/interop/pyres_worker.py HOST PORT QUEUES EXPECT SECONDS

QUEUES is comma-separated. Job classes are imported by pyres from PYTHONPATH. pyres' own startup
runs first: `prune_dead_workers` splits every member of `resque:workers` as `host:pid:queues`.
Prints one JSON line {"event": "started", "worker"} once registered and {"event": "end",
"jobs": n, "pruned_ok": true} at the end; exit status 0, or 2 on an error.
"""

import json
import signal
import sys

from pyres import ResQ
from pyres.worker import Worker


class BoundedWorker(Worker):
    expect = 0
    jobs = 0

    def register_worker(self):
        first = not getattr(self, "_announced", False)
        super().register_worker()
        if first:
            self._announced = True
            print(json.dumps({"event": "started", "worker": str(self)}), flush=True)

    def before_fork(self, job):
        self.jobs += 1
        if self.jobs >= self.expect:
            self._shutdown = True


def main():
    host, port, queues, expect, seconds = sys.argv[1:6]
    resq = ResQ(f"{host}:{port}")
    worker = BoundedWorker(queues.split(","), resq)
    worker.expect = int(expect)

    def stop(*_):
        worker._shutdown = True

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(int(seconds))
    worker.work(interval=1)
    print(json.dumps({"event": "end", "jobs": worker.jobs, "pruned_ok": True}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report and fail the test with the reason
        print(f"pyres_worker.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
