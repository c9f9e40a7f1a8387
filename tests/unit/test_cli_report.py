"""The command line's report says what to do about the nodes that did not end well, in the words their
Prefect task runs use."""

from __future__ import annotations

from aksmaint.report import MaintenanceReport, NodeReport, Outcome
from aksmaint_cli.commands import format_report


def report(*nodes: tuple[str, Outcome]) -> MaintenanceReport:
    return MaintenanceReport(
        cluster="aks-demo",
        started_at="2026-12-07T10:00:00+00:00",
        nodes=[NodeReport(node=name, outcome=outcome, reason="why") for name, outcome in nodes],
    )


def test_nodes_that_need_a_person_are_listed_with_what_to_do():
    text = format_report(
        report(("n1", Outcome.rebooted), ("n2", Outcome.failed), ("n3", Outcome.held), ("n4", Outcome.held))
    )

    tail = text.split("\nNext:\n", 1)[1].splitlines()
    assert tail == [
        f"  held (n3, n4): {Outcome.held.next_step}",
        f"  failed (n2): {Outcome.failed.next_step}",
    ]


def test_a_run_where_every_node_is_fine_has_nothing_to_do():
    text = format_report(report(("n1", Outcome.rebooted), ("n2", Outcome.not_needed)))

    assert "Next:" not in text
