"""The flow runs' RBAC is proven, not guessed: run the flows against the simulated AKS, then check every
Kubernetes request they made against the roles in deployments/kubernetes, and every permission granted
there against the requests.

A request is (API group, resource[/subresource], verb, namespace, name) from the simulator's audit log,
made with the flows' user agent; discovery, /version, /_sim and Azure Resource Manager requests are not
Kubernetes RBAC's business. The roles are the ClusterRoles and Roles bound to the flows' ServiceAccount.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import yaml

from aksmaint.aks.operations import UpgradeMode
from aksmaint.azure import AksCluster
from aksmaint.maintenance.cancellation import clean_up_cancelled_run
from flows.cluster_upgrade import cluster_upgrade
from flows.node_maintenance import node_maintenance
from tests.support import ROOT, RunningSim, fast_params, pinned_pod, scenario_dict

MANIFESTS = ROOT / "deployments" / "kubernetes"
FLOW_SA = ("aks-maintenance", "aks-maintenance-flow")
FLOWS_USER_AGENT = "aks-node-maintenance/"
NEW_KERNEL = "5.15.0-1081-azure"


@dataclass(frozen=True)
class Request:
    group: str
    resource: str  # with its subresource, as RBAC names it: pods/eviction
    verb: str
    namespace: str | None
    name: str | None


@dataclass(frozen=True)
class Rule:
    role: str
    namespace: str | None  # None: a ClusterRole, granted in every namespace and cluster-wide
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...]

    def allows(self, r: Request) -> bool:
        return (
            (self.namespace is None or self.namespace == r.namespace)
            and r.group in self.groups
            and r.resource in self.resources
            and r.verb in self.verbs
            and (not self.names or r.name in self.names)
        )

    def grants(self) -> list[tuple[str, str, str]]:
        return [(g, res, v) for g in self.groups for res in self.resources for v in self.verbs]


def manifests(*files: str) -> list[dict]:
    paths = [MANIFESTS / f for f in files] if files else sorted(MANIFESTS.glob("*.yaml"))
    paths = [p for p in paths if p.name != "kustomization.yaml"]
    return [doc for p in paths for doc in yaml.safe_load_all(p.read_text()) if doc]


def flow_rules() -> list[Rule]:
    """The rules of every ClusterRole and Role that a binding gives to the flows' ServiceAccount."""
    return rules_for(FLOW_SA)


def rules_for(account: tuple[str, str]) -> list[Rule]:
    """The rules of every ClusterRole and Role that a binding gives to ServiceAccount (namespace, name)."""
    docs = manifests()
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    rules = []
    for b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) == account for s in b["subjects"]
        ):
            continue
        ref = b["roleRef"]
        namespace = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        for r in role["rules"]:
            rules.append(
                Rule(
                    f"{ref['kind']} {ref['name']}",
                    namespace,
                    tuple(r["apiGroups"]),
                    tuple(r["resources"]),
                    tuple(r["verbs"]),
                    tuple(r.get("resourceNames", ())),
                )
            )
    return rules


def flow_requests(sim: RunningSim) -> list[Request]:
    out = []
    for e in sim.observer.audit():
        if e.get("api") == "arm" or e["resource"] is None or not e["user_agent"].startswith(FLOWS_USER_AGENT):
            continue
        resource = e["resource"] + (f"/{e['subresource']}" if e["subresource"] else "")
        out.append(Request(e["group"] or "", resource, e["verb"], e["namespace"], e["name"]))
    return out


# ---- the runs whose requests are checked ---------------------------------------------------------------
def rollout_scenario() -> dict:
    """Three nodes to reboot; one carries a pod whose budget never allows an eviction."""
    sc = scenario_dict()
    sc["time_scale"] = 0.05
    sc["nodes"] = [
        {"pool": "nodepool1", "index": i, "reboot_required": True, "pending_kernel": NEW_KERNEL}
        for i in range(3)
    ]
    sc["workloads"].append(pinned_pod(index=2))
    return sc


@pytest.fixture(scope="module")
def audited(prefect_api, tmp_path_factory) -> dict[str, list[Request]]:
    """Requests of: a full reboot rollout with every gate and option that talks to the cluster, the
    delete-pods policy, the cancellation cleanup, and both cluster-upgrade modes."""
    from simulator.runtime import SimulatedAKS
    from simulator.scenario import parse_scenario

    results: dict[str, list[Request]] = {}
    monkeypatch = pytest.MonkeyPatch()
    try:
        sim_aks = SimulatedAKS(parse_scenario(rollout_scenario()), state_dir=tmp_path_factory.mktemp("rbac"))
        sim_aks.start()
        sim = RunningSim(sim_aks)
        try:
            params = fast_params(
                sim,
                concurrency=2,
                apply_updates=True,
                drain={"timeout_seconds": 2, "on_timeout": "delete-pods"},
                blockers={"pod_selectors": ["app=batch-job"]},
                lock={"respect_kured_lock": True},
                labels={"pre_reboot": {"maintenance": "rebooting"}, "post_reboot": {"maintenance": "done"}},
            )
            state = node_maintenance(**params, return_state=True)
            report = state.result(raise_on_failure=False)
            assert state.is_completed(), state.message
            assert [n.node for n in report.nodes if n.outcome.value == "rebooted"].__len__() == 3
            results["maintenance"] = flow_requests(sim)

            seen = len(sim.observer.audit())
            clean_up_cancelled_run(params, "0123456789")
            results["cancellation"] = [r for r in flow_requests(sim)][_count_flow(sim, seen) :]

            monkeypatch.setenv("AZURE_ACCESS_TOKEN", sim.endpoints.token)
            aks = AksCluster(
                subscription_id=sim_aks.scenario.cluster.subscription_id,
                resource_group=sim_aks.scenario.cluster.resource_group,
                name=sim_aks.scenario.cluster.name,
                credential="static-token",
                arm_endpoint=sim.endpoints.arm,
                ca_bundle=sim.endpoints.ca_bundle,
            )
            before = len(flow_requests(sim))
            for mode in (UpgradeMode.kubernetes_version, UpgradeMode.node_image):
                upgrade = cluster_upgrade(
                    cluster=aks,
                    mode=mode,
                    respect_maintenance_window=False,
                    poll_interval_seconds=0.1,
                    dry_run=mode == UpgradeMode.kubernetes_version,
                    return_state=True,
                )
                assert upgrade.is_completed(), upgrade.message
            results["upgrade"] = flow_requests(sim)[before:]
        finally:
            sim.observer.close()
            sim_aks.stop()
    finally:
        monkeypatch.undo()
    return results


def _count_flow(sim: RunningSim, audit_index: int) -> int:
    """How many of the flows' requests the audit log held before ``audit_index``."""
    entries = sim.observer.audit()[:audit_index]
    return sum(
        1
        for e in entries
        if e.get("api") != "arm"
        and e["resource"] is not None
        and e["user_agent"].startswith(FLOWS_USER_AGENT)
    )


# ---- the checks ----------------------------------------------------------------------------------------
def test_each_run_made_kubernetes_requests(audited):
    assert {k: bool(v) for k, v in audited.items()} == {
        "maintenance": True,
        "cancellation": True,
        "upgrade": True,
    }
    verbs = {(r.resource, r.verb) for r in audited["maintenance"]}
    # the rollout really drained, rebooted through host pods, took slots and deleted the pinned pod
    assert {
        ("pods/eviction", "create"),
        ("pods", "create"),
        ("leases", "update"),
        ("pods", "delete"),
    } <= verbs


def test_every_request_of_the_flows_is_allowed_by_the_flow_roles(audited):
    rules = flow_rules()
    refused = sorted(
        {
            (name, r)
            for name, requests in audited.items()
            for r in requests
            if not any(x.allows(r) for x in rules)
        },
        key=str,
    )
    assert refused == [], "requests the roles do not allow:\n" + "\n".join(f"{n}: {r}" for n, r in refused)


def test_every_permission_granted_to_the_flows_is_used(audited):
    requests = [r for rs in audited.values() for r in rs]
    unused = []
    for rule in flow_rules():
        for group, resource, verb in rule.grants():
            probe = Rule(rule.role, rule.namespace, (group,), (resource,), (verb,), rule.names)
            if not any(probe.allows(r) for r in requests):
                unused.append(
                    f"{rule.role} ({rule.namespace or 'cluster'}): {verb} {group or 'core'}/{resource}"
                )
    assert unused == [], "granted but never used:\n" + "\n".join(unused)


def test_flow_roles_grant_nothing_broad():
    for rule in flow_rules():
        assert "*" not in rule.verbs + rule.resources + rule.groups, rule
        assert not {"secrets", "configmaps", "escalate", "bind", "impersonate"} & set(
            rule.resources + rule.verbs
        )


# ---- the worker's own permissions and the pieces prefect.yaml refers to -------------------------------
def test_worker_may_only_manage_jobs_and_read_pods_in_its_namespace():
    docs = manifests("worker.yaml")
    kinds = [d["kind"] for d in docs]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == FLOW_SA[0]
    granted = {
        (g, res, v)
        for r in role["rules"]
        for g in r["apiGroups"]
        for res in r["resources"]
        for v in r["verbs"]
    }
    assert ("batch", "jobs", "create") in granted and ("", "pods", "list") in granted
    assert not {v for _, _, v in granted if v in ("create", "delete", "patch", "update")} - {
        v for g, res, v in granted if (g, res) == ("batch", "jobs")
    }
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "prefect-worker"
    assert spec["securityContext"]["runAsNonRoot"] is True
    command = spec["containers"][0]["command"]
    pool = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"]["kubernetes"]
    assert command[command.index("--pool") + 1] == pool["name"]
    assert command[command.index("--type") + 1] == "kubernetes"


def test_kubernetes_pool_runs_flows_in_the_namespace_and_as_the_service_account_of_the_manifests():
    pool = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"]["kubernetes"]
    variables = pool["job_variables"]
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in manifests()
        if d["kind"] == "ServiceAccount"
    }
    namespaces = {d["metadata"]["name"] for d in manifests() if d["kind"] == "Namespace"}
    assert (variables["namespace"], variables["service_account_name"]) == FLOW_SA
    assert FLOW_SA in accounts and FLOW_SA[0] in namespaces
    assert variables["image"] == "{{ $AKSMAINT_IMAGE }}"


def test_manifests_are_plain_kubernetes_yaml():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (MANIFESTS / name).is_file()
    for doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), json.dumps(doc)[:200]
    # the optional delete-pods permission is not applied by default
    assert "flow-rbac-delete-pods.yaml" not in kustomization["resources"]
