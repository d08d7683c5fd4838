"""Helpers for the Helm chart tests: run helm, render the chart, pick manifests.

    docs = render_chart(helm, "ci/default-values.yaml", set_values={"replicaCount": 3})
    container = node_container(docs)

Imported by module name (`from chart_helpers import ...`): pytest puts this directory on
sys.path for its test files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "corral"
HELM = REPO / ".tools" / "bin" / "helm"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "corral"
NAMESPACE = "jobs"
FULLNAME = "corral"  # release "corral" + chart "corral" → the release name alone

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.25.0", "1.30.0")
# API groups of the optional CRD objects, so `helm template` treats them as installed.
API_VERSIONS = ("monitoring.coreos.com/v1", "keda.sh/v1alpha1")

Doc = dict[str, Any]


def in_ci() -> bool:
    """True when CI is set (to anything but an explicit no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class HelmError(Exception):
    """`helm` exited non-zero; `stderr` holds its message."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"helm {' '.join(args)} exited {returncode}:\n{stderr}")
        self.returncode = returncode
        self.stderr = stderr


def run_helm(helm: Path, *args: str, timeout: float = 60) -> str:
    """Run helm with `args` (offline, its own config dirs) and return stdout; HelmError if it fails."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / "corral-helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(base / "cache"),
        "HELM_CONFIG_HOME": str(base / "config"),
        "HELM_DATA_HOME": str(base / "data"),
    }
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    if proc.returncode != 0:
        raise HelmError(list(args), proc.returncode, proc.stderr)
    return proc.stdout


def values_args(values_files: Iterable[str | Path] = (),
                set_values: dict[str, Any] | None = None) -> list[str]:
    """`-f` for each file (relative to the chart) and `--set-json` for each key."""
    args: list[str] = []
    for f in values_files:
        args += ["-f", str(CHART / f)]
    for key, value in (set_values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def render_chart(helm: Path, *values_files: str | Path, set_values: dict[str, Any] | None = None,
                 kube_version: str = KUBE_VERSIONS[-1], chart: Path = CHART) -> list[Doc]:
    """`helm template` the chart (test hooks included) into a list of manifests."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE,
            "--kube-version", kube_version]
    for api in API_VERSIONS:
        args += ["--api-versions", api]
    args += values_args(values_files, set_values)
    return [d for d in yaml.safe_load_all(run_helm(helm, *args)) if d]


def is_hook(doc: Doc) -> bool:
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def of_kind(docs: list[Doc], kind: str, *, hook: bool | None = None) -> list[Doc]:
    """Manifests of `kind`; hook=True only helm hooks, hook=False none of them."""
    out = [d for d in docs if d.get("kind") == kind]
    if hook is not None:
        out = [d for d in out if is_hook(d) == hook]
    return out


def label(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def one(docs: list[Doc], kind: str, *, hook: bool | None = None) -> Doc:
    """The single manifest of `kind`."""
    found = of_kind(docs, kind, hook=hook)
    assert len(found) == 1, f"expected one {kind}, found {[label(d) for d in found]}"
    return found[0]


def node_container(docs: list[Doc]) -> Doc:
    """The `corral` container of the Deployment."""
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "corral"]
    return dict(container)


def flag_value(args: list[str], flag: str) -> str | None:
    """The value after `flag` in an argv list (`--flag value` or `--flag=value`), else None."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instr, _, rest = full.partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Variables set by ENV (`K=V K2=V2` form) in the final stage."""
    final = _final_stage(instructions)
    env: dict[str, str] = {}
    for instr, rest in final:
        if instr == "ENV":
            for m in re.finditer(r'(\w+)=("([^"]*)"|\S*)', rest):
                env[m.group(1)] = m.group(3) if m.group(3) is not None else m.group(2)
    return env


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (instr, _) in enumerate(instructions) if instr == "FROM"]
    return instructions[starts[-1]:]


def last_instruction(instructions: list[tuple[str, str]], name: str) -> str:
    found = [rest for instr, rest in _final_stage(instructions) if instr == name]
    assert found, f"no {name} in the final stage of {DOCKERFILE}"
    return found[-1]


@cache
def _node_help() -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "node", "node", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def node_flags() -> tuple[set[str], int, str]:
    """(flags of `corral node`, default HTTP port, where they came from).

    From `python -m node node --help`; while the node CLI does not run, from the flags written
    in docs/INTERFACE.md and docs/DESIGN.md, except under CI, where that is a failure.
    """
    returncode, stdout, stderr = _node_help()
    if returncode == 0 and "--http-port" in stdout:
        flags = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", stdout))
        m = re.search(r"--http-port\b[^\n]*(?:\n(?!\s*--)[^\n]*)*?default:?\s*(\d+)", stdout)
        port = int(m.group(1)) if m else 8080
        return flags, port, "python -m node node --help"
    reason = f"`python -m node node --help` failed (exit {returncode}): {stderr[-500:]}"
    if in_ci():
        pytest.fail(f"{reason}; under CI the flag list must come from the real CLI", pytrace=False)
    # Fallback until the node CLI exists: the flags named in docs/INTERFACE.md §1 and docs/DESIGN.md.
    text = ""
    for doc in (REPO / "docs" / "INTERFACE.md", REPO / "docs" / "DESIGN.md"):
        if doc.exists():
            text += doc.read_text()
    flags = set(re.findall(r"`[^`]*?--([a-z][a-z0-9-]*)", text))
    flags |= set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text))
    if not flags:
        pytest.skip(f"{reason}; and no docs/INTERFACE.md or docs/DESIGN.md to fall back on")
    return flags, 8080, f"docs/INTERFACE.md and docs/DESIGN.md ({reason})"
