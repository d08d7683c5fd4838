"""A simulated deployment: the chart's rendered pods, run as local `corral node` processes.

The chart is rendered for 3 replicas; each "pod" is one process started with the container's
command, args and env exactly as rendered, with only these substitutions (asserted below):

- `corral` (the console script) → `python -m node` (the same entry point, this checkout);
- the `CORRAL_REDIS_URL` value → a local redis-server (password protected: the password
  travels as rendered, through `CORRAL_REDIS_PASSWORD` from a `secretKeyRef`, resolved here
  like the kubelet would from a fake Secret);
- `--http-host 0.0.0.0` → 127.0.0.1 and `--http-port 8080` → a free port per process (three
  pods share this one machine, and tests listen on loopback only);
- ConfigMap volumes are written to a tmp dir at their mount paths, and every argument or env
  value under a mount path is rewritten to the tmp copy;
- downward-API `fieldRef`s get a unique pod name per process and the release namespace;
- the image's `ENV` defaults (deploy/Dockerfile) come first, as in the container.

Then: the rendered probes answer at their rendered paths and ports; exactly one leader, named
after a pod, appears via `/leader`; a job of the task file shipped in the tasks ConfigMap runs;
the rendered PrometheusRule groups load into a real Prometheus scraping the three nodes like the
rendered ServiceMonitor (path, port, `namespace`/`pod` labels), evaluate without errors, and
`sum(corral_is_leader)` is 1; the `helm test` hook's script passes against a node; SIGTERM on
the leader ends it within the rendered grace period and another node takes over.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    DOCKERFILE,
    FULLNAME,
    NAMESPACE,
    REPO,
    Doc,
    env_of,
    flag_value,
    last_instruction,
    node_container,
    of_kind,
    one,
    parse_dockerfile,
)

from tests.support import free_port, http_get, wait_until
from tests.support.servers import ManagedProcess

REPLICAS = 3
PASSWORD = "p@ss:w/rd#1%"  # not URL-safe on purpose: it must travel outside the URL
SECRETS = {"corral-redis": {"redis-password": PASSWORD}}
TASK_FILE = '''\
from cluster import task


@task(name="chartHello", queue="default", description="proves the tasks ConfigMap is loaded")
async def chart_hello(params, ctx):
    return {"hello": params.get("name", "chart")}
'''
VALUES = {
    "replicaCount": REPLICAS,
    "redis.url": "redis://redis-master.redis.svc:6379/0",
    "redis.existingSecret": "corral-redis",
    "redis.existingSecretPasswordKey": "redis-password",
    "tasks.files": {"chart_hello.py": TASK_FILE},
    "metrics.serviceMonitor.enabled": True,
    "prometheusRule.enabled": True,
}


def node_cli_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "node", "node", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.fail(f"`python -m node node --help` does not work yet (exit {proc.returncode}): "
                    f"{proc.stderr[-800:]}", pytrace=False)


class Pod:
    """One rendered pod run as a local process."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int,
                 workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.proc = ManagedProcess(argv, workdir / f"{name}.log", cwd=workdir, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.url + path, timeout=2.0)

    def leader(self) -> dict[str, Any] | None:
        try:
            status, body = self.get("/leader")
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def log_tail(self) -> str:
        try:
            return self.proc.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""


def resolve_env(rendered: list[Doc], pod_name: str) -> dict[str, str]:
    """The container env as the kubelet would set it (fieldRef, secretKeyRef, $(VAR))."""
    out: dict[str, str] = {}
    for entry in rendered:
        name = entry["name"]
        if "value" in entry:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: out.get(m.group(1), m.group(0)), str(entry["value"]))
        else:
            src = entry["valueFrom"]
            if "fieldRef" in src:
                value = {"metadata.name": pod_name,
                         "metadata.namespace": NAMESPACE}[src["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                value = SECRETS[ref["name"]][ref["key"]]
            else:
                raise AssertionError(f"unsupported env source {src}")
        out[name] = value
    return out


def materialise_volumes(docs: list[Doc], container: Doc, root: Path) -> dict[str, Path]:
    """Write every ConfigMap volume's files under `root`; mount path → local dir."""
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmaps = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        local = root / mount["mountPath"].lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, text in configmaps[volume["configMap"]["name"]]["data"].items():
                (local / key).write_text(text)
        else:
            assert "emptyDir" in volume, f"volume {mount['name']} is neither ConfigMap nor emptyDir"
        mounts[mount["mountPath"]] = local
    return mounts


def localise(value: str, mounts: dict[str, Path]) -> str:
    for mount_path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path):]
    return value


def build_pods(docs: list[Doc], redis_port: int, tmp_path: Path) -> list[Pod]:
    container = node_container(docs)
    image = parse_dockerfile(DOCKERFILE)
    # No `command:` in the pod: the image's ENTRYPOINT runs, tini first (PID 1), then the script.
    assert "command" not in container
    entrypoint = json.loads(last_instruction(image, "ENTRYPOINT"))
    assert entrypoint[:2] == ["/usr/bin/tini", "--"], entrypoint
    command, args = entrypoint[2:], container["args"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts, f"{command[0]} is not a console script of the package"
    image_env = env_of(image)
    replicas = one(docs, "Deployment")["spec"]["replicas"]
    pods = []
    for i in range(replicas):
        name = f"{FULLNAME}-5d8c7b9f6-{'abcdefghij'[i]}x{i}q"
        root = tmp_path / name
        mounts = materialise_volumes(docs, container, root / "root")
        port = free_port()
        launched = []
        for j, arg in enumerate(args):
            prev = args[j - 1] if j else ""
            if prev == "--http-host":
                arg = "127.0.0.1"
            elif prev == "--http-port":
                arg = str(port)
            else:
                arg = localise(arg, mounts)
            launched.append(arg)
        changed = {args[j - 1] for j, (a, b) in enumerate(zip(args, launched, strict=True)) if a != b}
        assert changed <= {"--http-host", "--http-port", "--config", "--tasks-dir"}, changed
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["PYTHONPATH"] = str(REPO)
        env["TMPDIR"] = str(mounts["/tmp"])
        env.update(image_env)
        env["PATH"] = os.environ["PATH"]
        pod_env = {k: localise(v, mounts) for k, v in resolve_env(container["env"], name).items()}
        pod_env["CORRAL_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}{urlsplit_path(pod_env['CORRAL_REDIS_URL'])}"
        env.update(pod_env)
        argv = [sys.executable, "-m", "node", *command[1:], *launched]
        (root / "app").mkdir(parents=True, exist_ok=True)
        pods.append(Pod(name, argv, env, port, root / "app"))
    return pods


def urlsplit_path(url: str) -> str:
    """The `/db` part of a Redis URL."""
    from urllib.parse import urlsplit

    return urlsplit(url).path or "/0"


def http_port_of(container: Doc, probe: Doc) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        (named,) = [p for p in container["ports"] if p["name"] == port]
        port = named["containerPort"]
    return int(port)


def test_rendered_pods_run_as_a_cluster(render, redis_factory, prometheus_factory,
                                        tmp_path: Path) -> None:
    node_cli_works()
    redis = redis_factory(requirepass=f'"{PASSWORD}"')
    docs = render("ci/default-values.yaml", set_values=VALUES)
    container = node_container(docs)
    assert {e["name"]: e.get("value") for e in container["env"]}["CORRAL_REDIS_URL"] == VALUES["redis.url"]
    assert PASSWORD not in json.dumps(docs), "the password stays in the Secret"
    pods = build_pods(docs, redis.port, tmp_path)
    assert len(pods) == REPLICAS
    rendered_port = int(flag_value(container["args"], "--http-port") or 0)

    try:
        for pod in pods:
            pod.proc.spawn()

        # -- probes at their rendered paths and ports ----------------------------------------
        startup = container["startupProbe"]
        budget = startup["failureThreshold"] * startup["periodSeconds"]
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[probe_name]
            assert http_port_of(container, probe) == rendered_port
            for pod in pods:
                def answers(pod: Pod = pod, path: str = probe["httpGet"]["path"]) -> bool:
                    assert pod.proc.running, f"{pod.name} exited:\n{pod.log_tail()}"
                    try:
                        return pod.get(path)[0] == 200
                    except OSError:
                        return False

                wait_until(answers, budget, 0.1, message=f"{pod.name} {probe_name} 200")

        # -- exactly one leader, named after a pod -------------------------------------------
        def one_leader() -> tuple[str, Pod] | None:
            answers = [(pod, pod.leader()) for pod in pods]
            if any(a is None for _, a in answers):
                return None
            leaders = {a["leader"] for _, a in answers if a}
            claiming = [pod for pod, a in answers if a and a["is_leader"]]
            if len(leaders) == 1 and None not in leaders and len(claiming) == 1:
                return next(iter(leaders)), claiming[0]
            return None

        leader_id, leader_pod = wait_until(one_leader, 20, 0.1, message="one agreed leader")
        assert leader_id.startswith(leader_pod.name), (leader_id, leader_pod.name)
        for pod in pods:
            assert pod.leader()["node"].startswith(pod.name), "CORRAL_NODE_ID comes from the pod name"

        # -- the task file from the tasks ConfigMap runs --------------------------------------
        from cluster import Client

        namespace = pods[0].env["CORRAL_NAMESPACE"]

        async def enqueue() -> None:
            async with await Client.connect(redis.url, namespace=namespace) as client:
                await client.enqueue("chartHello", {"name": "helm"}, queue="default")

        asyncio.run(enqueue())

        # -- Prometheus: the rendered rules, scraping like the rendered ServiceMonitor --------
        monitor = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
        assert monitor["port"] == "http"
        groups = one(docs, "PrometheusRule")["spec"]["groups"]
        rules_file = tmp_path / "rendered-rules.yml"
        rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        # the monitor's constant relabelings (redis_namespace, helm_release) as target labels
        constant = {r["targetLabel"]: r["replacement"] for r in monitor.get("relabelings", [])
                    if r.get("action") == "replace" and not r.get("sourceLabels")}
        assert constant.get("redis_namespace") == pods[0].env["CORRAL_NAMESPACE"], constant
        prom = prometheus_factory(
            [{"targets": [f"127.0.0.1:{pod.port}"], "labels": {"namespace": NAMESPACE, "pod": pod.name, **constant}}
             for pod in pods],
            rule_files=[rules_file], job=one(docs, "Service")["metadata"]["name"],
            metrics_path=monitor["path"])
        wait_until(lambda: len(prom.targets()) == REPLICAS
                   and all(t["health"] == "up" for t in prom.targets()), 20, 0.2,
                   message="every node scraped")
        wait_until(lambda: prom.query_value("sum(corral_is_leader)") == 1.0, 20, 0.2,
                   message="sum(corral_is_leader) == 1")
        wait_until(lambda: prom.query_value('sum(corral_jobs_processed_total{task="chartHello"})') == 1.0,
                   30, 0.2, message="the chartHello job processed once")

        def rules_evaluated() -> list[dict[str, Any]] | None:
            loaded = prom.api("rules")["groups"]
            rules = [r for g in loaded for r in g["rules"]]
            if not rules or any(r.get("lastEvaluation", "").startswith("0001") for r in rules):
                return None
            return loaded

        loaded = wait_until(rules_evaluated, 20, 0.2, message="every rendered rule evaluated")
        assert sorted(g["name"] for g in loaded) == sorted(g["name"] for g in groups)
        assert sum(len(g["rules"]) for g in loaded) == sum(len(g["rules"]) for g in groups)
        broken = [(r["name"], r.get("lastError")) for g in loaded for r in g["rules"]
                  if r.get("health") != "ok"]
        assert not broken, f"rules failing to evaluate: {broken}"
        if any(r.get("record") == "corral:leaders:sum" for g in groups for r in g["rules"]):
            wait_until(lambda: prom.query_value("sum(corral:leaders:sum)") == 1.0, 20, 0.2,
                       message="recording rule corral:leaders:sum == 1")
            cluster = f'corral:leaders:sum{{namespace="{NAMESPACE}", redis_namespace="{constant["redis_namespace"]}"}}'
            assert prom.query_value(cluster) == 1.0, "one leader per Corral cluster (namespace, redis_namespace)"
        # Right after Prometheus starts, `absent(corral_is_leader)` may hold for one evaluation
        # (CorralNoLeader pending); once the nodes are scraped no leader alert may stay active.
        def leader_alerts() -> list[dict[str, Any]]:
            return [a for a in prom.alerts()
                    if a["labels"].get("alertname") in ("CorralNoLeader", "CorralMultipleLeaders")]

        wait_until(lambda: not leader_alerts(), 10, 0.2, message="no active leader alert")
        assert not [a for a in leader_alerts() if a["state"] == "firing"]

        # -- the helm test hook's script passes against a node --------------------------------
        hook = one(docs, "Pod", hook=True)["spec"]["containers"][0]["command"]
        assert hook[:2] == ["python", "-c"]
        result = subprocess.run([sys.executable, "-c", hook[2], leader_pod.url + "/leader", "10"],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0 and leader_id in result.stdout, result

        # -- SIGTERM the leader: exits within the rendered grace, another node leads ----------
        grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        code = leader_pod.proc.terminate(grace)
        assert code == 0, f"leader exited {code} after SIGTERM:\n{leader_pod.log_tail()}"
        rest = [pod for pod in pods if pod is not leader_pod]

        def new_leader() -> str | None:
            answers = [pod.leader() for pod in rest]
            ids = {a["leader"] for a in answers if a}
            claiming = [a for a in answers if a and a["is_leader"]]
            if len(ids) == 1 and None not in ids and len(claiming) == 1 and leader_id not in ids:
                return next(iter(ids))
            return None

        wait_until(new_leader, 10, 0.05, message="a new leader after SIGTERM")
    finally:
        for pod in pods:
            pod.proc.kill()
