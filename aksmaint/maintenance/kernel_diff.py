"""Kernel-version diff: what each node ran before the run and what it runs now.

Windows nodes are kept apart: their kernel version is the OS build their node image brings, a reboot
changes nothing there, and comparing it with Linux kernels would call every Linux node lagging."""

from __future__ import annotations

from collections import Counter

from aksmaint.kube import Kube
from aksmaint.maintenance.update_check import list_nodes, node_facts
from aksmaint.report import NodeFacts, NodeReport


def nodes_table(rows: list[NodeFacts]) -> str:
    """A `kubectl get nodes -o wide`-style text table."""
    header = ["NAME", "STATUS", "VERSION", "OS-IMAGE", "KERNEL-VERSION", "NODE-IMAGE"]
    lines = [header] + [
        [
            r.name,
            ("Ready" if r.ready else "NotReady") + (",SchedulingDisabled" if r.unschedulable else ""),
            r.kubelet_version,
            r.os_image,
            r.kernel,
            r.node_image_version,
        ]
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "   ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def diff_rows(before: list[NodeFacts], after: list[NodeFacts], reports: list[NodeReport]) -> list[dict]:
    after_by = {f.name: f for f in after}
    report_by = {r.node: r for r in reports}
    rows = []
    for f in before:
        now = after_by.get(f.name)
        rep = report_by.get(f.name)
        rows.append(
            {
                "node": f.name,
                "pool": f.pool,
                "windows": f.windows,
                "kernel_before": f.kernel,
                "kernel_after": now.kernel if now else "(node gone)",
                "boot_id_changed": bool(now and now.boot_id != f.boot_id),
                "outcome": rep.outcome.value if rep else "-",
                "reason": rep.reason if rep else "",
                "duration_s": round(rep.duration_seconds, 1) if rep else 0.0,
            }
        )
    known = {f.name for f in before}
    rows += [  # nodes that joined during the run (an AKS upgrade replaces nodes)
        {
            "node": f.name,
            "pool": f.pool,
            "windows": f.windows,
            "kernel_before": "(new node)",
            "kernel_after": f.kernel,
            "boot_id_changed": False,
            "outcome": "-",
            "reason": "",
            "duration_s": 0.0,
        }
        for f in after
        if f.name not in known
    ]
    return rows


def fleet_summary(after: list[NodeFacts], need_reboot: list[str]) -> dict:
    linux = [f for f in after if not f.windows]
    kernels = Counter(f.kernel for f in linux)
    newest = max(kernels, key=_kernel_sort_key) if kernels else ""
    windows = Counter(f"{f.kernel} ({f.node_image_version})" for f in after if f.windows)
    return {
        "kernels": dict(sorted(kernels.items(), key=lambda kv: _kernel_sort_key(kv[0]))),
        "lagging": sorted(f.name for f in linux if f.kernel != newest),
        "still_need_reboot": sorted(need_reboot),
        "windows": dict(sorted(windows.items(), key=lambda kv: _kernel_sort_key(kv[0].split()[0]))),
    }


def _kernel_sort_key(kernel: str) -> tuple:
    parts = []
    for chunk in kernel.replace("-", ".").split("."):
        parts.append((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk))
    return tuple(parts)


def render_markdown(cluster: str, rows: list[dict], summary: dict, table: str) -> str:
    lines = [
        f"# Kernel versions on {cluster}",
        "",
        "| node | kernel before | kernel after | boot id changed | outcome | duration (s) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if not r["windows"]):
        lines.append(
            f"| {r['node']} | {r['kernel_before']} | {r['kernel_after']} | "
            f"{'yes' if r['boot_id_changed'] else 'no'} | {r['outcome']} | {r['duration_s']} | "
            f"{r['reason']} |"
        )
    lines += ["", "## Kernels now (Linux)", ""]
    lines += [f"- `{k}`: {n} node(s)" for k, n in summary["kernels"].items()]
    if summary["windows"]:
        lines += ["", "## Windows nodes (a node image upgrade patches them, not a reboot)", ""]
        lines += [
            f"- {r['node']} ({r['pool']}): OS build {r['kernel_after']}, {r['reason']}"
            for r in rows
            if r["windows"]
        ]
    lagging = summary["lagging"]
    lines += [
        "",
        f"**Nodes on an older kernel:** {', '.join(lagging) if lagging else 'none'}",
        f"**Nodes still needing a reboot:** {', '.join(summary['still_need_reboot']) or 'none'}",
        "",
        "## Nodes now",
        "",
        "```",
        table,
        "```",
    ]
    return "\n".join(lines)


def kernel_diff(
    kube: Kube, node_selector: str, before: list[NodeFacts], reports: list[NodeReport], need_reboot: list[str]
) -> dict:
    """Kernels before and after: per-node rows, the cluster summary, and a nodes table."""
    after = [node_facts(n) for n in list_nodes(kube, node_selector)]
    return {
        "rows": diff_rows(before, after, reports),
        "summary": fleet_summary(after, need_reboot),
        "table": nodes_table(after),
        "after": [f.model_dump() for f in after],
    }
