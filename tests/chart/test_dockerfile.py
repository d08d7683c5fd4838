"""deploy/Dockerfile, checked without a Docker engine: parsed, then compared with the package.

- ENTRYPOINT is the console script pyproject declares, in exec form; CMD is `node`.
- Every `CORRAL_*` the image sets is the env form of a real `corral node` flag. The flag list
  comes from `python -m node node --help`; only when the node cannot run yet does it fall back
  to the flags written in SPEC.md and docs/DESIGN.md, and under CI that fallback is a failure.
- EXPOSE is the node's default HTTP port and CORRAL_HTTP_PORT agrees; the user is non-root and
  numeric and matches the chart's runAsUser; the HEALTHCHECK asks /healthz without curl.
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
    assert entrypoint == ["corral"] and "corral" in scripts, (entrypoint, scripts)
    assert json.loads(last_instruction(instructions, "CMD")) == ["node"]


def test_base_image_user_and_install(instructions: list[tuple[str, str]]) -> None:
    froms = [rest for instr, rest in instructions if instr == "FROM"]
    assert all(f.split()[0].startswith("python:3.11-slim") for f in froms), froms
    user = last_instruction(instructions, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER must be a numeric non-root id, got {user!r}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"]
    runs = " ".join(rest for instr, rest in instructions if instr == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "the image installs the package with `pip install .`"


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
