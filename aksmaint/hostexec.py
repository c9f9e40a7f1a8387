"""Running commands on a node's host through a short-lived privileged pod.

The pod is pinned to the node, tolerates every taint, shares the host's PID namespace and runs
``nsenter --target 1 --mount --uts --ipc --net --pid -- sh -c <script>``: the script runs as if on the
node itself. Nothing needs to be installed on the cluster beforehand.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes.client import V1Pod
from kubernetes.client.exceptions import ApiException

from aksmaint.errors import HostCommandError, HostPodGone
from aksmaint.kube import Kube, meta

MANAGED_BY = "aks-node-maintenance"
PURPOSE_LABEL = "aksmaint.io/purpose"
NODE_LABEL = "aksmaint.io/node"
NSENTER = ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--"]


@dataclass(frozen=True)
class HostPodSettings:
    namespace: str
    image: str


@dataclass(frozen=True)
class HostResult:
    node: str
    exit_code: int
    output: str


def host_pod_manifest(node: str, argv: list[str], purpose: str, settings: HostPodSettings) -> dict:
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    name = f"aksmaint-{purpose}-{digest}-{secrets.token_hex(3)}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, PURPOSE_LABEL: purpose, NODE_LABEL: node},
        },
        "spec": {
            "nodeName": node,
            "hostPID": True,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "host",
                    "image": settings.image,
                    "command": NSENTER + argv,
                    "securityContext": {"privileged": True},
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                }
            ],
        },
    }


def start_host_pod(kube: Kube, node: str, argv: list[str], purpose: str, settings: HostPodSettings) -> str:
    """Create the host pod and return its name (without waiting for it)."""
    manifest = host_pod_manifest(node, argv, purpose, settings)
    kube.call(kube.core.create_namespaced_pod, settings.namespace, manifest)
    return manifest["metadata"]["name"]


def delete_host_pod(kube: Kube, name: str, settings: HostPodSettings) -> None:
    try:
        kube.call(kube.core.delete_namespaced_pod, name, settings.namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise


@contextlib.contextmanager
def _gone_as_error(purpose: str, node: str, name: str, settings: HostPodSettings):
    """A 404 for the host pod means it was deleted under us: say so (HostPodGone)."""
    try:
        yield
    except ApiException as exc:
        if exc.status != 404:
            raise
        raise HostPodGone(
            f"{purpose} pod {settings.namespace}/{name} on node {node} disappeared before its result was "
            "read (the node rebooted, or the pod was deleted)"
        ) from exc


def run_on_host(
    kube: Kube,
    node: str,
    script: str,
    purpose: str,
    settings: HostPodSettings,
    timeout: float = 300,
    poll: float = 0.25,
) -> HostResult:
    """Run a shell script on the node's host and return its exit code and output."""
    name = start_host_pod(kube, node, ["sh", "-c", script], purpose, settings)
    try:
        deadline = time.monotonic() + timeout
        pause = min(poll, 0.1)  # a short script is often done in well under a poll: look early, then back off
        while True:
            with _gone_as_error(purpose, node, name, settings):
                pod = kube.call(kube.core.read_namespaced_pod, name, settings.namespace)
            phase = pod.status.phase if pod.status else None
            if phase in ("Succeeded", "Failed"):
                break
            if time.monotonic() > deadline:
                raise HostCommandError(
                    f"{purpose} on node {node} did not finish within {timeout:.0f}s "
                    f"(pod {settings.namespace}/{name} is {phase})"
                )
            time.sleep(pause)
            pause = min(poll, pause * 2)
        exit_code = 0
        assert pod.status is not None  # its phase ended the wait
        for status in pod.status.container_statuses or []:
            if status.state and status.state.terminated:
                exit_code = status.state.terminated.exit_code
        with _gone_as_error(purpose, node, name, settings):
            output = kube.call(kube.core.read_namespaced_pod_log, name, settings.namespace)
        return HostResult(node, exit_code, output or "")
    finally:
        delete_host_pod(kube, name, settings)


def _finished_before(pod: V1Pod, now: datetime, older_than_seconds: float) -> str | None:
    """The pod's name when it has finished and was created more than ``older_than_seconds`` ago."""
    if not pod.status or pod.status.phase not in ("Succeeded", "Failed"):
        return None
    metadata = meta(pod)
    created = metadata.creation_timestamp
    if created and (now - created).total_seconds() > older_than_seconds:
        return metadata.name
    return None


def delete_stale_host_pods(
    kube: Kube, settings: HostPodSettings, older_than_seconds: float = 600
) -> list[str]:
    """Delete finished host pods a killed run left behind (a live run reads and deletes its own in seconds)."""
    pods = kube.call(
        kube.core.list_namespaced_pod,
        settings.namespace,
        label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}",
    ).items
    now = datetime.now(UTC)
    stale = [name for p in pods if (name := _finished_before(p, now, older_than_seconds))]
    for name in stale:
        delete_host_pod(kube, name, settings)
    return stale
