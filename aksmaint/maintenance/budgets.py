"""Disruption budgets: how many nodes may be disrupted at once, over all nodes, per pool and per zone.

The run's ``concurrency`` and each ``Budget`` become limits on *slot sets*. Every node belongs to one set
per kind of limit that applies to it: the set of all nodes (key ``""``, the Leases ``<prefix>-<i>`` as
before budgets existed), its pool's set (``pool-<pool>``) and its zone's set (``zone-<zone>``). A node
may start only with a free slot in each of its sets, so the strictest limit in force wins. Limits are
worked out again each time a node asks, because a scheduled budget is 0 outside its schedule.

Percentages are of the nodes in the run's scope that belong to the limit's scope, rounded down, and at
least 1 (a percentage of 0 allows none). No Kubernetes or Prefect here: the Leases are ``aksmaint.maintenance.lock``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from aksmaint.params import Budget, BudgetScope, MaintenanceParams
from aksmaint.report import NodeFacts

ALL = ""  # the key of the set of all nodes in scope


def resolve(value: int | str, total: int) -> int:
    """A count as given, or a percentage of ``total`` rounded down and at least 1 (0% is 0)."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    return 0 if percent == 0 else max(1, total * percent // 100)


def set_key(scope: BudgetScope, value: str) -> str:
    """The slot set of one pool or zone, in characters a Lease name may hold."""
    if scope == BudgetScope.all:
        return ALL
    return f"{scope.value}-" + (re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-") or "none")


@dataclass(frozen=True)
class SlotSet:
    """One limit a node is under: the slot set's key, its limit now, and which settings make it."""

    key: str
    limit: int
    why: str
    where: str = "all nodes"


class Budgets:
    """The limits of one run, over the nodes it found in scope."""

    def __init__(self, params: MaintenanceParams, facts: list[NodeFacts]):
        self.concurrency = resolve(params.concurrency, len(facts))
        self.budgets = params.budgets
        self.concurrency_text = f"concurrency {params.concurrency}" + (
            f" of {len(facts)} node(s) = {self.concurrency}" if isinstance(params.concurrency, str) else ""
        )
        self._totals: Counter[tuple[BudgetScope, str]] = Counter()
        for f in facts:
            self._totals[(BudgetScope.all, "")] += 1
            self._totals[(BudgetScope.pool, f.pool)] += 1
            self._totals[(BudgetScope.zone, f.zone)] += 1

    def sets_for(self, node: NodeFacts, now: datetime) -> list[SlotSet]:
        """The limits the node is under at ``now``, one per slot set, the set of all nodes first."""
        sets = [self._set(BudgetScope.all, "", now)]
        for scope, value in ((BudgetScope.pool, node.pool), (BudgetScope.zone, node.zone)):
            if any(self._applies(b, scope, value) for b in self.budgets):
                sets.append(self._set(scope, value, now))
        return sets

    @staticmethod
    def _applies(budget: Budget, scope: BudgetScope, value: str) -> bool:
        return budget.scope == scope and (budget.name is None or budget.name == value)

    def _set(self, scope: BudgetScope, value: str, now: datetime) -> SlotSet:
        total = self._totals[(scope, value)]
        limits = [(self.concurrency, self.concurrency_text)] if scope == BudgetScope.all else []
        for b in self.budgets:
            if self._applies(b, scope, value):
                in_force = b.in_force(now)
                limit = resolve(b.nodes, total) if in_force else 0
                limits.append((limit, b.describe() + ("" if in_force else " (outside its schedule now)")))
        limit, why = min(limits, key=lambda pair: pair[0])
        where = "all nodes" if scope == BudgetScope.all else f"{scope.value} {value}"
        return SlotSet(set_key(scope, value), limit, f"{where}: {limit} at once ({why})", where)

    def describe(self, now: datetime) -> str:
        """One line for the plan: the concurrency and every budget, with whether it is in force now."""
        parts = [self.concurrency_text]
        parts += [b.describe() + ("" if b.in_force(now) else " [not in force now]") for b in self.budgets]
        return "; ".join(parts)


def closed_reason(sets: list[SlotSet]) -> str | None:
    """Why no node under these limits may start now (a limit of 0, e.g. a budget outside its schedule),
    or None."""
    closed = next((s for s in sets if s.limit <= 0), None)
    return None if closed is None else f"no node may be disrupted now: {closed.why}"


def blocked_by(sets: list[SlotSet], in_use: Counter[str]) -> SlotSet | None:
    """The first set with no room for one more node, given the nodes ``in_use`` per set key."""
    return next((s for s in sets if in_use[s.key] >= s.limit), None)
