"""Load task definition files from a directory (actionhero's `./tasks/`).

Each `*.py` file (not starting with `_`) is imported by path under a private module name and
every `Task` object it defines at top level is registered. The same name in two files raises
DuplicateTask; a broken file fails the boot with an error naming the file (and the field).
"""

from __future__ import annotations

import importlib.util
import keyword
import sys
import traceback
import zlib
from pathlib import Path

from cluster.errors import ConfigError, TaskDefinitionError
from cluster.task import Registry, Task


def module_name(path: Path) -> str:
    # crc32, not hashlib: hashlib loads OpenSSL's libcrypto (≈ 3.6 MB of RSS) into the leader process
    return f"_corral_tasks_{path.stem}_{zlib.crc32(str(path.resolve()).encode()):08x}"


def line_in(path: Path, e: BaseException) -> int | None:
    """The line of `path` the error comes from: a syntax error's own line, else the innermost
    frame in that file (the innermost frame overall may be importlib's or Corral's own code)."""
    if isinstance(e, SyntaxError) and e.lineno is not None:
        return e.lineno
    target = str(path.resolve())
    frames = [f for f in traceback.extract_tb(e.__traceback__) if str(Path(f.filename).resolve()) == target]
    return frames[-1].lineno if frames else None


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
            raise TaskDefinitionError(str(path), e.field, str(e).split(": ", 2)[-1], line=line_in(path, e)) from None
        except (Exception, SystemExit, KeyboardInterrupt) as e:  # a task file cannot exit the node
            del sys.modules[name]
            line = line_in(path, e)
            what = f"{type(e).__name__}({', '.join(map(repr, e.args))})" if isinstance(e, SystemExit) else \
                f"{type(e).__name__}: {e}"
            raise ConfigError(f"{path}{'' if line is None else f':{line}'}: error while loading task file: {what}") from None
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


def function_name(name: str) -> str:
    """A Python function name for a task name: `sendWelcomeEmail` -> `send_welcome_email`,
    `2fast` -> `task_2fast`, `class` -> `class_` (a keyword)."""
    func = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_").replace("-", "_") or "task"
    if func[0].isdigit():
        func = "task_" + func
    if keyword.iskeyword(func):
        func += "_"
    return func


def generate_task(directory: str | Path, name: str) -> Path:
    """Write a task skeleton `<tasks dir>/<name>.py` that loads; refuses to overwrite, and refuses
    a name no valid file can be written for."""
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ConfigError(f"task name {name!r} may contain only letters, digits, '_' and '-'")
    func = function_name(name)
    if not func.isidentifier():
        raise ConfigError(f"task name {name!r} gives no valid Python function name ({func!r})")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{func.lstrip('_') or 'task'}.py"  # load_dir skips files that start with '_'
    if path.exists():
        raise ConfigError(f"{path} already exists")
    path.write_text(SKELETON.format(name=name, func=func))
    try:  # the promise is a file that loads: check it, and leave nothing broken behind
        tasks = load_file(path)
    except Exception:
        path.unlink()
        raise
    if [t.name for t in tasks] != [name]:
        path.unlink()
        raise ConfigError(f"the skeleton written for {name!r} did not define that task")
    return path
