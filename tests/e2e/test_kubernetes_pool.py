"""The production shape, run here end to end: the kubernetes work pool, workload identity, results in Azure
Blob storage, and a run inside the cluster it maintains.

- A simulated **management cluster** runs pods as local processes (``runs_pods``). It has the namespace
  and ServiceAccounts of ``deployments/kubernetes``, and AKS's workload identity webhook.
- The real Prefect worker (``prefect worker start --type kubernetes``, prefect-kubernetes from the lock)
  signs in to it as the ``prefect-worker`` ServiceAccount. Its pool is made from
  ``deployments/kubernetes/base-job-template.json``, and the deployments use the kubernetes pool's job
  variables from ``prefect.yaml``.
- Each flow run becomes a Job; its pod runs ``prefect flow-run execute`` with the projected
  service-account token at the path Kubernetes uses.
- Results go to a ``prefect-azure`` blob container block on Azurite.
- A second simulated cluster, with Entra ID, trusts the management cluster's issuer for the flow's
  ServiceAccount: a run with ``credential: workload-identity`` reaches it by its AKS id.

One management cluster, one target cluster and one Azurite serve the whole module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import yaml
from kubernetes import client, config
from playwright.sync_api import sync_playwright

from scripts.prefect_postgres import free_port
from simulator.observe import SimObserver
from simulator.runtime import SimulatedAKS
from simulator.scenario import parse_scenario
from tests.deploy.test_rbac import Request, Rule, rules_for
from tests.e2e.conftest import NEW_KERNEL, PREFECT, PrefectServer, prefect_yaml
from tests.e2e.test_deployments import OUT
from tests.e2e.test_run_pages import Browser, task_runs
from tests.support import ROOT, scenario_dict

K8S_POOL = "aks-maintenance-k8s"
NAMESPACE = "aks-maintenance"
FLOW_SA = "aks-maintenance-flow"
WORKER_SA = "prefect-worker"
OTHER_SA = "aks-maintenance-other"  # carries the client id too, but has no federated credential
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
APP = "5f3c1a52-8a8e-4b7e-9a51-0c2f7d6e9b10"  # the flows' application (a user-assigned identity)
APP_OBJECT = "0d9a2f4e-6b1c-4c8d-9e7f-1a2b3c4d5e6f"
MANAGEMENT_NAME = "mgmt-weu"  # what the operator calls the management cluster in its reports
RESULTS = "aks-maintenance-results"
SCALE = 0.05
SOURCE = "node-maintenance/prod-weu-node-maintenance"


def subject(account: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{account}"


def management_scenario(authority: str) -> dict:
    """The example cluster, every Linux node needing a reboot, running pods as processes."""
    sc = scenario_dict()
    sc["time_scale"] = SCALE
    sc["cluster"] = {
        **sc["cluster"],
        "name": "aks-mgmt-weu",
        "runs_pods": True,
        "workload_identity": {"tenant_id": TENANT, "authority_host": authority},
    }
    sc["nodes"] = [
        {"pool": pool["name"], "index": i, "reboot_required": True, "pending_kernel": NEW_KERNEL}
        for pool in sc["pools"]
        for i in range(pool["count"])
    ]
    return sc


def target_scenario(issuer: str) -> dict:
    """A cluster with Entra ID only (no local accounts) whose application trusts the management
    cluster's issuer for the flow's ServiceAccount."""
    sc = scenario_dict()
    sc["time_scale"] = SCALE
    application = {
        "client_id": APP,
        "object_id": APP_OBJECT,
        "name": "aks-maintenance-flows",
        "federated_credentials": [{"name": "mgmt-weu-flows", "issuer": issuer, "subject": subject(FLOW_SA)}],
    }
    aad = {"tenant_id": TENANT, "applications": [application], "disable_local_accounts": True}
    sc["cluster"] = {**sc["cluster"], "name": "aks-target-eus", "resource_group": "rg-target", "aad": aad}
    sc["nodes"] = [
        {"pool": "userpool", "index": i, "reboot_required": True, "pending_kernel": NEW_KERNEL}
        for i in (0, 1)
    ]
    return sc


@dataclass
class Pool:
    """Everything the module's tests share."""

    server: PrefectServer
    management: SimulatedAKS
    target: SimulatedAKS
    mgmt: SimObserver
    tgt: SimObserver
    ca_bundle: str
    workdir: Path
    azurite: object

    def deployment(self, name: str, parameters: dict, service_account: str = FLOW_SA) -> dict:
        """A node-maintenance deployment in the kubernetes pool, with the pool's job variables of
        prefect.yaml and what this machine needs on top (no image: the project folder and the CA)."""
        source = self.server.deployment(SOURCE)
        variables = json.loads(
            json.dumps(prefect_yaml()["definitions"]["work_pools"]["kubernetes"]["job_variables"]).replace(
                "{{ $AKSMAINT_IMAGE }}", "aks-node-maintenance:test"
            )
        )
        variables["service_account_name"] = service_account
        variables["env"].update(
            AKSMAINT_PROJECT_DIR=str(ROOT),  # the image sets it
            AKSMAINT_CLUSTER_NAME=MANAGEMENT_NAME,
            REQUESTS_CA_BUNDLE=self.ca_bundle,  # the image trusts public CAs; here the simulators' CA
            PREFECT_LOGGING_LEVEL="INFO",
        )
        body = {
            key: source[key]
            for key in ("flow_id", "entrypoint", "path", "pull_steps", "enforce_parameter_schema")
        }
        body.update(
            name=name,
            work_pool_name=K8S_POOL,
            parameters={**source["parameters"], **parameters},
            job_variables=variables,
            concurrency_limit=1,
            concurrency_options={"collision_strategy": "ENQUEUE"},
            tags=["e2e", "kubernetes-pool"],
        )
        created = self.server.post("/deployments/", body)
        assert isinstance(created, dict), created
        return self.server.get(f"/deployments/{created['id']}")

    def run(self, deployment: dict) -> str:
        run = self.server.post(f"/deployments/{deployment['id']}/create_flow_run", {})
        assert isinstance(run, dict)
        return run["id"]

    def worker_log(self) -> str:
        """The worker pod's log, as ``kubectl logs deploy/prefect-worker`` shows it."""
        core = kube(self.management.endpoints.kubeconfig)
        try:
            return core.read_namespaced_pod_log(worker_pod(self).metadata.name, NAMESPACE)
        except Exception as exc:  # the log is for a failure message only
            return f"(no worker log: {exc})"


def fast_parameters(**cluster: object) -> dict:
    return {
        "cluster": cluster,
        "concurrency": 1,
        "window": None,
        "drain": {"timeout_seconds": 60, "eviction_retry_seconds": 0.5},
        "reboot": {"boot_timeout_seconds": 60},
        "lock": {"ttl_seconds": 10, "wait_seconds": 120},
    }


def kube(kubeconfig: str) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))


def install_manifests(pool_workdir: Path, kubectl: str, kubeconfig: str, api_url: str) -> None:
    """``kubectl apply -k deployments/kubernetes`` on a copy edited as the docs say: the worker's
    ConfigMap points at this Prefect server, and the flows' ServiceAccount names their application. The
    worker Deployment then runs the real worker as a pod of the management cluster."""
    folder = pool_workdir / "manifests"
    shutil.copytree(ROOT / "deployments" / "kubernetes", folder)
    docs = list(yaml.safe_load_all((folder / "worker.yaml").read_text()))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    # the worker's health check listens on the machine's own network here: a free port, not 8080
    configmap["data"].update(PREFECT_API_URL=api_url, PREFECT_WORKER_WEBSERVER_PORT=str(free_port()))
    (folder / "worker.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    docs = list(yaml.safe_load_all((folder / "flow-rbac.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == FLOW_SA:
            doc["metadata"]["annotations"]["azure.workload.identity/client-id"] = APP
    (folder / "flow-rbac.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "apply", "-k", str(folder)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    other = {"metadata": {"name": OTHER_SA, "annotations": {"azure.workload.identity/client-id": APP}}}
    kube(kubeconfig).create_namespaced_service_account(NAMESPACE, other)


def worker_pod(pool: Pool) -> client.V1Pod:
    pods = kube(pool.management.endpoints.kubeconfig).list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/name=prefect-worker"
    )
    (pod,) = pods.items
    return pod


def save_result_block(server: PrefectServer, connection_string: str) -> None:
    script = (
        "import sys\n"
        "from prefect_azure import AzureBlobStorageCredentials\n"
        "from prefect_azure.blob_storage import AzureBlobStorageContainer\n"
        "AzureBlobStorageContainer(container_name=sys.argv[1], credentials=AzureBlobStorageCredentials("
        "connection_string=sys.argv[2])).save(sys.argv[1], overwrite=True)\n"
    )
    python = str(Path(PREFECT).with_name("python"))
    subprocess.run(
        [python, "-c", script, RESULTS, connection_string],
        env=server.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def pool(prefect_server: PrefectServer, azurite, kubectl, tmp_path_factory) -> Iterator[Pool]:
    workdir = tmp_path_factory.mktemp("kubernetes-pool")
    ca = trustme.CA(organization_name="simulated-azure")
    ca_bundle = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    mgmt_port, target_port = free_port(), free_port()
    management = SimulatedAKS(
        parse_scenario(management_scenario(f"https://127.0.0.1:{target_port}")),
        port=mgmt_port,
        state_dir=workdir / "management",
        ca=ca,
    )
    target = SimulatedAKS(
        parse_scenario(target_scenario(f"https://127.0.0.1:{mgmt_port}")),
        port=target_port,
        state_dir=workdir / "target",
        ca=ca,
    )
    started: list[SimulatedAKS] = []
    try:
        for sim in (management, target):
            sim.start()
            started.append(sim)
        assert management.endpoints is not None and target.endpoints is not None
        azurite.create_container(RESULTS)
        save_result_block(prefect_server, azurite.connection_string)
        prefect_server.cli(
            "work-pool",
            "create",
            K8S_POOL,
            "--type",
            "kubernetes",
            "--base-job-template",
            str(ROOT / "deployments" / "kubernetes" / "base-job-template.json"),
        )
        install_manifests(
            workdir, kubectl, management.endpoints.kubeconfig, prefect_server.env["PREFECT_API_URL"]
        )
        shared = Pool(
            prefect_server,
            management,
            target,
            SimObserver(management.endpoints),
            SimObserver(target.endpoints),
            str(ca_bundle),
            workdir,
            azurite,
        )
        wait_for_worker(shared)
        yield shared
    finally:
        for sim in reversed(started):
            sim.stop()  # kills the worker's and the flows' processes


def wait_for_worker(pool: Pool, timeout: float = 120) -> None:
    """The worker pod is up once the pool has a worker that polled the server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = pool.server.post(f"/work_pools/{K8S_POOL}/workers/filter", {})
        if workers:
            return
        time.sleep(1)
    raise AssertionError(f"no worker in pool {K8S_POOL} after {timeout}s:\n{pool.worker_log()[-4000:]}")


def wait_for_run(pool: Pool, run_id: str, timeout: float = 300) -> dict:
    try:
        return pool.server.wait_for_state(run_id, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{pool.worker_log()[-6000:]}") from exc


def jobs(pool: Pool) -> list[dict]:
    batch = client.BatchV1Api(config.new_client_from_config(config_file=pool.management.endpoints.kubeconfig))
    return [j.to_dict() for j in batch.list_namespaced_job(NAMESPACE).items]


def result_of(pool: Pool, run_id: str):
    """A run's return value, read back from its persisted result (what the fleet flow does)."""
    script = (
        "import sys, json\n"
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    state = c.read_flow_run(sys.argv[1]).state\n"
        "print(state.result().model_dump_json())\n"
    )
    python = str(Path(PREFECT).with_name("python"))
    out = subprocess.run(
        [python, "-c", script, run_id],
        env=pool.server.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- a run inside the cluster it maintains --------------------------------------------------------------
def test_a_run_in_the_cluster_it_maintains_hands_its_own_node_to_a_follow_up(pool):
    deployment = pool.deployment("mgmt-weu-self", fast_parameters(in_cluster=True))
    first = pool.run(deployment)
    run = wait_for_run(pool, first)
    assert run["state"]["type"] == "COMPLETED", run["state"]

    report = result_of(pool, first)
    assert report["cluster"] == MANAGEMENT_NAME
    handed = [n for n in report["nodes"] if n["outcome"] == "handed-over"]
    assert len(handed) == 1, report["nodes"]
    own = handed[0]["node"]
    assert all(n["outcome"] == "rebooted" for n in report["nodes"] if n["node"] != own and n["pool"] != "")
    # the follow-up: a run of the same deployment, started by the first one, on another node
    runs = pool.server.runs_of(deployment["id"])
    follow_ups = [r for r in runs if r["id"] != first]
    assert len(follow_ups) == 1 and "aksmaint:follow-up" in follow_ups[0]["tags"]
    second = wait_for_run(pool, follow_ups[0]["id"])
    assert second["state"]["type"] == "COMPLETED", second["state"]
    follow_report = result_of(pool, second["id"])
    assert {n["node"]: n["outcome"] for n in follow_report["nodes"]}[own] == "rebooted"

    # every Linux node rebooted once; every Job complete; no flow pod was evicted or killed
    invariants = pool.mgmt.invariants()
    linux = [n for n in pool.management.node_names()]
    assert invariants["reboots"] == {name: 1 for name in linux}
    assert invariants["pdb_violations"] == 0 and invariants["max_disrupted"] <= 1
    finished = jobs(pool)
    assert len(finished) >= 2
    assert all((j["status"]["succeeded"] or 0) == 1 and not j["status"]["failed"] for j in finished)
    exits = [  # of the flows' pods (the worker's pod is evicted and replaced when its node is drained)
        e
        for e in pool.mgmt.timeline()
        if e["event"] == "container_exited"
        and not e["details"]["pod"].startswith(f"{NAMESPACE}/prefect-worker-")
    ]
    assert len(exits) == len(finished) and all(e["details"]["exit_code"] == 0 for e in exits), exits
    # the follow-up's pod ran on another node than the first run's
    first_node, second_node = (e["node"] for e in sorted(exits, key=lambda e: e["t"]))
    assert first_node == own != second_node
    # a flow pod is only ever evicted once it has exited (a drain clears a node's finished pods)
    exited_at = {e["details"]["pod"]: e["time"] for e in exits}
    for eviction in pool.mgmt.audit():
        if eviction["subresource"] == "eviction" and eviction["name"] in {
            e["details"]["pod"].split("/")[1] for e in exits
        }:
            pod = f"{NAMESPACE}/{eviction['name']}"
            assert pod in exited_at and exited_at[pod] < eviction["time"], eviction
    # the node's story reached the Prefect server from the pod
    logs = pool.server.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [first]}}, "limit": 200})
    assert any(f"{own} handed over to flow run" in entry["message"] for entry in logs), logs[-5:]
    # and the results are blobs in the container the pool's block names
    assert len(pool.azurite.blob_names(RESULTS)) >= 2
    # the UI: the own node's task run is grey, HandedOver, and names the follow-up run
    node_run = task_runs(pool.server, first, done=1)[own]
    assert (node_run["state"]["type"], node_run["state"]["name"]) == ("CANCELLED", "HandedOver")
    with sync_playwright() as playwright:
        browser = Browser(playwright, pool.workdir)
        browser.open(f"{pool.server.url}/runs/task-run/{node_run['id']}", wait_for="handed over to flow run")
        page = browser.text("handed-over-node-task-run")
        browser.browser.close()
    assert "HandedOver" in page and second["name"] in page, f"see {OUT / 'handed-over-node-task-run.png'}"


# ---- workload identity: a second cluster, reached by its AKS id ---------------------------------------
def aks_target(pool: Pool) -> dict:
    target = pool.target.scenario.cluster
    return {
        "subscription_id": target.subscription_id,
        "resource_group": target.resource_group,
        "name": target.name,
        "credential": "workload-identity",
        "arm_endpoint": pool.target.endpoints.arm,
        "ca_bundle": pool.ca_bundle,
    }


def test_a_run_with_workload_identity_patches_another_cluster_by_its_aks_id(pool):
    deployment = pool.deployment("target-eus-node-maintenance", fast_parameters(aks=aks_target(pool)))
    run_id = pool.run(deployment)
    run = wait_for_run(pool, run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    report = result_of(pool, run_id)
    assert report["cluster"] == pool.target.scenario.cluster.name
    rebooted = sorted(n["node"] for n in report["nodes"] if n["outcome"] == "rebooted")
    assert rebooted == sorted(pool.tgt.invariants()["reboots"]) and len(rebooted) == 2
    # Entra issued the application ARM and Kubernetes tokens for the pod's federated token
    issued = pool.tgt.tokens()["issued"]
    assert issued.get(pool.target.endpoints.arm.rstrip("/"), 0) >= 1 and len(issued) >= 2, issued
    users = {e.get("user") for e in pool.tgt.audit() if e["resource"] is not None and e.get("api") != "arm"}
    assert users == {APP_OBJECT}, users


def test_entra_refuses_a_service_account_without_a_federated_credential_and_the_run_says_so(pool):
    before = len(pool.tgt.audit())
    deployment = pool.deployment("target-eus-other-sa", fast_parameters(aks=aks_target(pool)), OTHER_SA)
    run = wait_for_run(pool, pool.run(deployment))
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert "AADSTS70021" in message and subject(OTHER_SA) in message, message
    assert "\n" not in message.strip(), message
    assert [e for e in pool.tgt.audit()[before:] if e["mutating"]] == []


# ---- what the worker does when a flow pod dies before reaching Prefect ----------------------------------
def test_a_pod_that_dies_before_reaching_prefect_crashes_its_run_with_the_pods_log(pool):
    deployment = pool.deployment("mgmt-weu-broken-image", fast_parameters(in_cluster=True))
    variables = {
        **deployment["job_variables"],
        "command": "python -c 'print(\"no module named aksmaint\"); exit(3)'",
        "finished_job_ttl": 60,  # 3 s at the module's time scale: the worker sees the Job go
    }
    pool.server.http.patch(
        f"/deployments/{deployment['id']}", json={"job_variables": variables}
    ).raise_for_status()
    run_id = pool.run(deployment)
    run = wait_for_run(pool, run_id)
    assert run["state"]["type"] == "CRASHED", run["state"]
    deadline = time.monotonic() + 60
    while True:
        logs = pool.server.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        if any("no module named aksmaint" in entry["message"] for entry in logs):
            break
        assert time.monotonic() < deadline, [entry["message"] for entry in logs]
        time.sleep(1)
    while any(j["metadata"]["labels"].get("prefect.io/flow-run-id") == run_id for j in jobs(pool)):
        assert time.monotonic() < deadline, "the finished Job outlived its ttlSecondsAfterFinished"
        time.sleep(1)
    assert pool.server.flow_run(run_id)["state"]["type"] == "CRASHED"


# ---- RBAC: what the worker and the flows asked for, against deployments/kubernetes -------------------
def requests_by(pool: Pool, account: str) -> list[Request]:
    return [
        Request(
            e["group"] or "",
            e["resource"] + (f"/{e['subresource']}" if e["subresource"] else ""),
            e["verb"],
            e["namespace"],
            e["name"],
        )
        for e in pool.mgmt.audit()
        if e.get("user") == subject(account) and e["resource"] is not None
    ]


def unused_grants(rules: list[Rule], requests: list[Request]) -> list[str]:
    unused = []
    for rule in rules:
        for group, resource, verb in rule.grants():
            probe = Rule(rule.role, rule.namespace, (group,), (resource,), (verb,), rule.names)
            if not any(probe.allows(r) for r in requests):
                unused.append(f"{rule.role}: {verb} {group or 'core'}/{resource}")
    return unused


def test_the_workers_role_is_exactly_what_the_real_worker_used(pool):
    requests = requests_by(pool, WORKER_SA)
    rules = rules_for((NAMESPACE, WORKER_SA))
    assert requests, "the worker made no request as its ServiceAccount"
    refused = sorted({r for r in requests if not any(rule.allows(r) for rule in rules)}, key=str)
    assert refused == [], "the worker's Role does not allow:\n" + "\n".join(map(str, refused))
    assert unused_grants(rules, requests) == []


def test_the_flow_pods_requests_are_allowed_by_the_flow_roles(pool):
    requests = requests_by(pool, FLOW_SA)
    rules = rules_for((NAMESPACE, FLOW_SA))
    assert any(r.resource == "pods" and r.verb == "get" and r.namespace == NAMESPACE for r in requests)
    refused = sorted({r for r in requests if not any(rule.allows(r) for rule in rules)}, key=str)
    assert refused == [], "the flow roles do not allow:\n" + "\n".join(map(str, refused))
