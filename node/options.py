"""The option table: every node option once, with its parser, default and help. It is the one
source of the `corral node` flags, the `CORRAL_*` env variables, the TOML keys, the defaults of
`NodeConfig` (node/config.py) and the table of docs/CONFIGURATION.md (`options_markdown`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config_numbers import Number, _num, _seconds

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in TRUE | FALSE:
        return v.strip().lower() in TRUE
    raise ValueError(f"expected true/false, got {v!r}")


def _list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        items = [x.strip() for x in v.split(",")]
    elif isinstance(v, list | tuple):
        items = [str(x).strip() for x in v]
    else:
        raise ValueError(f"expected a comma-separated list, got {v!r}")
    if any(not x for x in items):
        raise ValueError(f"empty item in list {v!r}")
    return tuple(items)


def _opt_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {v!r}")
        return str(v)

    parse.__doc__ = " \\| ".join(f"`{c}`" for c in choices)  # shown in docs/CONFIGURATION.md
    return parse


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False
    metavar: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option("redis_url", _opt_str, None, "Redis URL (redis://, rediss://, unix://); none = start an embedded server",
           secret=True),
    Option("redis_password", _opt_str, None,
           "Redis password: give it as this env variable or with redis_password_file (a flag or a password in "
           "the URL is visible in `ps`)", secret=True),
    Option("redis_password_file", _opt_str, None,
           "file holding the Redis password (its first line): keeps the password out of `ps` and the environment"),
    Option("redis_username", _opt_str, None, "Redis ACL user name"),
    Option("redis_sentinels", _list, (), "Sentinel addresses host:port,host:port (Redis via Sentinel)"),
    Option("redis_sentinel_master", _opt_str, None, "Sentinel master name"),
    Option("redis_sentinel_password", _opt_str, None,
           "password of the Sentinels themselves (their requirepass; bitnami/redis: the Redis password)",
           secret=True),
    Option("redis_sentinel_username", _opt_str, None, "ACL user name on the Sentinels"),
    Option("redis_sentinel_tls", _bool, False,
           "TLS to the Sentinels, with the --redis-tls-* CA and client files"),
    Option("redis_tls_ca_file", _opt_str, None, "CA bundle to verify the Redis server (rediss://)"),
    Option("redis_tls_cert_file", _opt_str, None, "client certificate for Redis TLS"),
    Option("redis_tls_key_file", _opt_str, None, "client key for Redis TLS"),
    Option("namespace", _opt_str, "resque", "key namespace (node-resque's default)"),
    Option("tasks_dir", _opt_str, "tasks", "directory of task definition files"),
    Option("queues", _list, ("*",), "queues, one worker per entry (default,default = 2 workers; * = any)"),
    Option("concurrency", _num(int, 1, 1000), 32,
           "slots per worker entry: async jobs run on slots; sync ones are bounded by --threads, cpu_bound by --processes"),
    Option("scheduler", _bool, True, "may this node lead (scheduler, periodic, recovery)"),
    Option("election", _choice("redis", "zookeeper"), "redis", "election backend"),
    Option("leader_process", _bool, True,
           "run the election and the leader duties in a child process, out of reach of this node's task threads "
           "(a sync task spinning in Python code would otherwise delay promotions by holding the GIL)"),
    Option("loop_stall_limit", _seconds(0, 60), 0.0,
           "the leader process gives up leadership when the node's own event loop has not answered for this long "
           "(a frozen or blocked node must not lead), seconds; 0 = min(2, 0.4 x lease)"),
    Option("zookeeper_hosts", _opt_str, None, "ZooKeeper hosts host:port,... (with --election zookeeper)"),
    Option("zookeeper_session_timeout", _seconds(1, 600), 10.0, "ZooKeeper session timeout, seconds"),
    Option("http_host", _opt_str, "127.0.0.1", "HTTP bind address"),
    Option("http_port", _num(int, 0, 65535), 8080, "HTTP port (0 = any free port)"),
    Option("node_id", _opt_str, None, "node name; a per-start suffix is appended (default: hostname)"),
    Option("log_format", _choice("text", "json"), "text", "log format"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Option("shutdown_timeout", _seconds(0, 3600), 30.0, "SIGTERM drain grace for running jobs, seconds"),
    Option("poll_interval", _seconds(0.001, 60), 0.5,
           "idle re-check for jobs queued by producers that do not publish wake-ups (node-resque, Ruby), seconds"),
    Option("lease", _seconds(0.1, 600, lo_open=True), 5.0, "leader lease, seconds"),
    Option("renew_period", _seconds(0.01, 300, lo_open=True), 1.0, "leader renew period, seconds"),
    Option("renew_timeout", _seconds(0.01, 300, lo_open=True), 0.5, "timeout of one renew, seconds"),
    Option("lease_margin", _seconds(0.01, 300, lo_open=True), 1.5,
           "leader stops this long before its lease could expire, seconds"),
    Option("leader_wait_replicas", _num(int, 0, 16), 0,
           "Redis election: a renew counts only once this many replicas confirm it (WAIT); with Sentinel, 1 "
           "stops a leader cut off with the old primary at its deadline (0 = don't wait)"),
    Option("heartbeat_interval", _seconds(0.05, 300, lo_open=True), 2.0, "membership heartbeat period, seconds"),
    Option("dead_after", _seconds(0.1, 3600, lo_open=True), 8.0,
           "a node whose heartbeat is older than this is dead, seconds"),
    Option("max_recoveries", _num(int, 0, 1000), 3, "recoveries before a job is failed as a poison pill"),
    Option("foreign_stuck_timeout", _seconds(0, 30 * 86400), 3600.0,
           "the leader removes a worker of another resque client (node-resque, Ruby) whose own liveness signal "
           "is older than this and fails or re-enqueues its job, seconds (node-resque's stuckWorkerTimeout; 0 = off)"),
    Option("foreign_stuck_jobs", _choice("fail", "retry"), "fail",
           "the job of such a stale foreign worker: fail it, or re-enqueue it (node-resque's retryStuckJobs)"),
    Option("threads", _num(int, 1, 1024), 16, "thread pool size for sync tasks"),
    Option("processes", _num(int, 0, 1024), 0,
           "process pool size for cpu_bound tasks (0 = the CPUs this process may use: the container's cgroup CPU "
           "quota rounded up, else the CPUs it may run on)"),
    Option("task_nice", _num(int, 0, 19), 10,
           "nice increment of task threads and pool processes: CPU-bound tasks yield the CPU to the node's "
           "event loop (heartbeats, fetches) when both want it; 0 = same priority"),
    Option("switch_interval", _seconds(0.0001, 1), 0.001,
           "GIL switch interval of the node process (sys.setswitchinterval), seconds: how long a thread running "
           "a sync task may keep the event loop (leader renewals, promotions) waiting for the GIL"),
    Option("metrics_refresh", _seconds(0.1, 3600), 5.0, "refresh period of cluster-wide gauges, seconds"),
    Option("status_payloads", _bool, False,
           "show the first 500 characters of each running job's params in /status and job args on the dashboard "
           "(values of secret-looking keys such as password or token are replaced by ***); off: task, queue and "
           "times only"),
    Option("audit", _bool, False, "append every fenced leader write to the corral:audit stream (fault tests)"),
    Option("data_dir", _opt_str, ".data", "data directory of the embedded Redis"),
    Option("failed_max", _num(int, 0, 10**9), 0, "trim the failed list to this many newest entries (0 = keep all)"),
    Option("clock_offset_file", _opt_str, None,
           "fault tests only: on SIGUSR1 the node shifts its wall clock by the seconds written in this file"),
    # the web dashboard (node/ui, docs/UI.md)
    Option("ui", _bool, True, "serve the web dashboard at /ui/ on the HTTP port (read-only without a UI token)"),
    Option("ui_token", _opt_str, None, "token that allows the dashboard's actions (sent in the X-Corral-Token "
           "header); none = read-only dashboard", secret=True),
    Option("ui_token_file", _opt_str, None, "file holding the dashboard token (a mounted Secret)"),
)
BY_NAME = {o.name: o for o in OPTIONS}
# what `corral enqueue/status/failed` read (flags, CORRAL_* env, --config) to reach the cluster
CONNECTION_OPTIONS = (*(o.name for o in OPTIONS if o.name.startswith("redis_")), "namespace")

def _values(o: Option) -> str:
    if isinstance(o.parse, Number):
        return o.parse.describe()
    return {"_bool": "true \\| false", "_list": "comma-separated list", "_opt_str": "text"}.get(
        o.parse.__name__, o.parse.__doc__ or "")


def options_markdown() -> str:
    """The table of docs/CONFIGURATION.md: every option, its env variable, default and range."""
    rows = ["| flag | env | default | values | meaning |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        default = ",".join(o.default) if isinstance(o.default, tuple) else o.default
        shown = "" if default in (None, "") else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        rows.append(f"| `--{o.name.replace('_', '-')}` | `{env_name(o.name)}` | {shown} | {_values(o)} | "
                    f"{o.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def env_name(option: str) -> str:
    return "CORRAL_" + option.upper()


def environ_options(environ: Mapping[str, str] | None = None) -> list[str]:
    """CORRAL_* variables that name no option (typos), to warn about."""
    environ = os.environ if environ is None else environ
    known = {env_name(o.name) for o in OPTIONS} | {"CORRAL_CONFIG"}
    return sorted(k for k in environ if k.startswith("CORRAL_") and k not in known)
