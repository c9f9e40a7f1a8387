"""The command line of the node-maintenance flow, ``aksmaint maintain`` (also ``python -m
flows.node_maintenance``), and what the command lines share (``aksmaint upgrade`` is in ``upgrade.py``).

Each validates its arguments before anything reaches a cluster, runs the flow in this process (against
``PREFECT_API_URL``, or a temporary local Prefect server), prints the report and exits 0 (done), 1 (the
run failed) or 2 (bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from aksmaint.azure import CredentialKind
from aksmaint.errors import MaintenanceError
from aksmaint.params import MaintenanceParams, OnDrainTimeout
from aksmaint.report import MaintenanceReport, Outcome
from aksmaint_cli.console import explained_errors_once
from flows.node_maintenance import FINISHED, node_maintenance
from tasks.prefect_api import PrefectUnavailable, check_health, ensure_prefect_api, quiet_outage_noise

MAINTAIN_PROG = "python -m flows.node_maintenance"


def invalid(exc: ValidationError) -> int:
    """Name every invalid field; exit code 2."""
    print("error: invalid parameters:", file=sys.stderr)
    for err in exc.errors():
        print(f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}", file=sys.stderr)
    return 2


def prefect_api() -> str | None:
    """The Prefect API's URL, or None after one line saying why it cannot be had (exit code 2: nothing was
    sent to the cluster)."""
    try:
        url = ensure_prefect_api()
    except PrefectUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    quiet_outage_noise(url)
    return url


def leave(code: int, api_url: str) -> int:
    """The exit code; but when the Prefect API no longer answers, end the process at once. Prefect's
    background services would otherwise try to send every event and log line they hold before the process
    ends, each for a while: many minutes that change nothing on the cluster (the report is printed)."""
    try:
        check_health(api_url)
    except PrefectUnavailable as exc:
        print(f"warning: {exc}; what Prefect had not received yet is lost", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def finish(state, report_type: type, render: Callable) -> int:
    """Print the run's report (or why there is none); exit code 0 when it completed, else 1."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, report_type):
        print(render(result))
        return 0 if state.is_completed() else 1
    if isinstance(result, MaintenanceError):
        print(f"error: {result}", file=sys.stderr)
        return 1
    print(f"error: the run ended {state.name}: {state.message}", file=sys.stderr)
    return 1


# ---- an AKS cluster by its Azure id ----------------------------------------------------------------
AKS_FLAGS = ("subscription_id", "resource_group", "name", "credential", "arm_endpoint", "ca_bundle")


def add_aks_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """The same flags in both commands: an AKS cluster by subscription, resource group and name, and how
    to reach Azure Resource Manager."""
    group = parser.add_argument_group("AKS cluster (reached through Azure Resource Manager)")
    group.add_argument("--subscription-id", required=required)
    group.add_argument("--resource-group", required=required)
    group.add_argument("--name", required=required, help="name of the AKS cluster")
    group.add_argument(
        "--credential",
        default="default" if required else None,
        choices=[c.value for c in CredentialKind],
        help="how to authenticate to Azure (default: default)",
    )
    group.add_argument(
        "--arm-endpoint",
        default="https://management.azure.com" if required else None,
        help="Azure Resource Manager endpoint (default: the public cloud's)",
    )
    group.add_argument("--ca-bundle", help="CA bundle to verify Azure Resource Manager with")


def aks_from_args(args: argparse.Namespace) -> dict:
    """The AKS cluster fields given on the command line."""
    return {key: getattr(args, key) for key in AKS_FLAGS if getattr(args, key, None) is not None}


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error, e.g. an unreachable cluster (also: PREFECT_LOGGING_LEVEL=DEBUG)",
    )


# ---- node maintenance ------------------------------------------------------------------------
def count_or_percent(text: str) -> int | str:
    """``--concurrency`` as given: ``30%`` stays a percentage, ``5`` becomes a count (the parameter
    model checks the range either way)."""
    if text.endswith("%"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count (5) nor a percentage (30%)") from None


def parse_args(argv: list[str] | None = None, prog: str = MAINTAIN_PROG) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the node-maintenance flow (kured's job as a Prefect flow) against one cluster.",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file of the cluster")
    parser.add_argument("--context", help="context in the kubeconfig (default: its current context)")
    parser.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    parser.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        help="do not verify the API server's certificate (unsafe; logs a warning)",
    )
    parser.add_argument("--params", help="JSON or YAML file with any flow parameters (flags override it)")
    parser.add_argument("--node-selector", help="label selector of the nodes to maintain")
    parser.add_argument(
        "--concurrency",
        type=count_or_percent,
        help="nodes disrupted at once: a count or a percentage of the nodes in scope, e.g. 30%% (default 1)",
    )
    parser.add_argument(
        "--max-per-zone",
        type=int,
        help="at most this many nodes disrupted at once in each availability zone (a zone budget)",
    )
    parser.add_argument(
        "--on-drain-timeout",
        choices=[o.value for o in OnDrainTimeout],
        help="what to do with a node that cannot be drained in time (default uncordon-and-skip)",
    )
    parser.add_argument(
        "--retry-quarantined",
        action="store_true",
        default=None,
        help="drain and reboot again the nodes an earlier run quarantined",
    )
    parser.add_argument("--max-failures", type=int, help="failed nodes tolerated before halting (default 0)")
    parser.add_argument("--apply-updates", action="store_true", default=None, help="install OS updates first")
    parser.add_argument(
        "--require-approval",
        action="store_true",
        default=None,
        help="pause for approval in the Prefect UI before the first reboot",
    )
    parser.add_argument("--dry-run", action="store_true", default=None, help="scan and plan; change nothing")
    parser.add_argument(
        "--ignore-os-upgrade-channel",
        action="store_true",
        help="reboot even when AKS's node OS upgrade channel (SecurityPatch, NodeImage) patches the nodes",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_debug_argument(parser)
    add_aks_arguments(parser, required=False)
    return parser.parse_args(argv)


def params_from_args(args: argparse.Namespace) -> MaintenanceParams:
    values: dict = {}
    if args.params:
        text = Path(args.params).read_text()
        values = yaml.safe_load(text) if args.params.endswith((".yaml", ".yml")) else json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"{args.params} must hold a mapping of parameters")
    values["cluster"] = cluster_from_args(args, dict(values.get("cluster") or {}))
    for flag, key in (
        ("node_selector", "node_selector"),
        ("concurrency", "concurrency"),
        ("max_failures", "max_failures"),
        ("apply_updates", "apply_updates"),
        ("require_approval", "require_approval"),
        ("dry_run", "dry_run"),
        ("retry_quarantined", "retry_quarantined"),
    ):
        if getattr(args, flag) is not None:
            values[key] = getattr(args, flag)
    if args.max_per_zone is not None:
        values["budgets"] = [*values.get("budgets", []), {"scope": "zone", "nodes": args.max_per_zone}]
    if args.on_drain_timeout:
        values["drain"] = {**values.get("drain", {}), "on_timeout": args.on_drain_timeout}
    if args.ignore_os_upgrade_channel:
        values["respect_os_upgrade_channel"] = False
    return MaintenanceParams.model_validate(values)


def cluster_from_args(args: argparse.Namespace, cluster: dict) -> dict:
    """The cluster connection: the one from --params, changed by the connection flags."""
    if args.kubeconfig:
        cluster.update(kubeconfig=args.kubeconfig, in_cluster=False)
    if args.context:
        cluster["context"] = args.context
    if args.in_cluster:
        cluster = {"in_cluster": True}
    if aks := aks_from_args(args):
        # the AKS flags replace a connection from --params; with --kubeconfig or --in-cluster they
        # conflict, and the validation says so
        given = {
            "kubeconfig": args.kubeconfig,
            "context": args.context,
            "in_cluster": args.in_cluster or None,
        }
        cluster = {k: v for k, v in given.items() if v} | {"aks": {**(cluster.get("aks") or {}), **aks}}
    if args.insecure_skip_tls_verify:
        cluster["insecure_skip_tls_verify"] = True
    return cluster


OUTCOME_WIDTH = max(len(o.value) for o in Outcome)


def format_report(report: MaintenanceReport, table: str | None = None) -> str:
    lines = [f"Node maintenance on {report.cluster}{' (dry run)' if report.dry_run else ''}", ""]
    if not report.tls_verified:
        lines[1:1] = ["WARNING: the API server's TLS certificate was not verified (insecure_skip_tls_verify)"]
    width = max((len(n.node) for n in report.nodes), default=4)
    for n in sorted(report.nodes, key=lambda n: n.node):  # the report keeps the order of the rollout
        kernel = (
            f"{n.kernel_before} -> {n.kernel_after}"
            if n.kernel_after and n.kernel_after != n.kernel_before
            else n.kernel_before
        )
        lines.append(f"  {n.node.ljust(width)}  {n.outcome.value:<{OUTCOME_WIDTH}}  {kernel:<40}  {n.reason}")
    lines += [
        "",
        "Kernels now: " + ", ".join(f"{k} x{v}" for k, v in report.kernels_after.items()),
        *(
            [
                "Windows nodes now (patched by node image upgrades, see cluster-upgrade): "
                + ", ".join(f"{k} x{v}" for k, v in report.windows_after.items())
            ]
            if report.windows_after
            else []
        ),
        f"Still needing a reboot: {', '.join(report.still_need_reboot) or 'none'}",
        *(
            [f"Node OS upgrade channel: {report.node_os_upgrade_channel}"]
            if report.node_os_upgrade_channel
            else []
        ),
        f"Result: {report.summary_line()}",
        *next_steps(report),
    ]
    return "\n".join(lines)


def next_steps(report: MaintenanceReport) -> list[str]:
    """What to do about the nodes that did not end well, in the words their Prefect task runs use."""
    lines = []
    for outcome in Outcome:
        nodes = sorted(n.node for n in report.nodes if n.outcome == outcome)
        if nodes and outcome.next_step:
            lines.append(f"  {outcome.value} ({', '.join(nodes)}): {outcome.next_step}")
    return ["", "Next:", *lines] if lines else []


def maintenance_main(argv: list[str] | None = None, prog: str = MAINTAIN_PROG) -> int:
    """``aksmaint maintain`` (``python -m flows.node_maintenance``): exit 0 when every node is done, 1 when
    the run failed, 2 for bad parameters (nothing was sent to the cluster)."""
    args = parse_args(argv, prog)
    try:
        params = params_from_args(args)
    except ValidationError as exc:
        return invalid(exc)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (api_url := prefect_api()) is None:
        return 2
    dumped = params.model_dump(mode="python", exclude={"cluster"})

    def render(report: MaintenanceReport) -> str:
        return report.model_dump_json(indent=2) if args.json else format_report(report)

    FINISHED.report = None
    try:
        with explained_errors_once(args.debug):
            state = node_maintenance(
                cluster=params.cluster, **{k: getattr(params, k) for k in dumped}, return_state=True
            )
    except Exception as exc:  # the Prefect API failed the run's own bookkeeping (start or final state)
        return leave(unrecorded(exc, FINISHED.report, render), api_url)
    return leave(finish(state, MaintenanceReport, render), api_url)


def unrecorded(exc: Exception, report: MaintenanceReport | None, render: Callable) -> int:
    """The flow call raised because Prefect could not record the run. Print what the run did, if it got
    that far, and why its record is incomplete; never a traceback."""
    why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    if report is None:
        print(
            f"error: the run could not be recorded by the Prefect API, so it did not start ({why})",
            file=sys.stderr,
        )
        return 1
    print(render(report))
    print(
        f"warning: the run finished, but the Prefect API could not record its final state ({why}); "
        "the report above is what happened on the cluster",
        file=sys.stderr,
    )
    return 1 if report.failed else 0
