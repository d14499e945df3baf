"""
The mqtt output behind the spool (L{grott.spool}): with
C{outputs.mqtt.spool: true} (the default) every record's messages are
committed to disk before they count as queued and leave the spool only
once the broker acknowledged all of them, so a broker that is down for
hours, or a grott restart meanwhile, loses nothing.

L{MqttSink} adapts L{grott.outputs.mqtt.MqttOutput} to
L{grott.interfaces.ISpoolSink}: C{encode} routes the record when it arrives
(the topics, Home Assistant discovery and the data guards decide then, as
they would for a live publish) and keeps the resulting messages; C{deliver}
hands a batch of records' messages to the client in order and fires once
the broker has acknowledged every one.  While the broker is away a delivery
simply waits (the client reconnects on its own), so nothing is retried
twice: after a restart the spooled messages go out once, in order, and
QoS 1 allows the broker to see a message twice only if a connection broke
between the broker's receipt and its acknowledgement.
"""

import base64
import json
import struct

from twisted.internet import defer
from zope.interface import implementer

from grott.interfaces import (
    IConfigurablePlugin,
    IGrottObserver,
    IGrottPluginService,
    ISpoolSink,
)
from grott.outputs.mqtt import MqttOutput

__all__ = ["MqttSink", "MqttSpoolFactory", "decode_messages", "encode_messages", "factory"]

#: Records handed to the client at once (paho keeps its own in-flight limit).
BATCH_SIZE = 500


#: First byte of the spool format below (the older JSON one starts with "[").
_FORMAT = b"\x01"
_COUNT = struct.Struct("!H")
_PAYLOAD = struct.Struct("!I")
_MESSAGE = struct.Struct("!HBBH")


def encode_messages(messages):
    """
    (topic, payload bytes, qos, retain) tuples as bytes for the spool.

    Binary, each payload stored once: a record's document goes to the
    shared topic and to its device's live topic, and base64 in JSON (the
    first format, still read) made the spool write it twice, a third
    larger each time.
    """
    payloads, index, parts = [], {}, []
    for topic, payload, qos, retain in messages:
        at = index.get(payload)
        if at is None:
            at = index[payload] = len(payloads)
            payloads.append(payload)
        name = topic.encode("utf-8")
        parts.append(_MESSAGE.pack(len(name), qos, bool(retain), at) + name)
    out = [_FORMAT, _COUNT.pack(len(payloads))]
    for payload in payloads:
        out += (_PAYLOAD.pack(len(payload)), payload)
    out.append(_COUNT.pack(len(parts)))
    return b"".join(out + parts)


def decode_messages(data):
    if data[:1] != _FORMAT:
        return [(topic, base64.b64decode(payload), qos, retain)
                for topic, payload, qos, retain in json.loads(data)]
    view = memoryview(data)
    (count,), at = _COUNT.unpack_from(view, 1), 1 + _COUNT.size
    payloads = []
    for _ in range(count):
        (length,), at = _PAYLOAD.unpack_from(view, at), at + _PAYLOAD.size
        payloads.append(bytes(view[at:at + length]))
        at += length
    (count,), at = _COUNT.unpack_from(view, at), at + _COUNT.size
    messages = []
    for _ in range(count):
        length, qos, retain, which = _MESSAGE.unpack_from(view, at)
        at += _MESSAGE.size
        messages.append((str(view[at:at + length], "utf-8"), payloads[which], qos,
                         bool(retain)))
        at += length
    return messages


@implementer(ISpoolSink, IGrottPluginService, IGrottObserver)
class MqttSink:
    """
    An L{MqttOutput} seen as a spool sink; the output's hooks and observer
    methods pass straight through.
    """

    name = "mqtt"
    batch_size = BATCH_SIZE
    flush_interval = 0

    def __init__(self, output):
        self.output = output

    @property
    def connected(self):
        return self.output.connected

    def encode(self, record):
        messages = self.output.route(record)
        if not messages:
            return None
        return encode_messages(messages)

    def deliver(self, items):
        deliveries = [self.output.deliver(decode_messages(item)) for item in items]
        d = defer.gatherResults(deliveries, consumeErrors=True)
        d.addErrback(_first_error)
        return d

    # -- passed through

    def startService(self):
        return self.output.startService()

    def stopService(self):
        return self.output.stopService()

    def watchGrott(self, registry, status):
        return self.output.watchGrott(registry, status)

    def dataloggerConnected(self, session):
        return self.output.dataloggerConnected(session)

    def dataloggerDisconnected(self, session):
        return self.output.dataloggerDisconnected(session)

    def reportLines(self):
        return self.output.reportLines()

    def reportData(self):
        return self.output.reportData()


def _first_error(failure):
    failure.trap(defer.FirstError)
    return failure.value.subFailure


@implementer(IConfigurablePlugin)
class MqttSpoolFactory:
    """
    Builds the mqtt output from C{outputs.mqtt}: behind the spool unless
    C{spool: false}.
    """

    name = "mqtt"

    def makePlugin(self, settings, reactor):
        output = MqttOutput(settings, reactor)
        return MqttSink(output) if settings.spool else output


factory = MqttSpoolFactory()


def mqtt_output(plugin):
    """
    The L{MqttOutput} a host's mqtt plugin is, behind its spool or not: the
    control plane shares its broker connection either way.
    """
    sink = getattr(plugin, "sink", None)
    if isinstance(sink, MqttSink):
        return sink.output
    return plugin
