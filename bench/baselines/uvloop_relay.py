"""The floor of bench/bench_relay.py: an RTP relay written the plain way on uvloop, one
DatagramProtocol per leg socket, ``datagram_received`` → latch the sender → ``sendto`` from the partner.

usage: python uvloop_relay.py HOST BASE_PORT RELAYS SINK_HOST SINK_PORT SINKS SECONDS
(the same arguments and output as relay.c: relay i has leg a on BASE_PORT + 4i, leg b on + 2, b's peer
SINK_PORT + i % SINKS; prints "ready", then {"packets": N, "seconds": S} for SECONDS after the first
packet, with cpu_seconds, its user + system time in that window; gives up after 20 s without traffic.)
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import uvloop


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


class Leg(asyncio.DatagramProtocol):
    __slots__ = ("relay", "transport", "partner", "peer")

    def __init__(self, relay):
        self.relay = relay
        self.transport = None
        self.partner = None
        self.peer = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.peer = addr  # symmetric latching
        out = self.partner
        if out.peer is not None:
            out.transport.sendto(data, out.peer)
            self.relay.sent()


class Relay:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = 0.0
        self.cpu_start = 0.0
        self.count = 0
        self.done = asyncio.get_running_loop().create_future()

    def sent(self):
        if not self.start:
            self.start = time.monotonic()
            self.cpu_start = cpu_seconds()
            asyncio.get_running_loop().call_later(self.seconds, self.finish)
        self.count += 1

    def finish(self):
        if not self.done.done():
            self.done.set_result((self.count, time.monotonic() - self.start, cpu_seconds() - self.cpu_start))


async def main(host, base, relays, sink_host, sink_port, sinks, seconds):
    loop = asyncio.get_running_loop()
    relay = Relay(seconds)
    for i in range(relays):
        legs = []
        for w in range(2):
            _, leg = await loop.create_datagram_endpoint(lambda: Leg(relay), local_addr=(host, base + 4 * i + 2 * w))
            legs.append(leg)
        legs[0].partner, legs[1].partner = legs[1], legs[0]
        legs[1].peer = (sink_host, sink_port + i % sinks)
    print("ready", flush=True)
    loop.call_later(20, lambda: relay.start or relay.finish())
    count, elapsed, cpu = await relay.done
    print(json.dumps({"packets": count, "seconds": elapsed, "cpu_seconds": cpu}), flush=True)


if __name__ == "__main__":
    h, b, r, sh, sp, s, sec = sys.argv[1:8]
    uvloop.run(main(h, int(b), int(r), sh, int(sp), int(s), float(sec)))
