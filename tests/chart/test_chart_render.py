"""The Helm chart, without a cluster: lint, render, Kubernetes schemas, values schema, wiring.

Every `ci/*-values.yaml` is linted (`--strict`) and rendered at the oldest supported and a current
Kubernetes version; every rendered manifest is validated against that version's schemas through
kubernetes-validate's Python API (its CLI only warns on unknown kinds), and the CRD kinds it has
no schema for are checked field by field here. Then the wiring: probes, grace period, security
context, Redis/Sentinel/ZooKeeper flags, KEDA list names, monitoring objects equal to deploy/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    CHART,
    CI_VALUES,
    FULLNAME,
    KUBE_VERSIONS,
    NAMESPACE,
    REPO,
    Doc,
    HelmError,
    flag_value,
    in_ci,
    node_container,
    node_flags,
    of_kind,
    one,
    render_chart,
    run_helm,
    values_args,
)

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
REDIS = {"redis.url": "redis://redis.example:6379/0"}

# ---------------------------------------------------------------------------------------------
# CRD kinds kubernetes-validate has no schema for: required fields checked here.

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_monitor_endpoints(endpoints: Any, where: str) -> None:
    assert isinstance(endpoints, list) and endpoints, f"{where}: at least one endpoint"
    for ep in endpoints:
        assert ep.get("port") or ep.get("targetPort"), f"{where}: endpoint without port: {ep}"
        for key in ("interval", "scrapeTimeout"):
            if key in ep:
                assert DURATION.match(str(ep[key])), f"{where}: {key} {ep[key]!r} is not a duration"
        for key in ("relabelings", "metricRelabelings"):
            assert isinstance(ep.get(key, []), list), f"{where}: {key} must be a list"


def check_servicemonitor(doc: Doc) -> None:
    spec = doc["spec"]
    assert spec["selector"].get("matchLabels") or spec["selector"].get("matchExpressions")
    _check_monitor_endpoints(spec.get("endpoints"), "ServiceMonitor.spec.endpoints")


def check_podmonitor(doc: Doc) -> None:
    spec = doc["spec"]
    assert spec["selector"].get("matchLabels") or spec["selector"].get("matchExpressions")
    _check_monitor_endpoints(spec.get("podMetricsEndpoints"), "PodMonitor.spec.podMetricsEndpoints")


def check_prometheusrule(doc: Doc) -> None:
    groups = doc["spec"]["groups"]
    assert isinstance(groups, list) and groups
    seen = set()
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy",
                              "query_offset", "labels"}, group.keys()
        assert group["name"] and group["name"] not in seen, f"group name {group['name']!r}"
        seen.add(group["name"])
        assert isinstance(group["rules"], list) and group["rules"]
        for rule in group["rules"]:
            assert isinstance(rule.get("expr"), str | int) and str(rule["expr"]).strip()
            assert ("record" in rule) != ("alert" in rule), f"record xor alert: {rule}"
            assert set(rule) <= {"record", "alert", "expr", "for", "keep_firing_for", "labels",
                                 "annotations"}, rule.keys()
            if "for" in rule:
                assert DURATION.match(rule["for"]), f"for {rule['for']!r}"
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in (rule.get(key) or {}).values()), rule


def check_scaledobject(doc: Doc) -> None:
    spec = doc["spec"]
    assert spec["scaleTargetRef"]["name"]
    assert spec["minReplicaCount"] >= 1, "the leader runs in these pods: never scale to 0"
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    assert spec["triggers"], "at least one trigger"
    for trigger in spec["triggers"]:
        assert trigger["type"]
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), (
            f"KEDA trigger metadata values must be strings: {trigger['metadata']}")
        if trigger["type"] in ("redis", "redis-sentinel"):
            assert trigger["metadata"]["listName"] and trigger["metadata"]["listLength"]


def check_triggerauthentication(doc: Doc) -> None:
    for ref in doc["spec"]["secretTargetRef"]:
        assert ref["parameter"] and ref["name"] and ref["key"], ref


CRD_CHECKS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_servicemonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_podmonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheusrule,
    ("keda.sh/v1alpha1", "ScaledObject"): check_scaledobject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): check_triggerauthentication,
}


def validate_manifest(doc: Doc, kube_version: str) -> None:
    """Strict Kubernetes schema for core kinds, the checks above for the allow-listed CRDs."""
    meta = doc["metadata"]
    assert DNS1123.match(meta["name"]) and len(meta["name"]) <= 63, f"bad name {meta['name']!r}"
    crd_check = CRD_CHECKS.get((doc["apiVersion"], doc["kind"]))
    if crd_check is not None:
        crd_check(doc)
        return
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        err = e.caused_by
        path = "/".join(str(p) for p in err.absolute_path)
        pytest.fail(f"{doc['kind']}/{meta['name']} invalid for Kubernetes {kube_version} at "
                    f"{path or '.'}: {err.message}", pytrace=False)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(f"no Kubernetes {kube_version} schema for {doc['apiVersion']} {doc['kind']} "
                    "and it is not an allow-listed CRD kind", pytrace=False)


# ---------------------------------------------------------------------------------------------
# Lint and render every ci values file at both Kubernetes versions.


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_lint_strict(helm_bin: Path, values_file: Path, kube_version: str) -> None:
    out = run_helm(helm_bin, "lint", "--strict", str(CHART), "--kube-version", kube_version,
                   *values_args([values_file]))
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_rendered_manifests_are_valid(render, values_file: Path, kube_version: str) -> None:
    docs = render(values_file, kube_version=kube_version)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Pod"} <= kinds, kinds
    for doc in docs:
        validate_manifest(doc, kube_version)
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE or doc["kind"] == "ConfigMap"


def test_ci_values_cover_the_features() -> None:
    assert {"default", "monitoring", "keda", "sentinel", "zookeeper", "replicas5"} <= set(CI_IDS)


def test_packaged_chart_renders(helm_bin: Path, tmp_path: Path) -> None:
    run_helm(helm_bin, "package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("corral-*.tgz")
    docs = render_chart(helm_bin, "ci/monitoring-values.yaml", chart=tgz)
    # files/ travels in the package: the rules and dashboards come out of it.
    assert one(docs, "PrometheusRule")["spec"]["groups"]
    assert [d for d in of_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]


# ---------------------------------------------------------------------------------------------
# values.schema.json and the chart's `fail` checks: bad values are refused with a clear message.

REJECTED = [
    ("replicas-zero", {**REDIS, "replicaCount": 0}, "at '/replicaCount': minimum: got 0, want 1"),
    ("bad-election", {**REDIS, "corral.election": "etcd"},
     "at '/corral/election': value must be one of 'redis', 'zookeeper'"),
    ("no-redis", {}, "at '/redis': missing property 'set redis.url"),
    ("password-in-url", {"redis.url": "redis://:s3cret@redis:6379/0"},
     "redis.url holds a password, and values end up in the pod spec as plain text"),
    ("keda-without-prometheus", {**REDIS, "keda.enabled": True},
     "keda.prometheus.serverAddress is required with keda.enabled"),
    ("sentinel-auth-without-sentinel", {**REDIS, "redis.sentinel.tls": True},
     "apply to Sentinels: set redis.sentinel.enabled"),
    ("typo", {**REDIS, "replicas": 3}, "additional properties 'replicas' not allowed"),
    ("keda-min-zero", {**REDIS, "keda.enabled": True, "keda.minReplicaCount": 0},
     "at '/keda/minReplicaCount': minimum: got 0, want 1"),
    ("zookeeper-no-hosts", {**REDIS, "corral.election": "zookeeper"},
     "at '/zookeeper/hosts': minItems: got 0, want 1"),
    ("sentinel-no-master", {"redis.sentinel.enabled": True, "redis.sentinel.hosts": ["s:26379"]},
     "at '/redis/sentinel/masterName': minLength: got 0, want 1"),
    ("bad-sentinel-host", {"redis.sentinel.enabled": True, "redis.sentinel.hosts": ["s"],
                           "redis.sentinel.masterName": "m"}, "at '/redis/sentinel/hosts/0'"),
    ("bad-log-level", {**REDIS, "corral.logLevel": "verbose"}, "at '/corral/logLevel'"),
    ("bad-url", {"redis.url": "http://redis:6379"}, "at '/redis/url'"),
    ("latest-tag", {**REDIS, "image.tag": "latest"}, "at '/image/tag'"),
    ("string-concurrency", {**REDIS, "corral.concurrency": "4"}, "at '/corral/concurrency'"),
    # cross-field checks done by `fail` in _helpers.tpl
    ("keda-and-hpa", {**REDIS, "keda.enabled": True, "autoscaling.enabled": True},
     "keda.enabled and autoscaling.enabled are exclusive"),
    ("two-monitors", {**REDIS, "metrics.serviceMonitor.enabled": True,
                      "metrics.podMonitor.enabled": True},
     "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are exclusive"),
    ("short-grace", {**REDIS, "corral.shutdownTimeout": 60, "terminationGracePeriodSeconds": 30},
     "terminationGracePeriodSeconds (30) must be at least corral.shutdownTimeout + 5 (65)"),
    ("url-key-without-secret", {"redis.existingSecretUrlKey": "url"},
     "redis.existingSecretUrlKey needs redis.existingSecret"),
    ("cert-without-key", {**REDIS, "redis.tls.enabled": True, "redis.tls.existingSecret": "t",
                          "redis.tls.certKey": "tls.crt"},
     "redis.tls.certKey and redis.tls.keyKey go together"),
    ("config-shadowed-by-env", {**REDIS, "corral.config": {"namespace": "other"}},
     "corral.config.namespace: the chart sets this itself"),
    ("keda-star-queue", {**REDIS, "keda.enabled": True, "corral.queues": ["*"]},
     "keda.queues is required when corral.queues contains *"),
]


@pytest.mark.parametrize(("values", "message"), [(v, m) for _, v, m in REJECTED],
                         ids=[i for i, _, _ in REJECTED])
def test_bad_values_are_rejected_with_a_clear_message(render, values: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(HelmError) as err:
        render(set_values=values)
    assert message in err.value.stderr


def test_missing_redis_message_names_every_alternative(render) -> None:
    with pytest.raises(HelmError) as err:
        render()
    for value in ("redis.url", "redis.existingSecret with redis.existingSecretUrlKey", "redis.sentinel.enabled"):
        assert value in err.value.stderr, err.value.stderr
    assert "anyOf" not in err.value.stderr, "the schema error names the values to set"


def test_values_yaml_defaults_match_the_schema() -> None:
    """Every default key is declared in the schema (additionalProperties: false catches the rest)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Any, sch: dict[str, Any], path: str) -> None:
        if isinstance(node, dict) and sch.get("additionalProperties") is False:
            for key, sub in node.items():
                assert key in sch.get("properties", {}), f"{path}.{key} is not in the schema"
                walk(sub, sch["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


# ---------------------------------------------------------------------------------------------
# The pod: security, probes, grace period, identity, configuration.


def _pod_specs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    out = [("Deployment", one(docs, "Deployment")["spec"]["template"]["spec"])]
    out += [(f"Pod/{d['metadata']['name']}", d["spec"]) for d in of_kind(docs, "Pod")]
    return out


@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_restricted_security_context_on_every_pod(render, values_file: Path) -> None:
    for where, pod in _pod_specs(render(values_file)):
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        mounts_by_pod = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["runAsNonRoot"] is True, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not sc.get("privileged"), where
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in mounts_by_pod, f"{where}: /tmp must be an emptyDir"
            assert c["resources"]["requests"], where
            assert not c["image"].endswith(":latest"), where


def _toml(docs: list[Doc]) -> dict[str, Any]:
    cm = [d for d in of_kind(docs, "ConfigMap") if "corral.toml" in (d.get("data") or {})]
    assert len(cm) == 1
    return tomllib.loads(cm[0]["data"]["corral.toml"])


@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_probes_port_and_grace_period(render, values_file: Path) -> None:
    docs = render(values_file)
    values = yaml.safe_load(values_file.read_text())
    port = values.get("corral", {}).get("httpPort", 8080)
    container = node_container(docs)
    (http,) = [p for p in container["ports"] if p["name"] == "http"]
    assert http["containerPort"] == port
    assert flag_value(container["args"], "--http-port") == str(port)
    assert flag_value(container["args"], "--http-host") == "0.0.0.0"
    paths = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in paths.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("http", port), (probe, get)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    shutdown = float(_toml(docs)["shutdown_timeout"])
    assert pod["terminationGracePeriodSeconds"] >= shutdown + 5
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] in ("http", port)


def test_node_command_identity_and_config_mount(render) -> None:
    docs = render("ci/default-values.yaml")
    c = node_container(docs)
    assert "command" not in c, "the image's ENTRYPOINT (tini, then corral) must stay: args only"
    assert c["args"][0] == "node"
    env = {e["name"]: e for e in c["env"]}
    assert env["CORRAL_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert len([e["name"] for e in c["env"]]) == len(env), "duplicate env names break Helm 4 SSA"
    config_path = flag_value(c["args"], "--config")
    mount = [m for m in c["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    assert mount and mount[0]["readOnly"]
    env_values = {e["name"]: e.get("value") for e in c["env"]}
    assert env_values["CORRAL_REDIS_URL"] == "redis://redis-master.redis.svc:6379/0"
    assert env_values["CORRAL_NAMESPACE"] == "resque"
    cfg = _toml(docs)
    assert cfg["queues"] == "default" and cfg["scheduler"] is True and "namespace" not in cfg
    assert flag_value(c["args"], "--tasks-dir") == "/app/tasks"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_rendered_settings_are_real_node_options(render, values_file: Path, tmp_path: Path) -> None:
    """Every CORRAL_* env, flag and corral.toml key the chart renders is a `corral node` option,
    and the node's own config loader accepts the rendered pod (values, relations, TOML)."""
    docs = render(values_file)
    c = node_container(docs)
    flags, _, source = node_flags()
    env_names = {e["name"] for e in c["env"] if e["name"].startswith("CORRAL_")}
    unknown_env = env_names - {"CORRAL_" + f.upper().replace("-", "_") for f in flags}
    assert not unknown_env, f"env {sorted(unknown_env)} names no flag (flags from {source})"
    unknown_flags = {a[2:].split("=")[0] for a in c["args"] if a.startswith("--")} - flags
    assert not unknown_flags, f"args {sorted(unknown_flags)} are not flags (from {source})"
    unknown_keys = {k.replace("_", "-") for k in _toml(docs)} - flags
    assert not unknown_keys, f"corral.toml keys {sorted(unknown_keys)} are not options"

    try:
        from node.cli import parser
        from node.config import BY_NAME, NodeConfig
    except ImportError as e:
        if in_ci():
            pytest.fail(f"the node's config loader cannot be imported: {e}", pytrace=False)
        pytest.skip(f"the node's config loader is not there yet: {e}")
    config = tmp_path / "corral.toml"
    config.write_text(next(d for d in of_kind(docs, "ConfigMap")
                           if "corral.toml" in d.get("data", {}))["data"]["corral.toml"])
    args = [str(config) if a.endswith("/corral.toml") else a for a in c["args"]]
    environ: dict[str, str] = {}
    for e in c["env"]:
        if "value" in e:
            environ[e["name"]] = e["value"]
        elif "fieldRef" in e["valueFrom"]:
            environ[e["name"]] = {"metadata.name": "corral-5d8c7b9f6-x2x9q",
                                  "metadata.namespace": NAMESPACE}[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:  # secretKeyRef: a stand-in of the right shape
            environ[e["name"]] = ("redis://redis:6379/0" if e["name"] == "CORRAL_REDIS_URL"
                                  else "s3cret")
    assert args[0] == "node", "the pod's args name the subcommand (the image's ENTRYPOINT is tini + corral)"
    parsed = parser().parse_args(args)
    given = {k: v for k, v in vars(parsed).items() if k in BY_NAME}
    cfg = NodeConfig.from_sources(given, environ, parsed.config)
    values = yaml.safe_load(values_file.read_text())
    assert cfg.namespace == values.get("corral", {}).get("namespace", "resque")
    assert cfg.http_host == "0.0.0.0" and cfg.node_id == "corral-5d8c7b9f6-x2x9q"
    assert cfg.redis_url or cfg.redis_sentinels, "never the embedded Redis in a pod"


def test_config_checksum_follows_the_config(render) -> None:
    def checksum(**values: Any) -> str:
        docs = render("ci/default-values.yaml", set_values=values)
        return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert checksum() == base
    assert checksum(**{"corral.concurrency": 3}) != base
    assert checksum(**{"corral.config": {"poll_interval": 0.25}}) != base


def test_task_files_configmap_is_mounted_as_the_tasks_dir(render) -> None:
    docs = render("ci/replicas5-values.yaml")
    c = node_container(docs)
    tasks_dir = flag_value(c["args"], "--tasks-dir")
    assert tasks_dir == "/etc/corral/tasks"
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == tasks_dir]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    cm = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == vol["configMap"]["name"]]
    assert "hello.py" in cm[0]["data"] and "@task" in cm[0]["data"]["hello.py"]
    assert "checksum/tasks" in one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert _toml(docs)["queues"] == "critical,default,default,*"


def test_replicas_pdb_and_spread(render) -> None:
    docs = render("ci/replicas5-values.yaml")
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 5
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert one(docs, "Service")["spec"]["selector"] == selector
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {"topology.kubernetes.io/zone",
                                                   "kubernetes.io/hostname"}
    for s in spread:
        assert s["whenUnsatisfiable"] == "ScheduleAnyway" and s["maxSkew"] == 1
        assert s["labelSelector"]["matchLabels"] == selector
    # one replica: no PDB (a maxUnavailable-1 budget over one pod is fine, but the chart never
    # renders a budget that could block a drain of a single-pod release)
    assert not of_kind(render("ci/worker-only-values.yaml"), "PodDisruptionBudget")
    assert not of_kind(render(set_values={**REDIS, "replicaCount": 1}), "PodDisruptionBudget")


def test_test_hook_asks_leader_through_the_service(render) -> None:
    docs = render("ci/default-values.yaml")
    pod = one(docs, "Pod", hook=True)
    ann = pod["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "test"
    assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
    command = pod["spec"]["containers"][0]["command"]
    service = one(docs, "Service")
    url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}/leader"
    assert url in command
    assert 'last.get("leader")' in "".join(command) and "sys.exit(1)" in "".join(command)
    selector = service["spec"]["selector"]
    labels = pod["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items()), "test Pod must not join the Service"


def test_test_hook_script_fails_on_a_null_leader(render, tmp_path: Path) -> None:
    """Run the hook's script against a local HTTP server: null leader → exit 1, a leader → 0."""
    import http.server
    import subprocess
    import sys
    import threading

    command = one(render("ci/default-values.yaml"), "Pod", hook=True)["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    answer = {"leader": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"node": "a", **answer, "epoch": 3}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/leader"
    try:
        null = subprocess.run([sys.executable, "-c", command[2], url, "3"], capture_output=True,
                              text=True, timeout=30, check=False)
        assert null.returncode == 1 and "no leader" in null.stdout
        answer["leader"] = "corral-abc"
        led = subprocess.run([sys.executable, "-c", command[2], url, "3"], capture_output=True,
                             text=True, timeout=30, check=False)
        assert led.returncode == 0 and "corral-abc" in led.stdout
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# Redis, Sentinel, TLS, ZooKeeper wiring.


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container["env"]}


def test_sentinel_tls_and_password_from_secret(render) -> None:
    docs = render("ci/sentinel-values.yaml")
    c = node_container(docs)
    env = _env(c)
    assert env["CORRAL_REDIS_SENTINELS"]["value"] == ",".join(
        f"redis-node-{i}.redis-headless.redis.svc:26379" for i in range(3))
    assert env["CORRAL_REDIS_SENTINEL_MASTER"]["value"] == "mymaster"
    assert "CORRAL_REDIS_URL" not in env
    ref = env["CORRAL_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "corral-redis", "key": "redis-password"}
    files = {env[f"CORRAL_REDIS_TLS_{k}_FILE"]["value"] for k in ("CA", "CERT", "KEY")}
    assert files == {f"/etc/corral/redis-tls/{k}" for k in ("ca.crt", "tls.crt", "tls.key")}
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/corral/redis-tls"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert vol["secret"]["secretName"] == "corral-redis-tls"
    assert [d["metadata"]["name"] for d in of_kind(docs, "Secret")] == ["corral-keda-tls"], \
        "existing Secrets are used; the chart's only Secret holds KEDA's tls=enable"
    # the Sentinels' own password (bitnami/redis sentinel.auth: the Redis password) and TLS
    assert env["CORRAL_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == \
        {"name": "corral-redis", "key": "redis-password"}
    assert env["CORRAL_REDIS_SENTINEL_TLS"]["value"] == "true"
    trigger = one(docs, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["type"] == "redis-sentinel"
    assert trigger["metadata"]["sentinelMaster"] == "mymaster"
    assert "enableTLS" not in trigger["metadata"], "KEDA refuses enableTLS with tls/ca/cert/key auth"
    auth = {r["parameter"]: (r["name"], r["key"])
            for r in one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]}
    assert auth == {"password": ("corral-redis", "redis-password"),
                    "sentinelPassword": ("corral-redis", "redis-password"),
                    "tls": ("corral-keda-tls", "tls"), "ca": ("corral-redis-tls", "ca.crt"),
                    "cert": ("corral-redis-tls", "tls.crt"), "key": ("corral-redis-tls", "tls.key")}
    assert one(docs, "Secret")["stringData"] == {"tls": "enable"}
    # with Sentinel, leader renewals wait for a replica (docs/FAULTS.md F8b); corral.config can override it
    assert _toml(docs)["leader_wait_replicas"] == 1
    assert _toml(render("ci/sentinel-values.yaml", set_values={"corral.config": {"leader_wait_replicas": 0}})
                 )["leader_wait_replicas"] == 0
    assert "leader_wait_replicas" not in _toml(render("ci/default-values.yaml"))


def test_inline_password_creates_a_secret(render) -> None:
    docs = render(set_values={**REDIS, "redis.password": "s3cret"})
    (secret,) = of_kind(docs, "Secret")
    ref = _env(node_container(docs))["CORRAL_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"]
    assert "s3cret" not in json.dumps(node_container(docs))


def test_zookeeper_election_and_url_from_secret(render) -> None:
    c = node_container(render("ci/zookeeper-values.yaml"))
    assert flag_value(c["args"], "--election") == "zookeeper"
    assert flag_value(c["args"], "--zookeeper-hosts") == ",".join(
        f"zk-{i}.zk-headless.zk.svc:2181" for i in range(3))
    ref = _env(c)["CORRAL_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "corral-redis", "key": "redis-url"}


# ---------------------------------------------------------------------------------------------
# Autoscaling.


def test_keda_scales_on_the_namespaced_queue_lists(render) -> None:
    docs = render("ci/keda-values.yaml")
    so = one(docs, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] == 2
    triggers = [t for t in so["spec"]["triggers"] if t["type"] != "prometheus"]
    assert [t["metadata"]["listName"] for t in triggers] == ["myapp:queue:critical",
                                                             "myapp:queue:default"]
    for t in triggers:
        assert t["type"] == "redis"
        assert t["metadata"]["address"] == "redis-master.redis.svc:6379"
        assert t["metadata"]["databaseIndex"] == "2"
        assert t["metadata"]["listLength"] == "6"  # concurrency 2 * 3 queue entries
        assert t["authenticationRef"]["name"] == one(docs, "TriggerAuthentication")["metadata"]["name"]
    assert "replicas" not in one(docs, "Deployment")["spec"], "KEDA owns the replica count"
    assert not of_kind(docs, "HorizontalPodAutoscaler"), "KEDA creates its own HPA"
    assert one(docs, "PodDisruptionBudget")


def test_hpa(render) -> None:
    docs = render("ci/hpa-values.yaml")
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 8
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in one(docs, "Deployment")["spec"]
    assert not of_kind(docs, "ScaledObject")


# ---------------------------------------------------------------------------------------------
# Monitoring: the chart's copies of deploy/ files, PrometheusRule, dashboards, monitors.

COPIES = {
    "deploy/prometheus/rules.yml": "helm/corral/files/rules.yml",
    "deploy/grafana/corral-dashboard.json": "helm/corral/files/dashboards/corral-dashboard.json",
}


@pytest.mark.parametrize(("source", "copy"), COPIES.items(), ids=list(COPIES))
def test_chart_files_equal_deploy_files(source: str, copy: str) -> None:
    src = REPO / source
    if not src.exists():
        pytest.fail(f"{source} is gone: the chart's copy {copy} has no source", pytrace=False)
    assert (REPO / copy).read_bytes() == src.read_bytes(), (
        f"{copy} differs from {source}: run scripts/sync-chart-files.sh")


def test_prometheusrule_rules_equal_deploy_rules(render) -> None:
    docs = render("ci/monitoring-values.yaml")
    rule = one(docs, "PrometheusRule")
    deploy = yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())
    assert rule["spec"]["groups"] == deploy["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheusrule_overrides(render) -> None:
    docs = render("ci/podmonitor-values.yaml")
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert "CorralJobsRecovered" not in alerts
    assert alerts["CorralNoLeader"]["for"] == "2m"
    assert alerts["CorralNoLeader"]["labels"]["severity"] == "page"
    assert groups[-1]["name"] == "corral-extra"
    deploy = yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())
    deploy_alerts = {r["alert"] for g in deploy["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == deploy_alerts - {"CorralJobsRecovered"} | {"CorralTestAlwaysQuiet"}


def test_dashboard_configmaps(render) -> None:
    docs = render("ci/monitoring-values.yaml")
    boards = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")]
    assert boards and all(b["metadata"]["labels"]["grafana_dashboard"] == "1" for b in boards)
    assert boards[0]["metadata"]["annotations"]["grafana_folder"] == "Corral"
    shipped = (CHART / "files/dashboards/corral-dashboard.json").read_text()
    (body,) = boards[0]["data"].values()
    assert json.loads(body) == json.loads(shipped)
    assert len(body.encode()) < 1024 * 1024
    assert json.loads(body).get("uid"), "dashboards need a stable uid"


def test_monitors_scrape_the_http_port(render) -> None:
    docs = render("ci/monitoring-values.yaml")
    sm = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert all(service["metadata"]["labels"].get(k) == v
               for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    pm = one(render("ci/podmonitor-values.yaml"), "PodMonitor")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def test_monitoring_objects_are_off_by_default(render) -> None:
    kinds = {d["kind"] for d in render("ci/default-values.yaml")}
    assert kinds.isdisjoint({"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject",
                             "TriggerAuthentication", "HorizontalPodAutoscaler"})
    assert "NetworkPolicy" in kinds, "the NetworkPolicy is on by default"


def test_network_policy(render) -> None:
    docs = render("ci/monitoring-values.yaml")
    np = one(docs, "NetworkPolicy")
    egress_ports = {(p["port"], p["protocol"]) for rule in np["spec"]["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (26379, "TCP"), (2181, "TCP")} <= egress_ports
    (ingress,) = np["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    test_pod = one(docs, "Pod", hook=True)
    peers = [p["podSelector"]["matchLabels"] for p in ingress["from"] if "podSelector" in p]
    assert any(all(test_pod["metadata"]["labels"].get(k) == v for k, v in sel.items())
               for sel in peers), "the helm test Pod must reach the Service"


# ---------------------------------------------------------------------------------------------
# NOTES.txt, README values table.


def test_notes_tell_how_to_see_the_leader(helm_bin: Path, tmp_path: Path) -> None:
    out = run_helm(helm_bin, "install", "corral", str(CHART), "--dry-run=client",
                   "--namespace", NAMESPACE, *values_args(["ci/worker-only-values.yaml"]))
    notes = out.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME} 8080:8080" in notes
    assert "curl -s http://127.0.0.1:8080/leader" in notes
    assert "corral status" in notes
    assert "WARNING: one replica" in notes and "corral.scheduler is false" in notes
    out = run_helm(helm_bin, "install", "corral", str(CHART), "--dry-run=client",
                   "--namespace", NAMESPACE, *values_args(["ci/podmonitor-values.yaml"]))
    notes = out.split("NOTES:", 1)[1]
    assert "PodMonitor" in notes and "no `release` label" in notes  # the PrometheusRule lacks it


def values_table() -> str:
    """The README's values table, generated from the `## @param` comments of values.yaml."""
    rows = ["| Key | Description | Default |", "|---|---|---|"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for line in (CHART / "values.yaml").read_text().splitlines():
        m = re.match(r"\s*## @param (\S+) (.*)", line)
        if not m:
            continue
        key, desc = m.groups()
        node: Any = values
        for part in key.split("."):
            node = node[part]
        default = json.dumps(node, ensure_ascii=False)
        desc = desc.replace("|", "\\|")
        rows.append(f"| `{key}` | {desc} | `{default}` |")
    return "\n".join(rows)


def test_readme_values_table_is_current() -> None:
    readme = (CHART / "README.md").read_text()
    table = values_table()
    begin, end = "<!-- values-table:begin -->", "<!-- values-table:end -->"
    current = readme.split(begin, 1)[1].split(end, 1)[0].strip()
    assert current == table, (
        "helm/corral/README.md values table is stale; paste this between the markers:\n" + table)


def test_every_values_key_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"## @param (\S+)", text))
    values = yaml.safe_load(text)

    def leaves(node: Any, prefix: str) -> set[str]:
        if prefix in documented:
            return set()
        if isinstance(node, dict) and node:
            return set().union(*(leaves(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()))
        return {prefix}

    assert not leaves(values, ""), "values without ## @param"


def test_chart_has_no_dependencies() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert "dependencies" not in chart and not (CHART / "charts").exists()
    assert chart["apiVersion"] == "v2" and chart["kubeVersion"].startswith(">=1.25")


@pytest.mark.parametrize(("resources", "processes"), [
    ({"requests": {"cpu": "100m"}}, "1"),                          # the defaults: no limit, a request
    ({"limits": {"cpu": "1500m"}, "requests": {"cpu": "100m"}}, "2"),  # the limit wins, rounded up
    ({"limits": {"cpu": 4}}, "4"),
    ({"limits": {"cpu": 0.25}}, "1"),
])
def test_processes_follow_the_cpu_resources(render, resources: dict[str, Any], processes: str) -> None:
    """The cpu_bound pool is sized from the pod's CPU (never the host's CPU count)."""
    c = node_container(render("ci/default-values.yaml", set_values={"resources": resources}))
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CORRAL_PROCESSES"] == processes, (resources, env.get("CORRAL_PROCESSES"))
    pinned = node_container(render("ci/default-values.yaml", set_values={"corral.processes": 3, "resources": resources}))
    assert {e["name"]: e.get("value") for e in pinned["env"]}["CORRAL_PROCESSES"] == "3"


def test_prometheusrule_tier_overrides(render) -> None:
    """`<alert>/<severity>` overrides one tier of CorralSchedulerLagging; `<alert>` both."""
    overrides = {"CorralSchedulerLagging": {"labels": {"team": "jobs"}},
                 "CorralSchedulerLagging/critical": {"for": "10m", "severity": "page"},
                 "CorralSchedulerLagging/warning": {"for": "5m"}}
    docs = render("ci/monitoring-values.yaml", set_values={"prometheusRule.alertOverrides": overrides})
    lagging = [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]
               if r.get("alert") == "CorralSchedulerLagging"]
    by_threshold = {r["expr"].strip().rsplit(">", 1)[1].strip(): r for r in lagging}
    assert by_threshold["30"]["for"] == "5m" and by_threshold["30"]["labels"] == {"severity": "warning", "team": "jobs"}
    assert by_threshold["300"]["for"] == "10m" and by_threshold["300"]["labels"] == {"severity": "page", "team": "jobs"}


@pytest.mark.parametrize(("values_file", "kind", "endpoints"), [
    ("ci/monitoring-values.yaml", "ServiceMonitor", "endpoints"),
    ("ci/podmonitor-values.yaml", "PodMonitor", "podMetricsEndpoints"),
])
def test_monitors_label_the_corral_cluster(render, values_file: str, kind: str, endpoints: str) -> None:
    """Every scraped series carries redis_namespace = corral.namespace: the alerts group by
    (namespace, redis_namespace), so releases of one cluster (a worker-only one too) are one."""
    for ns in ("resque", "billing"):
        monitor = one(render(values_file, set_values={"corral.namespace": ns}), kind)
        relabel = monitor["spec"][endpoints][0]["relabelings"]
        assert {"action": "replace", "targetLabel": "redis_namespace", "replacement": ns} in relabel, relabel


def test_keda_scales_on_waiting_plus_busy(render, tmp_path: Path) -> None:
    """A Prometheus trigger counts the release's busy workers plus the jobs waiting in its
    queues, so a scale-down never goes below what is running; the query parses (promtool)."""
    docs = render("ci/keda-values.yaml")
    so = one(docs, "ScaledObject")
    (prom,) = [t for t in so["spec"]["triggers"] if t["type"] == "prometheus"]
    meta = prom["metadata"]
    assert meta["serverAddress"] == "http://prometheus-operated.monitoring:9090"
    assert meta["threshold"] == "6"  # the pod's worker slots: concurrency 2 x 3 queue entries
    query = meta["query"]
    assert 'corral_workers{state="busy", namespace="jobs", helm_release="corral"}' in query
    assert 'corral_queue_length{namespace="jobs", redis_namespace="myapp", queue=~"critical|default"}' in query
    assert query.count("or vector(0)") == 2, "no pods or no queue series yet still gives a number"
    promtool = shutil.which("promtool")
    if promtool:
        rules = tmp_path / "keda.yml"
        rules.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": [{"record": "keda:q", "expr": query}]}]}))
        subprocess.run([promtool, "check", "rules", str(rules)], check=True, capture_output=True)
    # the labels the query selects on are the ones the chart's monitors put on every series
    sm = one(render("ci/monitoring-values.yaml"), "ServiceMonitor")
    targets = {r["targetLabel"] for r in sm["spec"]["endpoints"][0]["relabelings"]}
    assert {"redis_namespace", "helm_release"} <= targets
    desc = next(ln for ln in (CHART / "values.yaml").read_text().splitlines() if "@param keda.cooldownPeriod" in ln)
    assert "only when scaling to 0" in desc


def test_keda_auth_for_a_url_in_a_secret(render) -> None:
    docs = render(set_values={"redis.existingSecret": "corral-redis", "redis.existingSecretUrlKey": "url",
                              "keda.enabled": True, "keda.existingSecretAddressKey": "address",
                              "keda.prometheus.serverAddress": "http://prometheus:9090"})
    auth = {r["parameter"]: (r["name"], r["key"])
            for r in one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]}
    assert auth == {"address": ("corral-redis", "address")}
    for t in one(docs, "ScaledObject")["spec"]["triggers"]:
        if t["type"] == "redis":
            assert "address" not in t["metadata"] and t["authenticationRef"]["name"] == "corral"


def test_credentials_never_in_the_pod_spec(render) -> None:
    """A URL with a password is refused; passwords travel only as secretKeyRefs."""
    for values in ("ci/default-values.yaml", "ci/sentinel-values.yaml", "ci/keda-values.yaml"):
        for e in node_container(render(values))["env"]:
            if "PASSWORD" in e["name"] or (e["name"] == "CORRAL_REDIS_URL" and "@" in e.get("value", "")):
                assert "secretKeyRef" in e.get("valueFrom", {}), (values, e)
    docs = render(set_values={"redis.url": "redis://corral@redis:6379/0"})  # a user name alone is no secret
    assert _env(node_container(docs))["CORRAL_REDIS_URL"]["value"] == "redis://corral@redis:6379/0"


@pytest.mark.parametrize(("kube", "rendered"), [("1.25.0", False), ("1.30.0", True)])
def test_pdb_lets_unhealthy_pods_be_evicted(render, kube: str, rendered: bool) -> None:
    """AlwaysAllow: during a Redis outage every pod is NotReady, and a node drain must go on."""
    pdb = one(render("ci/default-values.yaml", kube_version=kube), "PodDisruptionBudget")
    assert pdb["spec"].get("unhealthyPodEvictionPolicy") == ("AlwaysAllow" if rendered else None)


def test_network_policy_by_default_follows_the_connection_ports(render) -> None:
    np = one(render("ci/default-values.yaml", set_values={"redis.url": "redis://redis:6380/0"}), "NetworkPolicy")
    ports = {p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]}
    assert {53, 6380} <= ports
    np = one(render("ci/sentinel-values.yaml", set_values={"redis.sentinel.hosts": ["s:26380"]}), "NetworkPolicy")
    assert 26380 in {p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]}
    (ingress,) = np["spec"]["ingress"]
    namespaces = [p["namespaceSelector"] for p in ingress["from"] if "namespaceSelector" in p]
    assert namespaces == [{"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}]


def test_helm_lint_strict_with_one_required_value(helm_bin: Path) -> None:
    """The chart's defaults plus redis.url (the README's one required value) lint clean."""
    run_helm(helm_bin, "lint", "--strict", str(CHART), "--set", "redis.url=redis://redis-master.redis.svc:6379/0")
    bare = subprocess.run([str(helm_bin), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert bare.returncode != 0 and "missing property 'set redis.url" in bare.stdout + bare.stderr, bare.stdout
