"""The embedded Redis keeps its data private: data dir 0700, AOF and log 0600, also when an
older run left the dir world-readable."""

from __future__ import annotations

import stat
from pathlib import Path

import redis

from node.embedded import EmbeddedRedis


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_data_dir_and_aof_are_private(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "old.aof").write_text("")
    (data / "old.aof").chmod(0o644)
    with EmbeddedRedis(data) as server:
        r = redis.Redis.from_url(server.url)
        for i in range(10):
            r.rpush("resque:queue:default", f'{{"class":"x","queue":"default","args":[{{"i":{i}}}]}}')
        r.close()
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any("aof" in p.name for p in files if p.name != "old.aof"), [p.name for p in files]
    assert _mode(data) == 0o700
    bad = {str(p.relative_to(data)): oct(_mode(p)) for p in data.rglob("*")
           if _mode(p) != (0o700 if p.is_dir() else 0o600)}
    assert not bad, f"readable by others: {bad}"
