"""Node configuration: one frozen, validated object read from flags, `CORRAL_*` env vars, a TOML
file and defaults, in that order of precedence (flag > env > file > default).

    cfg = NodeConfig.from_sources(parsed_flags, os.environ)

The TOML file (`--config corral.toml`) mirrors actionhero's `config.tasks`: flat keys named like
the flags (`queues = ["default", "default"]`, `scheduler = true`; actionhero's `timeout = 5000`
is its poll interval in milliseconds, as in actionhero, while Corral's own names are seconds) and
a `[redis]` table (`url`, `password`, `password_file`, `sentinels`, `sentinel_master`,
`tls_ca_file`, ...). Unknown keys and bad values fail with a message naming them; every number is
finite, of the option's type and within its documented range (docs/CONFIGURATION.md).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any

from cluster.connection import RedisSettings
from cluster.election.base import ElectionConfig
from cluster.errors import ConfigError
from cluster.keys import Keys

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

# actionhero config.tasks names accepted in the TOML file, read in actionhero's own units:
# `timeout` is actionhero's poll interval in milliseconds (its default 5000 = 5 s), so a config
# copied from actionhero means what it meant there. Corral's own names are seconds.
ALIASES = {"timeout": "poll_interval", "minTaskProcessors": "concurrency", "maxTaskProcessors": "concurrency"}
ALIAS_SCALE = {"timeout": 0.001}
REDIS_TABLE = {"url": "redis_url", "password": "redis_password", "password_file": "redis_password_file",
               "username": "redis_username",
               "sentinels": "redis_sentinels", "sentinel_master": "redis_sentinel_master",
               "sentinel_password": "redis_sentinel_password", "sentinel_username": "redis_sentinel_username",
               "sentinel_tls": "redis_sentinel_tls",
               "tls_ca_file": "redis_tls_ca_file", "tls_cert_file": "redis_tls_cert_file",
               "tls_key_file": "redis_tls_key_file", "namespace": "namespace"}


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


def default_node_id() -> str:
    return socket.gethostname().split(".")[0] or "node"


def _default(name: str) -> Any:
    """An option's default, written once: in its `Option` above."""
    return BY_NAME[name].default


@dataclass(frozen=True)
class NodeConfig:
    """Every option as a field; the defaults come from `OPTIONS` (one source for the CLI, the
    env, the TOML file, docs/CONFIGURATION.md and this class)."""

    redis_url: str | None = _default("redis_url")
    redis_password: str | None = _default("redis_password")
    redis_password_file: str | None = _default("redis_password_file")
    redis_username: str | None = _default("redis_username")
    redis_sentinels: tuple[str, ...] = _default("redis_sentinels")
    redis_sentinel_master: str | None = _default("redis_sentinel_master")
    redis_sentinel_password: str | None = _default("redis_sentinel_password")
    redis_sentinel_username: str | None = _default("redis_sentinel_username")
    redis_sentinel_tls: bool = _default("redis_sentinel_tls")
    redis_tls_ca_file: str | None = _default("redis_tls_ca_file")
    redis_tls_cert_file: str | None = _default("redis_tls_cert_file")
    redis_tls_key_file: str | None = _default("redis_tls_key_file")
    namespace: str = _default("namespace")
    tasks_dir: str = _default("tasks_dir")
    queues: tuple[str, ...] = _default("queues")
    concurrency: int = _default("concurrency")
    scheduler: bool = _default("scheduler")
    election: str = _default("election")
    leader_process: bool = _default("leader_process")
    loop_stall_limit: float = _default("loop_stall_limit")
    zookeeper_hosts: str | None = _default("zookeeper_hosts")
    zookeeper_session_timeout: float = _default("zookeeper_session_timeout")
    http_host: str = _default("http_host")
    http_port: int = _default("http_port")
    node_id: str | None = _default("node_id")
    log_format: str = _default("log_format")
    log_level: str = _default("log_level")
    shutdown_timeout: float = _default("shutdown_timeout")
    poll_interval: float = _default("poll_interval")
    lease: float = _default("lease")
    renew_period: float = _default("renew_period")
    renew_timeout: float = _default("renew_timeout")
    lease_margin: float = _default("lease_margin")
    leader_wait_replicas: int = _default("leader_wait_replicas")
    heartbeat_interval: float = _default("heartbeat_interval")
    dead_after: float = _default("dead_after")
    max_recoveries: int = _default("max_recoveries")
    foreign_stuck_timeout: float = _default("foreign_stuck_timeout")
    foreign_stuck_jobs: str = _default("foreign_stuck_jobs")
    threads: int = _default("threads")
    processes: int = _default("processes")
    task_nice: int = _default("task_nice")
    switch_interval: float = _default("switch_interval")
    metrics_refresh: float = _default("metrics_refresh")
    status_payloads: bool = _default("status_payloads")
    audit: bool = _default("audit")
    data_dir: str = _default("data_dir")
    failed_max: int = _default("failed_max")
    clock_offset_file: str | None = _default("clock_offset_file")
    ui: bool = _default("ui")
    ui_token: str | None = _default("ui_token")
    ui_token_file: str | None = _default("ui_token_file")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for q in self.queues:
            if q != "*" and any(c in q for c in ":*, \t"):
                raise ConfigError(f"queues: bad queue name {q!r} (no ':', ',', '*' or spaces; '*' alone = any)")
        try:
            Keys(self.namespace)
        except ValueError as e:
            raise ConfigError(f"namespace: {e}") from None
        if self.election == "zookeeper" and not self.zookeeper_hosts:
            raise ConfigError("election = zookeeper needs zookeeper_hosts (--zookeeper-hosts / CORRAL_ZOOKEEPER_HOSTS)")
        if self.node_id is not None and not all(c.isalnum() or c in "._-" for c in self.node_id):
            raise ConfigError(f"node_id {self.node_id!r} may contain only letters, digits, '.', '_' and '-'")
        self.election_config()  # raises ConfigError on a bad lease relation
        if self.stall_limit() >= self.lease:
            raise ConfigError(f"loop_stall_limit ({self.loop_stall_limit}) must be below the lease ({self.lease}): "
                              "a stalled node has to give up leadership before a crashed one would lose it")
        if self.dead_after <= self.heartbeat_interval * 2:
            raise ConfigError(f"dead_after ({self.dead_after}) must exceed twice heartbeat_interval "
                              f"({self.heartbeat_interval}), or live nodes would be declared dead")
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ConfigError("redis_sentinels and redis_sentinel_master must be set together")
        sentinel_only = [o for o in ("redis_sentinel_password", "redis_sentinel_username", "redis_sentinel_tls")
                         if getattr(self, o)]
        if sentinel_only and not self.redis_sentinels:
            raise ConfigError(f"{', '.join(sentinel_only)} set without redis_sentinels (they apply to the Sentinels only)")
        if self.redis_password is not None and self.redis_password_file is not None:
            raise ConfigError("give the Redis password either as redis_password or as redis_password_file, not both")
        self.redis_settings()  # raises ConfigError on a bad URL, password file or a password given twice
        if self.http_host not in ("127.0.0.1", "localhost", "::1") and self.redis_url is None \
                and not self.redis_sentinels:
            raise ConfigError(f"http_host {self.http_host!r} exposes the node beyond this machine while it runs an "
                              "embedded Redis meant for local use; set redis_url or bind to 127.0.0.1")

        self.dashboard_token()  # a token that is too short or a file that is unreadable stops the node now

    def dashboard_token(self) -> str | None:
        """The dashboard's action token, from `ui_token` or `ui_token_file`; None = read-only."""
        if self.ui_token and self.ui_token_file:
            raise ConfigError("give the dashboard token either in ui_token or in ui_token_file, not both")
        token = self.ui_token
        if self.ui_token_file:
            try:
                with open(self.ui_token_file) as fh:
                    token = fh.read().strip()
            except OSError as e:
                raise ConfigError(f"ui_token_file {self.ui_token_file!r}: {e.strerror or e}") from None
        if token is not None and len(token) < 16:
            raise ConfigError(f"the dashboard token{' in ' + repr(self.ui_token_file) if self.ui_token_file else ''} "
                              f"is {len(token)} characters; use at least 16 (e.g. `openssl rand -hex 16`)")
        return token

    def stall_limit(self) -> float:
        return self.loop_stall_limit or min(2.0, 0.4 * self.lease)

    def election_config(self) -> ElectionConfig:
        return ElectionConfig(lease=self.lease, renew_period=self.renew_period, renew_timeout=self.renew_timeout,
                              wait_replicas=self.leader_wait_replicas,
                              margin=self.lease_margin, retry_period=min(0.5, self.lease / 4))

    def password(self) -> str | None:
        """The Redis password: redis_password, or the first line of redis_password_file (read at each
        call, so a restarted node picks up a rotated secret)."""
        if self.redis_password_file is None:
            return self.redis_password
        try:
            with open(self.redis_password_file, encoding="utf-8") as fh:
                first = fh.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"redis_password_file {self.redis_password_file!r}: cannot read it "
                              f"({e.strerror if isinstance(e, OSError) else e})") from None
        if not first:
            raise ConfigError(f"redis_password_file {self.redis_password_file!r}: the first line is empty")
        return first

    def redis_settings(self, url: str | None = None) -> RedisSettings:
        settings = RedisSettings(
            url=url or self.redis_url or "redis://127.0.0.1:6379/0",
            password=self.password(), username=self.redis_username,
            sentinels=self.redis_sentinels, sentinel_master=self.redis_sentinel_master,
            sentinel_password=self.redis_sentinel_password, sentinel_username=self.redis_sentinel_username,
            sentinel_tls=self.redis_sentinel_tls,
            tls_ca_file=self.redis_tls_ca_file, tls_cert_file=self.redis_tls_cert_file,
            tls_key_file=self.redis_tls_key_file,
        )
        settings.target()  # raises ConfigError on a bad URL or a password given twice
        return settings

    def pool_processes(self) -> int:
        """`processes`, or when 0 the CPU quota of the container (never the host's CPU count)."""
        from .cpu_quota import available_cpus

        return self.processes or available_cpus()

    def make_node_id(self) -> str:
        """Unique per process start: the configured name plus a random suffix."""
        return f"{self.node_id or default_node_id()}-{secrets.token_hex(3)}"

    def redacted(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if BY_NAME[f.name].secret and v:
                v = self.redis_settings().redacted_url() if f.name == "redis_url" else "***"
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any], environ: Mapping[str, str],
                     config_file: str | None = None, *, only: Collection[str] | None = None) -> NodeConfig:
        """flags: only the options given on the command line (name -> raw value). `only`: read just
        these options from env and file (the `corral` client commands read the connection ones);
        the file is still checked whole."""
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        path = config_file or environ.get("CORRAL_CONFIG")
        if path:
            values.update(load_toml(path, origin))
        if only is not None:
            environ = {k: v for k, v in environ.items() if k in {env_name(n) for n in only}}
            values = {k: v for k, v in values.items() if k in only}
        for o in OPTIONS:
            env = environ.get(env_name(o.name))
            if env is not None:
                values[o.name], origin[o.name] = env, f"env {env_name(o.name)}"
        for k, v in flags.items():
            if k not in BY_NAME:
                raise ConfigError(f"unknown option {k!r}")
            values[k], origin[k] = v, "--" + k.replace("_", "-")
        parsed: dict[str, Any] = {}
        for k, v in values.items():
            try:
                parsed[k] = BY_NAME[k].parse(v)
            except ValueError as e:
                raise ConfigError(f"{origin[k]}: {e}") from None
        return cls(**parsed)


def load_toml(path: str, origins: dict[str, str] | None = None) -> dict[str, Any]:
    """The file's options by name; `origins` (if given) receives each option's key as written."""
    import tomllib  # here: only a node started with a config file parses TOML

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path!r} is not valid TOML: {e}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "redis":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [redis] must be a table")
            for rk, rv in value.items():
                if rk not in REDIS_TABLE:
                    raise ConfigError(f"{path}: unknown key redis.{rk} (known: {', '.join(sorted(REDIS_TABLE))})")
                out[REDIS_TABLE[rk]] = rv
                if origins is not None:
                    origins[REDIS_TABLE[rk]] = f"{path}: [redis] {rk}, i.e. {REDIS_TABLE[rk]}"
            continue
        name = ALIASES.get(key, key.replace("-", "_"))
        if name not in BY_NAME:
            raise ConfigError(f"{path}: unknown key {key!r}")
        if key in ALIAS_SCALE:
            value = _scaled(path, key, value, ALIAS_SCALE[key])
        out[name] = value
        if origins is not None:
            origins[name] = f"{path}: {key}" + (" (ms)" if key in ALIAS_SCALE else "")
    return out


def _scaled(path: str, key: str, value: Any, scale: float) -> float:
    """An actionhero option in its own unit (milliseconds) converted to Corral's seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
        raise ConfigError(f"{path}: {key}: actionhero's poll interval in milliseconds (5000 = 5 s), got {value!r}; "
                          "for seconds use poll_interval")
    return value * scale


def environ_options(environ: Mapping[str, str] | None = None) -> list[str]:
    """CORRAL_* variables that name no option (typos), to warn about."""
    environ = os.environ if environ is None else environ
    known = {env_name(o.name) for o in OPTIONS} | {"CORRAL_CONFIG"}
    return sorted(k for k in environ if k.startswith("CORRAL_") and k not in known)
