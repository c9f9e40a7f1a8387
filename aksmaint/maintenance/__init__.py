"""The node-maintenance runbook, one module per step, with no Prefect in it.

update_check, sentinel, plan, budgets, lock, cordon, taints, drain, reboot, health, gates, kernel_diff,
and the lifecycle (one node through its phases) and rollout (as many nodes at once as the budgets let
through). The Prefect tasks over these steps are in ``tasks/``.
"""
