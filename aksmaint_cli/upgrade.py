"""The command line of the cluster-upgrade flow: ``aksmaint upgrade`` (also ``python -m
flows.cluster_upgrade``). It validates its arguments before anything reaches Azure, runs the flow in this
process, prints the report and exits 0 (done), 1 (the run failed) or 2 (bad arguments)."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from aksmaint.aks.operations import UpgradeMode
from aksmaint.azure import AksCluster
from aksmaint.report import UpgradeReport
from aksmaint_cli.commands import add_aks_arguments, add_debug_argument, finish, invalid, prefect_api
from aksmaint_cli.console import explained_errors_once
from flows.cluster_upgrade import cluster_upgrade

UPGRADE_PROG = "python -m flows.cluster_upgrade"


def upgrade_main(argv: list[str] | None = None, prog: str = UPGRADE_PROG) -> int:
    """``aksmaint upgrade`` (``python -m flows.cluster_upgrade``): exit codes as for the maintenance command."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the cluster-upgrade flow: an AKS node-image or Kubernetes version upgrade.",
    )
    add_aks_arguments(parser, required=True)
    parser.add_argument("--mode", required=True, choices=[m.value for m in UpgradeMode])
    parser.add_argument(
        "--target", default="latest", help="a version, latest-patch, next-minor or latest (default: latest)"
    )
    parser.add_argument("--pools", default="", help="comma-separated pools (default: all)")
    parser.add_argument("--control-plane-only", action="store_true")
    parser.add_argument("--ignore-maintenance-window", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--poll-interval", type=float, default=15)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    try:
        cluster = AksCluster(
            subscription_id=args.subscription_id,
            resource_group=args.resource_group,
            name=args.name,
            arm_endpoint=args.arm_endpoint,
            ca_bundle=args.ca_bundle,
            credential=args.credential,
        )
    except ValidationError as exc:
        return invalid(exc)
    if prefect_api() is None:
        return 2
    with explained_errors_once(args.debug):
        state = cluster_upgrade(
            cluster=cluster,
            mode=UpgradeMode(args.mode),
            target=args.target,
            pools=[p for p in args.pools.split(",") if p],
            control_plane_only=args.control_plane_only,
            respect_maintenance_window=not args.ignore_maintenance_window,
            dry_run=args.dry_run,
            poll_interval_seconds=args.poll_interval,
            return_state=True,
        )
    return finish(state, UpgradeReport, format_upgrade)


def format_upgrade(report: UpgradeReport) -> str:
    lines = [
        f"Cluster upgrade of {report.cluster} ({report.mode.value}{', dry run' if report.dry_run else ''})",
        "",
    ]
    for s in report.plan.steps:
        done = next((o for o in report.operations if o.step == s), None)
        status = done.status.value if done else ("planned" if report.dry_run else "not run")
        lines.append(f"  {s.describe():<60} {status} {done.message if done else ''}".rstrip())
    lines += [f"  note: {n}" for n in report.plan.notes]
    if report.plan.node_os_upgrade_channel:
        lines.append(f"  node OS upgrade channel: {report.plan.node_os_upgrade_channel}")
    if report.plan.blocking_pdbs:
        lines.append(f"  PodDisruptionBudgets blocking drains now: {', '.join(report.plan.blocking_pdbs)}")
    if report.verify_problems:
        lines += [f"  verify: {p}" for p in report.verify_problems]
    if report.kernels_after:
        lines.append("  kernels now: " + ", ".join(f"{k} x{v}" for k, v in report.kernels_after.items()))
    if report.windows_after:
        lines.append(
            "  Windows nodes now: " + ", ".join(f"{k} x{v}" for k, v in report.windows_after.items())
        )
    lines += ["", f"Result: {report.outcome}"]
    return "\n".join(lines)
