"""Load task definition files from a directory (actionhero's `./tasks/`).

Each `*.py` file (not starting with `_`) is imported by path under a private module name and
every `Task` object it defines at top level is registered. The same name in two files raises
DuplicateTask; a broken file fails the boot with an error naming the file (and the field).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from cluster.errors import ConfigError, TaskDefinitionError
from cluster.task import Registry, Task


def module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    return f"_corral_tasks_{path.stem}_{digest}"


def load_file(path: Path) -> list[Task]:
    name = module_name(path)
    if name in sys.modules:
        module = sys.modules[name]
    else:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{path}: cannot be loaded as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # process-pool workers unpickle task functions by this name
        try:
            spec.loader.exec_module(module)
        except TaskDefinitionError as e:
            del sys.modules[name]
            raise TaskDefinitionError(str(path), e.field, str(e).split(": ", 2)[-1]) from None
        except (Exception, SystemExit, KeyboardInterrupt) as e:  # a task file cannot exit the node
            del sys.modules[name]
            where = traceback.extract_tb(e.__traceback__)[-1]
            what = f"{type(e).__name__}({', '.join(map(repr, e.args))})" if isinstance(e, SystemExit) else \
                f"{type(e).__name__}: {e}"
            raise ConfigError(f"{path}:{where.lineno}: error while loading task file: {what}") from None
    tasks = []
    for value in vars(module).values():
        if isinstance(value, Task):
            if value.source_file is None:
                object.__setattr__(value, "source_file", str(path))
            tasks.append(value)
    return tasks


def load_dir(directory: str | Path, registry: Registry | None = None) -> Registry:
    """``registry = load_dir("tasks")``: every task of every file, or a clear error."""
    registry = registry or Registry()
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"tasks dir {str(d)!r} does not exist or is not a directory")
    for path in sorted(d.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for t in load_file(path):
            if registry.find(t.name) is t:
                continue
            registry.add(t)
    return registry


SKELETON = '''"""{name}: what this task does."""

from cluster import JobContext, task


@task(name="{name}", queue="default", description="Describe {name}")
async def {func}(params: dict, ctx: JobContext) -> None:
    # params: the JSON object given to enqueue; ctx.log, ctx.client (enqueue follow-ups), ctx.attempt
    ctx.log.info("{name} ran", extra={{"params": params}})
'''


def generate_task(directory: str | Path, name: str) -> Path:
    """Write a task skeleton `<tasks dir>/<name>.py`; refuses to overwrite."""
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ConfigError(f"task name {name!r} may contain only letters, digits, '_' and '-'")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    func = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_").replace("-", "_")
    path = d / f"{func}.py"
    if path.exists():
        raise ConfigError(f"{path} already exists")
    path.write_text(SKELETON.format(name=name, func=func))
    return path
