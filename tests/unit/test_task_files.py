"""`corral generate task NAME` writes a file that loads (or refuses the name), and a load error
names the task file and the line in it that failed, not a line of importlib or Corral."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.catalogue import describe
from cluster.errors import ConfigError, TaskDefinitionError
from node.cli import main
from node.loader import generate_task, load_dir


@pytest.mark.parametrize("name", ["2fast", "class", "sendWelcomeEmail", "a-b", "-", "_x", "None", "match", "été"])
def test_generated_skeleton_loads_for_any_valid_task_name(tmp_path: Path, name: str) -> None:
    path = generate_task(tmp_path, name)
    assert not path.name.startswith("_")  # load_dir skips those
    registry = load_dir(tmp_path)
    assert registry.names() == [name]


@pytest.mark.parametrize("name", ["", "a b", "a.b", "x²", "x/y"])
def test_generate_refuses_names_it_cannot_write_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="task name"):
        generate_task(tmp_path / "tasks", name)
    assert not list((tmp_path / "tasks").glob("*.py")) if (tmp_path / "tasks").exists() else True


def test_cli_generate_2fast_then_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "task", "2fast", "--tasks-dir", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_dir(tmp_path).names() == ["2fast"]
    assert main(["generate", "task", "2fast", "--tasks-dir", str(tmp_path)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_syntax_error_names_the_file_and_its_line(tmp_path: Path) -> None:
    (tmp_path / "seven.py").write_text("from cluster import task\n\n\n@task(name='x')\nasync def x(p, c):\n"
                                       "    return (\n\n")
    with pytest.raises(ConfigError) as e:
        load_dir(tmp_path)
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'seven.py'}:6: error while loading task file: SyntaxError"), message


def test_runtime_error_deep_in_a_call_names_the_task_files_line(tmp_path: Path) -> None:
    (tmp_path / "calls.py").write_text("import json\n\nx = 1\njson.loads('{not json')\n")
    with pytest.raises(ConfigError, match=r"calls.py:4: error while loading task file: JSONDecodeError"):
        load_dir(tmp_path)


def test_bad_field_names_the_file_and_the_line_of_the_definition(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("from cluster import Task\n\n\n\nt = Task(name='bad', run=lambda p, c: 0,\n"
                                     "         timeout=0)\n")
    with pytest.raises(TaskDefinitionError) as e:
        load_dir(tmp_path)
    assert e.value.file == str(tmp_path / "bad.py") and e.value.field == "timeout" and e.value.line == 5
    assert str(e.value).startswith(f"{tmp_path / 'bad.py'}:5: task field 'timeout'")


def test_published_definition_hash_follows_every_field(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(
        "from cluster import Task\n"
        "def run(p, c): ...\n"
        "a = Task(name='a', run=run, queue='q1', plugins=['QueueLock'], plugin_options={'QueueLock': {'lock_timeout': 5}})\n"
        "b = Task(name='b', run=run, queue='q1', plugins=['QueueLock'], plugin_options={'QueueLock': {'lock_timeout': 6}})\n"
        "c = Task(name='c', run=run, cron='0 3 * * *', timezone='Europe/Paris')\n")
    reg = load_dir(tmp_path)
    a, b, c = (describe(reg.get(n)) for n in "abc")
    assert a["plugins"] == [{"name": "QueueLock", "options": {"lock_timeout": 5}, "enqueue_hooks": True}]
    assert a["queue"] == "q1" and c["cron"] == "0 3 * * *" and c["timezone"] == "Europe/Paris"
    assert {k: v for k, v in a.items() if k not in ("name", "hash", "plugins")} == \
        {k: v for k, v in b.items() if k not in ("name", "hash", "plugins")}
    assert len({a["hash"], b["hash"], c["hash"]}) == 3
