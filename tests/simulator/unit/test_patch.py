"""JSON merge patch, JSON patch and strategic merge patch on plain Kubernetes objects."""

import copy

import pytest

from simulator.k8s.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch


def _node() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "aks-nodepool1-0",
            "labels": {"agentpool": "nodepool1", "kubernetes.io/os": "linux"},
            "annotations": {"a": "1"},
            "finalizers": ["one", "two"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u1"},
                {"apiVersion": "v1", "kind": "Y", "name": "y", "uid": "u2"},
            ],
        },
        "spec": {
            "podCIDR": "10.244.0.0/24",
            "taints": [
                {"key": "a", "value": "1", "effect": "NoSchedule"},
                {"key": "b", "value": "2", "effect": "NoExecute"},
            ],
        },
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.224.0.4"},
                {"type": "Hostname", "address": "aks-nodepool1-0"},
            ],
        },
    }


def _pod() -> dict:
    return {
        "metadata": {"name": "web"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.25",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
            "initContainers": [{"name": "init", "image": "busybox"}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
        },
    }


# --- JSON merge patch ----------------------------------------------------------------------------


def test_merge_patch_follows_rfc_7386() -> None:
    original = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2], "keep": True}
    patch = {"a": "z", "c": {"f": None, "h": {"i": None, "j": 1}}, "list": [3], "new": None}
    assert json_merge_patch(original, patch) == {
        "a": "z",
        "c": {"d": "e", "h": {"j": 1}},
        "list": [3],
        "keep": True,
    }


def test_merge_patch_object_replaces_scalar_and_scalar_replaces_object() -> None:
    assert json_merge_patch({"a": 1, "b": {"x": 1}}, {"a": {"y": 2}, "b": 5}) == {"a": {"y": 2}, "b": 5}


def test_merge_patch_does_not_mutate_inputs() -> None:
    original, patch = _node(), {"metadata": {"labels": {"agentpool": None, "new": "x"}}}
    before_original, before_patch = copy.deepcopy(original), copy.deepcopy(patch)
    result = json_merge_patch(original, patch)
    result["metadata"]["annotations"]["a"] = "changed"
    assert original == before_original
    assert patch == before_patch


def test_merge_patch_must_be_an_object() -> None:
    with pytest.raises(PatchError):
        json_merge_patch({"a": 1}, [1])  # type: ignore[arg-type]


# --- JSON patch ----------------------------------------------------------------------------------


def test_json_patch_operations() -> None:
    original = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}}
    operations = [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "one"},
        {"op": "remove", "path": "/spec/list/0"},
        {"op": "test", "path": "/spec/list", "value": [2]},
        {"op": "copy", "from": "/metadata/labels/b", "path": "/spec/copied"},
        {"op": "move", "from": "/spec/copied", "path": "/spec/moved"},
    ]
    assert json_patch(original, operations) == {
        "metadata": {"labels": {"a": "one", "b": "2"}},
        "spec": {"list": [2], "moved": "2"},
    }
    assert original == {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}}


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "test", "path": "/a", "value": 2}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "add", "path": "no-slash", "value": 1}],
        [{"op": "bogus", "path": "/a"}],
        [{"path": "/a"}],
        [1],
        [{"op": "replace", "path": "", "value": [1]}],
        {"op": "add"},
    ],
)
def test_json_patch_errors_become_patch_errors(operations: list) -> None:
    with pytest.raises(PatchError):
        json_patch({"a": 1}, operations)


# --- strategic merge patch -----------------------------------------------------------------------


def test_strategic_maps_merge_and_null_deletes() -> None:
    result = strategic_merge_patch(_node(), {"metadata": {"labels": {"agentpool": None, "new": "x"}}})
    assert result["metadata"]["labels"] == {"kubernetes.io/os": "linux", "new": "x"}
    assert result["metadata"]["annotations"] == {"a": "1"}


def test_strategic_conditions_merge_by_type() -> None:
    patch = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}}
    result = strategic_merge_patch(_node(), patch)
    assert result["status"]["conditions"] == [
        {"type": "MemoryPressure", "status": "False"},
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
    ]


def test_strategic_new_elements_go_before_server_only_ones_as_in_kubernetes() -> None:
    patch = {"status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}}
    types = [c["type"] for c in strategic_merge_patch(_node(), patch)["status"]["conditions"]]
    assert types == ["DiskPressure", "MemoryPressure", "Ready"]


def test_strategic_merged_order_follows_the_api_server() -> None:
    # Patched elements keep the patch's order; a server-only element stays after
    # a patched element that preceded it on the server.
    patch = {
        "status": {"conditions": [{"type": "PIDPressure", "status": "False"}, {"type": "MemoryPressure"}]}
    }
    types = [c["type"] for c in strategic_merge_patch(_node(), patch)["status"]["conditions"]]
    assert types == ["PIDPressure", "MemoryPressure", "Ready"]


def test_strategic_addresses_merge_by_type() -> None:
    patch = {"status": {"addresses": [{"type": "InternalIP", "address": "10.224.0.9"}]}}
    assert strategic_merge_patch(_node(), patch)["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.224.0.9"},
        {"type": "Hostname", "address": "aks-nodepool1-0"},
    ]


def test_strategic_taints_are_replaced_whole() -> None:
    # NodeSpec.Taints has no patch strategy in Kubernetes: a strategic merge patch replaces the list
    patch = {"spec": {"taints": [{"key": "c", "effect": "NoSchedule"}]}}
    assert strategic_merge_patch(_node(), patch)["spec"]["taints"] == [{"key": "c", "effect": "NoSchedule"}]


def test_strategic_conditions_merge_by_type_and_delete_directive() -> None:
    patch = {
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "$patch": "delete"},
                {"type": "Ready", "status": "False"},
            ]
        }
    }
    conditions = strategic_merge_patch(_node(), patch)["status"]["conditions"]
    assert [c["type"] for c in conditions] == ["Ready"]
    assert conditions[0]["status"] == "False"


def test_strategic_owner_references_merge_by_uid() -> None:
    patch = {"metadata": {"ownerReferences": [{"uid": "u2", "name": "renamed"}, {"uid": "u3", "name": "z"}]}}
    refs = strategic_merge_patch(_node(), patch)["metadata"]["ownerReferences"]
    assert [(r["uid"], r["name"]) for r in refs] == [("u1", "x"), ("u2", "renamed"), ("u3", "z")]


def test_strategic_finalizers_union_without_duplicates() -> None:
    result = strategic_merge_patch(_node(), {"metadata": {"finalizers": ["two", "three"]}})
    assert result["metadata"]["finalizers"] == ["one", "two", "three"]


def test_strategic_delete_from_primitive_list() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["one", "absent"]}}
    assert strategic_merge_patch(_node(), patch)["metadata"]["finalizers"] == ["two"]
    both = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["one"], "finalizers": ["three"]}}
    assert strategic_merge_patch(_node(), both)["metadata"]["finalizers"] == ["three", "two"]


def test_strategic_delete_from_missing_primitive_list_is_a_no_op() -> None:
    result = strategic_merge_patch(
        {"metadata": {"name": "x"}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    )
    assert result == {"metadata": {"name": "x"}}


def test_strategic_lists_without_merge_key_are_replaced() -> None:
    patch = {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}
    assert strategic_merge_patch(_pod(), patch)["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]
    patch = {"spec": {"podCIDRs": ["10.0.0.0/24"]}}
    assert strategic_merge_patch({"spec": {"podCIDRs": ["a", "b"]}}, patch)["spec"]["podCIDRs"] == [
        "10.0.0.0/24"
    ]


def test_strategic_containers_env_ports_and_mounts_merge_by_their_keys() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                }
            ],
            "initContainers": [{"name": "init", "image": "alpine"}],
            "volumes": [{"name": "cache", "$patch": "delete"}],
        }
    }
    spec = strategic_merge_patch(_pod(), patch)["spec"]
    app, sidecar = spec["containers"]
    assert app["image"] == "nginx:1.27"
    assert app["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "two"},
        {"name": "C", "value": "3"},
    ]
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    assert app["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True}]
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert spec["initContainers"] == [{"name": "init", "image": "alpine"}]
    assert spec["volumes"] == [{"name": "data", "emptyDir": {}}]


def test_strategic_merge_keys_apply_inside_pod_templates() -> None:
    deployment = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a", "env": []}]}}}}
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "X", "value": "1"}]}]}}
        }
    }
    containers = strategic_merge_patch(deployment, patch)["spec"]["template"]["spec"]["containers"]
    assert containers == [{"name": "app", "image": "a", "env": [{"name": "X", "value": "1"}]}]


def test_strategic_replace_directive_on_a_list_element_replaces_the_list() -> None:
    patch = {"status": {"conditions": [{"$patch": "replace"}, {"type": "Only", "status": "True"}]}}
    assert strategic_merge_patch(_node(), patch)["status"]["conditions"] == [
        {"type": "Only", "status": "True"}
    ]
    cleared = {"status": {"conditions": [{"$patch": "replace"}]}}
    assert strategic_merge_patch(_node(), cleared)["status"]["conditions"] == []


def test_strategic_replace_directive_on_a_map() -> None:
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    assert strategic_merge_patch(_node(), patch)["metadata"]["labels"] == {"only": "this"}


def test_strategic_delete_directive_on_a_map_empties_it() -> None:
    patch = {"metadata": {"annotations": {"$patch": "delete"}}}
    assert strategic_merge_patch(_node(), patch)["metadata"]["annotations"] == {}


def test_strategic_retain_keys() -> None:
    original = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert strategic_merge_patch(original, patch) == {"spec": {"strategy": {"type": "Recreate"}}}


def test_strategic_retain_keys_rejects_unlisted_patch_fields() -> None:
    patch = {"spec": {"$retainKeys": ["type"], "other": 1}}
    with pytest.raises(PatchError, match="other"):
        strategic_merge_patch({"spec": {}}, patch)


def test_strategic_set_element_order_is_accepted_and_dropped() -> None:
    patch = {
        "metadata": {"$setElementOrder/finalizers": ["two", "one"]},
        "status": {
            "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "Ready"}],
            "conditions": [{"type": "Ready", "status": "Unknown"}],
        },
    }
    result = strategic_merge_patch(_node(), patch)
    assert result["metadata"]["finalizers"] == ["one", "two"]
    assert result["status"]["conditions"][1] == {
        "type": "Ready",
        "status": "Unknown",
        "reason": "KubeletReady",
    }
    assert not any(key.startswith("$") for key in result["metadata"]) and not any(
        key.startswith("$") for key in result["status"]
    )


def test_strategic_directives_are_stripped_from_new_fields() -> None:
    original = {"metadata": {"name": "n"}}
    patch = {
        "status": {"conditions": [{"type": "A", "status": "True"}, {"type": "Gone", "$patch": "delete"}]}
    }
    assert strategic_merge_patch(original, patch)["status"] == {
        "conditions": [{"type": "A", "status": "True"}]
    }


def test_strategic_patch_does_not_mutate_inputs() -> None:
    original = _pod()
    patch = {
        "metadata": {"labels": {"x": "1"}},
        "spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]},
    }
    before_original, before_patch = copy.deepcopy(original), copy.deepcopy(patch)
    result = strategic_merge_patch(original, patch)
    result["spec"]["containers"][1]["image"] = "changed"
    assert original == before_original
    assert patch == before_patch


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"status": {"conditions": [{"status": "True"}]}}, "merge key 'type'"),
        ({"status": {"conditions": [{"$patch": "delete", "status": "True"}]}}, "merge key 'type'"),
        ({"status": {"conditions": [{"type": "a", "$patch": "merge"}]}}, "unknown patch directive 'merge'"),
        ({"status": {"conditions": ["a"]}}, "list of objects"),
        ({"metadata": {"labels": {"$patch": "explode"}}}, "unknown patch directive 'explode'"),
        ({"metadata": {"finalizers": [{"a": 1}]}}, "plain values"),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "one"}}, "must be a list"),
        ({"spec": {"$retainKeys": "type"}}, "must be a list"),
    ],
)
def test_strategic_invalid_patches(patch: dict, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        strategic_merge_patch(_node(), patch)


def test_strategic_patch_must_be_an_object() -> None:
    with pytest.raises(PatchError):
        strategic_merge_patch(_node(), [])  # type: ignore[arg-type]
