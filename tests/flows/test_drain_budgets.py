"""The budgets a stuck drain names: the API server matches their selectors, matchExpressions included."""

from __future__ import annotations

import time

from aksmaint.kube import connect
from aksmaint.maintenance.drain import blocking_budgets, pods_on_node
from aksmaint.params import ClusterConnection
from tests.support import RunningSim, maintenance_scenario


def budget(name: str, expressions: list[dict], max_unavailable: int = 0) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchExpressions": expressions}},
    }


def test_budgets_selected_by_expressions_are_named_only_for_the_pods_they_cover(start_sim) -> None:
    sim: RunningSim = start_sim(maintenance_scenario(need=1, count=2, replicas=2, api_ready_seconds=0))
    kube = connect(ClusterConnection(kubeconfig=sim.kubeconfig))
    try:
        for body in (
            budget("web-by-expression", [{"key": "app", "operator": "In", "values": ["web", "shop"]}]),
            budget("api-by-expression", [{"key": "app", "operator": "In", "values": ["api"]}]),
            budget("not-web", [{"key": "app", "operator": "NotIn", "values": ["web"]}], max_unavailable=5),
        ):
            kube.call(kube.policy.create_namespaced_pod_disruption_budget, "shop", body)
        deadline = time.monotonic() + 30
        while True:  # every pod is Ready and the disruption controller has counted it
            budgets = kube.call(kube.policy.list_namespaced_pod_disruption_budget, "shop").items
            if all(
                b.status
                and b.status.observed_generation
                and b.status.current_healthy == b.status.expected_pods
                for b in budgets
            ):
                break
            assert time.monotonic() < deadline, "budget status not computed"
            time.sleep(0.1)
        nodes = [n.metadata.name for n in kube.call(kube.core.list_node).items]
        web_pods = [
            p for n in nodes for p in pods_on_node(kube, n) if (p.metadata.labels or {}).get("app") == "web"
        ]
        assert web_pods

        named = blocking_budgets(kube, web_pods)
        assert [n.split(" ")[0] for n in named] == ["shop/web-by-expression"], named
        assert "allows 0 disruptions" in named[0]
    finally:
        kube.api_client.close()
