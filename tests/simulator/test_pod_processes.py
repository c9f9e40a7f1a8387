"""Pods that run as processes: streamed logs, SIGTERM on eviction and SIGKILL after the grace period,
service-account tokens rewritten before they expire, the workload identity webhook, and a CA shared
by two simulators."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from kubernetes import client

from simulator.runtime import SimulatedAKS
from simulator.scenario import parse_scenario
from tests.simulator.pods_support import TENANT, api_client, management_scenario, running_simulator, wait_for

CLIENT_ID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedAKS]:
    yield from running_simulator()


@pytest.fixture(scope="module")
def core(sim: SimulatedAKS) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(sim))


def pod(name: str, script: str, grace: int = 30, **spec: object) -> dict:
    container = {"name": "main", "image": "python:3.11", "command": ["python", "-c", script]}
    body = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": grace,
        "containers": [container],
        **spec,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def phase(core: client.CoreV1Api, name: str) -> str:
    return core.read_namespaced_pod(name, "default").status.phase


def gone(core: client.CoreV1Api, name: str) -> bool:
    return name not in {p.metadata.name for p in core.list_namespaced_pod("default").items}


def test_follow_streams_lines_as_they_are_printed(core, tmp_path: Path) -> None:
    go_on = tmp_path / "go-on"
    script = f"import os, time\nprint('one', flush=True)\nwhile not os.path.exists({str(go_on)!r}): time.sleep(0.05)\nprint('two')"
    core.create_namespaced_pod("default", pod("talker", script))
    wait_for("the pod to run", lambda: phase(core, "talker") == "Running")
    stream = core.read_namespaced_pod_log("talker", "default", follow=True, _preload_content=False)
    assert stream.readline() == b"one\n"  # the process still runs: it waits for go-on
    go_on.touch()
    assert stream.read() == b"two\n"  # the stream ends with the process
    wait_for("the pod to succeed", lambda: phase(core, "talker") == "Succeeded")


def test_an_evicted_pod_gets_sigterm_and_goes_when_its_process_exits(core, tmp_path: Path) -> None:
    marker = tmp_path / "sigterm"
    script = (
        "import signal, sys, time\n"
        f"def stop(*_): open({str(marker)!r}, 'w').write('SIGTERM'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\nprint('ready', flush=True)\ntime.sleep(60)"
    )
    core.create_namespaced_pod("default", pod("polite", script))
    wait_for(
        "the process to be ready", lambda: core.read_namespaced_pod_log("polite", "default") == "ready\n"
    )
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="polite", namespace="default"))
    core.create_namespaced_pod_eviction("polite", "default", eviction)
    wait_for("the pod to go", lambda: gone(core, "polite"), timeout=10)
    assert marker.read_text() == "SIGTERM"


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(sim, core) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)"
    core.create_namespaced_pod("default", pod("stubborn", script, grace=1))
    wait_for(
        "the process to be ready", lambda: core.read_namespaced_pod_log("stubborn", "default") == "ready\n"
    )
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", "default")
    wait_for("the pod to go", lambda: gone(core, "stubborn"), timeout=10)
    assert 0.9 < time.monotonic() - started < 5
    exits = [e["details"] for e in sim.cluster.timeline if e["event"] == "container_exited"]
    assert {"pod": "default/stubborn", "exit_code": 137} in exits


def test_a_projected_token_is_rewritten_atomically_before_it_expires(sim, core) -> None:
    # 600 s of simulated time at time_scale 0.01: the token lives 6 s and is rewritten after 4.8 s
    script = (
        "import os, time\npath = '/var/run/secrets/tokens/vault-token'\nseen = []\n"
        "while len(seen) < 2:\n"
        "    token = open(path).read()\n"
        "    if token not in seen: seen.append(token); print(token, os.readlink('/var/run/secrets/tokens/..data'), flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    source = {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "vault-token"}}
    volume = {"name": "tokens", "projected": {"sources": [source]}}
    body = pod("rotating", script, volumes=[volume])
    body["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "tokens", "mountPath": "/var/run/secrets/tokens"}
    ]
    core.create_namespaced_pod("default", body)
    wait_for("the pod to succeed", lambda: phase(core, "rotating") == "Succeeded", timeout=20)
    lines = core.read_namespaced_pod_log("rotating", "default").splitlines()
    (first, first_dir), (second, second_dir) = (line.split(" ") for line in lines)
    assert first != second and first_dir != second_dir and first_dir.startswith("..")
    claims = sim.cluster.service_accounts.verify(second, "vault")
    assert isinstance(claims, dict) and claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["pod"]["name"] == "rotating"


def test_the_workload_identity_webhook_injects_the_azure_variables_and_token(core) -> None:
    account = client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(
            name="maintainer", annotations={"azure.workload.identity/client-id": CLIENT_ID}
        )
    )
    core.create_namespaced_service_account("default", account)
    script = (
        "import os\nfor k in ('AZURE_CLIENT_ID', 'AZURE_TENANT_ID', 'AZURE_AUTHORITY_HOST'): print(os.environ[k])\n"
        "print(open(os.environ['AZURE_FEDERATED_TOKEN_FILE']).read().count('.'))"
    )
    body = pod("identity", script, serviceAccountName="maintainer")
    body["metadata"]["labels"] = {"azure.workload.identity/use": "true"}
    created = core.create_namespaced_pod("default", body)
    env = {e.name: e.value for e in created.spec.containers[0].env}
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == "/var/run/secrets/azure/tokens/azure-identity-token"
    volume = next(v for v in created.spec.volumes if v.name == "azure-identity-token")
    token_source = volume.projected.sources[0].service_account_token
    assert (token_source.audience, token_source.expiration_seconds) == ("api://AzureADTokenExchange", 3600)
    wait_for("the pod to succeed", lambda: phase(core, "identity") == "Succeeded")
    assert core.read_namespaced_pod_log("identity", "default").splitlines() == [
        CLIENT_ID,
        TENANT,
        "https://login.microsoftonline.com/",
        "2",
    ]
    unlabelled = core.create_namespaced_pod("default", pod("plain", "pass", serviceAccountName="maintainer"))
    assert not unlabelled.spec.containers[0].env


def test_a_pod_of_a_missing_service_account_is_refused(core) -> None:
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod("default", pod("orphan", "pass", serviceAccountName="nobody"))
    assert refused.value.status == 403


def test_two_simulators_sharing_a_ca_are_trusted_with_one_bundle(tmp_path: Path) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = ssl.create_default_context(cafile=str(bundle))
    scenario = parse_scenario(
        {**management_scenario(), "cluster": {**management_scenario()["cluster"], "runs_pods": False}}
    )
    with SimulatedAKS(scenario, ca=ca) as first, SimulatedAKS(scenario, ca=ca) as second:
        for sim in (first, second):
            assert sim.endpoints is not None
            with urllib.request.urlopen(
                sim.endpoints.kube_api + "/openid/v1/jwks", context=context
            ) as answer:
                assert answer.status == 200
