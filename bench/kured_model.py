"""A model of kured's rollout of the same cluster, from its algorithm (cmd/kured/main.go, v1.x).

It is a model, not a measurement: kured is not run. Every node's daemon checks at its own ticks: the first
at a uniformly random 0.5-1.5 x period after the start (kured's ``delaytick``), then every period. At a
tick a node that needs a reboot takes the DaemonSet lock only if it has a free place (one holder, or
``--concurrency`` holders), otherwise it waits for its next tick. The holder drains, reboots and comes back
(the scenario's drain + boot + ready); its restarted daemon uncordons the node and releases the lock
after its start-up ticker's first tick, 0.5-1.5 min later. The rollout is the time from the first cordon
to the last uncordon; the figures are means over many random draws.
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass

PERIOD_SECONDS = 3600.0  # kured's --period default
RESTART_TICK_SECONDS = 60.0  # the 1-minute delaytick a restarted daemon waits before releasing the lock


@dataclass(frozen=True)
class KuredRollout:
    concurrency: int
    makespan: float  # mean, first cordon to last uncordon
    makespan_p90: float
    from_start: float  # mean, daemons' start to last uncordon (includes the first 0.5-1.5 periods)
    trials: int


def one_rollout(
    rng: random.Random, nodes: int, concurrency: int, work: float, period: float
) -> tuple[float, float]:
    ticks = [(rng.uniform(0.5 * period, 1.5 * period), i) for i in range(nodes)]
    heapq.heapify(ticks)
    releases: list[float] = []  # release times of current holders
    first_cordon = None
    last_uncordon = 0.0
    while ticks:
        t, node = heapq.heappop(ticks)
        releases = [r for r in releases if r > t]
        if len(releases) >= concurrency:
            heapq.heappush(ticks, (t + period, node))
            continue
        release = t + work + rng.uniform(0.5, 1.5) * RESTART_TICK_SECONDS
        releases.append(release)
        first_cordon = t if first_cordon is None else min(first_cordon, t)
        last_uncordon = max(last_uncordon, release)
    return last_uncordon - first_cordon, last_uncordon


def model(
    nodes: int,
    concurrency: int,
    work: float,
    period: float = PERIOD_SECONDS,
    trials: int = 2000,
    seed: int = 1,
) -> KuredRollout:
    rng = random.Random(seed)
    runs = [one_rollout(rng, nodes, concurrency, work, period) for _ in range(trials)]
    spans = sorted(r[0] for r in runs)
    return KuredRollout(
        concurrency=concurrency,
        makespan=statistics.mean(spans),
        makespan_p90=spans[int(0.9 * (len(spans) - 1))],
        from_start=statistics.mean(r[1] for r in runs),
        trials=trials,
    )
