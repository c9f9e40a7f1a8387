"""`kubectl apply -k deployments/kubernetes`, unmodified and with kubectl's default strict validation,
installs the management-cluster pieces on the simulator; a second apply changes nothing."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from simulator.observe import SimObserver
from simulator.runtime import SimulatedAKS
from tests.simulator.pods_support import api_client, running_simulator
from tests.simulator.test_kubectl import run, tables
from tests.support import ROOT, scenario_dict

NAMESPACE = "aks-maintenance"
OBJECTS = [
    "namespace/aks-maintenance",
    "serviceaccount/aks-maintenance-flow",
    "serviceaccount/prefect-worker",
    "role.rbac.authorization.k8s.io/prefect-worker",
    "role.rbac.authorization.k8s.io/aks-node-maintenance-heartbeats",
    "role.rbac.authorization.k8s.io/aks-node-maintenance",
    "clusterrole.rbac.authorization.k8s.io/aks-node-maintenance",
    "rolebinding.rbac.authorization.k8s.io/prefect-worker",
    "rolebinding.rbac.authorization.k8s.io/aks-node-maintenance-heartbeats",
    "rolebinding.rbac.authorization.k8s.io/aks-node-maintenance",
    "clusterrolebinding.rbac.authorization.k8s.io/aks-node-maintenance",
    "configmap/prefect-worker",
    "deployment.apps/prefect-worker",
]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedAKS]:
    yield from running_simulator(scenario_dict())


@pytest.fixture(scope="module")
def kubeconfig(sim: SimulatedAKS) -> str:
    assert sim.endpoints is not None
    return sim.endpoints.kubeconfig


@pytest.fixture(scope="module")
def observer(sim: SimulatedAKS) -> Iterator[SimObserver]:
    assert sim.endpoints is not None
    observer = SimObserver(sim.endpoints)
    yield observer
    observer.close()


@pytest.fixture(scope="module")
def first_apply(sim, kubeconfig, kubectl) -> str:
    return apply(kubectl, kubeconfig)


@pytest.fixture(scope="module")
def rbac(sim: SimulatedAKS) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(api_client(sim))


@pytest.fixture(scope="module")
def core(sim: SimulatedAKS) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(sim))


def apply(kubectl: str, kubeconfig: str) -> str:
    return run(kubectl, kubeconfig, "apply", "-k", str(ROOT / "deployments" / "kubernetes")).stdout


def kubectl_writes(observer: SimObserver) -> list[dict]:
    return [e for e in observer.mutating_requests() if e["user_agent"].startswith("kubectl")]


def resource_versions(kubectl: str, kubeconfig: str) -> dict[str, str]:
    listed = run(kubectl, kubeconfig, "get", "-k", str(ROOT / "deployments" / "kubernetes"), "-o", "json")
    return {
        f"{item['kind']}/{item['metadata'].get('namespace', '')}/{item['metadata']['name']}": item[
            "metadata"
        ]["resourceVersion"]
        for item in json.loads(listed.stdout)["items"]
    }


def test_the_first_apply_creates_every_object_and_leaves_validation_to_the_server(
    first_apply, observer
) -> None:
    assert first_apply.splitlines() == [f"{name} created" for name in OBJECTS]
    writes = kubectl_writes(observer)
    assert [(e["verb"], e["status"]) for e in writes] == [("create", 201)] * len(OBJECTS)
    assert all("fieldValidation=Strict" in e["query"] for e in writes)
    fetched = {e["path"] for e in observer.audit() if e["path"].startswith("/openapi/v3")}
    assert {"/openapi/v3", "/openapi/v3/apis/rbac.authorization.k8s.io/v1"} <= fetched


def test_the_objects_are_served_as_the_files_say(first_apply, rbac, core, sim) -> None:
    namespace = core.read_namespace(NAMESPACE)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    accounts = core.list_namespaced_service_account(NAMESPACE).items
    assert sorted(a.metadata.name for a in accounts) == ["aks-maintenance-flow", "default", "prefect-worker"]
    flow = core.read_namespaced_service_account("aks-maintenance-flow", NAMESPACE)
    assert flow.metadata.annotations["azure.workload.identity/client-id"]
    assert LAST_APPLIED in flow.metadata.annotations

    worker_role = rbac.read_namespaced_role("prefect-worker", NAMESPACE)
    in_file = next(
        d
        for d in yaml.safe_load_all((ROOT / "deployments" / "kubernetes" / "worker.yaml").read_text())
        if d["kind"] == "Role"
    )
    assert [(r.api_groups, r.resources, r.verbs) for r in worker_role.rules] == [
        (r["apiGroups"], r["resources"], r["verbs"]) for r in in_file["rules"]
    ]
    kube_system = rbac.read_namespaced_role("aks-node-maintenance", "kube-system")
    assert kube_system.rules[-1].resource_names == ["kured"]
    heartbeats = rbac.read_namespaced_role("aks-node-maintenance-heartbeats", "kube-node-lease")
    assert [(r.resources, r.verbs) for r in heartbeats.rules] == [(["leases"], ["get"])]
    cluster_role = rbac.read_cluster_role("aks-node-maintenance")
    assert ["pods/eviction"] in [r.resources for r in cluster_role.rules]

    bindings = {
        (b.metadata.namespace, b.metadata.name): b for b in rbac.list_role_binding_for_all_namespaces().items
    }
    assert sorted(bindings) == [
        (NAMESPACE, "prefect-worker"),
        ("kube-node-lease", "aks-node-maintenance-heartbeats"),
        ("kube-system", "aks-node-maintenance"),
    ]
    worker_binding = bindings[(NAMESPACE, "prefect-worker")]
    assert (worker_binding.role_ref.kind, worker_binding.role_ref.name) == ("Role", "prefect-worker")
    assert [(s.kind, s.namespace, s.name) for s in worker_binding.subjects] == [
        ("ServiceAccount", NAMESPACE, "prefect-worker")
    ]
    cluster_binding = rbac.read_cluster_role_binding("aks-node-maintenance")
    assert cluster_binding.role_ref.kind == "ClusterRole"
    assert [s.name for s in cluster_binding.subjects] == ["aks-maintenance-flow"]

    config_map = core.read_namespaced_config_map("prefect-worker", NAMESPACE)
    assert config_map.data["PREFECT_KUBERNETES_CLUSTER_UID"] == "aks-maintenance-management-cluster"
    deployment = client.AppsV1Api(api_client(sim)).read_namespaced_deployment("prefect-worker", NAMESPACE)
    assert deployment.spec.template.spec.service_account_name == "prefect-worker"
    assert deployment.spec.template.spec.containers[0].env_from[0].config_map_ref.name == "prefect-worker"


def test_a_second_apply_is_unchanged_and_writes_nothing(first_apply, observer, kubeconfig, kubectl) -> None:
    before = resource_versions(kubectl, kubeconfig)
    assert len(before) == len(OBJECTS)
    writes = kubectl_writes(observer)

    assert apply(kubectl, kubeconfig).splitlines() == [f"{name} unchanged" for name in OBJECTS]

    assert resource_versions(kubectl, kubeconfig) == before
    assert kubectl_writes(observer) == writes


def test_kubectl_get_lists_the_roles_and_bindings(first_apply, kubeconfig, kubectl) -> None:
    printed = run(kubectl, kubeconfig, "get", "clusterroles,roles,rolebindings", "-A").stdout
    cluster_roles, roles, bindings = tables(printed)
    assert [r["NAME"] for r in cluster_roles] == [
        "clusterrole.rbac.authorization.k8s.io/aks-node-maintenance"
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", cluster_roles[0]["CREATED AT"])
    assert {(r["NAMESPACE"], r["NAME"]) for r in roles} == {
        (NAMESPACE, "role.rbac.authorization.k8s.io/prefect-worker"),
        ("kube-node-lease", "role.rbac.authorization.k8s.io/aks-node-maintenance-heartbeats"),
        ("kube-system", "role.rbac.authorization.k8s.io/aks-node-maintenance"),
    }
    assert set(roles[0]) == {"NAMESPACE", "NAME", "CREATED AT"}
    assert {r["NAME"]: r["ROLE"] for r in bindings} == {
        "rolebinding.rbac.authorization.k8s.io/prefect-worker": "Role/prefect-worker",
        "rolebinding.rbac.authorization.k8s.io/aks-node-maintenance-heartbeats": (
            "Role/aks-node-maintenance-heartbeats"
        ),
        "rolebinding.rbac.authorization.k8s.io/aks-node-maintenance": "Role/aks-node-maintenance",
    }
    wide = tables(run(kubectl, kubeconfig, "get", "clusterrolebindings", "-o", "wide").stdout)[0]
    assert (wide[0]["ROLE"], wide[0]["SERVICEACCOUNTS"]) == (
        "ClusterRole/aks-node-maintenance",
        f"{NAMESPACE}/aks-maintenance-flow",
    )


def test_strict_validation_refuses_an_unknown_field_as_kube_apiserver_words_it(
    first_apply, kubeconfig, kubectl
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "typo", "namespace": NAMESPACE},
        "datta": {"a": "b"},
    }
    refused = apply_stdin(kubectl, kubeconfig, manifest)
    assert refused.returncode == 1
    assert (
        'Error from server (BadRequest): error when creating "STDIN": ConfigMap in version "v1" cannot be '
        'handled as a ConfigMap: strict decoding error: unknown field "datta"'
    ) in refused.stderr

    created = apply_stdin(kubectl, kubeconfig, {**manifest, "data": {"a": "b"}}, "--validate=warn")
    assert created.returncode == 0 and 'Warning: unknown field "datta"' in created.stderr
    stored = json.loads(
        run(kubectl, kubeconfig, "get", "configmap", "typo", "-n", NAMESPACE, "-o", "json").stdout
    )
    assert "datta" not in stored and stored["data"] == {"a": "b"}

    patched = apply_stdin(kubectl, kubeconfig, {**manifest, "data": {"a": "c"}, "datta": "c"})
    assert patched.returncode == 1, patched.stderr
    assert patched.stderr.startswith(
        'The request is invalid: patch: Invalid value: "map[data:map[a:c] datta:c '
    )
    assert patched.stderr.rstrip().endswith('strict decoding error: unknown field "datta"')


def apply_stdin(kubectl: str, kubeconfig: str, manifest: dict, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "apply", "-f", "-", *flags],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=30,
    )
