"""The ARM emulator answers as real AKS did in azure-cli's recorded sessions.

azure-cli keeps vcrpy recordings of its live tests against real AKS in its public repository, under
src/azure-cli/azure/cli/command_modules/acs/tests/latest/recordings/. The expected answers below were
read there and are written down as shapes, not copied: the status, which async headers came back,
the body's top-level keys and the provisioning states. Each names the recording it came from. The
tests send the same requests to the emulator, with its own subscription, group, cluster and pools.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.simulator.test_arm import NAME, RG, SCALE, SUB, tls
from tests.support import RunningSim, scenario_dict

API_VERSION = "2026-08-01"  # the SDK's default; the recordings ran with the api-version of their day
ASYNC_HEADERS = ("azure-asyncoperation", "location", "retry-after", "etag")
# The documented eTag property, which the emulator keeps for If-Match (docs/arm-fidelity.md). None of
# the recordings shows it, so it is left out of the comparison; the header is compared.
KEPT_FROM_THE_DOCS = {"eTag"}
POOL_KEYS = "id name type properties"
CLUSTER_KEYS = "id location name type properties identity sku"


@dataclass(frozen=True)
class Shape:
    """What an answer looked like, without its values."""

    status: int
    headers: frozenset[str]  # which of ASYNC_HEADERS it carried
    keys: frozenset[str]  # the body's top-level keys; empty for no body
    states: tuple[tuple[str, str], ...]  # ("state" or a pool's name, provisioning state or status)


def shape(status: int, headers: str = "", keys: str = "", **states: str) -> Shape:
    return Shape(status, frozenset(headers.split()), frozenset(keys.split()), tuple(sorted(states.items())))


# ---- test_aks_upgrade_node_image_only_nodepool.yaml: az aks nodepool upgrade --node-image-only (2022) ----
# POST .../agentPools/{pool}/upgradeNodeImageVersion: 202 with the pool, Azure-AsyncOperation and Location.
NODE_IMAGE_ACCEPTED = shape(
    202, "azure-asyncoperation location", POOL_KEYS, state="UpgradingNodeImageVersion"
)
# GET .../agentPools/{pool} right after: the pool, upgrading; no ETag header.
POOL_UPGRADING = shape(200, "", POOL_KEYS, state="UpgradingNodeImageVersion")
# GET .../locations/{loc}/operations/{id} (the session's aks create polls it): no Retry-After, and
# name, status and startTime while it runs ...
OPERATION_RUNNING = shape(200, "", "name status startTime", state="InProgress")
# ... then endTime as well.
OPERATION_SUCCEEDED = shape(200, "", "name status startTime endTime", state="Succeeded")

# ---- test_aks_upgrade_node_image_only_cluster.yaml: az aks upgrade --node-image-only (2022) ----
# The POST goes to the pool of a cluster created minutes before, so on the latest image: still a 202,
# shaped as NODE_IMAGE_ACCEPTED. GET .../managedClusters/{name} right after: the cluster Succeeded,
# its pool upgrading.
CLUSTER_WHILE_ITS_POOL_UPGRADES = shape(
    200, "", CLUSTER_KEYS, state="Succeeded", userpool="UpgradingNodeImageVersion"
)

# ---- test_aks_abort.yaml: az aks create --no-wait, then az aks operation-abort (2025) ----
# PUT .../managedClusters/{name}: Azure-AsyncOperation only, the body in the operation's state. The
# recording's PUT created the cluster (201, Creating); here it upgrades one (200, Upgrading).
CLUSTER_PUT_ACCEPTED = shape(
    200, "azure-asyncoperation", CLUSTER_KEYS, state="Upgrading", nodepool1="Upgrading", userpool="Upgrading"
)
# POST .../managedClusters/{name}/abort: 202 with the cluster as the abort found it (still in its
# operation's state), Azure-AsyncOperation and Location.
ABORT_ACCEPTED = shape(
    202,
    "azure-asyncoperation location",
    CLUSTER_KEYS,
    state="Upgrading",
    nodepool1="Upgrading",
    userpool="Upgrading",
)
# GET .../locations/{loc}/operationresults/{id} after the abort ended: 204, no body, Location.
OPERATION_RESULT_DONE = shape(204, "location")
# GET .../managedClusters/{name} afterwards: the cluster and its pools Canceled.
CLUSTER_ABORTED = shape(200, "", CLUSTER_KEYS, state="Canceled", nodepool1="Canceled", userpool="Canceled")

# ---- test_aks_maintenanceconfiguration.yaml: az aks maintenanceconfiguration add/list/show (2023) ----
# GET .../maintenanceConfigurations with none: {"value": []}.
NO_CONFIGURATIONS = shape(200, "", "value")
# GET .../maintenanceConfigurations/default, and each item of the list: id, name, properties; no type.
CONFIGURATION = shape(200, "", "id name properties")
CONFIGURATION_ITEM_KEYS = {"id", "name", "properties"}
# properties after "add --weekday --start-hour" and an update with notAllowedTime
CONFIGURATION_PROPERTY_KEYS = {"timeInWeek", "notAllowedTime"}


def observe(response: httpx.Response, expected: Shape) -> Shape:
    """The shape of ``response``, with the states of what ``expected`` names."""
    body = response.json() if response.content else {}
    states = []
    for what, _ in expected.states:
        if what == "state":
            props = body.get("properties")
            states.append((what, props["provisioningState"] if props else body.get("status")))
        else:
            profiles = {p["name"]: p for p in body["properties"]["agentPoolProfiles"]}
            states.append((what, profiles[what]["provisioningState"]))
    return Shape(
        response.status_code,
        frozenset(h for h in ASYNC_HEADERS if h in response.headers),
        frozenset(body) - KEPT_FROM_THE_DOCS,
        tuple(states),
    )


class Arm:
    """Raw requests to the emulator's managed cluster, as ARM's URLs name it."""

    def __init__(self, sim: RunningSim):
        ep = sim.endpoints
        self.cluster = (
            f"{ep.arm}/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
            f"Microsoft.ContainerService/managedClusters/{NAME}"
        )
        self.http = httpx.Client(verify=tls(sim), headers={"Authorization": f"Bearer {ep.token}"})

    def call(self, method: str, path: str = "", body: dict | None = None) -> httpx.Response:
        url = f"{self.cluster}{path}"
        return self.http.request(method, url, params={"api-version": API_VERSION}, json=body)

    def follow(self, url: str) -> httpx.Response:
        """An operation URL from an answer's header, as it is (it carries its own api-version)."""
        return self.http.get(url)

    def poll(self, url: str) -> list[httpx.Response]:
        """Every answer of the operation's status URL until the operation ended."""
        answers = [self.follow(url)]
        while answers[-1].json()["status"] == "InProgress":
            assert len(answers) < 600, "the operation did not end"
            time.sleep(0.05)
            answers.append(self.follow(url))
        return answers


@pytest.fixture
def arm(start_sim) -> Iterator:
    opened: list[Arm] = []

    def start(scenario: dict, time_scale: float) -> tuple[RunningSim, Arm]:
        sim = start_sim(scenario, time_scale=time_scale)
        opened.append(Arm(sim))
        return sim, opened[-1]

    yield start
    for client in opened:
        client.http.close()


def operation_shapes(answers: list[httpx.Response]) -> list[Shape]:
    """Each status answer's shape next to what the recordings show for its status."""
    recorded = {"InProgress": OPERATION_RUNNING, "Succeeded": OPERATION_SUCCEEDED}
    return [observe(a, recorded[a.json()["status"]]) for a in answers]


def test_node_image_upgrade_of_a_pool_answers_as_recorded(arm):
    _, api = arm(scenario_dict(time_scale=SCALE), time_scale=0.05)
    accepted = api.call("POST", "/agentPools/nodepool1/upgradeNodeImageVersion")
    assert observe(accepted, NODE_IMAGE_ACCEPTED) == NODE_IMAGE_ACCEPTED
    assert observe(api.call("GET", "/agentPools/nodepool1"), POOL_UPGRADING) == POOL_UPGRADING

    answers = api.poll(accepted.headers["azure-asyncoperation"])
    assert len(answers) > 1 and answers[-1].json()["status"] == "Succeeded"
    shapes = operation_shapes(answers)
    assert shapes == [OPERATION_RUNNING] * (len(answers) - 1) + [OPERATION_SUCCEEDED]
    done = api.follow(accepted.headers["location"])
    assert observe(done, OPERATION_RESULT_DONE) == OPERATION_RESULT_DONE
    after = shape(200, "", POOL_KEYS, state="Succeeded")
    assert observe(api.call("GET", "/agentPools/nodepool1"), after) == after


def test_node_image_upgrade_of_a_pool_on_the_latest_image_is_accepted_as_recorded(arm):
    sim, api = arm(scenario_dict(time_scale=SCALE), time_scale=0.05)  # userpool runs the latest image
    accepted = api.call("POST", "/agentPools/userpool/upgradeNodeImageVersion")
    assert observe(accepted, NODE_IMAGE_ACCEPTED) == NODE_IMAGE_ACCEPTED
    during = api.call("GET")
    assert observe(during, CLUSTER_WHILE_ITS_POOL_UPGRADES) == CLUSTER_WHILE_ITS_POOL_UPGRADES

    answers = api.poll(accepted.headers["azure-asyncoperation"])
    assert operation_shapes(answers)[-1] == OPERATION_SUCCEEDED
    assert [e["status"] for e in sim.observer.audit() if e["path"].endswith("/upgradeNodeImageVersion")] == [
        202
    ]


def test_abort_of_a_cluster_operation_answers_as_recorded(arm):
    scenario = scenario_dict(time_scale=SCALE)
    scenario["cluster"]["control_plane_upgrade_seconds"] = 100_000  # still running when it is aborted
    _, api = arm(scenario, time_scale=0.01)
    upgrade = {
        "location": "westeurope",
        "properties": {
            "kubernetesVersion": "1.30.7",
            "agentPoolProfiles": [
                {"name": "nodepool1", "orchestratorVersion": "1.30.7"},
                {"name": "userpool", "orchestratorVersion": "1.30.7"},
            ],
        },
    }
    put = api.call("PUT", "", upgrade)
    assert observe(put, CLUSTER_PUT_ACCEPTED) == CLUSTER_PUT_ACCEPTED

    abort = api.call("POST", "/abort")
    assert observe(abort, ABORT_ACCEPTED) == ABORT_ACCEPTED
    answers = api.poll(abort.headers["azure-asyncoperation"])
    shapes = operation_shapes(answers)
    assert shapes[-1] == OPERATION_SUCCEEDED and set(shapes) <= {OPERATION_RUNNING, OPERATION_SUCCEEDED}
    done = api.follow(abort.headers["location"])
    assert observe(done, OPERATION_RESULT_DONE) == OPERATION_RESULT_DONE
    assert observe(api.call("GET"), CLUSTER_ABORTED) == CLUSTER_ABORTED
    upgraded = api.follow(put.headers["azure-asyncoperation"]).json()
    assert (upgraded["status"], upgraded["error"]["code"]) == ("Canceled", "OperationCanceled")


def test_maintenance_configurations_answer_as_recorded(arm):
    _, bare = arm(scenario_dict(time_scale=SCALE), time_scale=0.01)
    none = bare.call("GET", "/maintenanceConfigurations")
    assert observe(none, NO_CONFIGURATIONS) == NO_CONFIGURATIONS and none.json() == {"value": []}

    scenario = scenario_dict(time_scale=SCALE)
    scenario["cluster"]["maintenance_configurations"] = {
        "default": {
            "time_in_week": [{"day": "Tuesday", "hour_slots": [1, 2]}],
            "not_allowed_time": [{"start": "2021-11-26T03:00:00Z", "end": "2021-11-30T12:00:00Z"}],
        }
    }
    _, api = arm(scenario, time_scale=0.01)
    one = api.call("GET", "/maintenanceConfigurations/default")
    assert observe(one, CONFIGURATION) == CONFIGURATION
    assert set(one.json()["properties"]) == CONFIGURATION_PROPERTY_KEYS
    listing = api.call("GET", "/maintenanceConfigurations")
    assert observe(listing, NO_CONFIGURATIONS) == NO_CONFIGURATIONS  # the same envelope: value only
    assert [set(item) for item in listing.json()["value"]] == [CONFIGURATION_ITEM_KEYS]
