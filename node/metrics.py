"""Prometheus metrics of one node (a `CollectorRegistry` per node, created in the runtime).

Per node: job counters and histograms, workers, leadership, Redis errors, recovered jobs.
Cluster-wide (every node exports the same values, read from Redis on a cached interval by
node/gauge_refresh.py; take `max` across nodes, never `sum`): queue lengths, oldest job age,
delayed and failed counts, cluster members, scheduler lag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cluster.observe import Observer

# 1 ms to 10 min: no-op jobs through report generation
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

METRIC_NAMES: frozenset[str] = frozenset({
    "corral_jobs_processed_total", "corral_jobs_failed_total", "corral_jobs_retried_total",
    "corral_job_duration_seconds", "corral_job_wait_seconds",
    "corral_queue_length", "corral_oldest_job_age_seconds", "corral_delayed_jobs", "corral_failed_jobs",
    "corral_cluster_members",
    "corral_is_leader", "corral_leader_epoch", "corral_leader_transitions_total", "corral_scheduler_lag_seconds",
    "corral_scheduler_lateness_seconds", "corral_delayed_promoted_total", "corral_periodic_enqueued_total",
    "corral_periodic_lateness_seconds",
    "corral_workers", "corral_jobs_recovered_total", "corral_jobs_poisoned_total", "corral_redis_errors_total",
    "corral_stale_leader_writes_total", "corral_node_info", "corral_node_heartbeat_age_seconds",
    "corral_cluster_gauges_age_seconds", "corral_leader_candidate", "corral_acks_refused_total",
    "corral_bad_keys_total", "corral_queues", "corral_task_threads", "corral_task_processes_replaced_total",
    "corral_ui_actions_total",  # node/ui/api.py: the dashboard's actions
})


MAX_QUEUE_SERIES = 50  # per-queue series a node exports; the rest are summed under OTHER_QUEUE
OTHER_QUEUE = "__other__"


class ClusterGauges(Collector):
    """Cluster-wide values, refreshed by the node's refresher task; a scrape reads memory only.

    Per-queue series are bounded: the `max_queue_series` longest queues (ties by name) get one
    series each, every other queue is folded into `queue="__other__"` (lengths summed, oldest age
    the maximum), and `corral_queues` says how many queue names there are. 5,000 queue names
    thus cost 51 series, not 5,001."""

    def __init__(self, max_queue_series: int = MAX_QUEUE_SERIES) -> None:
        self.queue_lengths: dict[str, int] = {}
        self.oldest_age: dict[str, float] = {}
        self.delayed: float = 0
        self.failed: float = 0
        self.members: float = 0
        self.refreshed_mono: float | None = None
        self.max_queue_series = max_queue_series

    def shown_queues(self) -> tuple[list[str], list[str]]:
        """(queues with a series of their own, sorted by name; the queues folded into __other__)."""
        ranked = sorted(self.queue_lengths.items(), key=lambda kv: (-kv[1], kv[0]))
        own = sorted(q for q, _n in ranked[:self.max_queue_series])
        return own, [q for q, _n in ranked[self.max_queue_series:]]

    def collect(self):  # type: ignore[no-untyped-def]
        own, rest = self.shown_queues()
        g = GaugeMetricFamily("corral_queue_length", "Jobs waiting in each queue (cluster-wide; the longest "
                              f"{self.max_queue_series}, the rest summed as queue={OTHER_QUEUE})", labels=["queue"])
        for q in own:
            g.add_metric([q], self.queue_lengths[q])
        if rest:
            g.add_metric([OTHER_QUEUE], sum(self.queue_lengths[q] for q in rest))
        yield g
        g = GaugeMetricFamily("corral_oldest_job_age_seconds",
                              "Age of the oldest job waiting in each queue, from Corral enqueues (cluster-wide)",
                              labels=["queue"])
        for q in own:
            if q in self.oldest_age:
                g.add_metric([q], self.oldest_age[q])
        ages = [self.oldest_age[q] for q in rest if q in self.oldest_age]
        if ages:
            g.add_metric([OTHER_QUEUE], max(ages))
        yield g
        yield GaugeMetricFamily("corral_queues", "Queue names in the queues set (cluster-wide)",
                                value=len(self.queue_lengths))
        yield GaugeMetricFamily("corral_delayed_jobs", "Delayed jobs not yet due (cluster-wide)", value=self.delayed)
        yield GaugeMetricFamily("corral_failed_jobs", "Entries in the failed list (cluster-wide)", value=self.failed)
        yield GaugeMetricFamily("corral_cluster_members", "Live nodes seen in Redis (cluster-wide)", value=self.members)


class _ProcessesReplaced(Collector):
    def __init__(self, processes: Any) -> None:
        self.processes = processes

    def collect(self):  # type: ignore[no-untyped-def]
        c = CounterMetricFamily("corral_task_processes_replaced",
                                "cpu_bound worker processes replaced, by reason", labels=["reason"])
        for reason, n in sorted(self.processes.replaced.items()):
            c.add_metric([reason], n)
        yield c


class NodeMetrics(Observer):
    def __init__(self, registry: CollectorRegistry, *, node_id: str, version: str, backend: str) -> None:
        self.registry = registry
        r = registry
        self.processed = Counter("corral_jobs_processed", "Jobs run successfully by this node", ["queue", "task"],
                                 registry=r)
        self.failed = Counter("corral_jobs_failed", "Jobs that failed on this node", ["queue", "task"], registry=r)
        self.retried = Counter("corral_jobs_retried", "Jobs re-scheduled by Retry on this node", ["queue", "task"],
                               registry=r)
        self.duration = Histogram("corral_job_duration_seconds", "Job run time", ["queue", "task"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.wait = Histogram("corral_job_wait_seconds", "Enqueue (or due) time to start", ["queue"],
                              buckets=DURATION_BUCKETS, registry=r)
        self.is_leader = Gauge("corral_is_leader", "1 on the leader, 0 elsewhere", registry=r)
        # Alerts count leaders only where some node may lead: a worker-only node (--no-scheduler) exports 0.
        self.leader_candidate = Gauge("corral_leader_candidate", "1 when this node may become leader (--scheduler)",
                                      registry=r)
        self.epoch = Gauge("corral_leader_epoch", "Epoch of the current term as seen by this node", registry=r)
        self.transitions = Counter("corral_leader_transitions", "Leadership changes of this node", registry=r)
        self.lag = Gauge("corral_scheduler_lag_seconds",
                         "How overdue the earliest delayed second is beyond 1 s (cluster-wide, from Redis)", registry=r)
        self.lateness = Histogram("corral_scheduler_lateness_seconds", "Promotion time minus due second",
                                  buckets=LATENESS_BUCKETS, registry=r)
        self.promoted_total = Counter("corral_delayed_promoted", "Delayed jobs promoted by this node", registry=r)
        self.periodic_total = Counter("corral_periodic_enqueued", "Periodic occurrences enqueued by this node",
                                      ["task"], registry=r)
        self.periodic_lateness = Histogram("corral_periodic_lateness_seconds", "Enqueue time minus slot time",
                                           buckets=LATENESS_BUCKETS, registry=r)
        self.workers = Gauge("corral_workers", "Worker slots of this node by state", ["state"], registry=r)
        self.recovered = Counter("corral_jobs_recovered", "Jobs re-queued from dead nodes by this node", registry=r)
        self.poisoned = Counter("corral_jobs_poisoned", "Jobs failed as poison pills by this node", registry=r)
        self.acks_refused = Counter(
            "corral_acks_refused", "Jobs this node ran to the end whose ack was refused: the leader had recovered "
            "them (the node was declared dead: frozen, partitioned), so another copy runs too (at-least-once)",
            ["queue", "task"], registry=r)
        self.redis_errors = Counter("corral_redis_errors", "Redis errors seen by this node", ["where"], registry=r)
        self.bad_keys = Counter("corral_bad_keys", "Keys of the wrong type this node skipped, each counted once",
                                ["kind"], registry=r)
        self.stale = Counter("corral_stale_leader_writes", "Leader writes refused by fencing (stale term)", ["op"],
                             registry=r)
        self.info = Gauge("corral_node_info", "Node identity", ["node", "version", "backend"], registry=r)
        self.info.labels(node_id, version, backend).set(1)
        self.heartbeat_age = Gauge("corral_node_heartbeat_age_seconds", "Seconds since this node's last heartbeat",
                                   registry=r)
        self.gauges_age = Gauge("corral_cluster_gauges_age_seconds", "Age of the cluster-wide gauges", registry=r)
        self._job_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._wait_children: dict[str, Any] = {}
        self.cluster = ClusterGauges()
        r.register(self.cluster)
        for where in ("worker", "election", "heartbeat", "leader", "metrics"):
            self.redis_errors.labels(where)
        for op in ("promote", "unstage", "periodic_claim", "recover"):
            self.stale.labels(op)
        self.workers.labels("busy").set(0)
        self.workers.labels("idle").set(0)

    def job_started(self, queue: str, task: str, wait_seconds: float | None) -> None:
        if wait_seconds is not None:
            child = self._wait_children.get(queue)
            if child is None:
                child = self._wait_children[queue] = self.wait.labels(queue)
            child.observe(max(0.0, wait_seconds))

    def job_finished(self, queue: str, task: str, seconds: float, ok: bool) -> None:
        children = self._job_children.get((queue, task))
        if children is None:  # labels() per job costs more than the job's own bookkeeping
            children = self._job_children[(queue, task)] = (
                self.processed.labels(queue, task), self.failed.labels(queue, task),
                self.duration.labels(queue, task))
        (children[0] if ok else children[1]).inc()
        children[2].observe(seconds)

    def job_retried(self, queue: str, task: str) -> None:
        self.retried.labels(queue, task).inc()

    def ack_refused(self, queue: str, task: str) -> None:
        self.acks_refused.labels(queue, task).inc()

    def worker_state(self, busy: int, idle: int) -> None:
        self.workers.labels("busy").set(busy)
        self.workers.labels("idle").set(idle)

    def watch_workers(self, busy: Callable[[], int], total: int) -> None:
        """Read busy/idle at scrape time instead of setting two gauges twice per job."""
        self.workers.labels("busy").set_function(busy)
        self.workers.labels("idle").set_function(lambda: total - busy())

    def watch_task_threads(self, threads: Any) -> None:
        """`corral_task_threads{state}`: busy, timed_out (still running a job that already failed
        with JobTimeout or was pushed back: not free), idle; read at scrape time."""
        g = Gauge("corral_task_threads", "Threads for sync tasks by state", ["state"], registry=self.registry)
        g.labels("busy").set_function(lambda: threads.busy)
        g.labels("timed_out").set_function(lambda: threads.timed_out)
        g.labels("idle").set_function(lambda: threads.idle)

    def watch_task_processes(self, processes: Any) -> None:
        """`corral_task_processes_replaced_total{reason}`: cpu_bound worker processes killed at a
        job's timeout, died under a job, or killed at shutdown; read at scrape time."""
        self.registry.register(_ProcessesReplaced(processes))

    def leader_changed(self, is_leader: bool, epoch: int) -> None:
        self.is_leader.set(1 if is_leader else 0)
        self.epoch.set(epoch)
        if is_leader:
            self.transitions.inc()  # acquisitions only

    def stale_write_rejected(self, op: str) -> None:
        self.stale.labels(op).inc()

    def promoted(self, count: int, lateness: list[float]) -> None:
        self.promoted_total.inc(count)
        for x in lateness:
            self.lateness.observe(max(0.0, x))

    def periodic_enqueued(self, task: str, lateness: float) -> None:
        self.periodic_total.labels(task).inc()
        self.periodic_lateness.observe(max(0.0, lateness))

    def jobs_recovered(self, count: int, poisoned: int) -> None:
        self.recovered.inc(count)
        self.poisoned.inc(poisoned)

    def redis_error(self, where: str) -> None:
        self.redis_errors.labels(where).inc()

    def bad_key(self, kind: str) -> None:
        self.bad_keys.labels(kind).inc()
