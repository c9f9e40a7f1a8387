"""Sentinel scan: which nodes need a reboot (/var/run/reboot-required, or a node condition)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from kubernetes.client import V1Node

from aksmaint.errors import HostPodGone, MaintenanceError
from aksmaint.hostexec import HostPodSettings, run_on_host
from aksmaint.kube import Kube, is_transient, meta, status_of
from aksmaint.maintenance.update_check import node_facts
from aksmaint.params import SentinelMode, SentinelOptions
from aksmaint.report import NodeFacts

SENTINEL = "/var/run/reboot-required"
# Plain POSIX shell, so it reads the same on a real node as anywhere else.
PROBE_SCRIPT = (
    "echo '### kernel'; uname -r; "
    "echo '### boot-id'; cat /proc/sys/kernel/random/boot_id; "
    f"echo '### sentinel'; test -f {SENTINEL} && echo present || echo absent; "
    "echo '### upgradable'; apt list --upgradable 2>/dev/null; true"
)


def parse_probe(output: str) -> dict[str, list[str]]:
    """Split the probe's output into its '### name' sections."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            sections[current] = []
        elif current is not None and line.strip():
            sections[current].append(line.strip())
    return sections


def probe_facts(facts: NodeFacts, output: str) -> NodeFacts:
    sections = parse_probe(output)
    sentinel = sections.get("sentinel", [])
    if sentinel not in (["present"], ["absent"]):
        return facts.model_copy(update={"scan_error": "probe output had no sentinel answer"})
    upgradable = [line for line in sections.get("upgradable", []) if "upgradable from" in line]
    kernel = (sections.get("kernel") or [facts.kernel])[0]
    return facts.model_copy(
        update={
            "reboot_required": sentinel == ["present"],
            "upgradable_packages": len(upgradable),
            "kernel": kernel or facts.kernel,
        }
    )


def scan_with_host_pods(
    kube: Kube, facts: list[NodeFacts], settings: HostPodSettings, parallelism: int
) -> list[NodeFacts]:
    def one(f: NodeFacts) -> NodeFacts:
        if not f.ready:
            return f.model_copy(update={"scan_error": "node is not Ready; its host cannot be checked"})
        try:
            try:
                result = run_on_host(kube, f.name, PROBE_SCRIPT, "scan", settings, timeout=300)
            except HostPodGone:  # e.g. another run rebooted the node meanwhile: look once more
                result = run_on_host(kube, f.name, PROBE_SCRIPT, "scan", settings, timeout=300)
        except MaintenanceError as exc:
            return f.model_copy(update={"scan_error": str(exc)})
        except Exception as exc:
            if is_transient(exc):
                return f.model_copy(update={"scan_error": f"transient API error: {exc}"})
            raise
        if result.exit_code != 0:
            return f.model_copy(
                update={"scan_error": f"probe exited {result.exit_code}: {result.output.strip()[-200:]}"}
            )
        return probe_facts(f, result.output)

    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        return list(pool.map(one, facts))


def scan_with_condition(kube: Kube, facts: list[NodeFacts], condition_type: str) -> list[NodeFacts]:
    """One LIST for the whole cluster: the condition node-problem-detector sets from the sentinel."""
    nodes = {meta(n).name: n for n in kube.call(kube.core.list_node).items}
    out = []
    for f in facts:
        node = nodes.get(f.name)
        if node is None:
            out.append(f.model_copy(update={"scan_error": "node disappeared during the scan"}))
            continue
        conds = [c for c in (status_of(node).conditions or []) if c.type == condition_type]
        if not conds:
            out.append(
                f.model_copy(
                    update={
                        "scan_error": f"node has no {condition_type} condition "
                        "(is node-problem-detector running?)"
                    }
                )
            )
        else:
            out.append(f.model_copy(update={"reboot_required": conds[0].status == "True"}))
    return out


def scan_nodes(
    kube: Kube, facts: list[NodeFacts], options: SentinelOptions, settings: HostPodSettings, dry_run: bool
) -> list[NodeFacts] | None:
    """The facts with whether each node needs a reboot; None for a dry run in host-pod mode (its scan
    makes pods, so only node-condition mode scans read-only).

    Windows nodes are never scanned (no Linux host pod can run there, and no sentinel exists there):
    they never need a reboot from this flow, a node image upgrade patches them."""
    linux = [f for f in facts if not f.windows]
    windows = [f.model_copy(update={"reboot_required": False}) for f in facts if f.windows]
    if options.mode == SentinelMode.node_condition:
        return [*scan_with_condition(kube, linux, options.condition_type), *windows]
    if dry_run:
        return None
    return [*scan_with_host_pods(kube, linux, settings, options.parallelism), *windows]


def recheck_node(kube: Kube, node: V1Node, options: SentinelOptions, settings: HostPodSettings) -> NodeFacts:
    """Look again at one node, under its reboot slot, whether it still needs a reboot.

    Unlike the scan of every node, a node that is not Ready is probed all the same (a run resuming a
    node mid-reboot looks at it here), a missing node condition reads as "no reboot required", and a
    transient API error is raised for the phase to retry rather than recorded."""
    facts = node_facts(node)
    if options.mode == SentinelMode.node_condition:
        conditions = status_of(node).conditions or []
        cond = next((c for c in conditions if c.type == options.condition_type), None)
        return facts.model_copy(update={"reboot_required": bool(cond and cond.status == "True")})
    try:
        result = run_on_host(kube, facts.name, PROBE_SCRIPT, "scan", settings)
    except MaintenanceError as exc:
        if is_transient(exc):
            raise
        return facts.model_copy(update={"scan_error": str(exc)})
    return probe_facts(facts, result.output)
