"""Transaction layer benchmarks (RFC 3261 §17), run with:

    python -m pytest bench/bench_transaction.py --benchmark-enable -s

1. ``test_hold_100k_server_transactions``: 100,000 concurrent server transactions, each answered and
   so holding its timers (non-INVITE: Timer J; INVITE answered 486: Timers G and H). Reports the
   memory the layer holds per transaction (tracemalloc) and the time to create them (receive + TU
   response, requests parsed beforehand).
2. ``test_options_throughput``: messages a second through parse -> transaction -> response ->
   datagrams_to_send, a fresh OPTIONS (new branch) each time, with the message module's fastest
   implementation (``core._sip`` when built, else ``core.sip._pysip``).
3. ``test_wheel_schedule_cancel``: the timer wheel alone, 100,000 schedules then cancels.
"""
from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from core.scheduler.wheel import TimerWheel
from core.sip import message
from core.sip.addr import Peer
from core.sip.transaction import TransactionLayer, new_tag

N = 100_000
PARSE_IMPL = "c" if message.IMPLEMENTATIONS["c"] is not None else "py"
_impl = message.IMPLEMENTATIONS[PARSE_IMPL]
parse = _impl.parse
build_response = _impl.build_response

CLIENT = Peer("udp", "127.0.0.1", 5061)


def datagram(method: str, i: int) -> bytes:
    return (
        f"{method} sip:switch@127.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{i:08x};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=5f3a\r\n"
        "To: <sip:switch@127.0.0.2>\r\n"
        f"Call-ID: {i:08x}-bench@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:probe@127.0.0.1:5061>\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _fill(layer: TransactionLayer, msgs, method: str, status: int) -> None:
    now = 0.0
    receive, send_response, next_event = layer.receive, layer.send_response, layer.next_event
    for msg in msgs:
        receive(msg, CLIENT, now)
        event = next_event()
        send_response(event.tx, build_response(event.msg, status, to_tag=new_tag()), status, now)
        layer.datagrams_to_send()
        now += 1e-5


@pytest.mark.parametrize("method,status,timers", [("OPTIONS", 200, "J"), ("INVITE", 486, "G+H")])
def test_hold_100k_server_transactions(benchmark, method, status, timers):
    datagrams = [datagram(method, i) for i in range(N)]
    # Memory, once, under tracemalloc (which slows allocation, so it is not timed): requests are
    # parsed inside the measured region and dropped by the "TU", so what stays is what the layer
    # holds for each transaction (the transaction, its key, timers, the response it may resend, and
    # the request if it kept it).
    gc.collect()
    layer = TransactionLayer(max_transactions=N)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    _fill(layer, (parse(d) for d in datagrams), method, status)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(layer) == N and len(layer.wheel) == N * len(timers.split("+"))
    del layer
    msgs = [parse(d) for d in datagrams]

    def setup():
        gc.collect()
        return (TransactionLayer(max_transactions=N), msgs, method, status), {}

    # Time: receive + TU response for 100,000 requests parsed beforehand.
    benchmark.pedantic(_fill, setup=setup, rounds=3, iterations=1)
    per_tx = held / N
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(bytes_per_transaction=round(per_tx), seconds_to_create_100k=round(seconds, 3),
                                timers=timers, parser=PARSE_IMPL)
    print(f"\n{method} -> {status} ({timers} pending), parser={PARSE_IMPL}: {per_tx:.0f} B held per "
          f"transaction; {N} created in {seconds:.3f} s ({N / seconds:,.0f}/s)")


def test_options_throughput(benchmark):
    batch = 20_000
    datagrams = [datagram("OPTIONS", i) for i in range(batch)]

    def run(layer):
        now = 0.0
        receive, send_response, next_event = layer.receive, layer.send_response, layer.next_event
        for data in datagrams:
            receive(parse(data), CLIENT, now)
            event = next_event()
            send_response(event.tx, build_response(event.msg, 200, to_tag=new_tag(),
                                                   headers=[("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")]),
                          200, now)
            layer.datagrams_to_send()
            now += 1e-5

    benchmark.pedantic(run, setup=lambda: ((TransactionLayer(),), {}), rounds=5, iterations=1)
    rate = batch / benchmark.stats.stats.min
    parse_only = min(_time(lambda: [parse(d) for d in datagrams]) for _ in range(3))
    benchmark.extra_info.update(messages_per_second=round(rate), parser=PARSE_IMPL,
                                parse_only_per_second=round(batch / parse_only))
    print(f"\nOPTIONS parse -> transaction -> 200, parser={PARSE_IMPL}: {rate:,.0f} messages/s "
          f"(parse alone: {batch / parse_only:,.0f}/s)")


def test_wheel_schedule_cancel(benchmark):
    def run():
        wheel = TimerWheel()
        wheel.pop_due(0.0)
        handles = [wheel.schedule(i * 1e-4 + 0.5, i) for i in range(N)]
        for h in handles:
            wheel.cancel(h)
        return wheel

    benchmark.pedantic(run, rounds=5, iterations=1)
    per_op = benchmark.stats.stats.min / (2 * N)
    benchmark.extra_info.update(ns_per_schedule_or_cancel=round(per_op * 1e9))
    print(f"\nTimerWheel: {per_op * 1e9:.0f} ns per schedule or cancel (100,000 of each)")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
