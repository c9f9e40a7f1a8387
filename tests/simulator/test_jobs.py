"""batch/v1 Jobs on a cluster that runs its pods as processes: the Job controller's pods, retries,
conditions and TTL, logs through the API and kubectl, and the kubernetes_asyncio client the Prefect
worker uses."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest
from kubernetes import client

from simulator.runtime import SimulatedAKS
from tests.simulator.pods_support import api_client, job, running_simulator, wait_for

IN_CLUSTER = """
import os, socket
print("hello from", os.environ["POD_NAME"], flush=True)
print("env", os.environ["POD_NAMESPACE"], os.environ["NODE_NAME"], os.environ["HOSTNAME"], flush=True)
print("hostname", socket.gethostname(), flush=True)
print("greeting", os.environ["GREETING"], flush=True)
from kubernetes import client, config
config.load_incluster_config()
pod = client.CoreV1Api().read_namespaced_pod(os.environ["POD_NAME"], os.environ["POD_NAMESPACE"])
print("api sees", pod.metadata.name, pod.status.phase, flush=True)
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedAKS]:
    yield from running_simulator()


@pytest.fixture(scope="module")
def batch(sim: SimulatedAKS) -> client.BatchV1Api:
    return client.BatchV1Api(api_client(sim))


@pytest.fixture(scope="module")
def core(sim: SimulatedAKS) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(sim))


def conditions(batch: client.BatchV1Api, name: str) -> list[tuple[str, str | None]]:
    status = batch.read_namespaced_job_status(name, "default").status
    return [(c.type, c.reason) for c in status.conditions or []]


def job_pods(core: client.CoreV1Api, name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod("default", label_selector=f"job-name={name}").items


def test_a_job_pod_runs_in_its_own_namespaces_and_calls_the_api_with_its_token(
    sim, batch, core, kubectl
) -> None:
    batch.create_namespaced_job("default", job("in-cluster", IN_CLUSTER))
    wait_for(
        "the Job to complete", lambda: ("Complete", "CompletionsReached") in conditions(batch, "in-cluster")
    )
    done = batch.read_namespaced_job("in-cluster", "default")
    assert [c.type for c in done.status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert done.status.succeeded == 1 and not done.status.active and done.status.completion_time
    assert done.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": done.metadata.uid}
    (pod,) = job_pods(core, "in-cluster")
    name, node = pod.metadata.name, pod.spec.node_name
    assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "in-cluster"
    assert pod.metadata.labels["controller-uid"] == done.metadata.uid
    assert pod.metadata.owner_references[0].kind == "Job" and pod.metadata.owner_references[0].controller
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Succeeded", 0, "Completed")
    log = core.read_namespaced_pod_log(name, "default")
    assert log.splitlines() == [
        f"hello from {name}",
        f"env default {node} {name}",
        f"hostname {name}",
        f"greeting hello {name}",
        f"api sees {name} Running",
    ]
    assert core.read_namespaced_pod_log(name, "default", tail_lines=1) == f"api sees {name} Running\n"
    stamped = core.read_namespaced_pod_log(name, "default", timestamps=True).splitlines()[0]
    assert stamped.endswith(f"Z hello from {name}") and len(stamped.split(" ")[0]) == 30
    assert sim.endpoints is not None
    printed = subprocess.run(
        [kubectl, "--kubeconfig", sim.endpoints.kubeconfig, "logs", "job/in-cluster"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert printed.stdout == log, printed.stderr
    with pytest.raises(client.ApiException) as refused:
        core.read_namespaced_pod_log(name, "default", previous=True)
    assert refused.value.status == 400


def test_a_failing_pod_is_retried_until_the_backoff_limit_fails_the_job(batch, core) -> None:
    batch.create_namespaced_job(
        "default", job("failing", "import sys; print('bad'); sys.exit(3)", backoff_limit=1)
    )
    wait_for("the Job to fail", lambda: ("Failed", "BackoffLimitExceeded") in conditions(batch, "failing"))
    failed = batch.read_namespaced_job("failing", "default")
    assert [c.type for c in failed.status.conditions] == ["FailureTarget", "Failed"]
    assert failed.status.failed == 2 and not failed.status.succeeded and not failed.status.completion_time
    pods = job_pods(core, "failing")
    assert len(pods) == 2 and {p.status.phase for p in pods} == {"Failed"}
    codes = {p.status.container_statuses[0].state.terminated.exit_code for p in pods}
    assert codes == {3}
    assert core.read_namespaced_pod_log(pods[0].metadata.name, "default") == "bad\n"


def test_a_finished_job_goes_with_its_pods_after_its_ttl(batch, core) -> None:
    batch.create_namespaced_job("default", job("short-lived", "print('done')", ttlSecondsAfterFinished=100))
    wait_for(
        "the Job to complete", lambda: ("Complete", "CompletionsReached") in conditions(batch, "short-lived")
    )

    def gone() -> bool:
        names = {j.metadata.name for j in batch.list_namespaced_job("default").items}
        return "short-lived" not in names and not job_pods(core, "short-lived")

    wait_for("the TTL controller to delete the Job and its pod", gone)


def test_deleting_a_job_in_the_background_deletes_its_running_pod(batch, core) -> None:
    batch.create_namespaced_job("default", job("sleeper", "import time; time.sleep(60)"))
    wait_for("the pod to run", lambda: [p for p in job_pods(core, "sleeper") if p.status.phase == "Running"])
    batch.delete_namespaced_job("sleeper", "default", propagation_policy="Background")
    wait_for("the pod to go", lambda: not job_pods(core, "sleeper"))


def test_kubernetes_asyncio_creates_and_watches_a_job(sim) -> None:
    from kubernetes_asyncio import client as aclient
    from kubernetes_asyncio import config as aconfig
    from kubernetes_asyncio import watch

    async def create_and_watch() -> list[str]:
        assert sim.endpoints is not None
        api = await aconfig.new_client_from_config(config_file=sim.endpoints.kubeconfig)
        async with api:
            jobs = aclient.BatchV1Api(api)
            await jobs.create_namespaced_job("default", job("async", "print('hi')"))
            seen: list[str] = []
            stream = watch.Watch().stream(
                jobs.list_namespaced_job,
                "default",
                label_selector="prefect.io/flow-run-id=async",
                timeout_seconds=30,
            )
            async for event in stream:
                status = event["object"].status
                seen += [c.type for c in status.conditions or [] if c.type not in seen]
                if "Complete" in seen:
                    break
            return seen

    assert asyncio.run(create_and_watch()) == ["SuccessCriteriaMet", "Complete"]
