"""Per-leg quality figures (core/media/quality.py): RFC 3550 A.1/A.8 statistics and the G.107 E-model
MOS estimate that goes into the call record."""

from __future__ import annotations

import pytest

from core.media.quality import (
    ReceptionStats,
    delay_impairment,
    effective_equipment_impairment,
    leg_figures,
    mos_from_r,
    r_factor,
    reception_quality,
)


def test_a_clean_g711_call_scores_as_g107_says():
    # G.107: with every default, R = 93.2 and MOS ≈ 4.41; a clean G.711 call with a short delay stays there.
    assert mos_from_r(93.2) == pytest.approx(1 + 0.035 * 93.2 + 93.2 * 33.2 * 6.8 * 7e-6)
    assert 4.40 < mos_from_r(93.2) < 4.42
    assert r_factor(0.0, 0.0, "PCMU") == pytest.approx(93.2)


def test_mos_is_bounded_and_monotonic_in_r():
    assert mos_from_r(-5) == 1.0 and mos_from_r(120) == 4.5
    values = [mos_from_r(r) for r in range(0, 101, 5)]
    assert values == sorted(values)


def test_loss_costs_more_without_robustness():
    # Ie,eff = Ie + (95 − Ie)·Ppl/(Ppl + Bpl): 1% loss on G.711 with PLC (Bpl 25.1) costs 95/26.1
    assert effective_equipment_impairment("PCMU", 1.0) == pytest.approx(95 / 26.1)
    assert effective_equipment_impairment("G729", 0.0) == pytest.approx(11.0)
    assert effective_equipment_impairment("G729", 2.0) > effective_equipment_impairment("PCMU", 2.0)
    assert mos_from_r(r_factor(5.0, 40.0)) < mos_from_r(r_factor(1.0, 40.0)) < mos_from_r(r_factor(0.0, 40.0))


def test_delay_costs_little_until_177_ms_then_much_more():
    assert delay_impairment(100) == pytest.approx(2.4)
    assert delay_impairment(300) == pytest.approx(0.024 * 300 + 0.11 * (300 - 177.3))
    assert delay_impairment(300) - delay_impairment(200) > 3 * (delay_impairment(150) - delay_impairment(50))


def test_figures_from_counters():
    counters = {"packets_received": 95, "bytes_received": 95 * 172, "packets_expected": 100, "packets_lost": 5,
                "jitter_q4": 16 * 80, "packets_sent": 99}
    f = leg_figures(counters, clock_rate=8000, ptime_ms=20, codec="PCMU")
    assert f.loss_percent == pytest.approx(5.0)
    assert (f.jitter, f.jitter_ms) == (80, pytest.approx(10.0))
    # delay: 0 network + 20 packetisation + jitter buffer max(20, 2·10) = 40 ms
    assert f.r_factor == pytest.approx(93.2 - 0.024 * 40 - 95 * 5 / (5 + 25.1))
    assert f.mos == pytest.approx(mos_from_r(f.r_factor))
    assert f.packets_sent == 99


@pytest.mark.parametrize("codec, ptime_ms", [("PCMU", 20), ("G729", 30), ("nothing known", 20.0)])
def test_a_leg_that_carried_nothing_is_rated_by_its_codec_and_packet_time(codec, ptime_ms):
    # no loss, no jitter: delay = packetisation + a one-packet jitter buffer; the same, remembered or not
    r = r_factor(0.0, 2 * ptime_ms, codec)
    assert reception_quality(0, 0, 0, 8000, ptime_ms, codec) == (0.0, 0.0, r, mos_from_r(r))
    assert reception_quality(0, 0, 0, 8000, ptime_ms, codec) == reception_quality.__wrapped__(0, 0, 0, 8000,
                                                                                               ptime_ms, codec)
    f = leg_figures({"packets_sent": 50}, ptime_ms=ptime_ms, codec=codec)
    assert (f.r_factor, f.mos, f.packets_sent, f.packets_received) == (r, mos_from_r(r), 50, 0)


def test_duplicates_never_make_negative_loss_percent():
    f = leg_figures({"packets_expected": 10, "packets_lost": -2})
    assert f.packets_lost == -2 and f.loss_percent == 0.0


def test_reception_stats_count_a_restart_and_a_wrap():
    s = ReceptionStats()
    s.init_seq(65530)
    for seq in [65531, 65532, 65534, 65535, 0, 1, 2]:  # 65533 lost, wrap
        assert s.update_seq(seq)
    assert (s.expected, s.lost, s.cycles) == (9, 1, 65536)
    assert not s.update_seq(20000)  # a jump: ignored once
    assert s.update_seq(20001)      # seen in sequence: a restart of the count (A.1)
    assert (s.expected, s.counted) == (9 + 1, 8 + 1)
