"""The layers of docs/architecture.md, checked on the source: each package imports only the layers below
it (at module level; an import in a function or in a ``__main__`` block is a runtime choice, not a
dependency), and the product never imports the simulated AKS."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

# a package and the project packages it may import
ALLOWED = {
    "aksmaint": {"aksmaint"},
    "tasks": {"aksmaint", "tasks"},
    "flows": {"aksmaint", "tasks", "flows"},
    "aksmaint_cli": {"aksmaint", "tasks", "flows", "aksmaint_cli"},
    "simulator": {"simulator"},
}
PROJECT = set(ALLOWED)


def module_level_imports(path: Path, among: set[str] = PROJECT, anywhere: bool = False) -> set[str]:
    """The top-level packages imported at module level (not inside functions or ``if`` blocks), or with
    ``anywhere`` also those imported inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree) if anywhere else tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & among


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if (imported := module_level_imports(path)) - ALLOWED[package]
    }
    assert wrong == {}


def test_the_core_does_not_import_prefect():
    """Prefect is the record of the work: the runbook steps in the core run, and are tested, without it
    (its tasks are the thin layer in tasks/)."""
    importing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "aksmaint").rglob("*.py"))
        if module_level_imports(path, {"prefect"})
    ]
    assert importing == []


def test_the_prefect_layers_hold_prefect_code_only():
    """tasks/ and flows/ are where a Prefect user looks for the tasks and the flows: every module there
    imports Prefect (a module of plain logic belongs in the core package)."""
    plain = [
        str(path.relative_to(ROOT))
        for package in ("tasks", "flows")
        for path in sorted((ROOT / package).glob("*.py"))
        if path.name != "__init__.py" and not module_level_imports(path, {"prefect"}, anywhere=True)
    ]
    assert plain == []


@pytest.mark.parametrize("module", ["flows.node_maintenance", "flows.cluster_upgrade"])
def test_python_dash_m_loads_the_flow_module_once(module):
    """``python -m flows.node_maintenance`` runs the module as __main__; the command line it starts
    must find that same module, not load a second copy with a second flow object."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['{module}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('{module}', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        # the module the command line used is the one run as __main__, not a copy imported by name
        f"print(sys.modules['{module}'].__name__ == '__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "True"


# a module of pydantic parameter models may be longer: it is one cohesive file the UI form is built from
MODEL_FILES = {"aksmaint/params.py"}


def test_no_product_module_is_over_400_lines():
    """A module that grows past 400 lines holds more than one concern: split it by concern."""
    long = {
        str(path.relative_to(ROOT)): lines
        for package in ("aksmaint", "aksmaint_cli", "tasks", "flows", "simulator")
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > 400
        and str(path.relative_to(ROOT)) not in MODEL_FILES
    }
    assert long == {}
