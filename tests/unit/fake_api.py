"""An in-memory stand-in for the few Kubernetes API calls the cordon and slot steps make: Nodes (read,
merge patch) and Leases (read, create, replace), each write checked against the resourceVersion as the
API server checks it. ``before_write`` lets a test change an object between a step's read and its
write, the way a concurrent run or an operator would."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aksmaint.kube import Kube


def _error(status: int, reason: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "code": status, "reason": reason, "message": reason})
    return exc


def _merge(target: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386): None deletes, dicts merge, anything else replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeApi:
    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}
        self.leases: dict[tuple[str, str], dict] = {}
        self.rv = 0
        self.writes = 0
        self.before_write: Callable[[], None] | None = None
        self._deserialize = client.ApiClient()._ApiClient__deserialize  # type: ignore[attr-defined]

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _hook(self) -> None:
        hook, self.before_write = self.before_write, None  # once
        if hook is not None:
            hook()

    # ---- nodes ---------------------------------------------------------------------------
    def add_node(
        self, name: str, unschedulable: bool = False, taints: list[dict] | None = None, **labels: str
    ) -> None:
        self.nodes[name] = {
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {},
                "resourceVersion": self._next_rv(),
            },
            "spec": {"unschedulable": unschedulable or None, "taints": taints},
            "status": {"nodeInfo": _node_info()},
        }

    def node(self, name: str) -> dict:
        return self.nodes[name]

    def read_node(self, name: str, **_: object):
        if name not in self.nodes:
            raise _error(404, "NotFound")
        return self._deserialize(copy.deepcopy(self.nodes[name]), "V1Node")

    def patch_node(self, name: str, body: dict, **_: object):
        self._hook()
        if name not in self.nodes:
            raise _error(404, "NotFound")
        current = self.nodes[name]
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict")
        self.writes += 1
        updated = _merge(current, body)
        updated["metadata"]["resourceVersion"] = self._next_rv()
        self.nodes[name] = updated
        return self._deserialize(copy.deepcopy(updated), "V1Node")

    # ---- leases --------------------------------------------------------------------------
    def lease(self, namespace: str, name: str) -> dict | None:
        return self.leases.get((namespace, name))

    def read_namespaced_lease(self, name: str, namespace: str, **_: object):
        if (namespace, name) not in self.leases:
            raise _error(404, "NotFound")
        return self._deserialize(copy.deepcopy(self.leases[(namespace, name)]), "V1Lease")

    def list_namespaced_lease(self, namespace: str, **_: object):
        items = [copy.deepcopy(v) for (ns, _name), v in sorted(self.leases.items()) if ns == namespace]
        return self._deserialize({"apiVersion": "coordination.k8s.io/v1", "items": items}, "V1LeaseList")

    def create_namespaced_lease(self, namespace: str, body: dict, **_: object):
        self._hook()
        name = body["metadata"]["name"]
        if (namespace, name) in self.leases:
            raise _error(409, "AlreadyExists")
        self.writes += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = self._next_rv()
        self.leases[(namespace, name)] = stored
        return self._deserialize(copy.deepcopy(stored), "V1Lease")

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict, **_: object):
        self._hook()
        current = self.leases.get((namespace, name))
        if current is None:
            raise _error(404, "NotFound")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict")
        self.writes += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = self._next_rv()
        self.leases[(namespace, name)] = stored
        return self._deserialize(copy.deepcopy(stored), "V1Lease")


def _node_info() -> dict:
    return {
        "bootID": "boot-1",
        "kernelVersion": "5.15.0-1079-azure",
        "osImage": "Ubuntu 22.04.5 LTS",
        "kubeletVersion": "v1.30.5",
        "kubeProxyVersion": "v1.30.5",
        "containerRuntimeVersion": "containerd://1.7.25-1",
        "operatingSystem": "linux",
        "architecture": "amd64",
        "machineID": "m",
        "systemUUID": "s",
    }


def fake_kube(api: FakeApi) -> Kube:
    kube = Kube(client.ApiClient(client.Configuration()), "aks-demo")
    kube.core = api  # type: ignore[assignment]
    kube.coordination = api  # type: ignore[assignment]
    return kube
