"""The phase table of docs/operations.md is what each phase's module declares beside its handler
(``aksmaint.maintenance.phases``): the docs cannot drift from the code, and neither can the phases the
engine runs from the phases the flow names as task runs."""

from __future__ import annotations

from aksmaint.maintenance.phases import PHASES, Phase
from tasks.node_runs import PHASE_TITLES
from tests.support import ROOT

HEADER = "| phase | task run | what it does | what it resumes after a crash | what a cancel does there |"


def rendered() -> list[str]:
    rows = [HEADER, "|---|---|---|---|---|"]
    for spec in PHASES.values():
        task_run = f"`{PHASE_TITLES[spec.phase]}`" if spec.phase in PHASE_TITLES else "none"
        rows.append(f"| {spec.phase} | {task_run} | {spec.does} | {spec.resumes} | {spec.on_cancel} |")
    return rows


def documented() -> list[str]:
    lines = (ROOT / "docs" / "operations.md").read_text().splitlines()
    start = lines.index(HEADER)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_the_docs_phase_table_is_the_phase_specs():
    assert documented() == rendered(), "\n".join(["docs/operations.md should have:", *rendered()])


def test_every_phase_has_one_spec_and_every_task_run_is_a_phase():
    assert set(PHASES) == set(Phase)
    assert all(spec.phase == phase for phase, spec in PHASES.items())
    assert set(PHASE_TITLES) <= set(PHASES)
