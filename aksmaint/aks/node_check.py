"""The nodes of a pool after an upgrade step: which run what, and which are not done."""

from __future__ import annotations

from dataclasses import dataclass, field

from aksmaint.aks.operations import StepKind, UpgradeStep
from aksmaint.aks.versions import UpgradeTarget
from aksmaint.report import NodeFacts


@dataclass
class NodeCheck:
    """Which nodes of a pool run what after a step, and what is wrong with any of them."""

    pool: str
    target: str = ""  # what every node should run
    groups: dict[str, list[str]] = field(default_factory=dict)  # what they run -> node names
    off_target: list[str] = field(default_factory=list)  # nodes not on the target
    unwell: list[str] = field(default_factory=list)  # "<node> is not Ready", "<node> is still cordoned"
    problems: list[str] = field(default_factory=list)  # all of it, a line per problem

    def describe(self) -> str:
        """E.g. "3 node(s) on AKSUbuntu-2204gen2containerd-202502.05.0: a, b, c; 1 on ...: d"."""
        if not self.groups:
            return f"pool {self.pool} has no nodes"
        ordered = sorted(self.groups.items(), key=lambda item: (-len(item[1]), item[0]))
        parts = [f"{len(nodes)} on {what}: {', '.join(sorted(nodes))}" for what, nodes in ordered]
        parts[0] = parts[0].replace(" on ", " node(s) on ", 1)
        return "; ".join(parts)

    def describe_problems(self) -> str:
        """What is not done, e.g. "Not on 1.31.4: a, b. c is not Ready"; empty when nothing."""
        parts = [f"Not on {self.target}: {', '.join(sorted(self.off_target))}"] if self.off_target else []
        return ". ".join(parts + self.unwell)


def node_problems(facts: NodeFacts, step: UpgradeStep) -> tuple[list[str], list[str]]:
    """What keeps one node of the step's pool from counting as done: (not on the target, not well)."""
    unwell = []
    if not facts.ready:
        unwell.append(f"{facts.name} is not Ready")
    if facts.unschedulable:
        unwell.append(f"{facts.name} is still cordoned")
    wanted, off = step.to_version, []
    if (
        step.kind == StepKind.node_image
        and wanted != UpgradeTarget.latest
        and facts.node_image_version != wanted
    ):
        off.append(f"{facts.name} runs image {facts.node_image_version}, not {wanted}")
    if step.kind == StepKind.pool_version and facts.kubelet_version.lstrip("v") != wanted:
        off.append(f"{facts.name} runs kubelet {facts.kubelet_version}, not {wanted}")
    return off, unwell


def check_pool_nodes(nodes: list[NodeFacts], step: UpgradeStep) -> NodeCheck:
    """The nodes of the step's pool grouped by what they run (the node image; for a Kubernetes version
    step the kubelet too), and their problems."""
    pool = step.pool or ""
    check = NodeCheck(pool=pool, target=step.to_version)
    for facts in (n for n in nodes if n.pool == pool):
        runs = facts.node_image_version or "an unknown image"
        if step.kind == StepKind.pool_version:
            runs = f"{facts.kubelet_version} with {runs}"
        check.groups.setdefault(runs, []).append(facts.name)
        off, unwell = node_problems(facts, step)
        check.off_target += [facts.name] if off else []
        check.unwell += unwell
        check.problems += unwell + off
    return check
