"""The dashboard's options (node/config.py): token from a flag, env or file, checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.errors import ConfigError
from node.config import NodeConfig


def test_defaults_serve_a_read_only_dashboard_without_payloads() -> None:
    cfg = NodeConfig()
    assert cfg.ui is True and cfg.dashboard_token() is None and cfg.status_payloads is False


def test_token_from_env_or_file_and_never_shown(tmp_path: Path) -> None:
    cfg = NodeConfig.from_sources({}, {"CORRAL_UI_TOKEN": "a" * 20})
    assert cfg.dashboard_token() == "a" * 20
    assert cfg.redacted()["ui_token"] == "***"
    f = tmp_path / "token"
    f.write_text("b" * 24 + "\n")  # a mounted Secret ends with a newline more often than not
    assert NodeConfig.from_sources({"ui_token_file": str(f)}, {}).dashboard_token() == "b" * 24


@pytest.mark.parametrize(("values", "message"), [
    ({"ui_token": "short"}, "is 5 characters; use at least 16"),
    ({"ui_token": "a" * 20, "ui_token_file": "/x"}, "either in ui_token or in ui_token_file"),
    ({"ui_token_file": "/nonexistent/token"}, "ui_token_file '/nonexistent/token'"),
])
def test_bad_token_settings_stop_the_node_with_a_clear_message(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeConfig(**values)  # type: ignore[arg-type]
