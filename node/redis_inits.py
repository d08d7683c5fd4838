"""Load redis-py's package `__init__` files (`redis`, `redis.asyncio`) on first use, not at start.

`import redis.asyncio.client` runs both package inits first, and they import all of redis-py: its
cluster clients (`redis.cluster`, `redis.asyncio.cluster`), keyspace notifications, the sync
Sentinel and utilities, ≈ 1.8 MB of code a `corral node` never calls (bench/RESULTS.md "Idle
memory"). Importing this module calls `defer()`: the `corral` command (node/cli.py) imports it
before anything imports redis-py, and
Corral imports the submodules it uses by their own names (`redis.asyncio.client`,
`redis.asyncio.connection`, `redis.exceptions`, ...).

Nothing else changes: `redis` and `redis.asyncio` are their real modules (spec, path, file), put
in `sys.modules` before their init has run. The first lookup of a name they do not hold yet
(`redis.Redis`, `from redis.asyncio import Redis`, `redis.__version__`, `dir(redis)`, `from redis
import *`) runs that init once, in that module, as `import` would have (a submodule's name just
imports that submodule); from then on the module is exactly what a plain import gives. So task
code that uses redis-py in the node sees redis-py as it is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

PACKAGES = ("redis", "redis.asyncio")


def defer() -> None:
    """Put `redis` and `redis.asyncio` in `sys.modules` with their inits deferred; a no-op when
    either is imported already or redis-py is not installed (the import then fails as usual)."""
    if any(name in sys.modules for name in PACKAGES):
        return
    parent_spec = importlib.machinery.PathFinder.find_spec("redis")
    if parent_spec is None or not parent_spec.submodule_search_locations:
        return
    child_spec = importlib.machinery.PathFinder.find_spec("redis.asyncio", list(parent_spec.submodule_search_locations))
    if child_spec is None or not child_spec.submodule_search_locations:
        return
    parent, child = _deferred(parent_spec), _deferred(child_spec)
    sys.modules["redis"] = parent
    sys.modules["redis.asyncio"] = child
    parent.asyncio = child  # type: ignore[attr-defined]  # as the import system sets a loaded submodule


def _deferred(spec: importlib.machinery.ModuleSpec) -> ModuleType:
    """The package's module, its init run by the first lookup of a name it lacks."""
    assert spec.loader is not None
    loader = spec.loader
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    state = {"running": False, "done": False}

    def init() -> None:
        with lock:  # another thread waits here until the init has run
            if state["done"] or state["running"]:
                return  # run, or running in this very thread (the init looking up a name it lacks)
            state["running"] = True
            try:
                loader.exec_module(module)
            finally:
                state["running"], state["done"] = False, True
                for name, hook in (("__getattr__", __getattr__), ("__dir__", __dir__)):
                    if module.__dict__.get(name) is hook:
                        del module.__dict__[name]

    def __getattr__(name: str) -> Any:
        if not state["done"]:
            # a submodule is what `from redis.asyncio import client` (redis-py itself does this)
            # wants: import it, as the import system would; any other name needs the init
            if importlib.machinery.PathFinder.find_spec(name, module.__path__):
                return importlib.import_module(f"{module.__name__}.{name}")
            init()
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None

    def __dir__() -> list[str]:
        init()
        return sorted(module.__dict__)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    return module


defer()
