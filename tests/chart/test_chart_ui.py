"""The chart's dashboard values (`ui:`; templates/ui-ingress.yaml), rendered without a cluster.

- Defaults: the dashboard is on, read-only (no token env), payloads off, no Ingress.
- The token comes from an existing Secret as CORRAL_UI_TOKEN (secretKeyRef, never a literal),
  and the node accepts every env the chart sets for it.
- The Ingress routes only /ui to the Service's http port (not /metrics, /status, /leader), with
  class, host, TLS and annotations; with the NetworkPolicy on, the ingress controller's
  namespaces may reach the HTTP port; both validate against the Kubernetes schemas.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from chart_helpers import FULLNAME, KUBE_VERSIONS, Doc, node_container, of_kind, one

from node.config import NodeConfig

BASE = "ci/default-values.yaml"


def _env(docs: list[Doc]) -> dict[str, Any]:
    return {e["name"]: e for e in node_container(docs)["env"]}


def test_defaults_read_only_dashboard_without_ingress(render: Any) -> None:
    docs = render(BASE)
    env = _env(docs)
    assert env["CORRAL_UI"]["value"] == "true" and env["CORRAL_STATUS_PAYLOADS"]["value"] == "false"
    assert "CORRAL_UI_TOKEN" not in env
    assert of_kind(docs, "Ingress") == []
    assert [d for d in of_kind(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-ui")] == []


def test_token_from_an_existing_secret_and_the_node_accepts_the_env(render: Any) -> None:
    docs = render(BASE, set_values={"ui.token.existingSecret": "corral-ui", "ui.token.key": "token",
                                    "ui.payloads": True})
    env = _env(docs)
    assert env["CORRAL_UI_TOKEN"] == {"name": "CORRAL_UI_TOKEN",
                                      "valueFrom": {"secretKeyRef": {"name": "corral-ui", "key": "token"}}}
    assert env["CORRAL_STATUS_PAYLOADS"]["value"] == "true"
    # the node reads these variables as its options (a literal stands in for the Secret's value)
    cfg = NodeConfig.from_sources({}, {"CORRAL_UI": env["CORRAL_UI"]["value"],
                                       "CORRAL_STATUS_PAYLOADS": env["CORRAL_STATUS_PAYLOADS"]["value"],
                                       "CORRAL_UI_TOKEN": "x" * 32})
    assert cfg.ui and cfg.status_payloads and cfg.dashboard_token() == "x" * 32


def test_ingress_exposes_only_the_dashboard(render: Any) -> None:
    values = {"ui.ingress.enabled": True, "ui.ingress.className": "nginx", "ui.ingress.host": "jobs.example.com",
              "ui.ingress.tls[0].secretName": "jobs-tls", "ui.ingress.tls[0].hosts[0]": "jobs.example.com",
              "ui.ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/whitelist-source-range": "10.0.0.0/8",
              "networkPolicy.enabled": True}
    for kube in KUBE_VERSIONS:
        docs = render(BASE, set_values=values, kube_version=kube)
        ing = one(docs, "Ingress")
        assert ing["metadata"]["name"] == f"{FULLNAME}-ui"
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert ing["spec"]["tls"] == [{"secretName": "jobs-tls", "hosts": ["jobs.example.com"]}]
        assert ing["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8"}
        (rule,) = ing["spec"]["rules"]
        assert rule["host"] == "jobs.example.com"
        assert rule["http"]["paths"] == [{"path": "/ui", "pathType": "Prefix", "backend": {
            "service": {"name": FULLNAME, "port": {"name": "http"}}}}]
        svc = one(docs, "Service")
        assert svc["metadata"]["name"] == FULLNAME and any(p["name"] == "http" for p in svc["spec"]["ports"])
        (pol,) = [d for d in of_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == f"{FULLNAME}-ui"]
        assert pol["spec"]["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}], "ports": [{"protocol": "TCP", "port": "http"}]}]
        assert pol["spec"]["podSelector"] == one(docs, "Deployment")["spec"]["selector"]
        for doc in (ing, pol):
            kubernetes_validate.validate(doc, kube, strict=True)  # raises ValidationError
    # the dashboard off: no Ingress even when asked for one
    docs = render(BASE, set_values={**values, "ui.enabled": False})
    assert of_kind(docs, "Ingress") == [] and _env(docs)["CORRAL_UI"]["value"] == "false"
