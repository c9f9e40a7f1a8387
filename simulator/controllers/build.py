"""Building the cluster from the scenario.

``ScenarioBuilder`` owns the initial namespaces, each node as AKS makes it (host, labels, addresses,
conditions, heartbeat Lease) and the scenario's workloads with their budgets.
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from simulator.controllers.common import (
    DAEMONSETS,
    DEPLOYMENTS,
    LEASES,
    NAMESPACES,
    NODE_LEASE_NS,
    NODE_LEASE_SECONDS,
    NODES,
    OS_LABEL,
    PDBS,
    UNSCHEDULABLE_TAINT_KEY,
    microtime,
    node_name,
    windows_build,
)
from simulator.controllers.pods import PodLifecycle
from simulator.controllers.state import ClusterState
from simulator.hosts import Host
from simulator.k8s.store import now_rfc3339
from simulator.scenario import NodeSpec, PoolSpec, WorkloadSpec


class ScenarioBuilder:
    """Creates the scenario's namespaces, nodes and workloads in the store; ``pod_lifecycle`` creates its bare pods."""

    def __init__(self, state: ClusterState, pod_lifecycle: PodLifecycle):
        self.state = state
        self.pod_lifecycle = pod_lifecycle

    def build(self) -> None:
        sc = self.state.scenario
        namespaces = {"default", "kube-system", "kube-public", NODE_LEASE_NS}
        namespaces |= {w.namespace for w in sc.workloads}
        for ns in sorted(namespaces):
            self.state.store.create(
                NAMESPACES,
                {
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
        overrides = {(n.pool, n.index): n for n in sc.nodes}
        for pool in sc.pools:
            for index in range(pool.count):
                self.add_node(pool, index, overrides.get((pool.name, index)))
        for w in sc.workloads:
            self._add_workload(w)

    def _node_name(self, pool: str, index: int) -> str:
        spec = next(p for p in self.state.scenario.pools if p.name == pool)
        return node_name(self.state.scenario.cluster.name, pool, index, windows=spec.windows)

    def add_node(self, pool: PoolSpec, index: int, spec: NodeSpec | None) -> None:
        """A node of ``pool`` at VMSS ``index``: its host, its Node object and its heartbeat Lease."""
        name = node_name(self.state.scenario.cluster.name, pool.name, index, windows=pool.windows)
        host = self._add_host(pool, name, spec)
        node = self._node_object(pool, index, host, self._node_labels(pool, index, name, spec))
        if spec is not None and spec.cordoned:
            node["spec"]["unschedulable"] = True
            node["spec"]["taints"] = [
                {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule", "timeAdded": now_rfc3339()}
            ]
        node = self.state.store.create(NODES, node)
        self._add_node_lease(name, node["metadata"]["uid"])

    def _add_host(self, pool: PoolSpec, name: str, spec: NodeSpec | None) -> Host:
        """The VM behind a node, with the scenario's per-node overrides (sentinel, kernels, packages)."""
        host = Host(
            node_name=name,
            pool=pool.name,
            running_kernel=pool.kernel,
            os_image=pool.os_image,
            boot_seconds=pool.boot_seconds,
            os_type=pool.os_type,
        )
        if spec is not None:
            host.reboot_required = spec.reboot_required
            host.pending_kernel = spec.pending_kernel
            host.upgradable_packages = spec.upgradable_packages
            host.available_kernel = spec.available_kernel
            host.fail_after_reboot = spec.fail_after_reboot
        self.state.hosts[name] = host
        self.state.pool_of[name] = pool
        return host

    def _node_labels(self, pool: PoolSpec, index: int, name: str, spec: NodeSpec | None) -> dict[str, str]:
        """The labels AKS puts on a node of ``pool``, plus the scenario's own for this node."""
        sc = self.state.scenario
        zone = pool.zones[index % len(pool.zones)] if pool.zones else "0"
        region_zone = f"{sc.cluster.location}-{zone}" if pool.zones else "0"
        os = "windows" if pool.windows else "linux"
        labels = {
            "agentpool": pool.name,
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/instance-type": pool.vm_size,
            "beta.kubernetes.io/os": os,
            "failure-domain.beta.kubernetes.io/region": sc.cluster.location,
            "failure-domain.beta.kubernetes.io/zone": region_zone,
            "kubernetes.azure.com/agentpool": pool.name,
            "kubernetes.azure.com/cluster": f"MC_{sc.cluster.resource_group}_{sc.cluster.name}_"
            f"{sc.cluster.location}",
            "kubernetes.azure.com/mode": pool.mode.lower(),
            "kubernetes.azure.com/node-image-version": pool.node_image_version,
            "kubernetes.azure.com/os-sku": "Windows2022" if pool.windows else "Ubuntu",
            "kubernetes.azure.com/role": "agent",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            OS_LABEL: os,
            "kubernetes.io/role": "agent",
            "node.kubernetes.io/instance-type": pool.vm_size,
            "topology.kubernetes.io/region": sc.cluster.location,
            "topology.kubernetes.io/zone": region_zone,
        }
        if pool.windows:
            labels["node.kubernetes.io/windows-build"] = windows_build(pool.kernel)
        if spec is not None:
            labels.update(spec.labels)
        return labels

    def _node_object(self, pool: PoolSpec, index: int, host: Host, labels: dict[str, str]) -> dict[str, Any]:
        """The Node object of a new host; its address and pod CIDR follow the host count."""
        sc = self.state.scenario
        name = host.node_name
        ip = str(ipaddress.ip_address("10.224.0.4") + len(self.state.hosts) - 1)
        node_rg = f"MC_{sc.cluster.resource_group}_{sc.cluster.name}_{sc.cluster.location}"
        vmss = name[:-6] if pool.windows else name.rsplit("vmss", 1)[0] + "vmss"
        return {
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": {
                "podCIDR": f"10.244.{len(self.state.hosts) - 1}.0/24",
                "providerID": f"azure:///subscriptions/{sc.cluster.subscription_id}/resourceGroups/"
                f"{node_rg.lower()}/providers/Microsoft.Compute/virtualMachineScaleSets/"
                f"{vmss}/virtualMachines/{index}",
            },
            "status": self._node_status(pool, host, ip),
        }

    def _node_status(self, pool: PoolSpec, host: Host, ip: str) -> dict[str, Any]:
        """A new node's status: capacity, Ready conditions, addresses and node info."""
        name = host.node_name
        return {
            "capacity": {
                "cpu": "4",
                "memory": "16374584Ki",
                "pods": str(pool.max_pods),
                "ephemeral-storage": "129886128Ki",
            },
            "allocatable": {
                "cpu": "3860m",
                "memory": "12880184Ki",
                "pods": str(pool.max_pods),
                "ephemeral-storage": "119703055367",
            },
            "conditions": node_conditions(ready="True"),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": uuid.uuid4().hex,
                "systemUUID": str(uuid.uuid4()),
                "bootID": host.boot_id,
                "kernelVersion": host.running_kernel,
                "osImage": pool.os_image,
                "containerRuntimeVersion": pool.container_runtime,
                "kubeletVersion": f"v{pool.orchestrator_version}",
                "kubeProxyVersion": f"v{pool.orchestrator_version}",
                "operatingSystem": "windows" if pool.windows else "linux",
                "architecture": "amd64",
            },
        }

    def _add_node_lease(self, name: str, node_uid: str) -> None:
        """The node's heartbeat Lease in kube-node-lease, owned by the Node; it is renewed from now on."""
        now = datetime.now(UTC)
        self.state.heartbeat_from[name] = now
        self.state.store.create(
            LEASES,
            {
                "metadata": {
                    "name": name,
                    "namespace": NODE_LEASE_NS,
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
                },
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": NODE_LEASE_SECONDS,
                    "renewTime": microtime(now),
                },
            },
        )

    def _pod_template(self, w: WorkloadSpec) -> dict:
        container: dict[str, Any] = {
            "name": w.name,
            "image": w.image,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }
        if w.ready_seconds:
            container["readinessProbe"] = {
                "httpGet": {"path": "/", "port": 80},
                "initialDelaySeconds": math.ceil(w.ready_seconds),
                "periodSeconds": 1,
            }
        spec: dict[str, Any] = {
            "containers": [container],
            "terminationGracePeriodSeconds": w.termination_grace_seconds,
            "restartPolicy": "Always",
        }
        if w.tolerations:
            spec["tolerations"] = w.tolerations
        if w.node_selector:
            spec["nodeSelector"] = dict(w.node_selector)
        if w.empty_dir:
            spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
            container["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
        return {"metadata": {"labels": dict(w.labels)}, "spec": spec}

    def _add_workload(self, w: WorkloadSpec) -> None:
        template = self._pod_template(w)
        selector = {"matchLabels": dict(w.labels)}
        meta = {"name": w.name, "namespace": w.namespace, "labels": dict(w.labels)}
        if w.kind == "Deployment":
            self.state.store.create(
                DEPLOYMENTS,
                {
                    "metadata": meta,
                    "spec": {
                        "replicas": w.replicas,
                        "selector": selector,
                        "template": template,
                        "strategy": {
                            "type": "RollingUpdate",
                            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                        },
                    },
                    "status": {},
                },
            )
        elif w.kind == "DaemonSet":
            self.state.store.create(
                DAEMONSETS,
                {
                    "metadata": meta,
                    "spec": {
                        "selector": selector,
                        "template": template,
                        "updateStrategy": {"type": "RollingUpdate"},
                    },
                    "status": {},
                },
            )
        else:
            pod = {"metadata": meta, "spec": template["spec"]}
            if w.node is not None:
                pod["spec"]["nodeName"] = self._node_name(w.node.pool, w.node.index)
            self.pod_lifecycle.create_pod(pod)
        if w.pdb is not None:
            spec: dict = {"selector": selector}
            if w.pdb.min_available is not None:
                spec["minAvailable"] = w.pdb.min_available
            else:
                spec["maxUnavailable"] = w.pdb.max_unavailable
            if w.pdb.unhealthy_pod_eviction_policy:
                spec["unhealthyPodEvictionPolicy"] = w.pdb.unhealthy_pod_eviction_policy
            self.state.store.create(
                PDBS, {"metadata": {"name": w.name, "namespace": w.namespace}, "spec": spec, "status": {}}
            )


def node_conditions(
    ready: str, reason: str = "KubeletReady", message: str = "kubelet is posting ready status"
) -> list[dict]:
    stamp = now_rfc3339()
    conds = []
    for ctype, creason, cmsg in (
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ):
        status = "Unknown" if ready == "Unknown" else "False"
        conds.append(
            {
                "type": ctype,
                "status": status,
                "reason": creason,
                "message": cmsg,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
        )
    conds.append(
        {
            "type": "Ready",
            "status": ready,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
    )
    return conds
