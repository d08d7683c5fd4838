"""Node configuration: precedence flag > env > file > default, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.errors import ConfigError
from node.config import NodeConfig


def test_defaults() -> None:
    cfg = NodeConfig.from_sources({}, {})
    assert cfg.namespace == "resque" and cfg.queues == ("*",) and cfg.http_port == 8080 and cfg.scheduler


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    f = tmp_path / "corral.toml"
    f.write_text('queues = ["a", "a"]\nconcurrency = 4\nlease = 6.0\n[redis]\nnamespace = "fromfile"\n')
    env = {"CORRAL_CONCURRENCY": "3", "CORRAL_NAMESPACE": "fromenv"}
    cfg = NodeConfig.from_sources({"namespace": "fromflag"}, env, str(f))
    assert cfg.namespace == "fromflag"  # flag beats env and file
    assert cfg.concurrency == 3  # env beats file
    assert cfg.queues == ("a", "a") and cfg.lease == 6.0  # file beats default
    assert cfg.heartbeat_interval == 2.0  # default


def test_actionhero_names_in_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("scheduler = false\ntimeout = 0.25\nqueues = ['*']\n")
    cfg = NodeConfig.from_sources({}, {}, str(f))
    assert cfg.scheduler is False and cfg.poll_interval == 0.25


@pytest.mark.parametrize("flags, env, needle", [
    ({}, {"CORRAL_LEASE": "abc"}, "env CORRAL_LEASE: expected a number, got 'abc'"),
    ({"concurrency": "0"}, {}, "--concurrency: must be >= 1"),
    ({"election": "etcd"}, {}, "--election: must be one of redis, zookeeper"),
    ({"queues": "a,,b"}, {}, "--queues: empty item"),
    ({"scheduler": "maybe"}, {}, "expected true/false"),
    ({"election": "zookeeper"}, {}, "needs zookeeper_hosts"),
    ({"lease": "2", "lease_margin": "1.5"}, {}, "lease - margin"),
    ({"dead_after": "3"}, {}, "dead_after (3.0) must exceed twice heartbeat_interval"),
    ({"http_host": "0.0.0.0"}, {}, "embedded Redis"),
    ({"queues": "a:b"}, {}, "bad queue name 'a:b'"),
    ({"node_id": "a/b"}, {}, "node_id 'a/b'"),
])
def test_bad_values_name_the_option(flags: dict[str, str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        NodeConfig.from_sources(flags, env)
    assert needle in str(e.value)


def test_unknown_file_keys_are_rejected(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("queuez = ['a']\n")
    with pytest.raises(ConfigError, match="unknown key 'queuez'"):
        NodeConfig.from_sources({}, {}, str(f))
    f.write_text("[redis]\nhost = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown key redis.host"):
        NodeConfig.from_sources({}, {}, str(f))
    f.write_text("queues = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        NodeConfig.from_sources({}, {}, str(f))
    with pytest.raises(ConfigError, match="not found"):
        NodeConfig.from_sources({}, {}, str(tmp_path / "missing.toml"))


def test_secrets_are_redacted() -> None:
    cfg = NodeConfig.from_sources({"redis_url": "redis://user:hunter2@127.0.0.1:1/0"}, {})
    shown = str(cfg.redacted())
    assert "hunter2" not in shown and "***" in shown


def test_node_id_is_unique_per_start() -> None:
    cfg = NodeConfig.from_sources({"node_id": "pod-1"}, {})
    a, b = cfg.make_node_id(), cfg.make_node_id()
    assert a != b and a.startswith("pod-1-") and b.startswith("pod-1-")
