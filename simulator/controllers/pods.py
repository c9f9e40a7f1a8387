"""Pod creation, deletion and eviction: the API semantics that need more than plain storage.

``PodLifecycle`` owns pod defaults at creation, deletion with preconditions and graceful termination,
and the eviction subresource, checked against disruption budgets in the order the real API server
checks it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from simulator.controllers.admission import Admission
from simulator.controllers.common import (
    PODS,
    check_preconditions,
)
from simulator.controllers.disruption import DisruptionBudgets
from simulator.controllers.processes import PodProcesses
from simulator.controllers.state import ClusterState
from simulator.indexes import (
    is_ready,
    is_terminal,
    is_terminating,
)
from simulator.k8s.errors import ApiError, bad_request, invalid


class PodLifecycle:
    """Pod creation, graceful deletion and the eviction subresource.

    A pod created goes through ``admission``; a deletion or eviction is checked against ``budgets``;
    a pod that runs as a local process is stopped by ``processes``."""

    def __init__(
        self, state: ClusterState, admission: Admission, budgets: DisruptionBudgets, processes: PodProcesses
    ):
        self.state = state
        self.admission = admission
        self.budgets = budgets
        self.processes = processes

    def create_pod(self, pod: dict) -> dict:
        # the store keeps a deep copy; here only the top level and spec are changed
        spec = dict(pod.get("spec") or {})
        pod = {**pod, "spec": spec}
        if not spec.get("containers"):
            raise invalid("Pod", pod["metadata"].get("name", ""), "spec.containers", "Required value")
        pod = self.admission.admit_pod(pod)
        spec = pod["spec"]
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        tolerations = list(spec.get("tolerations", []))
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(
                t.get("key") == key or (t.get("operator") == "Exists" and not t.get("key"))
                for t in tolerations
            ):
                tolerations.append(
                    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                )
        spec["tolerations"] = tolerations
        pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        return self.state.store.create(PODS, pod)

    def delete_pod(
        self,
        namespace: str,
        name: str,
        grace: int | None,
        preconditions: dict | None,
        through_eviction: bool = False,
    ) -> dict:
        pod = self.state.store.must_get(PODS, namespace, name)
        check_preconditions(pod, preconditions, "pods")
        if not through_eviction and not is_terminating(pod):
            self.budgets.count_violation_if_covered(pod, cause="pod deleted directly")
        if through_eviction:
            self.state.record("pod_evicted", pod["spec"].get("nodeName"), pod=f"{namespace}/{name}")
        else:
            self.state.record("pod_deleted", pod["spec"].get("nodeName"), pod=f"{namespace}/{name}")
        return self.start_graceful_delete(pod, grace)

    def start_graceful_delete(self, pod: dict, grace: int | None) -> dict:
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        meta = pod["metadata"]
        node = pod["spec"].get("nodeName")
        host = self.state.hosts.get(node) if node else None
        running = (
            host is not None
            and host.state == "up"
            and not is_terminal(pod)
            and pod.get("status", {}).get("phase") != "Pending"
        )
        if grace <= 0 or not running:
            return self.state.store.remove(PODS, meta["namespace"], meta["name"])
        if is_terminating(pod):
            return pod
        stamp = datetime.now(UTC) + timedelta(seconds=grace * self.state.scale)
        pod = self.state.store.update_internal(
            PODS,
            {
                **pod,
                "metadata": {
                    **meta,
                    "deletionTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "deletionGracePeriodSeconds": grace,
                },
            },
        )
        uid = meta["uid"]

        def finish() -> None:
            current = self.state.store.get(PODS, meta["namespace"], meta["name"])
            if current is not None and current["metadata"]["uid"] == uid:
                self.state.store.remove(PODS, meta["namespace"], meta["name"])

        if not self.processes.terminate(pod, grace, finish):
            # the kubelet sends SIGTERM; a well-behaved container exits within a fraction of its grace period
            self.state.after(min(grace, max(1.0, grace / 2)), finish)
        return pod

    def evict(self, namespace: str, name: str, body: dict) -> None:
        """The eviction subresource, checked in the order the real API server checks it."""
        body_name = (body.get("metadata") or {}).get("name")
        if body_name != name:
            raise bad_request(f"name in URL does not match name in Eviction object: {body_name}/{name}")
        pod = self.state.store.must_get(PODS, namespace, name)
        options = body.get("deleteOptions") or {}
        grace = options.get("gracePeriodSeconds")
        preconditions = options.get("preconditions")
        if is_terminal(pod) or pod.get("status", {}).get("phase") == "Pending" or is_terminating(pod):
            self.delete_pod(namespace, name, grace, preconditions, through_eviction=True)
            return
        pdbs = self.budgets.pdbs_for(pod, for_eviction=True)
        if len(pdbs) > 1:
            raise ApiError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the "
                "eviction subresource does not support.",
            )
        if pdbs:
            pdb = pdbs[0]
            status = self.budgets.pdb_status(pdb)
            policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            unhealthy = not is_ready(pod)
            if unhealthy and (
                policy == "AlwaysAllow" or status["currentHealthy"] >= status["desiredHealthy"]
            ):
                self.delete_pod(namespace, name, grace, preconditions, through_eviction=True)
                return
            if unhealthy or status["disruptionsAllowed"] <= 0:
                pdb_name = pdb["metadata"]["name"]
                raise ApiError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {
                        "causes": [
                            {
                                "reason": "DisruptionBudget",
                                "message": f"The disruption budget {pdb_name} needs {status['desiredHealthy']} "
                                f"healthy pods and has {status['currentHealthy']} currently",
                            }
                        ]
                    },
                )
        self.delete_pod(namespace, name, grace, preconditions, through_eviction=True)
