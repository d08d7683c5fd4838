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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """Module -> the modules of `paths` it imports, counting every import: at the top, inside
    functions and under TYPE_CHECKING alike (a type-only import is still a dependency to read)."""
    mods = {_module_name(p): p for p in paths}

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Import):
                deps |= {m for a in n.names if (m := known(a.name))}
            elif isinstance(n, ast.ImportFrom):
                base = package
                for _ in range(max(n.level - 1, 0)):
                    base = base.rpartition(".")[0]
                full = (f"{base}.{n.module}" if n.module else base) if n.level else (n.module or "")
                for a in n.names:  # `from pkg import sub` depends on pkg.sub, `from mod import name` on mod
                    sub = f"{full}.{a.name}"
                    deps |= {m for m in (sub if sub in mods else known(full),) if m}
        deps.discard(mod)
        graph[mod] = deps
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_import_circle_finder_finds_one() -> None:
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_cluster_or_node() -> None:
    graph = import_graph(CLUSTER + NODE)
    # the graph was read: every module, and the edges the packages are built on
    assert {"cluster.client", "cluster.task", "cluster.plugins", "node.worker"} <= set(graph)
    assert sum(map(len, graph.values())) > len(graph)
    assert any(d.startswith("cluster") for d in graph["node.worker"])
    circles = import_circles(graph)
    shown = ["  " + ", ".join(c) + ":\n" + "\n".join(f"    {m} -> {sorted(graph[m] & set(c))}" for m in c)
             for c in circles]
    assert not circles, "import circles:\n" + "\n".join(shown)


def test_each_option_default_is_written_once() -> None:
    """`NodeConfig` has a field per `OPTIONS` entry, in the same order, and takes every default from
    it: no default in the class body that could drift from the CLI's and the docs'."""
    import dataclasses

    from node.config import NodeConfig
    from node.options import OPTIONS

    fields = dataclasses.fields(NodeConfig)
    assert [f.name for f in fields] == [o.name for o in OPTIONS]
    assert all(f.default == o.default for f, o in zip(fields, OPTIONS, strict=True))
    source = (ROOT / "node" / "config.py").read_text()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "NodeConfig")
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            assert stmt.value is None, f"NodeConfig.{stmt.target.id}: its default belongs in OPTIONS " \
                                       f"(node/options.py), not {ast.unparse(stmt.value)}"


def test_every_module_opens_with_what_it_holds() -> None:
    bare = [str(p.relative_to(ROOT)) for p in CLUSTER + NODE
            if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()]
    assert not bare, f"modules without an opening docstring: {bare}"


def test_every_package_is_installed() -> None:
    # pyproject lists packages by name: a new subpackage missing there works in the editable dev
    # install and is absent from the wheel the image installs
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in [*CLUSTER, *NODE] if p.name == "__init__.py"}
    assert found == listed, f"packages on disk {sorted(found)} vs pyproject {sorted(listed)}"
