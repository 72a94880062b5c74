"""Parse and serialise speed of the two message implementations (core/_sip.pyx and its Python twin).

Run:  python -m pytest bench/bench_parse.py --benchmark-enable
Targets (docs: the issue on RFC 3261 §7/§20/§25): parsing the typical INVITE with SDP, 200 OK and BYE at
least 250,000 messages a second on one core with the Cython scanner, and at least 20 times the twin
in the same run; serialising with a proxy's edits (prepend a Via, decrement Max-Forwards, remove
Route) at least 250,000 messages a second. Each benchmark records messages_per_second in extra_info
(shown with --benchmark-verbose / --benchmark-json); the "mix" rows parse the three messages per round.
"""

from __future__ import annotations

import pytest

from core.sip.message import IMPLEMENTATIONS
from tests.test_message import TYPICAL

IMPLS = [name for name, impl in IMPLEMENTATIONS.items() if impl is not None]
MIX = list(TYPICAL.values())


def _record(benchmark, messages_per_round: int) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["messages_per_second"] = round(messages_per_round / mean)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", sorted(TYPICAL))
def test_parse(benchmark, impl, kind):
    benchmark.group = f"parse {kind}"
    parse, data = IMPLEMENTATIONS[impl].parse, TYPICAL[kind]
    msg = benchmark(parse, data)
    assert msg.call_id
    _record(benchmark, 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_mix(benchmark, impl):
    benchmark.group = "parse mix (INVITE+SDP, 200 OK, BYE)"
    parse = IMPLEMENTATIONS[impl].parse

    def parse_three():
        for data in MIX:
            parse(data)

    benchmark(parse_three)
    _record(benchmark, len(MIX))


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_and_read_slots(benchmark, impl):
    # What the transaction layer reads of every message: the Python strings made on first access.
    benchmark.group = "parse mix + read branch, Call-ID, CSeq, tags"
    parse = IMPLEMENTATIONS[impl].parse

    def parse_three():
        for data in MIX:
            msg = parse(data)
            msg.branch, msg.call_id, msg.cseq, msg.cseq_method, msg.from_tag, msg.to_tag, msg.method

    benchmark(parse_three)
    _record(benchmark, len(MIX))


@pytest.mark.parametrize("impl", IMPLS)
def test_serialize_proxy_edits(benchmark, impl):
    benchmark.group = "serialize INVITE with proxy edits"
    msg = IMPLEMENTATIONS[impl].parse(TYPICAL["invite"])
    via = [("Via", "SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1")]
    remove = ["Route"]

    def forward():
        return msg.serialize(prepend=via, remove=remove, replace={"Max-Forwards": str(msg.max_forwards - 1)})

    out = benchmark(forward)
    assert b"Max-Forwards: 69\r\n" in out and b"Route:" not in out
    _record(benchmark, 1)
