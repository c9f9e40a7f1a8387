"""What the tests of Jobs and of pods that run as processes share: a management cluster's scenario
(one node, runs_pods on, workload identity on), a running simulator per module, and waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from kubernetes import client, config

from simulator.runtime import SimulatedAKS
from simulator.scenario import parse_scenario

T = TypeVar("T")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
KERNEL = "5.15.0-1081-azure"


def management_scenario(time_scale: float = 0.01) -> dict:
    return {
        "time_scale": time_scale,
        "cluster": {
            "name": "aks-mgmt",
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg-mgmt",
            "location": "westeurope",
            "kubernetes_version": "1.31.4",
            "runs_pods": True,
            "workload_identity": {"tenant_id": TENANT},
        },
        "pools": [
            {
                "name": "system",
                "count": 1,
                "mode": "System",
                "orchestrator_version": "1.31.4",
                "node_image_version": "AKSUbuntu-2204gen2containerd-202502.05.0",
                "kernel": KERNEL,
            }
        ],
    }


def running_simulator(scenario: dict | None = None) -> Iterator[SimulatedAKS]:
    with SimulatedAKS(parse_scenario(scenario or management_scenario())) as sim:
        yield sim


def api_client(sim: SimulatedAKS) -> client.ApiClient:
    assert sim.endpoints is not None
    return config.new_client_from_config(config_file=sim.endpoints.kubeconfig)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    """The first truthy result of ``probe``, polled every 50 ms; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job(name: str, script: str, backoff_limit: int = 6, **spec: object) -> dict:
    """A Job whose one container runs ``python -c script`` with the downward-API variables."""
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "GREETING", "value": "hello $(POD_NAME)"},
    ]
    container = {"name": "main", "image": "python:3.11", "command": ["python", "-c", script], "env": env}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"prefect.io/flow-run-id": name}},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            **spec,
        },
    }
