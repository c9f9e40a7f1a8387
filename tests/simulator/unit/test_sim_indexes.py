"""The simulator's pod indexes agree, after any sequence of changes, with a count made from scratch."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from simulator.indexes import PdbIndex, PodIndex, controller_of, is_ready, is_terminal, is_terminating

NODES = ["n0", "n1", "n2"]
OWNERS = [None, "rs-a", "rs-b", "ds-k"]
LABELS = [{"app": "web"}, {"app": "api"}, {}]


def random_pod(rng: random.Random, name: str) -> dict:
    owner = rng.choice(OWNERS)
    meta: dict = {
        "name": name,
        "namespace": rng.choice(["shop", "shop", "other"]),
        "labels": rng.choice(LABELS),
    }
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "uid": owner, "controller": True}]
    if rng.random() < 0.2:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {
        "phase": rng.choice(["Pending", "Running", "Running", "Succeeded", "Failed"]),
        "conditions": [{"type": "Ready", "status": rng.choice(["True", "False"])}],
    }
    return {"metadata": meta, "spec": {"nodeName": rng.choice([None, *NODES])}, "status": status}


def from_scratch(pods: dict[str, dict]) -> PodIndex:
    expected = PodIndex()
    expected.by_node = defaultdict(set)
    for pod in pods.values():
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        node = pod["spec"]["nodeName"]
        ref = controller_of(pod)
        if node:
            expected.by_node[node].add(key)
            if not is_terminal(pod):
                expected.load[node][ref and ref["uid"]] += 1
        if ref and not is_terminal(pod) and not is_terminating(pod):
            expected.live[ref["uid"]][key] = node
            if is_ready(pod):
                expected.ready[ref["uid"]][key] = node
    return expected


def nonempty(index: dict) -> dict:
    return {k: (Counter(v) if isinstance(v, Counter) else v) for k, v in index.items() if v}


@pytest.mark.parametrize("seed", range(5))
def test_pod_index_matches_a_recount_after_random_changes(seed):
    rng = random.Random(seed)
    index, pods = PodIndex(), {}
    for step in range(600):
        name = f"p{rng.randrange(40)}"
        old = pods.get(name)
        old_version = None if old is None else old
        if old is not None and rng.random() < 0.3:
            del pods[name]
            index.change(old_version, None)
        else:
            new = random_pod(rng, name)
            if old is not None:  # a pod keeps its namespace across versions
                new["metadata"]["namespace"] = old["metadata"]["namespace"]
            pods[name] = new
            index.change(old_version, new)
        if step % 50 == 0:
            expected = from_scratch(pods)
            assert nonempty(index.by_node) == nonempty(expected.by_node)
            assert nonempty(index.live) == nonempty(expected.live)
            assert nonempty(index.ready) == nonempty(expected.ready)
            assert nonempty(index.load) == nonempty(expected.load)


def test_pdb_index_follows_pods_labels_and_selector_changes():
    pdbs = PdbIndex()
    web = {
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
    }
    pods = [
        {
            "metadata": {"name": "a", "namespace": "shop", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        },
        {
            "metadata": {"name": "b", "namespace": "shop", "labels": {"app": "api"}},
            "status": {"phase": "Running"},
        },
        {
            "metadata": {"name": "c", "namespace": "shop", "labels": {"app": "web"}},
            "status": {"phase": "Succeeded"},
        },
    ]
    pdbs.set_pdb(None, web, pods)
    assert {k: m.healthy for k, m in pdbs.members["u1"].items()} == {("shop", "a"): True}

    relabelled = {**pods[1], "metadata": {**pods[1]["metadata"], "labels": {"app": "web"}}}
    pdbs.pod_changed(pods[1], relabelled)
    terminating = {
        **pods[0],
        "metadata": {**pods[0]["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"},
    }
    pdbs.pod_changed(pods[0], terminating)
    assert {k: m.healthy for k, m in pdbs.members["u1"].items()} == {
        ("shop", "a"): False,
        ("shop", "b"): False,
    }

    other_ns = {"metadata": {"name": "a", "namespace": "other", "labels": {"app": "web"}}, "status": {}}
    pdbs.pod_changed(None, other_ns)
    assert ("other", "a") not in pdbs.members["u1"]

    pdbs.pod_changed(terminating, None)
    api = {**web, "spec": {"selector": {"matchLabels": {"app": "api"}}}}
    pdbs.set_pdb(web, api, [relabelled])
    assert pdbs.members["u1"] == {}, "b is labelled web in the pods handed in: the new selector matches none"
    pdbs.set_pdb(api, None, [])
    assert "u1" not in pdbs.members
