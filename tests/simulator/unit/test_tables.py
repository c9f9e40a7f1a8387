"""Server-side tables for kubectl get: columns, cells and AGE formatting."""

import datetime

import pytest

from simulator.k8s.tables import to_table
from simulator.k8s.tables_common import human_duration
from simulator.k8s.tables_nodes_pods import node_status, pod_status

NOW = datetime.datetime(2026, 1, 10, 12, 0, 0, tzinfo=datetime.UTC)


def _ago(**delta: float) -> str:
    return (NOW - datetime.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cells(resource: str, obj: dict) -> dict:
    """The single row of a one-object table, keyed by column name."""
    table = to_table(resource, [obj], NOW)
    names = [column["name"] for column in table["columnDefinitions"]]
    return dict(zip(names, table["rows"][0]["cells"], strict=True))


def _columns(resource: str) -> tuple[list[str], list[str]]:
    """(normal columns, wide-only columns) as kubectl would show them."""
    definitions = to_table(resource, [], NOW)["columnDefinitions"]
    return (
        [c["name"].upper() for c in definitions if c["priority"] == 0],
        [c["name"].upper() for c in definitions if c["priority"] == 1],
    )


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (datetime.timedelta(seconds=-5), "<invalid>"),
        (datetime.timedelta(seconds=-1), "0s"),
        (datetime.timedelta(0), "0s"),
        (datetime.timedelta(seconds=5), "5s"),
        (datetime.timedelta(seconds=119), "119s"),
        (datetime.timedelta(minutes=2), "2m"),
        (datetime.timedelta(minutes=3, seconds=20), "3m20s"),
        (datetime.timedelta(minutes=9, seconds=59), "9m59s"),
        (datetime.timedelta(minutes=10, seconds=30), "10m"),
        (datetime.timedelta(minutes=179), "179m"),
        (datetime.timedelta(hours=3), "3h"),
        (datetime.timedelta(hours=2, minutes=5), "125m"),
        (datetime.timedelta(hours=7, minutes=59), "7h59m"),
        (datetime.timedelta(hours=8, minutes=30), "8h"),
        (datetime.timedelta(hours=47), "47h"),
        (datetime.timedelta(days=2), "2d"),
        (datetime.timedelta(days=3, hours=4), "3d4h"),
        (datetime.timedelta(days=8, hours=4), "8d"),
        (datetime.timedelta(days=729), "729d"),
        (datetime.timedelta(days=730), "2y"),
        (datetime.timedelta(days=800), "2y70d"),
        (datetime.timedelta(days=365 * 8 + 100), "8y"),
    ],
)
def test_human_duration(delta: datetime.timedelta, expected: str) -> None:
    assert human_duration(delta) == expected


def test_age_column_from_creation_timestamp() -> None:
    assert (
        _cells("leases", {"metadata": {"name": "l", "creationTimestamp": _ago(days=3, hours=4)}})["Age"]
        == "3d4h"
    )
    assert _cells("leases", {"metadata": {"name": "l"}})["Age"] == "<unknown>"
    assert (
        _cells("leases", {"metadata": {"name": "l", "creationTimestamp": "yesterday"}})["Age"] == "<unknown>"
    )


def test_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    table = to_table("leases", [{"metadata": {"name": "l", "creationTimestamp": _ago(seconds=30)}}], naive)
    assert table["rows"][0]["cells"][2] == "30s"


def test_table_envelope_and_list_metadata() -> None:
    table = to_table(
        "leases",
        [],
        NOW,
        list_meta={"resourceVersion": "42", "continue": "abc", "remainingItemCount": 3, "selfLink": "/x"},
    )
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42", "continue": "abc", "remainingItemCount": 3}
    assert table["rows"] == []
    assert table["columnDefinitions"][0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": table["columnDefinitions"][0]["description"],
        "priority": 0,
    }
    assert to_table("leases", [], NOW)["metadata"] == {}


LEASE = {
    "apiVersion": "coordination.k8s.io/v1",
    "kind": "Lease",
    "metadata": {"name": "aks-nodepool1-0", "namespace": "kube-node-lease", "resourceVersion": "7"},
    "spec": {"holderIdentity": "aks-nodepool1-0"},
}


def test_include_object_variants() -> None:
    partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": LEASE["metadata"]}
    assert to_table("leases", [LEASE], NOW)["rows"][0]["object"] == partial
    assert to_table("leases", [LEASE], NOW, "Metadata")["rows"][0]["object"] == partial
    assert to_table("leases", [LEASE], NOW, "")["rows"][0]["object"] == partial
    assert to_table("leases", [LEASE], NOW, "Object")["rows"][0]["object"] == LEASE
    assert "object" not in to_table("leases", [LEASE], NOW, "None")["rows"][0]
    with pytest.raises(ValueError, match="includeObject"):
        to_table("leases", [LEASE], NOW, "Everything")


# --- nodes ----------------------------------------------------------------------------------------


def _node(ready: str | None = "True", unschedulable: bool = False, **labels: str) -> dict:
    conditions = [{"type": "MemoryPressure", "status": "False"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready})
    return {
        "metadata": {
            "name": "aks-nodepool1-0",
            "creationTimestamp": _ago(hours=2, minutes=5),
            "labels": {"kubernetes.azure.com/role": "agent", **labels},
        },
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "conditions": conditions,
            "addresses": [
                {"type": "Hostname", "address": "aks-nodepool1-0"},
                {"type": "InternalIP", "address": "10.224.0.4"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.30.3",
                "osImage": "Ubuntu 22.04.4 LTS",
                "kernelVersion": "5.15.0-1068-azure",
                "containerRuntimeVersion": "containerd://1.7.20-1",
            },
        },
    }


@pytest.mark.parametrize(
    ("ready", "unschedulable", "expected"),
    [
        ("True", False, "Ready"),
        ("False", False, "NotReady"),
        ("Unknown", False, "NotReady"),
        (None, False, "Unknown"),
        ("True", True, "Ready,SchedulingDisabled"),
        ("Unknown", True, "NotReady,SchedulingDisabled"),
        (None, True, "Unknown,SchedulingDisabled"),
    ],
)
def test_node_status(ready: str | None, unschedulable: bool, expected: str) -> None:
    node = _node(ready, unschedulable)
    assert node_status(node) == expected
    assert _cells("nodes", node)["Status"] == expected


def test_node_columns_normal_and_wide() -> None:
    assert _columns("nodes") == (
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"],
    )


def test_node_cells() -> None:
    assert _cells("nodes", _node()) == {
        "Name": "aks-nodepool1-0",
        "Status": "Ready",
        "Roles": "<none>",
        "Age": "125m",
        "Version": "v1.30.3",
        "Internal-IP": "10.224.0.4",
        "External-IP": "<none>",
        "OS-Image": "Ubuntu 22.04.4 LTS",
        "Kernel-Version": "5.15.0-1068-azure",
        "Container-Runtime": "containerd://1.7.20-1",
    }


def test_node_roles_from_both_label_styles() -> None:
    labels = {
        "node-role.kubernetes.io/worker": "",
        "node-role.kubernetes.io/control-plane": "",
        "node-role.kubernetes.io/": "",
        "kubernetes.io/role": "agent",
    }
    node = _node()
    node["metadata"]["labels"].update(labels)
    assert _cells("nodes", node)["Roles"] == "agent,control-plane,worker"


def test_node_without_node_info_shows_unknown_in_wide_columns() -> None:
    node = {"metadata": {"name": "bare"}}
    cells = _cells("nodes", node)
    assert cells["Status"] == "Unknown"
    assert cells["Version"] == ""
    assert cells["Internal-IP"] == "<none>"
    assert cells["OS-Image"] == cells["Kernel-Version"] == cells["Container-Runtime"] == "<unknown>"


# --- pods -----------------------------------------------------------------------------------------


def _running(name: str = "app", restarts: int = 0, ready: bool = True) -> dict:
    return {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "state": {"running": {"startedAt": _ago(hours=1)}},
    }


def _pod(phase: str = "Running", statuses: list | None = None, **extra: dict) -> dict:
    pod = {
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": _ago(minutes=5)},
        "spec": {"nodeName": "aks-nodepool1-0", "containers": [{"name": "app", "image": "nginx"}]},
        "status": {
            "phase": phase,
            "podIP": "10.244.0.7",
            "podIPs": [{"ip": "10.244.0.7"}],
            "containerStatuses": [_running()] if statuses is None else statuses,
        },
    }
    for section, values in extra.items():
        pod[section].update(values)
    return pod


def test_pod_columns_normal_and_wide() -> None:
    assert _columns("pods") == (
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
    )


def test_running_pod_cells() -> None:
    assert _cells("pods", _pod()) == {
        "Name": "web-1",
        "Ready": "1/1",
        "Status": "Running",
        "Restarts": "0",
        "Age": "5m",
        "IP": "10.244.0.7",
        "Node": "aks-nodepool1-0",
        "Nominated Node": "<none>",
        "Readiness Gates": "<none>",
    }


def test_pending_unscheduled_pod_wide_cells() -> None:
    pod = _pod("Pending", statuses=[])
    pod["spec"].pop("nodeName")
    pod["status"].pop("podIP")
    pod["status"].pop("podIPs")
    cells = _cells("pods", pod)
    assert (cells["Ready"], cells["Status"], cells["IP"], cells["Node"]) == (
        "0/1",
        "Pending",
        "<none>",
        "<none>",
    )


@pytest.mark.parametrize(
    ("phase", "state", "expected"),
    [
        ("Pending", {"waiting": {"reason": "ContainerCreating"}}, "ContainerCreating"),
        ("Running", {"waiting": {"reason": "CrashLoopBackOff"}}, "CrashLoopBackOff"),
        ("Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}}, "Completed"),
        ("Failed", {"terminated": {"exitCode": 1, "reason": "Error"}}, "Error"),
        ("Failed", {"terminated": {"exitCode": 137}}, "ExitCode:137"),
        ("Failed", {"terminated": {"exitCode": 0, "signal": 9}}, "Signal:9"),
    ],
)
def test_pod_status_from_container_states(phase: str, state: dict, expected: str) -> None:
    pod = _pod(phase, statuses=[{"name": "app", "ready": False, "restartCount": 0, "state": state}])
    assert _cells("pods", pod)["Status"] == expected
    assert _cells("pods", pod)["Ready"] == "0/1"


def test_terminating_pod() -> None:
    pod = _pod(metadata={"deletionTimestamp": _ago(seconds=3)})
    assert _cells("pods", pod)["Status"] == "Terminating"
    finished = _pod("Succeeded", statuses=[], metadata={"deletionTimestamp": _ago(seconds=3)})
    assert _cells("pods", finished)["Status"] == "Succeeded"
    lost = _pod(metadata={"deletionTimestamp": _ago(seconds=3)}, status={"reason": "NodeLost"})
    assert _cells("pods", lost)["Status"] == "Unknown"


def test_pod_status_reason_overrides_phase() -> None:
    pod = _pod("Failed", statuses=[], status={"reason": "Evicted"})
    assert _cells("pods", pod)["Status"] == "Evicted"


def test_completed_container_beside_running_one_shows_running() -> None:
    done = {
        "name": "job",
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }
    pod = _pod(statuses=[_running(), done], status={"conditions": [{"type": "Ready", "status": "True"}]})
    pod["spec"]["containers"].append({"name": "job"})
    assert _cells("pods", pod)["Status"] == "Running"
    assert _cells("pods", pod)["Ready"] == "1/2"


def test_restarts_show_time_since_last_restart() -> None:
    status = _running(restarts=3)
    status["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": _ago(minutes=4)}}
    assert _cells("pods", _pod(statuses=[status]))["Restarts"] == "3 (4m ago)"
    assert _cells("pods", _pod(statuses=[_running(restarts=2)]))["Restarts"] == "2"


def test_init_containers() -> None:
    init_spec = {"initContainers": [{"name": "setup"}, {"name": "migrate"}]}
    waiting = {
        "name": "app",
        "ready": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": "PodInitializing"}},
    }

    def with_init(*init_states: dict) -> dict:
        statuses = [
            {"name": name, "ready": False, "restartCount": 1, "state": state}
            for name, state in zip(["setup", "migrate"], init_states, strict=False)
        ]
        return _pod("Pending", statuses=[waiting], spec=init_spec, status={"initContainerStatuses": statuses})

    done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    assert pod_status(with_init(done, {"running": {}}))[2:4] == ("Init:1/2", 2)
    assert pod_status(with_init({"waiting": {"reason": "ErrImagePull"}}, {}))[2:4] == ("Init:ErrImagePull", 1)
    assert pod_status(with_init({"terminated": {"exitCode": 2, "reason": "Error"}}, {}))[2] == "Init:Error"
    assert pod_status(with_init({"terminated": {"exitCode": 3}}, {}))[2] == "Init:ExitCode:3"
    assert pod_status(with_init(done, done))[2] == "PodInitializing"


def test_sidecar_init_containers_count_as_containers() -> None:
    spec = {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}]}
    sidecar = {**_running("proxy", restarts=1), "started": True}
    pod = _pod(spec=spec, status={"initContainerStatuses": [sidecar]})
    assert pod_status(pod)[:4] == (2, 2, "Running", 1)


def test_readiness_gates_cell() -> None:
    pod = _pod(
        spec={"readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]},
        status={"conditions": [{"type": "example.com/lb", "status": "True"}]},
    )
    assert _cells("pods", pod)["Readiness Gates"] == "1/2"


def test_nominated_node_cell() -> None:
    assert _cells("pods", _pod(status={"nominatedNodeName": "n2"}))["Nominated Node"] == "n2"


# --- workloads ------------------------------------------------------------------------------------

TEMPLATE = {
    "selector": {"matchLabels": {"app": "web"}},
    "template": {
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "log", "image": "fluent-bit:3"}]
        },
    },
}


def test_deployment_columns_and_cells() -> None:
    assert _columns("deployments") == (
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
    )
    deployment = {
        "metadata": {"name": "web", "creationTimestamp": _ago(days=1)},
        "spec": {"replicas": 3, **TEMPLATE},
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert _cells("deployments", deployment) == {
        "Name": "web",
        "Ready": "2/3",
        "Up-to-date": 3,
        "Available": 2,
        "Age": "24h",
        "Containers": "app,log",
        "Images": "nginx:1.27,fluent-bit:3",
        "Selector": "app=web",
    }


def test_deployment_defaults() -> None:
    cells = _cells("deployments", {"metadata": {"name": "new"}, "spec": {}})
    assert (cells["Ready"], cells["Up-to-date"], cells["Available"]) == ("0/1", 0, 0)
    assert (cells["Containers"], cells["Images"], cells["Selector"]) == ("", "", "<none>")


def test_replicaset_columns_and_cells() -> None:
    assert _columns("replicasets") == (
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
    )
    replicaset = {
        "metadata": {"name": "web-5d4f8", "creationTimestamp": _ago(minutes=30)},
        "spec": {
            "replicas": 2,
            **TEMPLATE,
            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
        },
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    assert list(_cells("replicasets", replicaset).values()) == [
        "web-5d4f8",
        2,
        2,
        1,
        "30m",
        "app,log",
        "nginx:1.27,fluent-bit:3",
        "app in (api,web)",
    ]


def test_daemonset_columns_and_cells() -> None:
    assert _columns("daemonsets") == (
        ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
    )
    template = {
        **TEMPLATE["template"],
        "spec": {**TEMPLATE["template"]["spec"], "nodeSelector": {"os": "linux", "a": "b"}},
    }
    daemonset = {
        "metadata": {"name": "kured", "creationTimestamp": _ago(days=9)},
        "spec": {"selector": TEMPLATE["selector"], "template": template},
        "status": {
            "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3,
            "numberReady": 2,
            "updatedNumberScheduled": 3,
            "numberAvailable": 2,
        },
    }
    assert list(_cells("daemonsets", daemonset).values()) == [
        "kured",
        3,
        3,
        2,
        3,
        2,
        "a=b,os=linux",
        "9d",
        "app,log",
        "nginx:1.27,fluent-bit:3",
        "app=web",
    ]
    assert _cells("daemonsets", {"metadata": {"name": "x"}})["Node Selector"] == "<none>"


# --- other resources ------------------------------------------------------------------------------


def test_pdb_columns_and_cells() -> None:
    assert _columns("poddisruptionbudgets") == (
        ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"],
        [],
    )
    pdb = {"metadata": {"name": "web"}, "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}}
    assert list(_cells("poddisruptionbudgets", pdb).values()) == ["web", "2", "N/A", 1, "<unknown>"]
    percent = {"metadata": {"name": "db"}, "spec": {"maxUnavailable": "50%"}}
    assert list(_cells("poddisruptionbudgets", percent).values()) == ["db", "N/A", "50%", 0, "<unknown>"]


def test_lease_columns_and_cells() -> None:
    assert _columns("leases") == (["NAME", "HOLDER", "AGE"], [])
    assert list(_cells("leases", LEASE).values()) == ["aks-nodepool1-0", "aks-nodepool1-0", "<unknown>"]
    assert _cells("leases", {"metadata": {"name": "free"}, "spec": {}})["Holder"] == ""


def test_namespace_columns_and_cells() -> None:
    assert _columns("namespaces") == (["NAME", "STATUS", "AGE"], [])
    namespace = {
        "metadata": {"name": "kube-system", "creationTimestamp": _ago(days=400)},
        "status": {"phase": "Active"},
    }
    assert list(_cells("namespaces", namespace).values()) == ["kube-system", "Active", "400d"]


def test_event_columns_and_cells() -> None:
    assert _columns("events") == (
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"],
    )
    event = {
        "metadata": {"name": "aks-nodepool1-0.17f1", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "aks-nodepool1-0"},
        "reason": "NodeNotSchedulable",
        "message": "Node aks-nodepool1-0 status is now: NodeNotSchedulable\n",
        "type": "Normal",
        "source": {"component": "kubelet", "host": "aks-nodepool1-0"},
        "firstTimestamp": _ago(minutes=7),
        "lastTimestamp": _ago(seconds=40),
        "count": 2,
    }
    assert _cells("events", event) == {
        "Last Seen": "40s",
        "Type": "Normal",
        "Reason": "NodeNotSchedulable",
        "Object": "node/aks-nodepool1-0",
        "Subobject": "",
        "Source": "kubelet, aks-nodepool1-0",
        "Message": "Node aks-nodepool1-0 status is now: NodeNotSchedulable",
        "First Seen": "7m",
        "Count": 2,
        "Name": "aks-nodepool1-0.17f1",
    }


def test_event_timestamps_fall_back_like_kubectl() -> None:
    event = {
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Pod"},
        "eventTime": "2026-01-10T11:59:00.123456Z",
        "reportingComponent": "drain-controller",
    }
    cells = _cells("events", event)
    assert (cells["Last Seen"], cells["First Seen"], cells["Count"]) == ("59s", "59s", 1)
    assert (cells["Object"], cells["Source"]) == ("pod", "drain-controller")
    event["series"] = {"count": 5, "lastObservedTime": _ago(seconds=10)}
    cells = _cells("events", event)
    assert (cells["Last Seen"], cells["Count"]) == ("10s", 5)


def test_unknown_resources_get_name_and_age() -> None:
    assert _columns("configmaps") == (["NAME", "AGE"], [])
    assert list(
        _cells("configmaps", {"metadata": {"name": "cm", "creationTimestamp": _ago(seconds=9)}}).values()
    ) == [
        "cm",
        "9s",
    ]


def test_roles_show_when_they_were_created_and_bindings_their_role_and_subjects() -> None:
    role = {"metadata": {"name": "reader", "creationTimestamp": _ago(days=3)}}
    assert _columns("clusterroles") == (["NAME", "CREATED AT"], [])
    assert _cells("roles", role) == {"Name": "reader", "Created At": _ago(days=3)}
    binding = {
        "metadata": {"name": "readers", "creationTimestamp": _ago(minutes=5)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "flow", "namespace": "ops"},
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "admins"},
            {"kind": "User", "name": "bob"},
        ],
    }
    assert _columns("rolebindings") == (["NAME", "ROLE", "AGE"], ["USERS", "GROUPS", "SERVICEACCOUNTS"])
    assert _cells("clusterrolebindings", binding) == {
        "Name": "readers",
        "Role": "ClusterRole/reader",
        "Age": "5m",
        "Users": "alice, bob",
        "Groups": "admins",
        "ServiceAccounts": "ops/flow",
    }
