"""Admission: what the API server and its webhooks add to a new pod, and what every namespace holds.

``Admission`` plays three parts of a real cluster. The ServiceAccount admission plugin names the
pod's service account (refusing one that does not exist) and mounts the ``kube-api-access-*``
projected volume at ``/var/run/secrets/kubernetes.io/serviceaccount``. AKS's workload identity
webhook gives a pod labelled ``azure.workload.identity/use: "true"`` the ``AZURE_*`` variables and a
token for Entra ID. The service-account and root-CA publishers put the ``default`` ServiceAccount and
the ``kube-root-ca.crt`` ConfigMap in every namespace.
"""

from __future__ import annotations

import copy

from simulator.controllers.common import CONFIGMAPS, SERVICEACCOUNTS, name_suffix
from simulator.controllers.state import ClusterState
from simulator.k8s.errors import ApiError

SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
    "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
    "distributions of Kubernetes clusters."
)
# kube-apiserver's default lifetime of the token in kube-api-access-* (an hour and seven seconds)
API_ACCESS_TOKEN_SECONDS = 3607

# AKS's workload identity webhook (github.com/Azure/azure-workload-identity)
WI_USE_LABEL = "azure.workload.identity/use"
WI_CLIENT_ID = "azure.workload.identity/client-id"
WI_TENANT_ID = "azure.workload.identity/tenant-id"
WI_TOKEN_EXPIRATION = "azure.workload.identity/service-account-token-expiration"
WI_SKIP_CONTAINERS = "azure.workload.identity/skip-containers"
WI_TOKEN_DIR = "/var/run/secrets/azure/tokens"
WI_TOKEN_PATH = "azure-identity-token"
WI_AUDIENCE = "api://AzureADTokenExchange"
WI_TOKEN_SECONDS = 3600


class Admission:
    """Pod admission (service account, workload identity) and the objects every namespace holds."""

    def __init__(self, state: ClusterState):
        self.state = state

    def namespace_added(self, namespace: str) -> None:
        """The service-account controller's ``default`` account and the root CA publisher's ConfigMap."""
        if self.state.store.get(SERVICEACCOUNTS, namespace, "default") is None:
            self.state.store.create(
                SERVICEACCOUNTS, {"metadata": {"name": "default", "namespace": namespace}}
            )
        self.publish_root_ca(namespace)

    def publish_root_ca(self, namespace: str) -> None:
        """``kube-root-ca.crt`` with the CA that signed the API server's certificate, once it is known."""
        if not self.state.ca_pem:
            return
        body = {
            "metadata": {
                "name": ROOT_CA_CONFIGMAP,
                "namespace": namespace,
                "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
            },
            "data": {"ca.crt": self.state.ca_pem},
        }
        current = self.state.store.get(CONFIGMAPS, namespace, ROOT_CA_CONFIGMAP)
        if current is None:
            self.state.store.create(CONFIGMAPS, body)
        else:
            self.state.store.update_internal(CONFIGMAPS, {**current, "data": body["data"]})

    def admit_pod(self, pod: dict) -> dict:
        """The pod as the admission chain leaves it: ServiceAccount plugin first, then the webhook."""
        pod = copy.deepcopy(pod)
        meta, spec = pod["metadata"], pod["spec"]
        account_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        account = self.state.store.get(SERVICEACCOUNTS, meta.get("namespace", ""), account_name)
        if account is None:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{meta.get("name") or meta.get("generateName", "")}" is forbidden: error looking up '
                f'service account {meta.get("namespace")}/{account_name}: serviceaccount "{account_name}" '
                "not found",
                {"name": meta.get("name", ""), "kind": "pods"},
            )
        spec["serviceAccountName"] = spec["serviceAccount"] = account_name
        automount = spec.get(
            "automountServiceAccountToken", account.get("automountServiceAccountToken", True)
        )
        if automount is not False and not _mounts(spec, SERVICE_ACCOUNT_MOUNT):
            self._mount_api_access(spec)
        if (meta.get("labels") or {}).get(WI_USE_LABEL) == "true":
            self._inject_workload_identity(meta, spec, account)
        return pod

    def _mount_api_access(self, spec: dict) -> None:
        volume = f"kube-api-access-{name_suffix(self.state.rng)}"
        spec.setdefault("volumes", []).append(
            {
                "name": volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "expirationSeconds": API_ACCESS_TOKEN_SECONDS,
                                "path": "token",
                            }
                        },
                        {
                            "configMap": {
                                "name": ROOT_CA_CONFIGMAP,
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                    }
                                ]
                            }
                        },
                    ],
                },
            }
        )
        mount = {"name": volume, "readOnly": True, "mountPath": SERVICE_ACCOUNT_MOUNT}
        for container in _containers(spec):
            container.setdefault("volumeMounts", []).append(dict(mount))

    def _inject_workload_identity(self, meta: dict, spec: dict, account: dict) -> None:
        """What the webhook adds when the pod's service account (or the pod) names a client id."""
        annotations = meta.get("annotations") or {}
        account_annotations = account["metadata"].get("annotations") or {}
        client_id = annotations.get(WI_CLIENT_ID) or account_annotations.get(WI_CLIENT_ID)
        settings = self.state.scenario.cluster.workload_identity
        if not client_id or settings is None:
            return
        tenant_id = account_annotations.get(WI_TENANT_ID) or settings.tenant_id
        expiration = int(
            annotations.get(WI_TOKEN_EXPIRATION)
            or account_annotations.get(WI_TOKEN_EXPIRATION)
            or WI_TOKEN_SECONDS
        )
        env = [
            {"name": "AZURE_CLIENT_ID", "value": client_id},
            {"name": "AZURE_TENANT_ID", "value": tenant_id},
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": f"{WI_TOKEN_DIR}/{WI_TOKEN_PATH}"},
            {"name": "AZURE_AUTHORITY_HOST", "value": settings.authority_host},
        ]
        skipped = set(filter(None, annotations.get(WI_SKIP_CONTAINERS, "").split(";")))
        for container in _containers(spec):
            if container.get("name") in skipped:
                continue
            present = {e.get("name") for e in container.get("env") or []}
            container["env"] = list(container.get("env") or []) + [e for e in env if e["name"] not in present]
            if not any(m.get("mountPath") == WI_TOKEN_DIR for m in container.get("volumeMounts") or []):
                container.setdefault("volumeMounts", []).append(
                    {"name": WI_TOKEN_PATH, "readOnly": True, "mountPath": WI_TOKEN_DIR}
                )
        if not any(v.get("name") == WI_TOKEN_PATH for v in spec.get("volumes") or []):
            source = {"path": WI_TOKEN_PATH, "expirationSeconds": expiration, "audience": WI_AUDIENCE}
            spec.setdefault("volumes", []).append(
                {
                    "name": WI_TOKEN_PATH,
                    "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": source}]},
                }
            )


def _containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _mounts(spec: dict, path: str) -> bool:
    return any(m.get("mountPath") == path for c in _containers(spec) for m in c.get("volumeMounts") or [])
