"""Speed of the predictive pacer's decision (core/scheduler/pacing.py), run with:

    python -m pytest bench/bench_pacing.py --benchmark-enable

Target (the issue "Outbound campaigns: preview, progressive and predictive dialling"): the pacer decides
for 1,000 agents and 10,000 calls in flight in under 1 ms per tick, on one core.

The campaign: 1,000 agents, 950 of them handling calls started over the last 10 minutes, 50 free; 10,000
calls in flight dialled over the last 20 s (a ring's worth); the pacer has learned an answer rate of 3%
(so that many lines are what a campaign would run) and handle times around 150 s.
* ``test_decide``: one tick, ``decide(now)`` with the clock moving 10 ms a round.
* ``test_tick_with_events``: a busier tick: an answer reaches an agent, a call fails, an agent frees up
  and takes the next call, a new call is dialled, then ``decide``; the forecast tables are refitted when
  their interval (15 s ring, 60 s handle) has passed, as in a running campaign.
* ``test_decide_cold_start``: 1,000 free agents and nothing in flight: the decision searches far (it
  dials hundreds of calls at once), the slow end of the search.
* ``test_refit``: rebuilding both forecast tables from what was learned (once per 15 / 60 s).
The figure that answers the target is the median of ``test_decide`` and ``test_tick_with_events``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.scheduler.pacing import (
    AgentBusy, AgentFree, CallAnswered, CallConnected, CallDialled, CallFailed, Pacer, PacingConfig,
)

AGENTS = 1_000
FREE = 50
CALLS = 10_000
NOW = 10_000.0
CONFIG = PacingConfig(max_lines_per_agent=20.0, prior_answer_probability=0.03, prior_handle_mean=150.0,
                      prior_weight=500.0)


def campaign() -> Pacer:
    rng = np.random.default_rng(0)
    pacer = Pacer(CONFIG)
    for agent in range(AGENTS):
        pacer.handle(AgentFree(agent), 0.0)
    for agent, started in zip(range(FREE, AGENTS), NOW - rng.uniform(0, 600, AGENTS - FREE)):
        pacer.handle(AgentBusy(agent), float(started))
    for call, dialled in enumerate(np.sort(NOW - rng.uniform(0, 20, CALLS))):
        pacer.handle(CallDialled(call), float(dialled))
    assert (pacer.free_agents, pacer.busy_agents, pacer.in_flight) == (FREE, AGENTS - FREE, CALLS)
    pacer.decide(NOW)  # fit the forecast tables once, as a running campaign has
    return pacer


def test_decide(benchmark):
    pacer = campaign()
    clock = itertools.count(1)
    decisions = []

    def tick():
        decisions.append(pacer.decide(NOW + next(clock) * 0.01))

    benchmark(tick)
    assert pacer.in_flight == CALLS and decisions
    benchmark.extra_info["calls_to_dial"] = decisions[-1]


def test_tick_with_events(benchmark):
    pacer = campaign()
    rng = np.random.default_rng(1)
    state = {"now": NOW, "call": CALLS, "oldest": 0, "agent": FREE}
    decisions = []

    def tick():
        now = state["now"] = state["now"] + 0.01
        # The oldest ringing call is answered and taken by the next free agent, the one after fails...
        answered, failed = state["oldest"], state["oldest"] + 1
        state["oldest"] += 2
        pacer.handle(CallAnswered(answered), now)
        agent = state["agent"] % AGENTS
        state["agent"] += 1
        pacer.handle(AgentFree(agent), now)
        pacer.handle(CallConnected(answered, agent), now)
        pacer.handle(AgentBusy(agent), now)
        pacer.handle(CallFailed(failed, "no-answer"), now)
        # ...and two new calls keep 10,000 in flight.
        for _ in range(2):
            pacer.handle(CallDialled(state["call"]), now - float(rng.uniform(0, 0.01)))
            state["call"] += 1
        decisions.append(pacer.decide(now))

    benchmark(tick)
    assert pacer.in_flight == CALLS and decisions
    benchmark.extra_info["calls_to_dial"] = decisions[-1]


def test_decide_cold_start(benchmark):
    pacer = Pacer(CONFIG)
    for agent in range(AGENTS):
        pacer.handle(AgentFree(agent), 0.0)
    decisions = []
    benchmark(lambda: decisions.append(pacer.decide(1.0)))
    # Far more than one call per agent: the search went the whole way out.
    assert decisions[-1] > 2 * AGENTS
    benchmark.extra_info["calls_to_dial"] = decisions[-1]


@pytest.mark.parametrize("table", ["ring", "handle"])
def test_refit(benchmark, table):
    pacer = campaign()
    benchmark(getattr(pacer, f"_refit_{table}"))
