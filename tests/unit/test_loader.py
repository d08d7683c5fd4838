"""Task files: loading by path, clear errors naming file and field, duplicates, skeletons."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.errors import ConfigError, DuplicateTask, TaskDefinitionError
from node.loader import generate_task, load_dir


def _write(d: Path, name: str, src: str) -> None:
    d.mkdir(exist_ok=True)
    (d / name).write_text(src)


def test_loads_decorated_and_task_objects(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", "from cluster import Task, task\n@task(name='x')\nasync def x(p, c): ...\n"
                             "def y(p, c): ...\ny_task = Task(name='y', run=y, frequency=2.0)\n")
    _write(tmp_path, "_private.py", "raise RuntimeError('never imported')\n")
    reg = load_dir(tmp_path)
    assert reg.names() == ["x", "y"]
    assert reg.get("y").periodic and not reg.get("x").periodic
    assert reg.get("x").source_file == str(tmp_path / "a.py")


@pytest.mark.parametrize("src, field", [
    ("from cluster import Task\nt = Task(name='bad', run=lambda p, c: 0, frequency='often')\n", "frequency"),
    ("from cluster import Task\nt = Task(name='bad', run=lambda p, c: 0, cron='every day')\n", "cron"),
    ("from cluster import Task\nt = Task(name='bad', run=lambda p, c: 0, queue='a:b')\n", "queue"),
    ("from cluster import Task\nt = Task(name='bad', run=lambda p, c: 0, plugins=['Nope'])\n", "plugins"),
    ("from cluster import Task\nt = Task(name='bad', run=lambda p, c: 0, plugins=['Retry'],"
     " plugin_options={'Retry': {'limit': -1}})\n", "plugins"),
    ("from cluster import Task\nt = Task(name='bad', run=lambda p, c: 0, timeout=0)\n", "timeout"),
    ("from cluster import Task\nt = Task(name='bad', run=lambda p, c: 0, cron='* * * * *', timezone='Mars/Base')\n",
     "timezone"),
])
def test_bad_task_file_names_file_and_field(tmp_path: Path, src: str, field: str) -> None:
    _write(tmp_path, "broken.py", src)
    with pytest.raises(TaskDefinitionError) as e:
        load_dir(tmp_path)
    assert e.value.file == str(tmp_path / "broken.py") and e.value.field == field
    assert str(tmp_path / "broken.py") in str(e.value)


def test_import_error_names_the_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, "oops.py", "x = 1\nimport no_such_module_here\n")
    with pytest.raises(ConfigError, match=r"oops.py:2: error while loading task file: ModuleNotFoundError"):
        load_dir(tmp_path)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", "from cluster import task\n@task(name='same')\nasync def a(p, c): ...\n")
    _write(tmp_path, "b.py", "from cluster import task\n@task(name='same')\nasync def b(p, c): ...\n")
    with pytest.raises(DuplicateTask) as e:
        load_dir(tmp_path)
    assert "a.py" in str(e.value) and "b.py" in str(e.value)


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_dir(tmp_path / "nope")


def test_generate_task_writes_a_loadable_skeleton(tmp_path: Path) -> None:
    path = generate_task(tmp_path, "sendInvoice")
    assert path.name == "send_invoice.py"
    assert load_dir(tmp_path).names() == ["sendInvoice"]
    with pytest.raises(ConfigError, match="already exists"):
        generate_task(tmp_path, "sendInvoice")
    with pytest.raises(ConfigError, match="may contain only"):
        generate_task(tmp_path, "bad name")


def test_repo_examples_load() -> None:
    reg = load_dir(Path(__file__).resolve().parents[2] / "tasks")
    assert {"sendWelcomeEmail", "sayHello", "sayGoodbye"} <= set(reg.names())
    assert reg.get("sayHello").frequency == 1.0 and reg.get("sayGoodbye").frequency == 2.0
