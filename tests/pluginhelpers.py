"""
Shared pieces for the plugin tests: real decoded records from the public
vectors, a config builder, and small plugins with known behaviour.
"""

import dataclasses
import json
import os
import threading
import types

from twisted.internet import defer
from zope.interface import implementer

from grott.codec import RecordType, build_packet, parse_packet
from grott.config import config_from_dict
from grott.interfaces import IBlockingPlugin, IGrottPlugin, IGrottPluginService
from grott.registers import Decoder, encode_meter_log
from tests.vectors import raw

#: Data records of several families (classic, MIN/TL-X, protocol 2, 5, 6).
DATA_VECTORS = (
    "grott-p6-0104-classic",
    "grott-p5-5104-min-data",
    "grott-p2-0104-classic-ghust",
    "grott-p6-0104-min-xdavidx93-a",
)


def packet_and_record(vector_id="grott-p6-0104-classic"):
    packet = parse_packet(raw(vector_id))
    return packet, Decoder().decode(packet)


#: Smart-meter cases (real captures and encoded documented values).
_COVERAGE = os.path.join(os.path.dirname(__file__), "data", "coverage.json")


def meter_packet_and_record(case_id="meter-0x20-capture-grott-352"):
    """
    A smart meter's (packet, record) from tests/data/coverage.json.
    """
    with open(_COVERAGE, encoding="utf-8") as f:
        [case] = [c for c in json.load(f)["cases"] if c["id"] == case_id]
    packet = parse_packet(bytes.fromhex(case["hex"]))
    return packet, Decoder().decode(packet)


#: A 0x1b text for the meter of meter-0x20-capture-grott-352: energy as
#: that capture's, powers L1-L3 as its 0x20 values, reactive powers.
METER_LOG_TEXT = "269.6,10.0,-44.5,-115.6,113.2,1.0,2.0,3.0"


def meter_log_packet(datalogger="XGD6CML0ES", text=METER_LOG_TEXT,
                     timestamp="2023-06-14T00:25:10", address=0x22):
    """
    A 0x1b meter log packet of C{datalogger}, built with grott's encoder
    from the documented layout (protocol.md 7.11); by default from the
    datalogger of meter-0x20-capture-grott-352, at address 0x22 as 0x1b
    records are seen.
    """
    return parse_packet(build_packet(
        RecordType.METER_LOG, encode_meter_log(datalogger, text, protocol=6,
                                               timestamp=timestamp),
        protocol=6, device_address=address))


def numbered(count, vector_id="grott-p6-0104-classic"):
    """
    C{count} (packet, record) pairs told apart by a C{seq} value.
    """
    packet, record = packet_and_record(vector_id)
    pairs = []
    for seq in range(count):
        values = dict(record.values, seq=seq)
        pairs.append((packet, dataclasses.replace(
            record, values=types.MappingProxyType(values),
            units=types.MappingProxyType(dict(record.units, seq=""))))
        )
    return pairs


def make_config(directory, **plugins):
    """
    A Config whose plugins directory is C{directory}; C{plugins} and an
    optional C{outputs} go into their sections.
    """
    outputs = plugins.pop("outputs", {})
    return config_from_dict({"plugins": dict({"directory": directory}, **plugins),
                             "outputs": outputs}, "test.yaml")


@implementer(IGrottPlugin)
class Recorder:
    """
    Synchronous: remembers what it got, and on which thread.
    """

    def __init__(self, name="fast"):
        self.name = name
        self.got = []
        self.threads = set()

    def data(self, packet, record, log):
        self.got.append(record)
        self.threads.add(threading.get_ident())


@implementer(IGrottPlugin)
class Raiser(Recorder):
    """
    Raises on every record (after noting it).
    """

    def data(self, packet, record, log):
        Recorder.data(self, packet, record, log)
        raise ZeroDivisionError("plugin bug")


@implementer(IGrottPlugin)
class Slow(Recorder):
    """
    Asynchronous: each record's Deferred fires when the test says so.
    """

    def __init__(self, name="slow"):
        Recorder.__init__(self, name)
        self.pending = []
        self.cancelled = 0

    def data(self, packet, record, log):
        Recorder.data(self, packet, record, log)
        d = defer.Deferred(lambda d: self._cancel())
        self.pending.append(d)
        return d

    def _cancel(self):
        self.cancelled += 1

    def release(self):
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(None)


@implementer(IGrottPlugin)
class Coroutine(Recorder):
    """
    An C{async def data}, awaiting a Deferred the test fires.
    """

    def __init__(self, name="coro"):
        Recorder.__init__(self, name)
        self.gate = defer.Deferred()

    async def data(self, packet, record, log):
        await self.gate
        Recorder.data(self, packet, record, log)


@implementer(IBlockingPlugin, IGrottPluginService)
class Blocking(Recorder):
    """
    Blocking: each call waits on an Event, like a stuck database call.
    """

    def __init__(self, name="blocking"):
        Recorder.__init__(self, name)
        self.gate = threading.Event()
        self.hook_threads = []

    def data(self, packet, record, log):
        self.gate.wait(30)
        Recorder.data(self, packet, record, log)

    def startService(self):
        self.hook_threads.append(threading.get_ident())

    def stopService(self):
        self.hook_threads.append(threading.get_ident())
