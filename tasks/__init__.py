"""The Prefect tasks: a thin layer over the runbook in the core package (``aksmaint``).

Each task here runs one step of ``aksmaint.maintenance`` or ``aksmaint.aks`` and records it in Prefect
(a task run, its state, its logs). The steps themselves import no Prefect and decide every outcome.
"""
