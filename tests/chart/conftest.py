"""Fixtures for the Helm chart tests: the helm binary and a renderer.

    def test_something(render):
        docs = render("ci/default-values.yaml", set_values={"replicaCount": 3})

Helm comes from `.tools/bin/helm` (installed by `scripts/install-helm.sh`): a missing binary
skips these tests on a developer's machine and fails them under CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import HELM, REPO, Doc, in_ci, render_chart


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """Path of the Helm v4 binary; skip locally when it is missing, fail under CI."""
    if not (HELM.is_file() and os.access(HELM, os.X_OK)):
        reason = f"{HELM.relative_to(REPO)} is missing (run scripts/install-helm.sh)"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so this fails instead of skipping", pytrace=False)
        pytest.skip(reason)
    return HELM


@pytest.fixture(scope="session")
def render(helm_bin: Path) -> Callable[..., list[Doc]]:
    """`render(*values_files, set_values=None, kube_version=...)` → manifests; HelmError if refused."""

    def _render(*values_files: str | Path, **kwargs: Any) -> list[Doc]:
        return render_chart(helm_bin, *values_files, **kwargs)

    return _render
