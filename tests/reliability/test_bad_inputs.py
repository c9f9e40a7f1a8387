"""Bad inputs, generated: every invalid parameter set and scenario gets a validation error (and nothing
else), and a flow run given one makes no mutating request at all.

Two kinds of generated input: a valid document with one field made invalid in a way the model promises
to refuse (each must be refused), and a valid document with any JSON value put anywhere (each must be
either accepted or refused with the validation error, never crash with another exception).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import string
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aksmaint.params import MaintenanceParams
from aksmaint_cli.commands import maintenance_main as flow_cli
from flows.node_maintenance import node_maintenance
from simulator.runtime import SimulatedAKS
from simulator.scenario import Scenario, ScenarioError, parse_scenario
from tests.support import RunningSim, scenario_dict

DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
SELECTOR = re.compile(r"[A-Za-z0-9_./\-!=,() ]*")
ZONES = available_timezones()

# ---- strategies ------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
not_a_number = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8) | st.lists(
    st.integers(), max_size=2
)
non_positive = st.floats(max_value=0, allow_nan=False) | st.integers(max_value=0)
negative = st.floats(max_value=0, exclude_max=True, allow_nan=False) | st.integers(max_value=-1)
fraction = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).filter(
    lambda x: not float(x).is_integer()
)


def not_matching(pattern: re.Pattern) -> st.SearchStrategy[str]:
    return st.text(max_size=70).filter(lambda s: not pattern.fullmatch(s))


bad_selector = st.text(min_size=1, max_size=20).filter(
    lambda s: not SELECTOR.fullmatch(s.strip()) or s.count("(") != s.count(")")
)
bad_regexp = st.sampled_from(["(", "[a-", "*x", "a{2,1}", "(?P<x", "\\", "(?<=a+)b"])
bad_label_key = st.text(min_size=1, max_size=70).filter(
    lambda k: not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_./]*", k)
)


def _set(doc: dict, path: tuple, value: object) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key] if isinstance(target, list) else target.setdefault(key, {})
    target[path[-1]] = value
    return doc


VALID_PARAMS = {"cluster": {"kubeconfig": "/nonexistent/kubeconfig"}}

# (where, what): each value must be refused there
INVALID_PARAMS: list[tuple[tuple, st.SearchStrategy]] = [
    (
        ("concurrency",),
        st.integers(max_value=0)
        | st.integers(min_value=1001)
        | not_a_number
        | fraction
        | st.sampled_from(["0%", "101%", "5.5%", "%", "-5%", "10 %"]),
    ),
    (("budgets",), st.just([{"scope": "zone"}]) | st.just([{"nodes": 1, "scope": "rack"}])),
    (
        ("budgets",),
        st.just([{"nodes": -1}]) | st.just([{"nodes": "120%"}]) | st.just([{"nodes": 1, "name": "x"}]),
    ),
    (
        ("budgets",),
        st.just([{"nodes": 1, "schedule": "0 22 * * *"}])
        | st.just([{"nodes": 1, "schedule": "61 * * * *", "duration_minutes": 5}])
        | st.just([{"nodes": 1, "schedule": "@daily", "duration_minutes": 0}]),
    ),
    (("max_failures",), st.integers(max_value=-1) | not_a_number),
    (("node_selector",), bad_selector),
    (("approval_timeout_seconds",), non_positive | not_a_number),
    (("window", "start"), not_matching(CLOCK)),
    (("window", "end"), not_matching(CLOCK)),
    (("window", "time_zone"), st.text(max_size=30).filter(lambda z: z not in ZONES)),
    (
        ("window", "days"),
        st.just([])
        | st.lists(
            st.text(max_size=5).filter(lambda d: d not in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")),
            min_size=1,
            max_size=3,
        ),
    ),
    (("drain", "timeout_seconds"), non_positive),
    (("drain", "grace_period_seconds"), st.integers(max_value=-2)),
    (("drain", "eviction_retry_seconds"), non_positive),
    (("drain", "skip_wait_for_delete_timeout_seconds"), st.integers(max_value=-1)),
    (
        ("drain", "on_timeout"),
        st.text(max_size=20).filter(
            lambda v: v not in ("uncordon-and-skip", "delete-pods", "reboot-anyway", "quarantine")
        ),
    ),
    (("drain", "pod_selector"), bad_selector),
    (
        ("blockers", "prometheus_url"),
        st.text(max_size=30).filter(lambda u: not re.match(r"^https?://[^/\s]+", u)),
    ),
    (("blockers", "alert_filter_regexp"), bad_regexp),
    (("blockers", "prometheus_timeout_seconds"), non_positive),
    (("blockers", "pod_selectors"), st.lists(bad_selector, min_size=1, max_size=2)),
    (("blockers",), st.just({"alert_filter_match_only": True})),
    (("reboot", "command"), st.just([])),
    (("reboot", "delay_seconds"), negative),
    (("reboot", "boot_timeout_seconds"), non_positive),
    (("reboot", "host_pod_namespace"), not_matching(DNS_NAME)),
    (("reboot", "host_pod_image"), st.just("")),
    (("lock", "namespace"), not_matching(DNS_NAME)),
    (("lock", "name_prefix"), not_matching(DNS_NAME)),
    (("lock", "ttl_seconds"), st.floats(max_value=5, exclude_max=True, allow_nan=False)),
    (("lock", "wait_seconds"), non_positive),
    (("lock", "release_delay_seconds"), negative),
    (("lock", "kured_daemonset"), not_matching(re.compile(r"[a-z0-9-]+/[a-z0-9-]+"))),
    (("sentinel", "parallelism"), st.integers(max_value=0) | st.integers(min_value=501)),
    (("sentinel", "mode"), st.text(max_size=20).filter(lambda v: v not in ("host-pod", "node-condition"))),
    (("labels", "pre_reboot"), st.dictionaries(bad_label_key, st.just("x"), min_size=1, max_size=2)),
    (
        ("labels", "post_reboot"),
        st.dictionaries(st.just("ok"), st.just("-not-a-value-"), min_size=1, max_size=1),
    ),
    (
        ("cluster",),
        st.sampled_from(
            [
                {},
                {"kubeconfig": "/k", "in_cluster": True},
                {"in_cluster": True, "context": "prod"},
                {"kubeconfig": "/k", "aks": {"subscription_id": "s", "resource_group": "r", "name": "n"}},
            ]
        ),
    ),
    (("drain",), st.text(max_size=5) | st.lists(st.integers(), max_size=2)),
    (("unknown_parameter",), JSON),
    (("drain", "unknown_option"), JSON),
    (("window", "unknown_option"), JSON),
]


@st.composite
def invalid_params(draw) -> dict:
    path, values = draw(st.sampled_from(INVALID_PARAMS))
    return _set(VALID_PARAMS, path, draw(values))


@st.composite
def anything_anywhere(draw, base: dict) -> dict:
    """``base`` with one value (at an existing or new key, at any depth) replaced by any JSON value."""
    doc = copy.deepcopy(base)
    target = doc
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        if not keys or draw(st.booleans()):
            break
        key = draw(st.sampled_from(keys))
        if not isinstance(target[key], (dict, list)) or not target[key]:
            break
        target = target[key]
    if isinstance(target, dict):
        key = draw(st.sampled_from([*target, "extra"]) if target else st.just("extra"))
    else:
        key = draw(st.integers(0, len(target) - 1)) if target else None
    value = draw(JSON)
    if key is None:
        target.append(value)
    else:
        target[key] = value
    return doc


# ---- the parameter models --------------------------------------------------------------------
def test_the_base_parameters_are_valid() -> None:
    assert MaintenanceParams.model_validate(VALID_PARAMS).concurrency == 1  # the mutations start valid


@settings(max_examples=150, deadline=None)
@given(invalid_params())
def test_invalid_parameters_are_refused(values: dict) -> None:
    with pytest.raises(ValidationError):
        MaintenanceParams.model_validate(values)


FULL_PARAMS = json.loads(
    MaintenanceParams.model_validate(
        {
            **VALID_PARAMS,
            "window": {},
            "labels": {"pre_reboot": {"a": "b"}},
            "budgets": [{"scope": "zone", "nodes": "10%", "schedule": "0 22 * * *", "duration_minutes": 60}],
        }
    ).model_dump_json()
)


@settings(max_examples=150, deadline=None)
@given(anything_anywhere(FULL_PARAMS))
def test_any_parameters_are_accepted_or_refused_cleanly(values: dict) -> None:
    with contextlib.suppress(ValidationError):
        MaintenanceParams.model_validate(values)


@pytest.fixture(scope="module")
def demo_sim(tmp_path_factory) -> Iterator[RunningSim]:
    """One simulated cluster for all the examples: none of them may change it."""
    sim = SimulatedAKS(parse_scenario(scenario_dict("example")), state_dir=tmp_path_factory.mktemp("sim"))
    sim.start()
    running = RunningSim(sim)
    yield running
    running.observer.close()
    sim.stop()


@settings(max_examples=8, deadline=None)
@given(values=invalid_params())
def test_a_flow_given_invalid_parameters_changes_nothing(demo_sim, prefect_api, values: dict) -> None:
    if values["cluster"] == VALID_PARAMS["cluster"]:
        values = {**values, "cluster": {"kubeconfig": demo_sim.kubeconfig}}
    with pytest.raises(ValidationError):
        MaintenanceParams.model_validate(values)
    mark = len(demo_sim.observer.audit())
    # from the command line: refused before anything runs
    params_file = Path(demo_sim.sim.state_dir) / "params.json"
    params_file.write_text(json.dumps(values))
    assert flow_cli(["--params", str(params_file)]) == 2
    # called as a flow (what a deployment run does): the run fails on its parameters
    try:
        state = node_maintenance(**values, return_state=True)
        assert state.is_failed(), state
    except TypeError:
        pass  # a parameter the flow does not have at all
    assert demo_sim.observer.mutating_requests(mark) == []
    assert demo_sim.observer.invariants()["max_unschedulable"] == 0


# ---- the scenario loader ---------------------------------------------------------------------
SCENARIO = scenario_dict("example")

INVALID_SCENARIOS: list[tuple[tuple, st.SearchStrategy]] = [
    (("time_scale",), non_positive | st.floats(min_value=100, exclude_min=True, allow_nan=False)),
    (("seed",), st.text(alphabet=string.ascii_letters, min_size=1, max_size=5)),
    (("cluster", "name"), not_matching(re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}"))),
    (("cluster", "kubernetes_version"), not_matching(re.compile(r"\d+\.\d+\.\d+"))),
    (("cluster", "control_plane_upgrade_seconds"), negative),
    (("pools",), st.just([])),
    (("pools", 0, "count"), st.integers(max_value=-1) | st.integers(min_value=5001)),
    (("pools", 0, "name"), not_matching(re.compile(r"[a-z][a-z0-9]{0,11}"))),
    (("pools", 0, "max_pods"), st.integers(max_value=0) | st.integers(min_value=251)),
    (("pools", 0, "boot_seconds"), negative),
    (("pools", 0, "mode"), st.text(max_size=8).filter(lambda m: m not in ("System", "User"))),
    (("pools", 1, "name"), st.just("nodepool1")),  # used twice
    (("nodes", 0, "index"), st.integers(min_value=3, max_value=10**6) | st.integers(max_value=-1)),
    (("nodes", 0, "pool"), st.text(max_size=12).filter(lambda p: p not in ("nodepool1", "userpool"))),
    (("nodes", 1, "reboot_required"), st.just(False)),  # while it has a pending kernel
    (("workloads", 0, "replicas"), st.integers(max_value=-1)),
    (
        ("workloads", 0, "kind"),
        st.text(max_size=12).filter(lambda k: k not in ("Deployment", "DaemonSet", "Pod")),
    ),
    (("workloads", 0, "labels"), st.just({})),
    (("workloads", 0, "node"), st.just({"pool": "nodepool1", "index": 0})),  # node on a Deployment
    (("workloads", 0, "pdb"), st.sampled_from([{}, {"min_available": 1, "max_unavailable": 1}])),
    (("workloads",), st.just([*SCENARIO["workloads"], SCENARIO["workloads"][0]])),  # defined twice
    (
        ("faults", "api_error_rate"),
        st.floats(max_value=0, exclude_max=True, allow_nan=False)
        | st.floats(min_value=1, exclude_min=True, allow_nan=False),
    ),
    (("unknown_field",), JSON),
    (("pools", 0, "unknown_field"), JSON),
]


@st.composite
def invalid_scenario(draw) -> object:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2))
    path, values = draw(st.sampled_from(INVALID_SCENARIOS))
    return _set(SCENARIO, path, draw(values))


def test_the_base_scenario_is_valid() -> None:
    assert isinstance(parse_scenario(SCENARIO), Scenario)


@settings(max_examples=150, deadline=None)
@given(invalid_scenario())
def test_invalid_scenarios_are_refused_naming_the_field(raw: object) -> None:
    with pytest.raises(ScenarioError) as refused:
        parse_scenario(raw, source="generated.yaml")
    message = str(refused.value)
    assert message.startswith("generated.yaml: ")
    if isinstance(raw, dict):
        assert "invalid scenario:" in message and ": " in message.split("\n", 1)[1], message


@settings(max_examples=150, deadline=None)
@given(anything_anywhere(SCENARIO))
def test_any_scenario_is_loaded_or_refused_cleanly(raw: dict) -> None:
    with contextlib.suppress(ScenarioError):
        parse_scenario(raw)
