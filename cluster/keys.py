"""Every Redis key and channel name Corral uses, built in one place.

resque layout (node-resque / Ruby resque read and write these):

    queues                                  set of queue names
    queue:<q>                               list of job JSON, RPUSH tail, pop head
    delayed_queue_schedule                  zset, member = score = epoch seconds
    delayed:<ts>                            list of job JSON due at second ts
    timestamps:<job json>                   set of "delayed:<ts>" holding that exact job
    workers                                 set of "<worker name>:<queues>"
    worker:<name>:<queues>                  working-on JSON {run_at, queue, payload, worker}
    worker:<name>:<queues>:started          start time
    worker:ping:<name>                      node-resque liveness ping {time, name, queues}
    workers:heartbeat                       Ruby resque liveness: hash "<name>:<queues>" -> ISO 8601 time
    stat:processed[:<name>] / stat:failed[:<name>]
    failed                                  list of failed entries
    resque_scheduler_leader_lock            delayed-promotion lock (node-resque's), value = holder's token or name
    lock:<task>:<queue>:<args>              QueueLock, value = expiry second (node-resque's)
    workerslock:<task>:<queue>:<args>       JobLock, value = "<expiry>:<node>:<execution>"
    resque-retry:<task>:<argsKey>           Retry counter (node-resque's argsKey, -1 then +1 per failure)
    failure-resque-retry:<task>:<argsKey>   Retry's last failure (node-resque's shape)

Corral only, under `corral:`:

    corral:epoch                 int, one per leader term, never decreases
    corral:epoch_run             Redis run_id the epoch record was last checked against (a new run: lock-delay)
    corral:leader                hash {node, epoch, since, token} of the current term
    corral:leader_lock           Corral's leader lock (periodic, recovery), value = term token
    corral:zk_epoch              newest term installed by the ZooKeeper backend (older ones are refused)
    corral:members               zset node id -> last heartbeat (Redis time, ms)
    corral:node:<id>             hash {info, workers}
    corral:inflight:<id>         hash <slot> -> payload, <slot>:q -> queue, <slot>:e -> exec id,
                                 <slot>:r -> times this copy was recovered before
    corral:recovered             hash sha1(payload) -> "n,n,...": recovery counts of requeued copies
                                 (newest first; the fetch that pops a copy takes its count)
    corral:periodic:<task>       hash {last, paused}
    corral:promoting             list of promoted jobs waiting for their enqueue plugins
    corral:audit                 stream of fenced leader writes (when auditing is on)
    corral:qtimes:<q>            enqueue (or due) times of queue:<q>, entries "count:ms", oldest first
    corral:idle:<spec>           zset node id -> ms since a slot of it is parked on <spec> (a queue or *)
    corral:catalogue             hash node id -> {tasks: {name: definition hash}, dead_after, started, at}
    corral:taskdefs              hash definition hash -> published task definition JSON
    corral:history               zset of "<bucket>:<processed>:<failed>" samples, score = Redis time (s), 1 h
    corral:history:last          the last sampled bucket (10 s buckets), so one sample per bucket cluster-wide
    channels corral:wake, corral:wake:<node id>, corral:leader_released, corral:delayed_wake

Example: ``Keys("resque").queue("mail") == "resque:queue:mail"``.
"""

from __future__ import annotations

from dataclasses import dataclass

# The families a key belongs to (`Keys.kind`): a bounded label for reports about keys, never the key.
KEY_KINDS = ("queues", "queue", "delayed_queue_schedule", "delayed", "timestamps", "failed", "stat", "workers",
             "corral:qtimes", "corral:recovered", "corral:idle", "corral:members", "corral:periodic",
             "corral:promoting", "corral:inflight", "corral:node")


class Keys:
    def __init__(self, namespace: str = "resque") -> None:
        if not namespace or any(c in namespace for c in " \r\n\t*?[]\\"):
            raise ValueError(f"bad namespace {namespace!r}: no whitespace or glob characters (*?[]\\)")
        self.namespace = namespace
        self._prefix = namespace + ":"
        self.queues = self._prefix + "queues"
        self.delayed_schedule = self._prefix + "delayed_queue_schedule"
        self.workers = self._prefix + "workers"
        self.workers_heartbeat = self._prefix + "workers:heartbeat"
        self.failed = self._prefix + "failed"
        self.leader_lock = self._prefix + "resque_scheduler_leader_lock"
        self.stat_processed = self._prefix + "stat:processed"
        self.stat_failed = self._prefix + "stat:failed"
        self.epoch = self.corral("epoch")
        self.epoch_run = self.corral("epoch_run")
        self.leader = self.corral("leader")
        self.corral_lock = self.corral("leader_lock")
        self.members = self.corral("members")
        self.recovered = self.corral("recovered")
        self.promoting = self.corral("promoting")
        self.audit = self.corral("audit")
        self.catalogue = self.corral("catalogue")
        self.taskdefs = self.corral("taskdefs")
        self.wake_channel = self.corral("wake")
        self.node_wake_prefix = self.wake_channel + ":"
        self.released_channel = self.corral("leader_released")
        self.delayed_channel = self.corral("delayed_wake")

    def strip(self, key: str) -> str:
        """`resque:queue:mail` -> `queue:mail`."""
        return key[len(self._prefix) :] if key.startswith(self._prefix) else key

    def kind(self, key: str) -> str:
        """`resque:queue:aaa` -> `queue`; `resque:corral:qtimes:x` -> `corral:qtimes`; else `other`."""
        head, _, tail = self.strip(key).partition(":")
        k = f"corral:{tail.partition(':')[0]}" if head == "corral" else head
        return k if k in KEY_KINDS else "other"

    def queue(self, q: str) -> str:
        return f"{self._prefix}queue:{q}"

    def delayed(self, ts: int) -> str:
        return f"{self._prefix}delayed:{ts}"

    def delayed_member(self, ts: int) -> str:
        """The member stored in a `timestamps:` set (no namespace, as node-resque writes it)."""
        return f"delayed:{ts}"

    def timestamps(self, payload: str) -> str:
        return f"{self._prefix}timestamps:{payload}"

    def worker_keys(self, name: str, queues: str) -> WorkerKeys:
        """The keys of one resque worker `<name>:<queues>` (what its node writes, its cleaner deletes)."""
        wid = f"{name}:{queues}"
        return WorkerKeys(wid, self.worker(wid), self.worker_started(wid), self.worker_ping(name),
                          self.stat("processed", name), self.stat("failed", name),
                          self.stat("processed", wid), self.stat("failed", wid))

    def worker(self, worker_id: str) -> str:
        """worker_id is `<name>:<queues>` as stored in the `workers` set."""
        return f"{self._prefix}worker:{worker_id}"

    def worker_started(self, worker_id: str) -> str:
        return f"{self._prefix}worker:{worker_id}:started"

    def worker_ping(self, name: str) -> str:
        return f"{self._prefix}worker:ping:{name}"

    def stat(self, kind: str, name: str | None = None) -> str:
        return f"{self._prefix}stat:{kind}" + (f":{name}" if name else "")

    def queue_lock(self, task: str, queue: str, args: str) -> str:
        return f"{self._prefix}lock:{task}:{queue}:{args}"

    def job_lock(self, task: str, queue: str, args: str) -> str:
        return f"{self._prefix}workerslock:{task}:{queue}:{args}"

    def lock_patterns(self) -> list[str]:
        return [f"{self._prefix}lock:*", f"{self._prefix}workerslock:*"]

    def retry_counter(self, task: str, args: str) -> str:
        return f"{self._prefix}resque-retry:{task}:{args}"

    def retry_failure(self, task: str, args: str) -> str:
        return f"{self._prefix}failure-resque-retry:{task}:{args}"

    def corral(self, *parts: str) -> str:
        return self._prefix + "corral:" + ":".join(parts)

    def node(self, node_id: str) -> str:
        return self.corral("node", node_id)

    def inflight(self, node_id: str) -> str:
        return self.corral("inflight", node_id)

    def periodic(self, task: str) -> str:
        return self.corral("periodic", task)

    def idle(self, spec: str) -> str:
        """Nodes with a slot parked (waiting for work) on `spec`, a queue name or `*`."""
        return self.corral("idle", spec)

    def node_wake(self, node_id: str) -> str:
        """The channel that wakes one node (enqueue.lua appends the id to `node_wake_prefix`)."""
        return self.node_wake_prefix + node_id

    def qtimes(self, q: str) -> str:
        """Enqueue times of the jobs in `queue:<q>`, run-length encoded `count:ms`, oldest first."""
        return self.corral("qtimes", q)

    @property
    def history(self) -> str:
        """Samples of stat:processed / stat:failed for the dashboard's chart (node/ui/history.py)."""
        return self.corral("history")

    @property
    def history_last(self) -> str:
        return self.corral("history", "last")


@dataclass(frozen=True, slots=True)
class WorkerKeys:
    """One resque worker's keys. `wid` is the member of `workers` (`<name>:<queues>`), not a key;
    its per-worker stats have two spellings: node-resque's `<name>`, Ruby's `<name>:<queues>`."""

    wid: str
    record: str  # worker:<name>:<queues>, the working-on JSON
    started: str  # worker:<name>:<queues>:started
    ping: str  # worker:ping:<name> (node-resque's liveness)
    processed: str  # stat:processed:<name>
    failed: str  # stat:failed:<name>
    processed_wid: str  # stat:processed:<name>:<queues>
    failed_wid: str  # stat:failed:<name>:<queues>

    def all(self) -> list[str]:
        """Every key one worker leaves (resque's and node-resque's untrack remove the same)."""
        return [self.record, self.started, self.ping, self.processed, self.failed, self.processed_wid,
                self.failed_wid]
