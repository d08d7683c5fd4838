"""Node configuration: one frozen, validated `NodeConfig` read from flags, `CORRAL_*` env vars, a
TOML file (node/config_file.py) and defaults, in that order of precedence (flag > env > file >
default). The options themselves, with their defaults, are the table of node/options.py.

    cfg = NodeConfig.from_sources(parsed_flags, os.environ)

Bad values fail with a message naming the option and where it came from; every number is finite,
of the option's type and within its documented range (docs/CONFIGURATION.md); options that only
make sense together are checked together (`NodeConfig.validate`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from cluster.election.base import ElectionConfig
from cluster.errors import ConfigError
from cluster.keys import Keys
from cluster.redis_settings import RedisSettings

from .config_file import load_toml
from .options import BY_NAME, OPTIONS, env_name

C = TypeVar("C")


def default_node_id() -> str:
    return socket.gethostname().split(".")[0] or "node"


def _defaults_from_options(cls: type[C]) -> type[C]:
    """Give each field of `cls` its option's default (node/options.py), so that a default is written
    once; a field without an option, or an option without a field, stops the import."""
    names = list(cls.__annotations__)
    if names != [o.name for o in OPTIONS]:
        raise TypeError(f"{cls.__name__} fields differ from OPTIONS: {sorted(set(names) ^ set(BY_NAME))}")
    for o in OPTIONS:
        setattr(cls, o.name, o.default)
    return cls


@dataclass(frozen=True)
@_defaults_from_options
class NodeConfig:
    """Every option as a field, in the order of `OPTIONS`, each taking its default from there (one
    source for the CLI, the env, the TOML file, docs/CONFIGURATION.md and this class)."""

    redis_url: str | None
    redis_password: str | None
    redis_password_file: str | None
    redis_username: str | None
    redis_sentinels: tuple[str, ...]
    redis_sentinel_master: str | None
    redis_sentinel_password: str | None
    redis_sentinel_username: str | None
    redis_sentinel_tls: bool
    redis_tls_ca_file: str | None
    redis_tls_cert_file: str | None
    redis_tls_key_file: str | None
    namespace: str
    tasks_dir: str
    queues: tuple[str, ...]
    concurrency: int
    scheduler: bool
    election: str
    leader_process: bool
    loop_stall_limit: float
    zookeeper_hosts: str | None
    zookeeper_session_timeout: float
    http_host: str
    http_port: int
    node_id: str | None
    log_format: str
    log_level: str
    shutdown_timeout: float
    poll_interval: float
    lease: float
    renew_period: float
    renew_timeout: float
    lease_margin: float
    leader_wait_replicas: int
    heartbeat_interval: float
    dead_after: float
    max_recoveries: int
    foreign_stuck_timeout: float
    foreign_stuck_jobs: str
    threads: int
    processes: int
    task_nice: int
    switch_interval: float
    metrics_refresh: float
    status_payloads: bool
    audit: bool
    data_dir: str
    failed_max: int
    clock_offset_file: str | None
    ui: bool
    ui_token: str | None
    ui_token_file: str | None

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
        return f"{self.node_id or default_node_id()}-{os.urandom(3).hex()}"

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


