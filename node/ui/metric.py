"""The dashboard's one metric, `corral_ui_actions_total`. A node registers it at start, so /metrics
shows it from the first scrape, while the dashboard itself is built on its first request
(node/runtime.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


def actions_counter(registry: CollectorRegistry) -> Counter:
    return Counter("corral_ui_actions", "dashboard actions by outcome (ok, refused, failed)", ["action", "outcome"],
                   registry=registry)
