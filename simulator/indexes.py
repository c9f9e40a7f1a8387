"""What the simulated controllers need to know about pods, kept up to date on every change.

A real controller reads an informer cache that is indexed, not the whole store. These indexes play
that part: the store's listener feeds each pod change (old and new version) in, and the controllers
read counts and key sets out, so one API write costs work in proportion to what it changed, not to
the size of the cluster. At 1000 nodes a full pass over the pods took about 25 ms per write.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from simulator.k8s.selectors import LabelSelector, selector_from_dict

Key = tuple[str, str]  # (namespace, name)
OwnerRef = tuple[str, str, str]  # (kind, name, uid) of a pod's controller


def controller_of(obj: dict) -> dict | None:
    for ref in obj.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("controller"):
            return ref
    return None


def changed_object(old: dict | None, new: dict | None) -> dict:
    """The object a store change is about: its new version, or the old one when it was deleted."""
    obj = new or old
    assert obj is not None, "a change has an old or a new version"
    return obj


def is_terminal(pod: dict) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def is_terminating(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_ready(pod: dict) -> bool:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_key(pod: dict) -> Key:
    return pod["metadata"]["namespace"], pod["metadata"]["name"]


def owner_ref(pod: dict) -> OwnerRef | None:
    ref = controller_of(pod)
    return None if ref is None else (ref.get("kind", ""), ref.get("name", ""), ref["uid"])


@dataclass
class PodIndex:
    """Pods by node; the live (not terminating, not finished) and ready pods of each controller, with
    the node each is on; and the pods holding a place on each node."""

    by_node: dict[str, set[Key]] = field(default_factory=lambda: defaultdict(set))
    live: dict[str, dict[Key, str | None]] = field(default_factory=lambda: defaultdict(dict))
    ready: dict[str, dict[Key, str | None]] = field(default_factory=lambda: defaultdict(dict))
    # pods that hold a place on a node (not finished), counted per controller uid (None: no controller)
    load: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def change(self, old: dict | None, new: dict | None) -> None:
        if old is not None:
            self._apply(old, -1)
        if new is not None:
            self._apply(new, +1)

    def _apply(self, pod: dict, sign: int) -> None:
        key = pod_key(pod)
        node = pod.get("spec", {}).get("nodeName")
        ref = controller_of(pod)
        uid = ref["uid"] if ref else None
        terminal = is_terminal(pod)
        live = not terminal and not is_terminating(pod)
        if sign > 0:
            if node:
                self.by_node[node].add(key)
            if uid and live:
                self.live[uid][key] = node
                if is_ready(pod):
                    self.ready[uid][key] = node
        else:
            if node:
                self._discard(self.by_node, node, key)
            if uid:
                self.live.get(uid, {}).pop(key, None)
                self.ready.get(uid, {}).pop(key, None)
        if node and not terminal:
            counts = self.load[node]
            counts[uid] += sign
            if counts[uid] <= 0:
                del counts[uid]
                if not counts:
                    del self.load[node]

    @staticmethod
    def _discard(index: dict[str, set[Key]], name: str, key: Key) -> None:
        keys = index.get(name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del index[name]


@dataclass
class PdbMember:
    healthy: bool  # Ready and not terminating
    owner: OwnerRef | None


class PdbIndex:
    """For each PodDisruptionBudget, the unfinished pods its selector matches."""

    def __init__(self) -> None:
        # namespace -> pdb uid -> selector
        self._selectors: dict[str, dict[str, LabelSelector]] = defaultdict(dict)
        self.members: dict[str, dict[Key, PdbMember]] = {}

    def set_pdb(self, old: dict | None, new: dict | None, pods_in_namespace: list[dict]) -> None:
        """A PDB was created, changed or deleted: (re)build its members from the namespace's pods."""
        if old is not None:
            meta = old["metadata"]
            self._selectors[meta["namespace"]].pop(meta["uid"], None)
            self.members.pop(meta["uid"], None)
        if new is None:
            return
        meta = new["metadata"]
        selector = selector_from_dict(new["spec"].get("selector"))
        self._selectors[meta["namespace"]][meta["uid"]] = selector
        self.members[meta["uid"]] = {
            pod_key(p): self._member(p)
            for p in pods_in_namespace
            if not is_terminal(p) and selector.matches(p["metadata"].get("labels"))
        }

    def pod_changed(self, old: dict | None, new: dict | None) -> None:
        pod = changed_object(old, new)
        namespace = pod["metadata"]["namespace"]
        selectors = self._selectors.get(namespace)
        if not selectors:
            return
        key = pod_key(pod)
        for uid, selector in selectors.items():
            members = self.members[uid]
            if new is None or is_terminal(new) or not selector.matches(new["metadata"].get("labels")):
                members.pop(key, None)
            else:
                members[key] = self._member(new)

    @staticmethod
    def _member(pod: dict) -> PdbMember:
        return PdbMember(healthy=is_ready(pod) and not is_terminating(pod), owner=owner_ref(pod))
