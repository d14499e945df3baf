"""
What the metrics cost: rendering /metrics for N connected dataloggers (the
scrape, on the reactor thread), and the per-packet counting the sessions
now do (Session.saw_datalogger_packet, Session.saw_server_packet).

    python bench/metrics.py [SESSIONS ...]
"""

import sys
import timeit

from prometheus_client.exposition import generate_latest

from grott.codec import RecordType, build_packet, parse_packet
from grott.commands import CommandDispatcher
from grott.metrics import GrottCollector, metrics_registry
from grott.session import Registry, Session


class _Clock:
    def seconds(self):
        return 1000.0


def _packet(kind, serial):
    return parse_packet(build_packet(kind, serial + bytes(20) + b"INVERTER01" + bytes(500),
                                     protocol=6))


def scrape(count, plugins=3):
    registry = Registry()
    clock = _Clock()
    for n in range(count):
        serial = f"DL{n:08d}".encode()
        session = Session(f"10.0.0.{n % 250}:{n}", 0.0)
        registry.add(session)
        session.saw_datalogger_packet(_packet(RecordType.ANNOUNCE, serial), 1.0)
        session.saw_datalogger_packet(_packet(RecordType.DATA, serial), 2.0)
        registry.claim(session)
    stats = [{"name": f"out{i}", "state": "running", "delivered": 10, "failed": 0, "dropped": 0,
              "queued": 0, "queue_size": 1000, "connected": True} for i in range(plugins)]
    collector = GrottCollector(registry, clock, commands=CommandDispatcher(registry, clock),
                               plugins=lambda: stats, capacity=lambda: 10000)
    reg = metrics_registry(collector, process=True)
    body = generate_latest(reg)
    number = max(3, 2000 // max(count, 1))
    seconds = min(timeit.repeat(lambda: generate_latest(reg), number=number, repeat=3)) / number
    return seconds, len(body)


def per_packet():
    session = Session("127.0.0.1:1", 0.0)
    Registry().add(session)
    data = _packet(RecordType.DATA, b"DL00000001")
    n = 200_000
    seen = min(timeit.repeat(lambda: session.saw_datalogger_packet(data, 1.0), number=n,
                             repeat=3)) / n
    out = min(timeit.repeat(lambda: session.saw_server_packet(data), number=n, repeat=3)) / n
    return seen, out


def main(argv):
    counts = [int(a) for a in argv] or [0, 10, 100, 1000, 5000]
    print(f"{'dataloggers':>11} {'scrape':>10} {'bytes':>8}")
    for count in counts:
        seconds, size = scrape(count)
        print(f"{count:>11} {seconds * 1e3:>8.2f}ms {size:>8}")
    seen, out = per_packet()
    print(f"Session.saw_datalogger_packet: {seen * 1e6:.2f} us; "
          f"Session.saw_server_packet: {out * 1e6:.2f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
