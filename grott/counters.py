"""
Counters since start: what the metrics endpoint reports and the sessions
cannot keep, because a session's own counters go when its connection does
and a Prometheus counter must never go down.

Plain numbers, no I/O and no Prometheus here: the parts count, and
L{grott.metrics} reads the counts at scrape time.  Two wrappers count what
the relay need not know about: L{TimedEndpoint} around the upstream
endpoint (connects, failures, connect time) and L{count_decoding} around
the decoder (records and decode errors by family).
"""

import bisect
import collections

from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

__all__ = [
    "COMMAND_BUCKETS",
    "CONNECT_BUCKETS",
    "UNKNOWN",
    "Histogram",
    "TimedEndpoint",
    "Totals",
    "count_decoding",
    "record_type_label",
]

#: Upper bounds (seconds) of the upstream connect time histogram.
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (seconds) of the command latency histogram: a datalogger
#: answers within a second or two, the default timeout is 10 s.
COMMAND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

#: Family label for records (and errors) whose family is not known.
UNKNOWN = "unknown"


def record_type_label(record_type):
    """The label value of a record type: C{0x04}, C{0x5003}."""
    return f"0x{int(record_type):02x}"


class Histogram:
    """
    Observations in fixed buckets, kept per bucket (not cumulative) so an
    observation is one bisect and one increment.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self):
        return sum(self.counts)

    def cumulative(self):
        """
        [(upper bound as text, observations <= bound)], ending with +Inf,
        the form Prometheus histograms are exposed in.
        """
        out, running = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class Totals:
    """
    Process-wide counters the registry owns and every session adds to.

    @ivar traffic_in: record type -> [packets, bytes] from dataloggers.
    @ivar traffic_out: record type -> [packets, bytes] relayed from the
        cloud to dataloggers.  (One list per type: a packet costs one dict
        lookup and two integer additions.)
    @ivar crc_failures: byte runs from dataloggers dropped by the framer
        because the CRC did not match (relayed unchanged all the same).
    @ivar records: inverter family -> records decoded.
    @ivar decode_errors: inverter family -> records the decoder failed on.
    """

    def __init__(self):
        self.traffic_in = {}
        self.traffic_out = {}
        self.crc_failures = 0
        self.records = collections.Counter()
        self.decode_errors = collections.Counter()
        self.upstream_connects = 0
        self.upstream_connect_failures = 0
        self.upstream_connect_seconds = Histogram(CONNECT_BUCKETS)

    def traffic(self):
        """(direction, record type, packets, bytes), sorted."""
        return [(direction, kind, packets, size)
                for direction, table in (("in", self.traffic_in), ("out", self.traffic_out))
                for kind, (packets, size) in sorted(table.items())]


@implementer(IStreamClientEndpoint)
class TimedEndpoint:
    """
    The upstream endpoint, counting connects, failures (timeouts and
    cancellations included) and how long each successful connect took.
    """

    def __init__(self, endpoint, totals, clock):
        self.endpoint = endpoint
        self.totals = totals
        self.clock = clock

    def connect(self, protocolFactory):
        started = self.clock.seconds()
        totals = self.totals

        def connected(protocol):
            totals.upstream_connects += 1
            totals.upstream_connect_seconds.observe(self.clock.seconds() - started)
            return protocol

        def failed(failure):
            totals.upstream_connect_failures += 1
            return failure

        return self.endpoint.connect(protocolFactory).addCallbacks(connected, failed)


def count_decoding(decode, totals, family_of=lambda packet: None):
    """
    C{decode} (C{decode(packet, device_type_code) -> record or None}) that
    counts decoded records and failures by family.  A failure has no family
    of its own; C{family_of(packet)} names the one last seen for the
    packet's datalogger.
    """
    records = totals.records
    errors = totals.decode_errors

    def counting(packet, device_type_code=None):
        try:
            record = decode(packet, device_type_code)
        except Exception:
            errors[family_of(packet) or UNKNOWN] += 1
            raise
        if record is not None:
            records[record.family or UNKNOWN] += 1
        return record

    return counting
