"""The discovery documents of the simulated Kubernetes API: ``/version``, ``/api``, ``/apis`` and the
resource lists of each group version, in the legacy (unaggregated) form every client understands;
the documents themselves are built from the resource registry in ``resources``."""

from __future__ import annotations

import re

from simulator.k8s import resources

_GROUP_PATH = re.compile(r"^/apis/([^/]+)(?:/([^/]+))?$")


def discovery_document(path: str, kubernetes_version: str) -> dict | None:
    """Legacy (unaggregated) discovery documents, which every client understands."""
    if path == "/version":
        major, minor, _ = kubernetes_version.split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{kubernetes_version}",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
    if path == "/api":
        return resources.api_versions()
    if path == "/api/v1":
        return resources.api_resource_list("", "v1")
    if path == "/apis":
        return resources.api_group_list()
    match = _GROUP_PATH.match(path)
    if match:
        group, version = match.groups()
        return resources.api_resource_list(group, version) if version else resources.api_group(group)
    return None
