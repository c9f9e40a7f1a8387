"""Disruption budgets: percentages, schedules, the strictest limit per node, the slot sets they make on
the Leases, and the rollout letting through no more nodes per set than its limit."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from aksmaint.errors import LockTimeout
from aksmaint.maintenance.budgets import ALL, Budgets, SlotSet, resolve, set_key
from aksmaint.maintenance.lifecycle import NodeLifecycle
from aksmaint.maintenance.lock import RebootSlots, SlotAttempt, failed_holder
from aksmaint.maintenance.phases import Done, Phase, PhaseSpec
from aksmaint.maintenance.rollout import Rollout
from aksmaint.params import Budget, BudgetScope, LockOptions, MaintenanceParams
from aksmaint.report import NodeFacts, Outcome, PlanEntry
from tests.unit.fake_api import FakeApi, fake_kube
from tests.unit.test_cordon_and_slots import NS

# a Monday, 23:30 in Berlin (CET, UTC+1)
MONDAY_NIGHT = datetime(2026, 12, 7, 22, 30, tzinfo=UTC)
NIGHTLY = {"schedule": "0 22 * * mon-fri", "duration_minutes": 240, "time_zone": "Europe/Berlin"}


def params(**values: object) -> MaintenanceParams:
    return MaintenanceParams.model_validate({"cluster": {"kubeconfig": "/nonexistent"}, **values})


def facts(n: int, pools: int = 1, zones: int = 3) -> list[NodeFacts]:
    return [
        NodeFacts(name=f"node-{i}", pool=f"pool{i % pools}", zone=f"westeurope-{i % zones + 1}")
        for i in range(n)
    ]


# ---- counts and percentages ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [
        (7, 300, 7),
        ("10%", 300, 30),
        ("30%", 1000, 300),
        ("10%", 5, 1),
        ("1%", 99, 1),
        ("0%", 50, 0),
        (0, 5, 0),
    ],
)
def test_a_percentage_is_of_the_nodes_in_scope_rounded_down_and_at_least_one(value, total, expected):
    assert resolve(value, total) == expected


@pytest.mark.parametrize("bad", ["0%", "101%", "ten", "10 %", 0, 1001, -1])
def test_concurrency_is_a_count_from_1_or_a_percentage_from_1(bad):
    with pytest.raises(ValidationError, match="concurrency"):
        params(concurrency=bad)


def test_concurrency_as_a_percentage_sizes_the_set_of_all_nodes():
    budgets = Budgets(params(concurrency="20%"), facts(300))
    assert budgets.concurrency == 60
    (all_nodes,) = budgets.sets_for(facts(1)[0], MONDAY_NIGHT)
    assert all_nodes == SlotSet(
        ALL, 60, "all nodes: 60 at once (concurrency 20% of 300 node(s) = 60)", where="all nodes"
    )


# ---- schedules -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("at", "in_force"),
    [
        (datetime(2026, 12, 7, 20, 59, tzinfo=UTC), False),  # 21:59 Berlin: not yet
        (datetime(2026, 12, 7, 21, 0, tzinfo=UTC), True),  # 22:00 Berlin
        (MONDAY_NIGHT, True),
        (datetime(2026, 12, 8, 0, 59, tzinfo=UTC), True),  # 01:59 Tuesday, still the Monday window
        (datetime(2026, 12, 8, 1, 0, tzinfo=UTC), False),  # 02:00: four hours are over
        (datetime(2026, 12, 5, 21, 30, tzinfo=UTC), False),  # Saturday night: no window
        (datetime(2026, 7, 6, 20, 30, tzinfo=UTC), True),  # 22:30 CEST (UTC+2) in summer
    ],
)
def test_a_scheduled_budget_is_in_force_for_its_duration_from_each_schedule_time(at, in_force):
    assert Budget(nodes=3, **NIGHTLY).in_force(at) is in_force


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"nodes": 1, "schedule": "0 22 * * *"}, "schedule and duration_minutes go together"),
        ({"nodes": 1, "schedule": "0 25 * * *", "duration_minutes": 60}, "invalid cron expression"),
        ({"nodes": 1, "scope": "zone", "time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"nodes": 1, "name": "userpool"}, "name applies to a pool or zone budget"),
        ({"nodes": "150%"}, "nodes"),
        ({"scope": "rack", "nodes": 1}, "scope"),
    ],
)
def test_a_bad_budget_is_refused_naming_the_problem(budget, message):
    with pytest.raises(ValidationError, match=message):
        params(budgets=[budget])


# ---- the strictest limit in force --------------------------------------------------------------------
def test_each_node_is_under_the_all_nodes_set_its_pool_and_its_zone_the_strictest_limit_per_set():
    p = params(
        concurrency=30,
        budgets=[
            {"scope": "zone", "nodes": 1},  # --max-per-zone 1
            {"scope": "pool", "name": "pool1", "nodes": "10%"},
            {"scope": "pool", "name": "pool1", "nodes": 5},
            {"scope": "all", "nodes": 20},
        ],
    )
    nodes = facts(200, pools=2)
    budgets = Budgets(p, nodes)
    on_pool1 = budgets.sets_for(nodes[1], MONDAY_NIGHT)
    assert [(s.key, s.limit) for s in on_pool1] == [(ALL, 20), ("pool-pool1", 5), ("zone-westeurope-2", 1)]
    # a pool no budget names has no set of its own
    on_pool0 = budgets.sets_for(nodes[0], MONDAY_NIGHT)
    assert [(s.key, s.limit) for s in on_pool0] == [(ALL, 20), ("zone-westeurope-1", 1)]


def test_outside_its_schedule_a_budget_allows_no_node_and_says_so():
    p = params(concurrency=10, budgets=[{"scope": "pool", "nodes": "50%", **NIGHTLY}])
    nodes = facts(10)
    budgets = Budgets(p, nodes)
    at_night = budgets.sets_for(nodes[0], MONDAY_NIGHT)
    assert [(s.key, s.limit) for s in at_night] == [(ALL, 10), ("pool-pool0", 5)]
    noon = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    nightly = "each pool: at most 50% from 0 22 * * mon-fri for 240 min (Europe/Berlin), else 0"
    assert budgets.sets_for(nodes[0], noon) == [
        SlotSet(ALL, 10, "all nodes: 10 at once (concurrency 10)", where="all nodes"),
        SlotSet(
            "pool-pool0", 0, f"pool pool0: 0 at once ({nightly} (outside its schedule now))", "pool pool0"
        ),
    ]
    assert budgets.describe(noon) == f"concurrency 10; {nightly} [not in force now]"


def test_set_keys_are_lease_name_safe():
    assert set_key(BudgetScope.zone, "WestEurope_1") == "zone-westeurope-1"
    assert set_key(BudgetScope.pool, "userpool") == "pool-userpool"
    assert set_key(BudgetScope.all, "") == ALL


# ---- the slot sets on the Leases ----------------------------------------------------------------------
def zone_sets(zone: str, per_zone: int = 1, overall: int = 10) -> list[SlotSet]:
    return [SlotSet(ALL, overall, "all"), SlotSet(f"zone-{zone}", per_zone, f"zone {zone}")]


def holders(api: FakeApi) -> dict[str, str]:
    return {name: lease["spec"]["holderIdentity"] for (ns, name), lease in api.leases.items() if ns == NS}


def test_a_node_takes_a_slot_in_each_of_its_sets_or_none():
    api = FakeApi()
    slots = RebootSlots(fake_kube(api), LockOptions())
    assert slots.try_acquire("run/a", zone_sets("1")).taken == [
        "aks-maintenance-slot-0",
        "aks-maintenance-slot-zone-1-0",
    ]
    # the zone is full: the slot of all nodes that was free is not taken either
    assert slots.try_acquire("run/b", zone_sets("1")) == SlotAttempt(None, full=zone_sets("1")[1])
    assert holders(api) == {"aks-maintenance-slot-0": "run/a", "aks-maintenance-slot-zone-1-0": "run/a"}
    # another zone is free
    assert slots.try_acquire("run/c", zone_sets("2")).taken == [
        "aks-maintenance-slot-1",
        "aks-maintenance-slot-zone-2-0",
    ]


def test_a_set_whose_last_free_slot_goes_elsewhere_gives_back_what_it_took():
    api = FakeApi()
    slots = RebootSlots(fake_kube(api), LockOptions())
    other = RebootSlots(fake_kube(api), LockOptions())
    # between our LIST and our write, another run takes zone 1's only slot
    api.before_write = lambda: other.try_acquire("run/x", [SlotSet("zone-1", 1, "z")])
    assert slots.try_acquire("run/a", zone_sets("1")) == SlotAttempt(None), "no set was full when it looked"
    assert holders(api) == {"aks-maintenance-slot-0": "", "aks-maintenance-slot-zone-1-0": "run/x"}


def test_a_slot_above_the_limit_counts_until_it_is_freed():
    """A scheduled budget shrank from 4 to 2 while slot 3 was held: the set is full until slot 3 is
    freed, though slots 0 and 1 are free, because only distinct slots below the limit prove it."""
    api = FakeApi()
    slots = RebootSlots(fake_kube(api), LockOptions())
    assert slots.try_acquire("run/early", [SlotSet(ALL, 4, "four")]).taken == ["aks-maintenance-slot-0"]
    slots.release("aks-maintenance-slot-0", "run/early")
    for i in range(4):
        slots.try_acquire(f"run/n{i}", [SlotSet(ALL, 4, "four")])
    for i in range(3):
        slots.release(f"aks-maintenance-slot-{i}", f"run/n{i}")
    assert slots.try_acquire("run/late", [SlotSet(ALL, 2, "two")]).taken is None
    slots.release("aks-maintenance-slot-3", "run/n3")
    assert slots.try_acquire("run/late", [SlotSet(ALL, 2, "two")]).taken == ["aks-maintenance-slot-0"]


def test_acquire_stops_at_once_under_a_limit_of_zero():
    slots = RebootSlots(fake_kube(FakeApi()), LockOptions())
    closed = [SlotSet(ALL, 5, "all"), SlotSet("pool-user", 0, "pool user: 0 at once (outside its schedule)")]
    started = time.monotonic()
    with pytest.raises(LockTimeout) as stopped:
        slots.acquire("run/a", lambda: closed, timeout=60)
    assert time.monotonic() - started < 1
    assert str(stopped.value) == "no node may be disrupted now: pool user: 0 at once (outside its schedule)"


def test_the_set_of_all_nodes_is_named_all_nodes_when_a_node_that_did_not_come_back_keeps_its_slots():
    """A run where one node did not come back held the others with "every reboot slot of pool  is kept
    ...": the set of all nodes was described as a pool with no name."""
    api = FakeApi()
    nodes = facts(2)
    api.add_node("node-0")
    budgets = Budgets(params(concurrency=1), nodes)
    slots = RebootSlots(fake_kube(api), LockOptions())
    (slot,) = slots.acquire("run/a", lambda: budgets.sets_for(nodes[0], MONDAY_NIGHT), timeout=1)
    slots.keep_for_node(slot, "run/a", failed_holder("node-0"))
    with pytest.raises(LockTimeout) as held:
        slots.acquire("run/b", lambda: budgets.sets_for(nodes[1], MONDAY_NIGHT), timeout=60)
    assert str(held.value) == (
        "every reboot slot of all nodes is kept by a node that did not come back (node-0); fix those nodes first"
    )


def test_a_wait_for_a_slot_of_all_nodes_that_times_out_names_the_limit_and_the_holders():
    nodes = facts(2)
    budgets = Budgets(params(concurrency=1), nodes)
    slots = RebootSlots(fake_kube(FakeApi()), LockOptions())
    slots.acquire("run/a", lambda: budgets.sets_for(nodes[0], MONDAY_NIGHT), timeout=1)
    with pytest.raises(LockTimeout) as held:
        slots.acquire("run/b", lambda: budgets.sets_for(nodes[1], MONDAY_NIGHT), timeout=0, poll=0)
    assert str(held.value) == (
        "no reboot slot free within 0s under all nodes: 1 at once (concurrency 1)"
        " (held by: aks-maintenance-slot-0=run/a)"
    )


# ---- the rollout lets through no more nodes per set than its limit --------------------------------
class Recorder:
    def event(self, name: str, node: str, **payload: object) -> None:
        pass

    def info(self, message: str, *args: object) -> None:
        pass

    def warning(self, message: str, *args: object) -> None:
        pass

    def error(self, message: str, *args: object) -> None:
        pass


def rollout_with_budgets(p: MaintenanceParams, nodes: list[NodeFacts], busy_seconds: float):
    """A rollout whose only phase counts the nodes in progress per zone and per pool, then ends them."""
    lock = threading.Lock()
    now: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    def disrupt(lc: NodeLifecycle, run) -> Done:
        places = ["all", f"zone {run.before.zone}", f"pool {run.before.pool}"]
        with lock:
            now.update(places)
            for place in places:
                peak[place] = max(peak[place], now[place])
        time.sleep(busy_seconds)
        with lock:
            now.subtract(places)
        return Done(Outcome.rebooted, "rebooted")

    phase = PhaseSpec(Phase.gates, disrupt, does="", resumes="", on_cancel="", retries=0)
    by_name = {f.name: f for f in nodes}
    lc = NodeLifecycle(
        SimpleNamespace(cluster_name="aks-demo"),
        p,
        "run-1",
        Recorder(),
        budgets=Budgets(p, nodes),
        phases={Phase.gates: phase},
    )
    todo = [PlanEntry(node=f.name, action="reboot", reason="reboot required") for f in nodes]
    return Rollout(lc, todo, by_name), peak


def test_max_per_zone_one_lets_one_node_per_zone_through_and_uses_every_zone():
    nodes = facts(60, pools=2, zones=3)
    p = params(concurrency="50%", budgets=[{"scope": "zone", "nodes": 1}])
    rollout, peak = rollout_with_budgets(p, nodes, busy_seconds=0.02)
    result = rollout.run()
    assert Counter(r.outcome for r in result.reports.values()) == {Outcome.rebooted: 60}
    assert {k: v for k, v in peak.items() if k.startswith("zone")} == {
        "zone westeurope-1": 1,
        "zone westeurope-2": 1,
        "zone westeurope-3": 1,
    }
    assert peak["all"] == 3, "every zone had a node in progress at some point together"


def test_the_strictest_of_pool_zone_and_all_limits_bounds_each_place():
    nodes = facts(120, pools=2, zones=3)
    p = params(
        concurrency="25%",  # 30
        budgets=[
            {"scope": "zone", "nodes": 4},
            {"scope": "pool", "name": "pool0", "nodes": "5%"},  # 3 of pool0's 60
            {"scope": "all", "nodes": 9},
        ],
    )
    rollout, peak = rollout_with_budgets(p, nodes, busy_seconds=0.03)
    rollout.run()
    assert peak["all"] == 9
    assert peak["pool pool0"] == 3
    assert max(v for k, v in peak.items() if k.startswith("zone")) <= 4


def test_nodes_under_a_budget_outside_its_schedule_are_held_at_once_with_the_reason():
    nodes = facts(6, pools=2, zones=1)
    never_now = {"schedule": "0 0 1 1 *", "duration_minutes": 1, "time_zone": "UTC"}  # a minute a year
    p = params(concurrency=3, budgets=[{"scope": "pool", "name": "pool1", "nodes": 2, **never_now}])
    rollout, peak = rollout_with_budgets(p, nodes, busy_seconds=0.01)
    started = time.monotonic()
    result = rollout.run()
    assert time.monotonic() - started < 5
    by_pool = {f.name: f.pool for f in nodes}
    for name, report in result.reports.items():
        if by_pool[name] == "pool1":
            assert report.outcome == Outcome.held
            assert report.reason == (
                "no node may be disrupted now: pool pool1: 0 at once (pool pool1: at most 2 from 0 0 1 1 *"
                " for 1 min (UTC), else 0 (outside its schedule now))"
            )
        else:
            assert report.outcome == Outcome.rebooted
    assert peak["pool pool1"] == 0


# ---- the command line's flags ---------------------------------------------------------------------------
def cli_params(*flags: str) -> MaintenanceParams:
    from aksmaint_cli.commands import params_from_args, parse_args

    return params_from_args(parse_args(["--kubeconfig", "/nonexistent", *flags]))


def test_the_command_line_takes_a_percentage_a_zone_limit_and_quarantine():
    p = cli_params(
        "--concurrency",
        "30%",
        "--max-per-zone",
        "1",
        "--on-drain-timeout",
        "quarantine",
        "--retry-quarantined",
    )
    assert p.concurrency == "30%"
    assert p.budgets == [Budget(scope="zone", nodes=1)]
    assert p.drain.on_timeout == "quarantine" and p.retry_quarantined
    assert cli_params("--concurrency", "12").concurrency == 12


@pytest.mark.parametrize("bad", ["ten", "1.5", "30 percent"])
def test_a_concurrency_that_is_neither_a_count_nor_a_percentage_is_refused_by_the_parser(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_params("--concurrency", bad)
    assert exit_info.value.code == 2
    assert "is neither a count (5) nor a percentage (30%)" in capsys.readouterr().err


def test_a_malformed_percentage_is_refused_by_the_parameter_model_naming_the_field():
    with pytest.raises(ValidationError, match="concurrency"):
        cli_params("--concurrency", "3O%")


def test_a_zone_limit_from_the_command_line_adds_to_the_budgets_of_a_parameters_file(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("budgets:\n  - {scope: pool, name: userpool, nodes: '10%'}\n")
    p = cli_params("--params", str(params_file), "--max-per-zone", "2")
    assert [(b.scope, b.name, b.nodes) for b in p.budgets] == [("pool", "userpool", "10%"), ("zone", None, 2)]
