"""The Prefect API failing under a rollout (issue 10): a node must never fail, be skipped or halted because
Prefect could not record something. The flow's command line runs in its own process and talks to the
Prefect API through a proxy (tests/prefect_proxy.py) that answers a share of writes with 503, or goes
away like a stopped server; the Kubernetes side is untouched. Each case ends on the simulator's
invariants: every node that needed a reboot rebooted exactly once, onto its pending kernel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.objects import StateType

from tests.prefect_proxy import PrefectProxy
from tests.reliability.support import assert_invariants, cordoned_without_record, reliability_scenario
from tests.support import (
    FlowProcess,
    RunningSim,
    core_api,
    flow_processes,
    needing_reboot,
    report_in,
    slot_holders,
    timeline_event,
    wait_for,
)

# At time scale 1 a node takes about 8 s to boot and a few seconds to drain (the api budget lets one pod
# go at a time), so 7 nodes two at a time take about 40-60 s of real time: long enough for an outage to
# land in the middle of the rollout.
TIME_SCALE = 1.0
CONCURRENCY = 2
ROLLOUT_TIMEOUT = 150
FAULT_SEED = 680


@pytest.fixture
def prefect_proxy(prefect_api) -> Iterator[PrefectProxy]:
    """A proxy in front of the session's Prefect test server, closed at the end."""
    from prefect.settings import PREFECT_API_URL

    with PrefectProxy(PREFECT_API_URL.value(), seed=10) as proxy:
        yield proxy


@pytest.fixture
def proxied_flow(prefect_proxy: PrefectProxy, tmp_path: Path) -> Iterator:
    """Start the flow's command line against the proxy (``proxied_flow(sim, name, **overrides)``);
    leftovers are killed at the end."""
    yield from flow_processes(tmp_path, prefect_proxy.api_url)


def long_rollout(start_sim, need: int = 7) -> tuple[RunningSim, list[str]]:
    sim = start_sim(reliability_scenario(need=need, count=need + 1), time_scale=TIME_SCALE)
    needed = needing_reboot(sim)
    assert len(needed) == need
    return sim, needed


def outside_report(output: str) -> list[str]:
    """The lines of the output that are not part of the JSON report."""
    start = output.find("{\n")
    if start < 0:
        return output.splitlines()
    _, length = json.JSONDecoder().raw_decode(output[start:])
    return (output[:start] + output[start + length :]).splitlines()


def finish(process: FlowProcess, timeout: float = ROLLOUT_TIMEOUT) -> tuple[int, str]:
    code = process.wait(timeout)
    return code, process.output()


def timeline_since(sim: RunningSim, mark: int, event: str) -> list[dict]:
    return [e for e in sim.observer.timeline(mark) if e["event"] == event]


def flow_run_state(flow_run_id: str) -> StateType | None:
    """The flow run's state type as the real server (not the proxy) has it."""
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(flow_run_id)
    return run.state.type if run.state else None


def assert_exited_cleanly(code: int, output: str) -> dict:
    assert code == 0, output
    assert "Traceback" not in output, output
    return report_in(output)


def test_rollout_rides_out_prefect_write_failures(
    start_sim, prefect_proxy: PrefectProxy, proxied_flow, record_property
) -> None:
    sim, needed = long_rollout(start_sim)
    # flow-run, task-run, log, artifact and state writes, for the whole run; the draws are per path, and
    # with this seed the first tries of the flow run's creation, of its first two state changes, of the
    # first log batch and of the first artifact are among those refused
    prefect_proxy.fail(0.3, seed=FAULT_SEED)
    started = time.monotonic()
    code, output = finish(proxied_flow(sim, "flaky-prefect", concurrency=CONCURRENCY))
    took = time.monotonic() - started
    counts = prefect_proxy.counts()
    report = assert_exited_cleanly(code, output)
    # the faults really happened, to the run's own record too
    refused = counts["refused"]
    assert counts["refused_total"] >= 5, json.dumps(counts, indent=1)
    for write in ("POST /api/flow_runs/", "POST /api/flow_runs/{id}/set_state", "POST /api/logs/"):
        assert refused.get(write, 0) >= 1, json.dumps(counts, indent=1)
    outcomes = {n["node"]: n["outcome"] for n in report["nodes"]}
    assert {n: outcomes.get(n) for n in needed} == dict.fromkeys(needed, "rebooted"), output
    assert not report["halted"], report["halt_reason"]
    assert_invariants(sim, needed, concurrency=CONCURRENCY)
    record_property(
        "reliability",
        f"Prefect writes answered 503 at 30 %: {counts['refused_total']} of {counts['requests_total']} "
        f"requests refused; all {len(needed)} nodes rebooted once in {took:.0f}s, exit 0",
    )


def test_rollout_rides_out_a_30_second_prefect_outage(
    start_sim, prefect_proxy: PrefectProxy, proxied_flow, record_property
) -> None:
    sim, needed = long_rollout(start_sim)
    process = proxied_flow(sim, "prefect-outage", concurrency=CONCURRENCY)
    first = wait_for(sim, timeline_event("cordoned"), process)
    cut = len(sim.observer.timeline())
    before = prefect_proxy.requests_total
    prefect_proxy.down()
    time.sleep(30)
    restored = len(sim.observer.timeline())
    prefect_proxy.up()
    code, output = finish(process)
    report = assert_exited_cleanly(code, output)
    # the rollout went on while Prefect was away, and the run talked to Prefect again after it
    rebooted_meanwhile = {
        e["node"] for e in sim.observer.timeline(cut)[: restored - cut] if e["event"] == "rebooted"
    }
    assert first["node"] in rebooted_meanwhile, (first["node"], rebooted_meanwhile)
    assert prefect_proxy.requests_total > before
    outcomes = {n["node"]: n["outcome"] for n in report["nodes"]}
    assert {n: outcomes.get(n) for n in needed} == dict.fromkeys(needed, "rebooted"), output
    assert not report["halted"], report["halt_reason"]
    assert_invariants(sim, needed, concurrency=CONCURRENCY)
    # once back, the run recorded how it ended
    assert report["flow_run_id"], report
    assert flow_run_state(report["flow_run_id"]) == StateType.COMPLETED
    record_property(
        "reliability",
        f"Prefect API down 30 s from the first cordon: {len(rebooted_meanwhile)} node(s) rebooted meanwhile; "
        f"all {len(needed)} rebooted once, exit 0, flow run Completed in Prefect",
    )


def test_outage_past_the_tolerance_stops_at_a_safe_point(
    start_sim, prefect_proxy: PrefectProxy, proxied_flow, record_property
) -> None:
    sim, needed = long_rollout(start_sim, need=6)
    # Prefect's client retries each request five times, with a backoff of about a minute in all, before
    # the engine gives up on the run's final state; one retry proves the same stop in seconds
    process = proxied_flow(
        sim,
        "prefect-gone",
        concurrency=3,
        orchestration_outage_seconds=10,
        env_changes={"PREFECT_CLIENT_MAX_RETRIES": "1"},
    )
    wait_for(sim, timeline_event("cordoned"), process)
    prefect_proxy.down()  # for good
    cut = time.monotonic()
    # 10 s of tolerance, the nodes in progress finishing (one node's cycle, about 15 s) and Prefect's client
    # giving up on the run's final state must fit in this
    code = process.wait(150)
    stopped_after = time.monotonic() - cut
    output = process.output()
    assert code == 1, output
    assert "Traceback" not in output, output
    report = report_in(output)
    assert report["halted"] and report["halt_reason"].startswith("the Prefect API"), report["halt_reason"]
    # one clear message at the end, not Prefect's per-event complaints
    said = [line for line in outside_report(output) if line.startswith("warning:") and "Prefect API" in line]
    assert said, output
    assert "failed to process item" not in output, output
    # a safe point: nothing cordoned without its record, no slot held, no node rebooted twice
    core = core_api(sim)
    try:
        assert cordoned_without_record(core) == []
    finally:
        core.api_client.close()
    assert {lease: holder for lease, holder in slot_holders(sim).items() if holder} == {}
    reboots = sim.observer.invariants()["reboots"]
    assert set(reboots) <= set(needed) and set(reboots.values()) <= {1}, reboots
    assert len(reboots) < len(needed), "the run did not stop early: the outage proves nothing"
    # with Prefect back, the next run finishes the job
    prefect_proxy.up()
    code, output = finish(proxied_flow(sim, "after-prefect-is-back", concurrency=3))
    assert_exited_cleanly(code, output)
    assert_invariants(sim, needed, concurrency=3)
    record_property(
        "reliability",
        f"Prefect API gone for good (tolerance 10 s): the run stopped {stopped_after:.0f}s after the cut "
        f"with {len(reboots)} of {len(needed)} nodes rebooted, exit 1 ({said[0].strip()[:80]}); "
        "the next run converged",
    )
