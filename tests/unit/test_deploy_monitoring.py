"""The monitoring package in deploy/: Prometheus rules, their unit tests, the scrape config and the
Grafana dashboard.

- promtool (Debian's, /usr/bin/promtool) checks the rules, runs rules_test.yml and checks the
  config; without promtool those tests skip locally and fail when CI is set.
- Every metric named by a rule, a rule test's input series, a dashboard query, variable or
  annotation must be one the node exports: `node.metrics.METRIC_NAMES` (counters with `_total`,
  histograms by base name). If `node.metrics` does not import, a list built from docs/INTERFACE.md §4 and the
  Corral extras stands in locally; under CI that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "corral-dashboard.json"
README = DEPLOY / "README.md"

IN_CI = bool(os.environ.get("CI"))

# Only when node.metrics does not import (and never under CI): docs/INTERFACE.md §4 plus the Corral extras.
FALLBACK_METRIC_NAMES = frozenset(
    {
        "corral_jobs_processed_total",
        "corral_jobs_failed_total",
        "corral_job_duration_seconds",
        "corral_job_wait_seconds",
        "corral_queue_length",
        "corral_delayed_jobs",
        "corral_failed_jobs",
        "corral_is_leader",
        "corral_leader_epoch",
        "corral_leader_transitions_total",
        "corral_scheduler_lag_seconds",
        "corral_workers",
        "corral_jobs_recovered_total",
        "corral_redis_errors_total",
        # extras
        "corral_node_info",
        "corral_stale_leader_writes_total",
        "corral_oldest_job_age_seconds",
        "corral_cluster_members",
        "corral_node_heartbeat_age_seconds",
    }
)

# What the dashboard must show (the panels the observability issue asks for).
DASHBOARD_REQUIRED_METRICS = FALLBACK_METRIC_NAMES - {"corral_node_info", "corral_cluster_members"}

METRIC_TOKEN = re.compile(r"corral_[a-z_]+")
SERIES_SUFFIX = re.compile(r"_(bucket|sum|count)$")
SEVERITIES = {"critical", "warning", "info"}


def metric_names(expr: str) -> set[str]:
    """`corral_*` names in a PromQL string, histogram series reduced to their family name."""
    return {SERIES_SUFFIX.sub("", token) for token in METRIC_TOKEN.findall(expr)}


def _import_metric_names() -> frozenset[str] | None:
    try:
        from node.metrics import METRIC_NAMES
    except ImportError:
        return None
    return frozenset(METRIC_NAMES)


@pytest.fixture(scope="module")
def exported() -> frozenset[str]:
    names = _import_metric_names()
    if names is not None:
        return names
    if IN_CI:
        pytest.fail("node.metrics (METRIC_NAMES) does not import; CI checks against the node's list")
    return FALLBACK_METRIC_NAMES


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        if IN_CI:
            pytest.fail("promtool is missing (Debian package `prometheus`)")
        pytest.skip("promtool is not installed")
    return path


def run_promtool(promtool: str, *args: str) -> str:
    proc = subprocess.run([promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    """Every PromQL string in the dashboard: panel targets, query variables, annotations."""
    exprs = [t["expr"] for p in all_panels(dash["panels"]) for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def substitute_variables(expr: str) -> str:
    """A dashboard expression as Prometheus would receive it, for a syntax check."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    return re.sub(r"\$\{?(namespace|cluster|job|node|queue)\}?", ".*", expr)


# ---- promtool ------------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    out = run_promtool(promtool, "check", "rules", str(RULES.relative_to(ROOT)))
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_promtool_test_rules(promtool: str) -> None:
    out = run_promtool(promtool, "test", "rules", str(RULES_TEST.relative_to(ROOT)))
    assert "SUCCESS" in out


def test_promtool_check_config(promtool: str) -> None:
    out = run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))
    assert "1 rule files found" in out


def test_dashboard_exprs_parse(promtool: str, tmp_path: Path) -> None:
    exprs = [e for e in dashboard_exprs(dashboard()) if not e.startswith("label_values(")]
    rule_file = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:expr_{i}", "expr": substitute_variables(e)} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rule_file), encoding="utf-8")
    run_promtool(promtool, "check", "rules", str(path))


# ---- rules -----------------------------------------------------------------------------------------


def test_node_metrics_exports_metric_names() -> None:
    names = _import_metric_names()
    if names is None:
        if IN_CI:
            pytest.fail("node.metrics.METRIC_NAMES does not import")
        pytest.skip("node.metrics does not import yet; name checks use the fallback list")
    assert names, "METRIC_NAMES is empty"
    assert all(n.startswith("corral_") for n in names)


def test_rules_name_only_exported_metrics(exported: frozenset[str]) -> None:
    unknown = {rule.get("alert") or rule["record"]: sorted(metric_names(rule["expr"]) - exported) for rule in rules()}
    assert {k: v for k, v in unknown.items() if v} == {}


def test_rule_tests_feed_only_exported_metrics(exported: frozenset[str]) -> None:
    series = [s["series"] for case in load_yaml(RULES_TEST)["tests"] for s in case.get("input_series", [])]
    unknown = {name for s in series for name in metric_names(s.split("{", 1)[0])} - exported
    assert unknown == set()


def test_alerts_have_severity_annotations_and_runbook() -> None:
    readme = README.read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (\S+)$", readme, re.MULTILINE))
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"Corral[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        assert annotations["runbook"] == f"deploy/README.md#{name.lower()}", name
        assert name in headings, f"deploy/README.md has no '### {name}' runbook section"
        assert f"[{name}](#{name.lower()})" in readme, f"{name} is missing from the README alert table"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"


def test_leader_alerts_cover_absence() -> None:
    no_leader = next(rule for rule in alerts() if rule["alert"] == "CorralNoLeader")
    assert "absent(corral_node_info)" in no_leader["expr"]


def test_no_leader_pages_only_where_a_node_may_lead() -> None:
    """A worker-only release (corral_leader_candidate 0) never pages for a missing leader; the
    promtool cases prove it with a worker-only release next to a scheduler release."""
    no_leader = next(rule for rule in alerts() if rule["alert"] == "CorralNoLeader")
    assert "corral_leader_candidate" in no_leader["expr"]
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    worker_only = [c for c in cases if "worker-only" in c["name"]]
    assert worker_only, "a promtool case with a worker-only release"
    series = " ".join(s["series"] for c in worker_only for s in c["input_series"])
    assert "corral_leader_candidate" in series and "corral-workers" in series and 'job="corral"' in series
    assert all(t["exp_alerts"] == [] for c in worker_only for t in c["alert_rule_test"])


def test_rules_group_per_corral_cluster() -> None:
    """Per Corral cluster = (namespace, redis_namespace), never per scrape job (a Service name)."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for by in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
                labels = {label.strip() for label in by.split(",")}
                assert {"namespace", "redis_namespace"} <= labels and "job" not in labels, \
                    (rule.get("alert") or rule.get("record"), by)


# ---- dashboard -------------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] and dash["title"]
    panels = list(all_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        grid = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), p["id"]
        assert grid["w"] > 0 and grid["h"] > 0 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, p["id"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap"
                cells[(x, y)] = p["id"]


def test_dashboard_datasource_and_variables() -> None:
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    node = variables["node"]
    query = node["query"]["query"] if isinstance(node["query"], dict) else node["query"]
    assert re.fullmatch(r"label_values\(corral_node_info(\{[^}]*\})?, node\)", query), query
    ds = {"type": "prometheus", "uid": "${datasource}"}
    for p in all_panels(dash["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == ds, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ds, p["title"]
            assert t["expr"].strip(), p["title"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == ds, v["name"]
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == ds, a["name"]


def test_dashboard_names_only_exported_metrics(exported: frozenset[str]) -> None:
    unknown = {e: sorted(metric_names(e) - exported) for e in dashboard_exprs(dashboard())}
    assert {e: v for e, v in unknown.items() if v} == {}


def test_dashboard_shows_every_required_metric() -> None:
    exprs = dashboard_exprs(dashboard())
    shown = set().union(*(metric_names(e) for e in exprs))
    assert DASHBOARD_REQUIRED_METRICS - shown == set()
    for histogram in ("corral_job_duration_seconds", "corral_job_wait_seconds"):
        assert any("histogram_quantile(" in e and f"{histogram}_bucket" in e for e in exprs), (
            f"no quantile panel over {histogram}_bucket"
        )


def test_cluster_wide_gauges_are_never_summed() -> None:
    """Every node exports the cluster-wide gauges with the same value: sum() would multiply them."""
    cluster_wide = (
        "corral_queue_length|corral_oldest_job_age_seconds|corral_delayed_jobs|corral_failed_jobs"
        "|corral_scheduler_lag_seconds|corral_cluster_members|corral_leader_epoch"
    )
    summed = re.compile(rf"\bsum\b\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*({cluster_wide})\b")
    exprs = [rule["expr"] for rule in rules()] + dashboard_exprs(dashboard())
    assert [e for e in exprs if summed.search(e)] == []


def test_dashboard_selects_one_cluster() -> None:
    """A namespace and a cluster (Redis namespace) variable narrow every query, so two releases
    of the same name in two namespaces never merge; joins match on the namespace too."""
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name, label in (("namespace", "namespace"), ("cluster", "redis_namespace")):
        query = variables[name]["query"]["query"]
        assert query.startswith("label_values(corral_node_info") and query.endswith(f", {label})"), query
        assert not variables[name]["includeAll"] and not variables[name]["multi"], name
    narrowing = {variables[n]["query"]["query"] for n in ("namespace", "cluster", "job")}
    for expr in set(dashboard_exprs(dash)) - narrowing:
        for selector in re.findall(r"corral_\w+\{([^}]*)\}", expr):
            assert 'namespace=~"$namespace"' in selector and 'redis_namespace=~"$cluster"' in selector, expr
        for on in re.findall(r"\bon \(([^)]*)\)", expr):
            assert "namespace" in on, expr
