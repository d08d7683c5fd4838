"""`corral_leader_candidate` says which nodes may lead, so the alerts can tell a worker-only
release (never leads, must never page for a missing leader) from a cluster without a leader."""

from __future__ import annotations

from tests.support import wait_until
from tests.support.nodes import NodeCluster


def test_leader_candidate_gauge(node_cluster: NodeCluster) -> None:
    lead = node_cluster.add("may-lead").wait_ready(30)
    work = node_cluster.add("worker-only", extra_args=["--no-scheduler"]).wait_ready(30)
    wait_until(lead.is_leader, 10, message="the candidate leads")
    assert lead.metric("corral_leader_candidate") == 1 and lead.metric("corral_is_leader") == 1
    assert work.metric("corral_leader_candidate") == 0 and work.metric("corral_is_leader") == 0
