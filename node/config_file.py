"""The TOML file of `--config corral.toml` (or `CORRAL_CONFIG`), read into options by name.

It mirrors actionhero's `config.tasks`: flat keys named like the flags (`queues = ["default",
"default"]`, `scheduler = true`; actionhero's `timeout = 5000` is its poll interval in
milliseconds, as in actionhero, while Corral's own names are seconds) and a `[redis]` table (`url`,
`password`, `password_file`, `sentinels`, `sentinel_master`, `tls_ca_file`, ...). Unknown keys fail
with a message naming them; the values are parsed and checked by node/config.py like any other.
"""

from __future__ import annotations

import math
from typing import Any

from cluster.errors import ConfigError

from .options import BY_NAME

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


