"""What the leader process does before its other imports, so that it stays small (a node and its
leader process ≤ 60 MB of RSS at idle). Only `node/leader/boot.py` calls these, before anything
imports `cluster` (whose modules import asyncio and `cluster/redis_errors.py`).

- `redis_exceptions_alone()`: importing `redis.exceptions` runs redis-py's package init, which loads
  all of redis-py (≈ 11 MB). The leader process speaks RESP itself (`cluster/resp.py`) and needs
  only the exception classes: the one file `redis/exceptions.py` (it imports only `enum`) is loaded
  under its own name, so its classes are the very classes a later full `import redis` uses (that
  import finds the module loaded), and a finder hangs the module on the package if it comes.
- `asyncio_without_ssl()`: asyncio imports `ssl` when it can (libssl and libcrypto, ≈ 4.5 MB) for
  TLS transports. With plain TCP to Redis the leader has no TLS to do: asyncio is imported with
  `ssl` hidden (asyncio supports a Python without it), then `ssl` is importable again for
  whatever needs it later (a task module).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

_NAME = "redis.exceptions"


class _AttachExceptions:
    """When `redis` itself is imported after `redis_exceptions_alone()`, set `redis.exceptions` on it: the
    import system sets a submodule on its package only when it loads the submodule itself."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "redis":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_attach(module: ModuleType) -> None:
            exec_module(module)
            module.exceptions = sys.modules[_NAME]  # type: ignore[attr-defined]

        loader.exec_module = exec_and_attach  # type: ignore[method-assign]
        return spec


def redis_exceptions_alone() -> None:
    """Load `redis/exceptions.py` without redis-py's package (no-op once either is loaded)."""
    if _NAME in sys.modules or "redis" in sys.modules:
        return
    spec = importlib.machinery.PathFinder.find_spec("redis")
    if spec is None or not spec.submodule_search_locations:
        return  # no redis-py: the import below fails with its usual message
    location = importlib.machinery.PathFinder.find_spec("exceptions", list(spec.submodule_search_locations))
    if location is None or location.origin is None:
        return
    module_spec = importlib.util.spec_from_file_location(_NAME, location.origin)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[_NAME] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NAME]
        raise
    sys.meta_path.insert(0, _AttachExceptions())


def asyncio_without_ssl() -> None:
    """Import asyncio (and its event loop modules) with `ssl` hidden; no-op if either is loaded."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl raises ImportError meanwhile
    try:
        import asyncio
        import asyncio.unix_events  # noqa: F401
    finally:
        del sys.modules["ssl"]
