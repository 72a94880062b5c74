"""The campaign pacer (core/scheduler/pacing.py) fed events by hand: progressive and ratio counts, the
2-second rule and its audit event, the rolling window by US and UK rules, learning the answer and handle
figures, predictive dialling ahead of the free agents and its fallback to progressive near the cap."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.scheduler.pacing import (
    PREDICTIVE, PROGRESSIVE, RATIO, RULES, AgentBusy, AgentFree, AgentLoggedOut, CallAbandoned, CallAnswered,
    CallConnected, CallDialled, CallFailed, Pacer, PacingConfig, RollingWindow,
)


def pacer_with(mode: str, free: int = 0, busy: int = 0, now: float = 0.0, **config) -> Pacer:
    pacer = Pacer(PacingConfig(mode=mode, **config))
    for agent in range(free + busy):
        pacer.handle(AgentFree(agent), now)
    for agent in range(free, free + busy):
        pacer.handle(AgentBusy(agent), now)
    return pacer


def dial(pacer: Pacer, calls, now: float) -> None:
    for call in calls:
        pacer.handle(CallDialled(call), now)


def test_progressive_dials_one_call_per_free_agent():
    pacer = pacer_with(PROGRESSIVE, free=3, busy=2)
    assert pacer.decide(0.0) == 3
    dial(pacer, ["a", "b"], 0.0)
    assert pacer.decide(0.1) == 1
    dial(pacer, ["c"], 0.1)
    assert pacer.decide(0.2) == 0
    # An answered call still needs its agent; once connected, that agent is busy: still nothing to dial.
    pacer.handle(CallAnswered("a"), 5.0)
    assert pacer.decide(5.0) == 0
    pacer.handle(CallConnected("a", 0), 5.0)
    pacer.handle(AgentBusy(0), 5.0)
    assert pacer.decide(5.0) == 0
    # A no-answer gives its agent back.
    pacer.handle(CallFailed("b", "no-answer"), 20.0)
    assert pacer.decide(20.0) == 1
    # A busy agent who frees up is one more call.
    pacer.handle(AgentFree(3), 21.0)
    assert pacer.decide(21.0) == 2


def test_ratio_keeps_a_fixed_number_of_lines_per_free_agent():
    pacer = pacer_with(RATIO, free=2, busy=3, dial_ratio=2.5)
    assert pacer.decide(0.0) == 5
    dial(pacer, range(4), 0.0)
    assert pacer.decide(0.0) == 1


def test_no_agents_logged_in_means_no_calls():
    for mode in (PROGRESSIVE, PREDICTIVE, RATIO):
        pacer = pacer_with(mode, free=2)
        pacer.handle(AgentLoggedOut(0), 1.0)
        pacer.handle(AgentLoggedOut(1), 1.0)
        assert pacer.decide(1.0) == 0, mode


def test_an_answer_without_agent_for_2_seconds_is_abandoned_with_the_message():
    pacer = pacer_with(PREDICTIVE, busy=1, abandon_message="sorry-we-missed-you")
    dial(pacer, ["x", "y"], 0.0)
    pacer.handle(CallAnswered("x"), 7.0)
    pacer.handle(CallAnswered("y"), 7.5)
    assert pacer.get_timer() == 9.0
    pacer.handle_timer(8.99)
    assert pacer.next_event() is None
    # y reaches an agent in time; x does not.
    pacer.handle(CallConnected("y", 0), 8.0)
    pacer.handle_timer(9.0)
    assert pacer.next_event() == CallAbandoned("x", 7.0, 9.0, "sorry-we-missed-you")
    assert pacer.next_event() is None
    assert pacer.get_timer() is None
    assert (pacer.answered, pacer.connected, pacer.abandoned) == (2, 1, 1)
    assert pacer.window.rate(9.0) == 0.5


def test_the_called_party_hanging_up_while_waiting_is_not_an_abandon():
    pacer = pacer_with(PREDICTIVE, busy=1)
    dial(pacer, ["x"], 0.0)
    pacer.handle(CallAnswered("x"), 5.0)
    pacer.handle(CallFailed("x", "hangup"), 6.0)
    assert pacer.get_timer() is None
    pacer.handle_timer(10.0)
    assert pacer.next_event() is None and pacer.abandoned == 0


@pytest.mark.parametrize("rules, kept_until, gone_by", [("us", 29.9 * 86400, 30.1 * 86400), ("uk", 23.9 * 3600, 24.1 * 3600)])
def test_the_window_forgets_an_abandon_after_30_days_us_or_24_hours_uk(rules, kept_until, gone_by):
    window = RollingWindow(RULES[rules])
    window.add(0.0, answers=10, abandons=1)
    window.add(kept_until - 60, answers=10)
    assert window.rate(kept_until) == pytest.approx(1 / 20)
    assert window.rate(gone_by) == 0.0
    assert window.answers == 10


def test_the_pacer_learns_the_answer_rate_and_handle_time():
    pacer = pacer_with(PREDICTIVE, free=1)
    now = 0.0
    for call in range(2000):
        pacer.handle(CallDialled(call), now)
        if call % 5 == 0:
            pacer.handle(CallAnswered(call), now + 6.0)
            pacer.handle(CallConnected(call, 0), now + 6.0)
            pacer.handle(AgentBusy(0), now + 6.0)
            pacer.handle(AgentFree(0), now + 6.0 + 100.0)
        else:
            pacer.handle(CallFailed(call, "no-answer"), now + 20.0)
        now += 30.0
    assert pacer.answer_probability == pytest.approx(0.2, abs=0.01)
    assert pacer.mean_handle_time() == pytest.approx(100.0, rel=0.06)  # from a prior of 180 s


def _learned(answer_every: int) -> Pacer:
    """A predictive pacer with 10 agents that has seen 1,000 calls: one in ``answer_every`` answered."""
    pacer = pacer_with(PREDICTIVE, free=10)
    for call in range(1000):
        now = call * 0.1
        pacer.handle(CallDialled(call), now)
        if call % answer_every == 0:
            pacer.handle(CallAnswered(call), now + 8.0)
            pacer.handle(CallConnected(call, 0), now + 8.0)
        else:
            pacer.handle(CallFailed(call, "no-answer"), now + 20.0)
    return pacer


def test_predictive_dials_ahead_of_the_free_agents_and_more_when_fewer_answer():
    often, rarely = _learned(2), _learned(10)
    assert often.answer_probability > 0.45 and rarely.answer_probability < 0.12
    n_often, n_rarely = often.decide(200.0), rarely.decide(200.0)
    assert 10 < n_often < n_rarely


def test_predictive_counts_agents_about_to_free_up():
    # Handle times expected around a minute: 30 agents who just took their calls will not be free
    # within the next ring, the same agents two minutes into their calls soon will.
    fresh = pacer_with(PREDICTIVE, free=2, busy=30, prior_handle_mean=60.0)
    later = pacer_with(PREDICTIVE, free=2, busy=30, prior_handle_mean=60.0)
    assert fresh.decide(0.0) == 2
    assert later.decide(120.0) > 8


def test_predictive_falls_back_to_progressive_when_the_window_nears_the_cap():
    pacer = pacer_with(PREDICTIVE, free=4, busy=4)
    ahead = pacer.decide(0.0)
    assert ahead > 4
    # 100 live answers, 3 abandoned: the window is at the 3% cap.
    for call in range(100):
        pacer.handle(CallDialled(call), 1.0)
        pacer.handle(CallAnswered(call), 2.0)
        if call >= 3:
            pacer.handle(CallConnected(call, 0), 2.0)
    pacer.handle_timer(4.0)
    assert pacer.abandoned == 3
    assert pacer.decide(4.0) == 4
    assert pacer.fallbacks == 1


def _window_of(answers: int, abandons: int) -> Pacer:
    """A predictive pacer whose window holds ``answers`` live answers, ``abandons`` of them abandoned."""
    pacer = pacer_with(PREDICTIVE, free=4, busy=4)
    every = answers // abandons
    for call in range(answers):
        now = call * 0.01
        pacer.handle(CallDialled(call), now)
        pacer.handle(CallAnswered(call), now)
        if call % every or call // every >= abandons:
            pacer.handle(CallConnected(call, 0), now)
    pacer.handle_timer(answers * 0.01 + 2.0)
    assert (pacer.window.answers, pacer.abandoned) == (answers, abandons)
    return pacer


def test_a_fuller_window_aims_and_falls_back_closer_to_the_cap():
    # 2.8% of answers abandoned: over 500 answers that is close enough to 3% to fall back (chance alone
    # could carry the next few hundred over the cap); over 20,000 the count is known well enough to go on.
    small, large = _window_of(500, 14), _window_of(20_000, 560)
    now = 202.0
    assert small.fallback_rate(now) == pytest.approx(0.027)
    assert 0.029 < large.fallback_rate(now) < 0.03
    small.decide(now)
    large.decide(now)
    assert (small.fallbacks, large.fallbacks) == (1, 0)


def test_predictive_never_dials_fewer_than_progressive():
    pacer = pacer_with(PREDICTIVE, free=6)
    # Even with abandons that crushed its price, six free agents and nothing in flight get six calls.
    for call in range(20):
        pacer.handle(CallDialled(call), 0.0)
        pacer.handle(CallAnswered(call), 1.0)
    pacer.handle_timer(3.5)
    assert pacer.abandoned == 20
    assert pacer.decide(3.5) == 6


def test_config_rejects_unknown_modes_and_nonsense():
    with pytest.raises(ValueError, match="mode"):
        PacingConfig(mode="preview-ish")
    with pytest.raises(ValueError, match="abandon_target"):
        PacingConfig(abandon_target=3.0)
    with pytest.raises(ValueError, match="connect_limit"):
        PacingConfig(connect_limit=0.0)


def test_pacer_rejects_what_is_not_a_pacing_event():
    with pytest.raises(TypeError):
        Pacer().handle("CallAnswered", 0.0)


@pytest.mark.parametrize("module", ["pacing.py", "simulate.py"])
def test_pacing_and_simulator_are_sans_io(module):
    source = Path(__file__).resolve().parents[1] / "core" / "scheduler" / module
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "asyncio", "uvloop", "socket", "threading", "random"}
