"""House rules (docs/ARCHITECTURE.md) checked on the source: dependency direction, keys from one module, one
clock, docs that point only inside the repo."""

from __future__ import annotations

import ast
import re
import subprocess
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


# The project's docs live in docs/; nothing tracked may send a reader to notes outside the repo.
# (Built from parts so that this file does not match itself.)
_OUTSIDE = re.compile("|".join([
    r"\.\./" + "shared", r"/work/" + "shared", "ANCH" + "ORS", r"\bSP" + r"EC(\.md|\s*§)", r"\bSTY" + r"LE(\.md|\s+rule)",
    r"\bCHA" + r"RT\.md", r"(?<![\w/])FAU" + r"LTS(\.md|\s*§|\s+F\d)",
]))
# Recorded outputs keep the words they were recorded with.
_RECORDED = ("bench/raw/",)


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / p for p in out.decode().split("\0") if p and not p.startswith(_RECORDED)]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:8192]]


def test_docs_and_comments_point_only_inside_the_repo() -> None:
    bad = []
    for p in _tracked_text_files():
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line):
                bad.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "references to notes outside the repo (use docs/INTERFACE.md, docs/FAULTS.md, " \
                    "docs/ARCHITECTURE.md):\n" + "\n".join(bad)


def test_every_docs_page_named_exists() -> None:
    named = re.compile(r"\bdocs/([A-Z_]+\.md)")
    missing = set()
    for p in _tracked_text_files():
        for m in named.finditer(p.read_text(errors="replace")):
            if not (ROOT / "docs" / m.group(1)).is_file():
                missing.add(f"{p.relative_to(ROOT)} names docs/{m.group(1)}")
    assert not missing, sorted(missing)
