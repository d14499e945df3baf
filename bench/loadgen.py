"""
The load generator of bench/relay.py: N simulated dataloggers in one process.

Record contents come from grott's simulator model (L{grott.testing.simulator}: a
MIN/TL-X inverter on protocol 6, 585-byte data records, the announce a real
logger sends first), built once per datalogger; what runs per record is only
what a datalogger must do anyway: give the record the next sequence number
(header + CRC, L{grott.codec.build_packet}), write it, frame the ack and match
it to the record.  The simulator's own per-record cost (a new set of
register values each time, about 45 us) would make this process, not the
relay under test, the bottleneck: `grott simulate --flood` alone tops out
near 8,000 records/s against the fake cloud on this machine.

It talks to its parent over standard input and output, one JSON object per
line:

    -> {"event": "connected", ...}   every datalogger announced (or the
                                     connect deadline passed)
    -> {"event": "ready"}            traffic running, warm-up done
    <- go                            the parent took its /proc baseline
    -> {"event": "result", ...}      the measurement window's figures

then it exits, closing every connection.  Modes: C{flood} sends the next
record as soon as the previous one is acknowledged (window 1, like a real
datalogger), C{rate} sends one record per C{--interval} seconds per
datalogger, the dataloggers evenly staggered over the interval.
"""

import argparse
import json
import os
import resource
import sys
import time

from twisted.internet import stdio
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols.basic import LineReceiver

from grott.codec import ACKNOWLEDGED, Framer, Garbage, RecordType, build_packet
from grott.testing.simulator import DataloggerSpec, DataloggerState

_now = time.perf_counter


def _percentile(ordered, fraction):
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Clock:
    """The simulator model only asks a clock for the time."""

    @staticmethod
    def seconds():
        return time.time()


class Datalogger(Protocol):
    """
    One connection: announce, wait for its ack, then records on demand.
    """

    def __init__(self, generator, index, announce, body):
        self.generator = generator
        self.index = index
        self.announce = announce
        self.body = body
        self.sequence = 1
        self.sent_at = {}
        self.framer = Framer()
        self.announced = False
        self.call = None
        self.next_due = None

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.generator.connection_made(self)
        self.transport.write(self.announce)

    def send_record(self):
        sequence = self.sequence = self.sequence % 0xFFFF + 1
        packet = build_packet(RecordType.DATA, self.body, protocol=6, sequence=sequence)
        self.sent_at[sequence] = _now()
        self.generator.sent += 1
        self.transport.write(packet)

    def tick(self):
        """Rate mode: send, and keep to the schedule (no drift)."""
        self.next_due += self.generator.interval
        self.call = self.generator.reactor.callLater(max(0.0, self.next_due - _now()), self.tick)
        self.send_record()

    def dataReceived(self, data):
        generator = self.generator
        for item in self.framer.feed(data):
            if item.__class__ is Garbage or item.record_type not in ACKNOWLEDGED \
                    or len(item.payload) != 1:
                generator.unexpected += 1
                continue
            if item.record_type == RecordType.ANNOUNCE:
                if not self.announced:
                    self.announced = True
                    generator.announced(self)
                continue
            sent = self.sent_at.pop(item.sequence, None)
            if sent is None:
                generator.unexpected += 1
                continue
            generator.acked(_now() - sent)
            if generator.flooding:
                self.send_record()

    def connectionLost(self, reason=None):
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.generator.connection_lost(self)


class DataloggerFactory(ClientFactory):
    noisy = False

    def __init__(self, generator, index, announce, body):
        self.generator = generator
        self.index = index
        self.announce = announce
        self.body = body
        self.attempts = 0

    def buildProtocol(self, addr):
        return Datalogger(self.generator, self.index, self.announce, self.body)

    def clientConnectionFailed(self, connector, reason):
        self.generator.connect_failed(self, reason)


class Generator:
    """
    The dataloggers, the connect pacing, the window and the figures.
    """

    def __init__(self, reactor, options, out):
        self.reactor = reactor
        self.options = options
        self.out = out
        self.interval = options.interval
        self.flooding = False
        self.factories = []
        self.protocols = []
        self.next_index = 0
        self.connecting = 0
        self.connected = 0
        self.failures = 0
        self.gave_up = 0
        self.lost_during_run = 0
        self.running = False
        self.unexpected = 0
        self.sent = 0
        self.count = 0
        self.latencies = []
        self.recording = False
        self.started = _now()
        self.phase_timer = None
        self._phase_done = False

    def build(self):
        clock = _Clock()
        for index in range(self.options.count):
            serial = f"{self.options.prefix}{index + 1:0{10 - len(self.options.prefix)}d}"
            state = DataloggerState(DataloggerSpec(serial=serial, family="min", protocol=6,
                                                   ping_interval=0, seed=index), clock)
            announce = build_packet(RecordType.ANNOUNCE, state.announce_body(), protocol=6,
                                    sequence=1)
            self.factories.append(DataloggerFactory(self, index, announce, state.data_body()))
        self.record_bytes = len(build_packet(RecordType.DATA, self.factories[0].body, protocol=6))

    # -- connecting, a bounded number at a time (listen backlogs are 50) --

    def start(self):
        self.started = _now()
        self.phase_timer = self.reactor.callLater(self.options.connect_deadline,
                                                  self.connect_phase_over)
        self.fill()

    def fill(self):
        while (self.connecting < self.options.connect_window
               and self.next_index < len(self.factories) and not self._phase_done):
            factory = self.factories[self.next_index]
            self.next_index += 1
            self.dial(factory)

    def dial(self, factory):
        self.connecting += 1
        factory.attempts += 1
        self.reactor.connectTCP(self.options.host, self.options.port, factory, timeout=10)

    def connect_failed(self, factory, reason):
        self.connecting -= 1
        self.failures += 1
        if factory.attempts < 3 and not self._phase_done:
            self.connecting += 1
            self.reactor.callLater(0.5, self._redial, factory)
        else:
            self.gave_up += 1
        self.check_connected()

    def _redial(self, factory):
        self.connecting -= 1
        self.dial(factory)

    def connection_made(self, protocol):
        self.protocols.append(protocol)

    def announced(self, protocol):
        self.connecting -= 1
        self.connected += 1
        if self._phase_done:
            self.begin(protocol)
        self.fill()
        self.check_connected()

    def connection_lost(self, protocol):
        if not protocol.announced and not self._phase_done:
            self.connecting -= 1
            self.failures += 1
            self.gave_up += 1
            self.fill()
            self.check_connected()
        elif self.running:
            self.lost_during_run += 1

    def check_connected(self):
        if not self._phase_done and self.connected + self.gave_up >= len(self.factories):
            self.connect_phase_over()

    def connect_phase_over(self):
        if self._phase_done:
            return
        self._phase_done = True
        if self.phase_timer.active():
            self.phase_timer.cancel()
        self.emit(event="connected", requested=len(self.factories), connected=self.connected,
                  connect_failures=self.failures, connect_seconds=round(_now() - self.started, 3))
        self.running = True
        self.flooding = self.options.mode == "flood"
        now = _now()
        live = [p for p in self.protocols if p.announced and p.transport.connected]
        for n, protocol in enumerate(live):
            if self.flooding:
                protocol.send_record()
            else:
                offset = self.interval * n / max(1, len(live))
                protocol.next_due = now + offset
                protocol.call = self.reactor.callLater(offset, protocol.tick)
        self.reactor.callLater(self.options.warmup, self.emit, event="ready")

    def begin(self, protocol):
        """A datalogger that announced after the connect deadline joins in."""
        if self.flooding:
            protocol.send_record()
        else:
            protocol.next_due = _now() + self.interval
            protocol.call = self.reactor.callLater(self.interval, protocol.tick)

    # -- the measurement window ---------------------------------------

    def go(self):
        if self.recording:
            return
        self.recording = True
        self.count = 0
        self.sent = 0
        self.latencies = []
        self.unexpected_at_start = self.unexpected
        self.lost_at_start = self.lost_during_run
        self.window_start = _now()
        self.cpu_start = os.times()
        self.reactor.callLater(self.options.duration, self.finish)

    def acked(self, latency):
        self.count += 1
        if self.recording:
            self.latencies.append(latency)

    def finish(self):
        elapsed = _now() - self.window_start
        cpu = os.times()
        cpu_used = (cpu.user - self.cpu_start.user) + (cpu.system - self.cpu_start.system)
        ordered = sorted(self.latencies)
        ms = (lambda v: None if v is None else round(v * 1000, 3))
        self.emit(
            event="result", dataloggers=self.connected, window_seconds=round(elapsed, 3),
            records_acked=self.count, records_sent=self.sent,
            records_per_second=round(self.count / elapsed, 1),
            record_bytes=self.record_bytes,
            latency_ms={"p50": ms(_percentile(ordered, 0.50)),
                        "p90": ms(_percentile(ordered, 0.90)),
                        "p99": ms(_percentile(ordered, 0.99)),
                        "max": ms(ordered[-1] if ordered else None)},
            unexpected_packets=self.unexpected - self.unexpected_at_start,
            connections_lost=self.lost_during_run - self.lost_at_start,
            loadgen_cpu_percent=round(100 * cpu_used / elapsed, 1))
        self.reactor.callLater(0, self.reactor.stop)

    def emit(self, **fields):
        self.out.write(json.dumps(fields) + "\n")
        self.out.flush()


class Control(LineReceiver):
    """Reads the parent's commands: go (start the window), stop."""

    delimiter = b"\n"

    def __init__(self, generator):
        self.generator = generator

    def lineReceived(self, line):
        command = line.strip()
        if command == b"go":
            self.generator.go()
        elif command == b"stop":
            self.generator.reactor.stop()

    def connectionLost(self, reason=None):
        # The parent went away: do not linger.
        if self.generator.reactor.running:
            self.generator.reactor.stop()


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--mode", choices=("flood", "rate"), default="flood")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="rate mode: seconds between records of one datalogger")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connect-window", type=int, default=40,
                        help="connections being set up at once (listen backlogs are 50)")
    parser.add_argument("--connect-deadline", type=float, default=30.0)
    parser.add_argument("--prefix", default="BEN")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse(sys.argv[1:] if argv is None else argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from twisted.internet import reactor
    generator = Generator(reactor, options, sys.stdout)
    generator.build()
    stdio.StandardIO(Control(generator), stdout=os.open(os.devnull, os.O_WRONLY))
    reactor.callWhenRunning(generator.start)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
