"""STYLE rules checked on the source: dependency direction, keys from one module, one clock."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = sorted((ROOT / "cluster").rglob("*.py"))
NODE = sorted((ROOT / "node").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            out.add(n.module.split(".")[0])
    return out


def test_cluster_never_imports_node_or_runtime_libraries() -> None:
    forbidden = {"node", "prometheus_client", "uvloop", "argparse", "aiohttp"}
    for p in CLUSTER:
        bad = _imports(p) & forbidden
        assert not bad, f"{p.relative_to(ROOT)} imports {bad}"


def test_kazoo_only_in_the_zookeeper_backend() -> None:
    for p in CLUSTER + NODE:
        if p.name != "zookeeper.py":
            assert "kazoo" not in _imports(p), p


def test_key_strings_are_built_only_in_keys_py() -> None:
    for p in CLUSTER + NODE:
        if p.name == "keys.py":
            continue
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                for part in ("queue:", "delayed:", "worker:", "stat:", "corral:"):
                    is_key = n.value.startswith(part) and n.value[len(part):len(part) + 1] not in ("", " ")
                    assert not is_key, f"{p.relative_to(ROOT)}: key literal {n.value!r}"


def test_wall_clock_is_read_only_through_the_clock_seam() -> None:
    allowed = {"clock.py"}
    for p in CLUSTER + NODE:
        if p.name in allowed:
            continue
        src = p.read_text()
        assert "time.time()" not in src, f"{p.relative_to(ROOT)} reads time.time() outside the clock seam"


def test_public_api_is_explicit() -> None:
    import cluster

    assert {"Client", "Task", "task", "JobLock", "QueueLock", "DelayQueueLock", "Noop", "RetryPlugin"} <= set(
        cluster.__all__)
