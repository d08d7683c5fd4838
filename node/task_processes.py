"""Worker processes for `cpu_bound` tasks: one job per process at a time, killed at its timeout.

Unlike a thread, a process can be stopped: when a `cpu_bound` job passes its `timeout` (or is
pushed back at shutdown), its process gets SIGKILL and a fresh one replaces it for later jobs; a
process that dies under a job (segfault, `os._exit`) fails that job with its exit code and is
replaced too. Processes are spawned (not forked), load the task files themselves, and die with
the node (`PR_SET_PDEATHSIG`). A job's clock starts once its process is up and has the job.

    procs = TaskProcesses(size=2, tasks_dir="tasks", nice=10)
    await procs.run("report", params, meta, timeout=60)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from cluster.errors import Retry

from .waiters import Waiters

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

log = logging.getLogger("corral.executor")


class TaskEscaped(Exception):
    """Task code raised SystemExit or KeyboardInterrupt (or, in a process, any BaseException):
    the job fails with the original exception's name; the node goes on."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"the task raised {kind}({detail}); a task cannot stop the node")
        self.kind = kind


class TaskProcessDied(Exception):
    """The process running a `cpu_bound` job exited under it (segfault, os._exit, OOM kill)."""


class TaskProcessError(Exception):
    """An exception from a `cpu_bound` task that could not be sent back as itself (unpicklable)."""


class _RemoteTraceback(Exception):
    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _child_main(conn: Connection, tasks_dir: str, parent: int, nice: int) -> None:
    import pickle

    from .lifeline import die_with_parent
    from .loader import load_dir
    from .task_threads import lower_priority

    die_with_parent(parent)  # a worker outliving a killed node would spin on as an orphan
    lower_priority(nice)
    try:
        registry = load_dir(tasks_dir)
    except BaseException as e:  # reported to the node, which fails the job with it
        conn.send(("boot_error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    from cluster.task import JobContext
    from cluster.wire import decode_job

    while True:
        msg = conn.recv()
        if msg is None:
            return
        task_name, params, meta = msg
        try:
            t = registry.get(task_name)
            ctx = JobContext(job=decode_job(meta["payload"]), queue=meta["queue"], worker=meta["worker"],
                             node_id=meta["node_id"], execution_id=meta["execution_id"], client=None,
                             log=logging.getLogger(f"corral.task.{task_name}"), attempt=meta["attempt"])
            t.run(params, ctx)
            reply: tuple[Any, ...] = ("ok",)
        except Retry as r:
            reply = ("retry", r.delay)
        except (SystemExit, KeyboardInterrupt) as e:
            reply = ("escaped", type(e).__name__, ", ".join(map(repr, e.args)))
        except BaseException as e:
            tb = "".join(traceback.format_exception(e))
            blob: bytes | None = None
            try:
                blob = pickle.dumps(e)
                pickle.loads(blob)  # some exceptions pickle but do not unpickle
            except Exception:
                blob = None
            reply = ("error", blob, type(e).__name__, str(e), tb)
        conn.send(reply)


class _Worker:
    def __init__(self, tasks_dir: str, nice: int) -> None:
        # here, not at the top: multiprocessing and pickle only in a node that runs a cpu_bound task
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = multiprocessing.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, tasks_dir, os.getpid(), nice),
                                name="corral-cpu")  # not a daemon: a task may start processes of its own
        self.proc.start()
        child.close()

    def kill(self) -> None:
        # the pipe is left to the garbage collector: a reader thread may still be blocked on it
        # (it gets EOFError once the process is gone)
        with contextlib.suppress(Exception):
            self.proc.kill()


class TaskProcesses:
    def __init__(self, size: int, tasks_dir: str, nice: int = 0) -> None:
        self.size = size
        self.tasks_dir = tasks_dir
        self.nice = nice
        self.replaced = {"timeout": 0, "died": 0, "shutdown": 0}
        self._all: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._waiters = Waiters()
        self._readers = ThreadPoolExecutor(max_workers=size + 1, thread_name_prefix="corral-cpu-reader")
        self.busy = 0
        self.closed = False

    def snapshot(self) -> dict[str, Any]:
        return {"size": self.size, "busy": self.busy, "idle": len(self._idle), "replaced": dict(self.replaced)}

    @property
    def waiting(self) -> int:
        """Jobs waiting for a process (their clock has not started)."""
        return len(self._waiters)

    async def _recv(self, w: _Worker) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, w.conn.recv)

    async def _acquire(self) -> _Worker:
        while True:
            if self.closed:
                raise RuntimeError("task processes are shut down")
            if self._idle:
                return self._idle.pop()
            if len(self._all) < self.size:
                w = _Worker(self.tasks_dir, self.nice)
                self._all.add(w)
                try:
                    kind, detail = await self._recv(w)
                except BaseException:
                    self._drop(w, None)
                    raise
                if kind != "ready":
                    self._drop(w, None)
                    raise TaskProcessDied(f"a cpu_bound worker process could not load the tasks: {detail}")
                return w
            await self._waiters.wait()

    def _drop(self, w: _Worker, reason: str | None) -> None:
        w.kill()
        self._all.discard(w)
        if reason is not None:
            self.replaced[reason] += 1
        self._wake()

    def _wake(self) -> None:
        self._waiters.wake_one()

    async def run(self, task_name: str, params: dict[str, Any], meta: dict[str, Any],
                  timeout: float | None = None) -> None:  # noqa: ASYNC109  # from the start of the job
        w = await self._acquire()  # no clock yet: the job has no process until here
        self.busy += 1
        reply: Any = None
        try:
            w.conn.send((task_name, params, meta))
            recv = asyncio.ensure_future(self._recv(w))
            recv.add_done_callback(_consume)
            try:
                async with asyncio.timeout(timeout):
                    reply = await asyncio.shield(recv)
            except TimeoutError:
                self._drop(w, "timeout")
                log.warning("cpu_bound job passed its timeout: its process was killed and will be replaced",
                            extra={"event": "process_killed", "task": task_name, "pid": w.proc.pid})
                raise
            except asyncio.CancelledError:
                self._drop(w, "shutdown")  # a job given up at shutdown must not go on in its process
                raise
            except (EOFError, OSError):
                code = await asyncio.get_running_loop().run_in_executor(self._readers, _exit_code, w)
                self._drop(w, "died")
                raise TaskProcessDied(f"the process running the task exited with code {code}") from None
        finally:
            self.busy -= 1
        if w in self._all:
            if self.closed:
                self._drop(w, None)
            else:
                self._idle.append(w)
                self._wake()
        _raise_reply(reply)

    def shutdown(self) -> None:
        """Kill every worker process (a job still running in one was pushed back or will fail)."""
        self.closed = True
        for w in list(self._all):
            w.kill()
        self._all.clear()
        self._idle.clear()
        self._waiters.wake_all()
        self._readers.shutdown(wait=False, cancel_futures=True)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # the reader of a killed process ends with EOFError: expected, not "never retrieved"


def _exit_code(w: _Worker) -> int | None:
    w.proc.join(2.0)
    code: int | None = w.proc.exitcode
    return code


def _raise_reply(reply: Any) -> None:
    kind = reply[0]
    if kind == "ok":
        return
    if kind == "retry":
        raise Retry(reply[1])
    if kind == "escaped":
        raise TaskEscaped(reply[1], reply[2])
    _, blob, name, message, tb = reply
    exc: BaseException
    import pickle

    try:
        exc = pickle.loads(blob) if blob is not None else TaskProcessError(f"{name}: {message}")
    except Exception:
        exc = TaskProcessError(f"{name}: {message}")
    exc.__cause__ = _RemoteTraceback(tb)
    raise exc
