"""A run inside the cluster it maintains (``in_cluster``): the node its own pod runs on.

That node is never drained from under the run, which would evict the run's own pod and kill it. It is
taken last, cordoned with its reboot slot, and handed over to a follow-up run of the same deployment.
The follow-up's pod cannot be scheduled on the cordoned node, so it lands on another node and reboots
this one. No Prefect here: the flow gives the lifecycle the function that starts the follow-up.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from aksmaint.errors import ClusterAccessError
from aksmaint.kube import Kube, describe_api_error

# where Kubernetes mounts the pod's service account: the namespace file names the pod's namespace
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# the pod's name: the downward API variable if the job template sets it, else the container's host name
POD_NAME_VARIABLES = ("AKSMAINT_POD_NAME", "POD_NAME", "HOSTNAME")


@dataclass(frozen=True)
class OwnPod:
    namespace: str
    name: str
    node: str

    def describe(self) -> str:
        return f"pod {self.namespace}/{self.name} on node {self.node}"


def own_pod(kube: Kube, namespace_file: Path = NAMESPACE_FILE) -> OwnPod:
    """The pod this process runs in, read from the API: its node comes from the scheduler's binding.
    Raises ClusterAccessError when it cannot be told, because guessing could drain the run's own node."""
    try:
        namespace = namespace_file.read_text().strip()
    except OSError as exc:
        raise ClusterAccessError(
            f"in_cluster: cannot tell which pod this run is ({namespace_file}: {exc.strerror}); "
            "is the flow running in a pod?"
        ) from exc
    name = next((v for k in POD_NAME_VARIABLES if (v := os.environ.get(k, "").strip())), "")
    name = name or socket.gethostname()
    try:
        pod = kube.call(kube.core.read_namespaced_pod, name, namespace)
    except ApiException as exc:
        raise ClusterAccessError(
            f"in_cluster: cannot read this run's pod {namespace}/{name} to find its node "
            f"({describe_api_error(exc)}); the flow's service account needs get on pods in {namespace}"
        ) from exc
    node = (pod.spec.node_name if pod.spec else None) or ""
    if not node:
        raise ClusterAccessError(f"in_cluster: this run's pod {namespace}/{name} is not bound to a node")
    return OwnPod(namespace, name, node)
