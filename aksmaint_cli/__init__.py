"""The ``aksmaint`` command (``[project.scripts]``): one entry point for the flows' command lines.

``aksmaint maintain ...`` runs node-maintenance and ``aksmaint upgrade ...`` runs cluster-upgrade against
one cluster, in this process; ``aksmaint automations`` creates the example Prefect automations. This package sits on top of ``flows/``; nothing below imports it.
"""

from __future__ import annotations

import sys

USAGE = """usage: aksmaint {maintain,upgrade,automations} ...

  maintain     run the node-maintenance flow against one cluster (kured's job, centrally coordinated)
  upgrade      run the cluster-upgrade flow: an AKS node-image or Kubernetes version upgrade
  automations  create the example Prefect automations (quarantined or failed nodes, failed runs)

'aksmaint <command> --help' shows the command's options."""


def main(argv: list[str] | None = None) -> int:
    from aksmaint_cli.automations import automations_main
    from aksmaint_cli.commands import maintenance_main
    from aksmaint_cli.upgrade import upgrade_main

    args = sys.argv[1:] if argv is None else argv
    commands = {"maintain": maintenance_main, "upgrade": upgrade_main, "automations": automations_main}
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] not in commands:
        print(f"{USAGE}\n\nerror: unknown command {args[0]!r}", file=sys.stderr)
        return 2
    return commands[args[0]](args[1:], prog=f"aksmaint {args[0]}")
