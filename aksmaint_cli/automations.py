"""``aksmaint automations``: create the example Prefect automations on a Prefect server.

The automations (``deployments/automations/node-maintenance.yaml``) notify through a notification block
the operator already has; the file names it ``NOTIFICATION_BLOCK_ID``, and this command puts the block's
id there, checks every automation against Prefect's own model and creates it, or, with ``--replace``,
replaces one of the same name. Nothing is created unless every automation in the file is valid and the
block exists.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

PLACEHOLDER = "NOTIFICATION_BLOCK_ID"
DEFAULT_FILE = "deployments/automations/node-maintenance.yaml"


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Create the node-maintenance automations (notify on quarantined or failed nodes and "
        "failed runs) on the Prefect server of PREFECT_API_URL.",
    )
    parser.add_argument(
        "--block",
        required=True,
        help="the notification block as <block type>/<name>, e.g. slack-webhook/ops-alerts",
    )
    parser.add_argument("--file", default=DEFAULT_FILE, help=f"automations file (default {DEFAULT_FILE})")
    parser.add_argument("--replace", action="store_true", help="replace automations of the same name")
    return parser.parse_args(argv)


def with_block(automations: list[dict[str, Any]], block_id: str) -> list[dict[str, Any]]:
    """The automations with the block's id wherever an action names the placeholder."""
    filled = []
    for automation in automations:
        actions = [
            {**a, "block_document_id": block_id} if a.get("block_document_id") == PLACEHOLDER else a
            for a in automation.get("actions", [])
        ]
        filled.append({**automation, "actions": actions})
    return filled


def load(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    automations = data.get("automations") if isinstance(data, dict) else data
    if not isinstance(automations, list) or not automations:
        raise ValueError(f"{path} holds no list of automations")
    return automations


async def create(args: argparse.Namespace) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    block_type, _, block_name = args.block.partition("/")
    if not block_type or not block_name:
        raise ValueError(f"--block must be <block type>/<name>, not {args.block!r}")
    async with get_client() as client:
        try:
            block = await client.read_block_document_by_name(block_name, block_type)
        except Exception as exc:
            raise ValueError(f"no notification block {args.block} on {client.api_url} ({exc})") from exc
        models = [AutomationCore.model_validate(a) for a in with_block(load(Path(args.file)), str(block.id))]
        done = []
        for automation in models:
            existing = await client.read_automations_by_name(automation.name)
            if existing and not args.replace:
                done.append(f"kept the existing automation {automation.name!r} (use --replace)")
                continue
            for old in existing:
                await client.delete_automation(old.id)
            automation_id = await client.create_automation(automation)
            done.append(f"created automation {automation.name!r} ({automation_id})")
        return done


def automations_main(argv: list[str], prog: str = "aksmaint automations") -> int:
    args = parse_args(argv, prog)
    try:
        lines = asyncio.run(create(args))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
