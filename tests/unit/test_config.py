"""Node configuration: precedence flag > env > file > default, and clear errors."""

from __future__ import annotations

import math
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
    f.write_text("scheduler = false\ntimeout = 250\nqueues = ['*']\n")  # actionhero: milliseconds
    cfg = NodeConfig.from_sources({}, {}, str(f))
    assert cfg.scheduler is False and cfg.poll_interval == 0.25


@pytest.mark.parametrize("flags, env, needle", [
    ({}, {"CORRAL_LEASE": "abc"}, "env CORRAL_LEASE: expected a number, got 'abc'"),
    ({"concurrency": "0"}, {}, "--concurrency: must be integer 1 ≤ x ≤ 1000"),
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


@pytest.mark.parametrize("flags, needle", [
    ({"dead_after": "nan"}, "--dead-after: expected a finite number, got 'nan'"),
    ({"poll_interval": "nan"}, "--poll-interval: expected a finite number, got 'nan'"),
    ({"shutdown_timeout": "inf"}, "--shutdown-timeout: expected a finite number"),
    ({"lease": "-inf"}, "--lease: expected a finite number"),
    ({"concurrency": "1.9"}, "--concurrency: expected an integer, got '1.9'"),
    ({"threads": "1e3"}, "--threads: expected an integer"),
    ({"poll_interval": "500"}, "looks like milliseconds: Corral options are seconds, e.g. 0.5"),
    ({"shutdown_timeout": "30000"}, "--shutdown-timeout: must be 0 ≤ x ≤ 3600 s, got '30000' ('30000' looks like "),
    ({"http_port": "70000"}, "--http-port: must be integer 0 ≤ x ≤ 65535"),
])
def test_every_number_is_finite_integral_and_in_range(flags: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        NodeConfig.from_sources(flags, {})
    assert needle in str(e.value)


def test_toml_numbers_of_the_wrong_type_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    for text, needle in [("concurrency = 1.9\n", "concurrency: expected an integer, got 1.9"),
                         ("concurrency = true\n", "concurrency: expected an integer, got True"),
                         ("dead_after = nan\n", "dead_after: expected a finite number, got nan"),
                         ("poll_interval = inf\n", "poll_interval: expected a finite number"),
                         ("timeout = 0.5\n", "timeout: actionhero's poll interval in milliseconds"),
                         ("timeout = 5000000\n", "c.toml: timeout (ms): must be 0.001 ≤ x ≤ 60 s")]:
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            NodeConfig.from_sources({}, {}, str(f))
        assert needle in str(e.value), (text, str(e.value))
    f.write_text("timeout = 5000\nconcurrency = 2\n")  # actionhero's default poll interval: 5 s
    cfg = NodeConfig.from_sources({}, {}, str(f))
    assert cfg.poll_interval == 5.0 and cfg.concurrency == 2


def test_every_numeric_option_documents_its_range() -> None:
    from node.config_numbers import Number
    from node.options import OPTIONS, options_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md").read_text()
    assert options_markdown() in doc, "docs/CONFIGURATION.md is stale: regenerate it (see its first lines)"
    for o in OPTIONS:
        if isinstance(o.parse, Number):
            assert o.parse(o.default) == o.default, o.name  # every default is in its own range


def test_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret-from-file\n")
    cfg = NodeConfig.from_sources({"redis_url": "redis://127.0.0.1:1/0"}, {"CORRAL_REDIS_PASSWORD_FILE": str(pw)})
    assert cfg.redis_settings().target().password == "s3cret-from-file"
    assert "s3cret" not in str(cfg.redacted())
    with pytest.raises(ConfigError, match=r"redis_password_file .*missing.*cannot read it"):
        NodeConfig.from_sources({"redis_password_file": str(tmp_path / "missing")}, {})
    pw.write_text("\n")
    with pytest.raises(ConfigError, match="first line is empty"):
        NodeConfig.from_sources({"redis_password_file": str(pw)}, {})
    with pytest.raises(ConfigError, match="not both"):
        NodeConfig.from_sources({"redis_password_file": str(pw), "redis_password": "x"}, {})


@pytest.mark.parametrize("url, needle", [
    ("redis://127.0.0.1:1/0?socket_timeout=1", "unsupported option 'socket_timeout'"),
    ("redis://u:a@127.0.0.1:1/0?password=b", "password is given more than once"),
    ("redis://127.0.0.1:99999/0", "redis://***"),
    ("redis://127.0.0.1:1/x", "the database must be a number"),
    ("http://127.0.0.1:1/0", "must start with redis://"),
])
def test_bad_redis_urls_are_refused_without_showing_secrets(url: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        NodeConfig.from_sources({"redis_url": url}, {})
    assert needle in str(e.value) and "a@" not in str(e.value) and "=b" not in str(e.value)


def test_redacted_urls_hide_every_secret() -> None:
    from cluster.redis_settings import redact_url

    assert redact_url("redis://u:pw@h:6379/0?password=x&db=3") == "redis://u:***@h:6379/0?password=***&db=3"
    assert redact_url("redis://pw@h/0") == "redis://***@h/0"  # a lone user info may be a password
    assert redact_url("redis://:p/w@h/0") == "redis://***"  # an unencoded '/' in the password
    assert redact_url("redis://:123?x@h/0") == "redis://***"
    assert redact_url("unix://:pw@/tmp/r.sock?db=1") == "unix://:***@/tmp/r.sock?db=1"


def test_status_payloads_are_off_by_default() -> None:
    assert NodeConfig.from_sources({}, {}).status_payloads is False
    assert NodeConfig.from_sources({}, {"CORRAL_STATUS_PAYLOADS": "true"}).status_payloads is True


@pytest.mark.parametrize("kwargs, needle", [
    ({"frequency": math.nan}, "frequency': must be a finite number of seconds, got nan"),
    ({"frequency": math.inf}, "must be a finite number of seconds"),
    ({"frequency": 0.0001}, "must be >= 0.1 seconds (or 0 = not periodic), got 0.0001"),
    ({"frequency": -1}, "must be >= 0.1 seconds"),
    ({"frequency": "1"}, "must be a number of seconds"),
    ({"timeout": math.nan}, "timeout': must be a finite number of seconds"),
    ({"catch_up_window": math.inf}, "catch_up_window': must be a finite number"),
])
def test_task_numbers_are_finite_and_in_range(kwargs: dict[str, object], needle: str) -> None:
    from cluster.errors import TaskDefinitionError
    from cluster.task import Task

    with pytest.raises(TaskDefinitionError) as e:
        Task(name="t", run=lambda p, c: None, **kwargs)  # type: ignore[arg-type]
    assert needle in str(e.value)
    assert Task(name="t", run=lambda p, c: None, frequency=0.1).periodic
    assert not Task(name="t", run=lambda p, c: None, frequency=0).periodic


def test_config_fields_must_match_the_options() -> None:
    """`NodeConfig` takes its defaults from `OPTIONS`: a field with no option (or an option with no
    field) stops the import instead of leaving a field without a default or an option unread."""
    from node.config import _defaults_from_options

    class Extra:
        __annotations__ = {**NodeConfig.__annotations__, "not_an_option": "int"}

    with pytest.raises(TypeError, match="not_an_option"):
        _defaults_from_options(Extra)

    class Missing:
        __annotations__ = {k: v for k, v in NodeConfig.__annotations__.items() if k != "lease"}

    with pytest.raises(TypeError, match="lease"):
        _defaults_from_options(Missing)
