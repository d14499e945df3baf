"""
A stand-in for the Growatt server, for end-to-end tests and benchmarks.

It answers what the real server answers (protocol.md sections 6 and 8):
an acknowledgement for every announce, data, buffered-data and smart-meter
record (0x03, 0x04, 0x50, 0x20, 0x1b), the identical bytes back for a ping,
nothing for command replies or unknown types.  It counts what it receives per
datalogger serial and record type, keeps the last packets in memory for
assertions, can write every packet (both directions) to a JSON-lines file,
and can send commands to a connected datalogger and hand back its reply.

Misbehaviour on demand, for testing what the proxy does when the cloud
does: C{refuse} closes every new connection at once, C{ack_delay} answers
late (on the clock handed in), C{drop_after} closes a connection when its
N-th packet arrives, without answering that packet.  All three are plain
attributes and may be changed while connections are open.
"""

import collections
import dataclasses
import json

from twisted.internet import defer, error
from twisted.internet.protocol import Factory, Protocol

from grott.codec import (
    ACKNOWLEDGED,
    COMMANDS,
    FROM_DATALOGGER,
    TO_DATALOGGER,
    ConfigGetRequest,
    Framer,
    Garbage,
    InverterReadRequest,
    InverterWriteMultiRequest,
    PacketError,
    RecordType,
    build,
    build_ack,
    parse_body,
)
from grott.logs import Logger

__all__ = ["CommandReply", "FakeCloud", "FakeCloudProtocol", "NotConnected", "Received"]


def _name(record_type):
    try:
        return RecordType(record_type).name.lower()
    except ValueError:
        return f"0x{record_type:02x}"


class NotConnected(Exception):
    """
    No datalogger with that serial is connected to the fake cloud.
    """


@dataclasses.dataclass(frozen=True)
class Received:
    """
    One item the cloud saw or sent: C{packet} is a L{grott.codec.Packet},
    or None for garbage (then C{raw} holds the bytes).
    """

    time: float
    serial: str
    direction: str
    raw: bytes
    packet: object = None


@dataclasses.dataclass(frozen=True)
class CommandReply:
    """
    A datalogger's answer to L{FakeCloud.send}: the reply packets (one per
    register for a 0x19 range, else one) and their decoded messages.
    """

    packets: tuple
    messages: tuple

    @property
    def packet(self):
        return self.packets[0]

    @property
    def message(self):
        return self.messages[0]


class _Pending:
    """
    A command waiting for its reply, matched by record type + register(s)
    (protocol.md 8.7: the sequence alone cannot tell replies apart).
    """

    def __init__(self, request, deferred):
        self.request = request
        self.deferred = deferred
        self.packets = []
        self.messages = []
        if isinstance(request, ConfigGetRequest):
            self.missing = set(range(request.first, request.last + 1))
        else:
            self.missing = None

    def offer(self, packet, message):
        """
        Take the reply if it answers this command; True when complete.
        """
        request = self.request
        if message.record_type != request.record_type:
            return None
        if isinstance(request, ConfigGetRequest):
            if message.register not in self.missing:
                return None
            self.missing.discard(message.register)
        elif isinstance(request, (InverterReadRequest, InverterWriteMultiRequest)):
            if (message.first, message.last) != (request.first, request.last):
                return None
        elif message.register != request.register:
            # InverterWriteRequest, ConfigSetRequest: matched by the register.
            return None
        self.packets.append(packet)
        self.messages.append(message)
        return not self.missing


class FakeCloudProtocol(Protocol):
    """
    One datalogger connection to the fake cloud.  The factory keeps the
    counts and records; this keeps the framer, the serial once seen, and the
    late answers still to be sent.
    """

    def __init__(self):
        self.serial = None
        self.protocol_id = None
        self.device_address = 1
        self.packets = 0
        self._framer = Framer()
        self._later = []
        self._pending = []
        self._closing = False

    def connectionMade(self):
        self.factory.connection_made(self)
        if self.factory.refuse:
            self._closing = True
            self.transport.loseConnection()

    def connectionLost(self, reason=None):
        for call in self._later:
            if call.active():
                call.cancel()
        self._later = []
        pending, self._pending = self._pending, []
        for entry in pending:
            entry.deferred.errback(error.ConnectionLost(f"datalogger {self.serial} disconnected"))
        self.factory.connection_lost(self)

    def dataReceived(self, data):
        if self._closing:
            return
        factory = self.factory
        for item in self._framer.feed(data):
            if self._closing:
                break
            if isinstance(item, Garbage):
                factory.garbage(self, item)
                continue
            with factory.log.failuresHandled("fake cloud could not handle {packet!r}",
                                             packet=item) as op:
                self._packet(item)
            if op.failed:
                factory.errors += 1

    def _packet(self, packet):
        factory = self.factory
        self.packets += 1
        serial = packet.datalogger_serial
        if serial is not None and serial != self.serial:
            self.serial = serial
            factory.identified(self)
        self.protocol_id = packet.protocol
        if packet.record_type in (RecordType.ANNOUNCE, RecordType.DATA):
            self.device_address = packet.device_address
        factory.received_packet(self, packet)
        if factory.drop_after is not None and self.packets >= factory.drop_after:
            factory.dropped += 1
            self._closing = True
            self.transport.loseConnection()
            return
        if packet.record_type in ACKNOWLEDGED:
            self._answer(build_ack(packet), "acks")
        elif packet.record_type == RecordType.PING:
            if factory.echo_pings:
                self._answer(packet.raw, "pings_echoed")
        elif packet.record_type in COMMANDS:
            self._reply(packet)
        else:
            factory.unanswered += 1

    def _answer(self, data, counter):
        delay = self.factory.ack_delay
        if delay:
            self._later = [c for c in self._later if c.active()]
            self._later.append(self.factory.clock.callLater(delay, self._send_answer, data, counter))
        else:
            self._send_answer(data, counter)

    def _send_answer(self, data, counter):
        if self._closing or self.transport is None:
            return
        setattr(self.factory, counter, getattr(self.factory, counter) + 1)
        self.write(data)

    def write(self, data, packet=None):
        self.factory.sent_packet(self, data, packet)
        self.transport.write(data)

    def _reply(self, packet):
        """
        A datalogger's answer to a command: hand it to whoever asked.
        """
        try:
            message = parse_body(packet, FROM_DATALOGGER)
        except PacketError as e:
            self.factory.bad_replies += 1
            self.factory.log.warn(  # noqa: G010 (twisted.logger has no warning())
                "fake cloud: malformed reply from {serial}: {error}",
                serial=self.serial, error=str(e))
            return
        for entry in self._pending:
            complete = entry.offer(packet, message)
            if complete is None:
                continue
            if complete:
                self._pending.remove(entry)
                entry.deferred.callback(
                    CommandReply(tuple(entry.packets), tuple(entry.messages)))
            self.factory.replies += 1
            return
        self.factory.unsolicited_replies += 1

    def command(self, message, sequence, device_address):
        """
        Send C{message}; the Deferred fires with the L{CommandReply}.
        """
        if device_address is None:
            device_address = (1 if message.record_type in (RecordType.CONFIG_GET,
                                                           RecordType.CONFIG_SET)
                              else self.device_address)
        data = build(message, self.serial, protocol=self.protocol_id, sequence=sequence,
                     device_address=device_address)

        def cancel(d):
            if entry in self._pending:
                self._pending.remove(entry)
        entry = _Pending(message, defer.Deferred(cancel))
        self._pending.append(entry)
        self.factory.commands_sent += 1
        self.write(data)
        return entry.deferred


class FakeCloud(Factory):
    """
    The fake Growatt server: a server factory plus what it observed.

    @param clock: an C{IReactorTime}; used for record times and ack delays.
    @param record: a text file object to write JSON lines to (time, serial,
        direction, hex; garbage lines add C{"garbage": true}); the caller
        opens and closes it.
    @param keep: how many L{Received} items L{received} holds (None: all).
    @param refuse: close every new connection at once.
    @param ack_delay: seconds to wait before each ack and ping echo.
    @param drop_after: close a connection when its N-th packet arrives.
    @param echo_pings: return pings (a real server does).

    @ivar counts: serial -> Counter of record names received.
    @ivar received: a deque of L{Received}, both directions.
    @ivar connections: serial -> the connected L{FakeCloudProtocol}.
    """

    protocol = FakeCloudProtocol
    log = Logger()
    noisy = False

    def __init__(self, clock, *, record=None, keep=10000, refuse=False, ack_delay=0.0,
                 drop_after=None, echo_pings=True):
        self.clock = clock
        self.record = record
        self.refuse = refuse
        self.ack_delay = ack_delay
        self.drop_after = drop_after
        self.echo_pings = echo_pings
        self.received = collections.deque(maxlen=keep)
        self.counts = collections.defaultdict(collections.Counter)
        self.connections = {}
        self.open_connections = set()
        self.accepted = 0
        self.refused = 0
        self.dropped = 0
        self.closed = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.garbage_bytes = 0
        self.acks = 0
        self.pings_echoed = 0
        self.unanswered = 0
        self.commands_sent = 0
        self.replies = 0
        self.unsolicited_replies = 0
        self.bad_replies = 0
        self.errors = 0
        self._waiters = []
        self._closed_waiters = []

    # ---------------------------------------------------------------- events from protocols

    def connection_made(self, protocol):
        self.accepted += 1
        if self.refuse:
            self.refused += 1
        self.open_connections.add(protocol)
        self._changed()

    def connection_lost(self, protocol):
        self.closed += 1
        self.open_connections.discard(protocol)
        if protocol.serial is not None and self.connections.get(protocol.serial) is protocol:
            del self.connections[protocol.serial]
        if not self.open_connections:
            waiters, self._closed_waiters = self._closed_waiters, []
            for d in waiters:
                d.callback(None)
        self._changed()

    def identified(self, protocol):
        self.connections[protocol.serial] = protocol

    def _note(self, protocol, direction, raw, packet=None, garbage=False):
        now = self.clock.seconds()
        self.received.append(Received(now, protocol.serial, direction, raw, packet))
        if self.record is not None:
            line = {"time": now, "serial": protocol.serial, "direction": direction,
                    "hex": raw.hex()}
            if garbage:
                line["garbage"] = True
            self.record.write(json.dumps(line) + "\n")

    def received_packet(self, protocol, packet):
        self.packets_received += 1
        self.bytes_received += len(packet.raw)
        self.counts[protocol.serial][_name(packet.record_type)] += 1
        self._note(protocol, FROM_DATALOGGER, packet.raw, packet)
        self._changed()

    def garbage(self, protocol, item):
        self.garbage_bytes += len(item.data)
        self.bytes_received += len(item.data)
        self.log.info("fake cloud: {count} bytes of garbage from {serial}: {reason}",
                      count=len(item.data), serial=protocol.serial, reason=item.reason)
        self._note(protocol, FROM_DATALOGGER, item.data, garbage=True)
        self._changed()

    def sent_packet(self, protocol, data, packet=None):
        self._note(protocol, TO_DATALOGGER, data, packet)

    # ---------------------------------------------------------------- API

    def send(self, serial, message, *, sequence=1, device_address=None, timeout=None):
        """
        Send command C{message} (a L{grott.codec} request dataclass) to the
        datalogger C{serial}, in the protocol it speaks.

        The Deferred fires with a L{CommandReply}: one packet, or one per
        register for a 0x19 range.  It fails with L{NotConnected} when the
        serial is not connected, C{ConnectionLost} when it goes away first,
        C{TimeoutError} after C{timeout} seconds (on the cloud's clock).
        The device address defaults to 1 for 0x18/0x19 and to the address
        the inverter last announced/reported under for 0x05/0x06/0x10.
        """
        if message.direction != TO_DATALOGGER:
            return defer.fail(ValueError(f"{message!r} is not a command"))
        protocol = self.connections.get(serial)
        if protocol is None:
            return defer.fail(NotConnected(serial))
        d = protocol.command(message, sequence, device_address)
        if timeout is not None:
            d.addTimeout(timeout, self.clock)
        return d

    def send_raw(self, serial, data):
        """
        Write arbitrary bytes to a datalogger (garbage tests).
        """
        protocol = self.connections.get(serial)
        if protocol is None:
            raise NotConnected(serial)
        protocol.write(data)

    def disconnect(self, serial):
        """
        Close the connection of C{serial} (as the cloud sometimes does).
        """
        protocol = self.connections.get(serial)
        if protocol is None:
            raise NotConnected(serial)
        protocol.transport.loseConnection()

    def close_all(self):
        """
        Close every connection; fires when all are closed.
        """
        if not self.open_connections:
            return defer.succeed(None)
        d = defer.Deferred()
        self._closed_waiters.append(d)
        for protocol in list(self.open_connections):
            protocol.transport.loseConnection()
        return d

    def wait(self, predicate):
        """
        A Deferred firing (with this cloud) once C{predicate(self)} holds,
        checked after every packet and connection event.
        """
        if predicate(self):
            return defer.succeed(self)

        def cancel(d):
            if entry in self._waiters:
                self._waiters.remove(entry)
        entry = (predicate, defer.Deferred(cancel))
        self._waiters.append(entry)
        return entry[1]

    def count(self, serial=None, record_type=None):
        """
        Packets received from C{serial} (None: all) of C{record_type} (None: all).
        """
        counters = [self.counts.get(serial, {})] if serial is not None else self.counts.values()
        if record_type is None:
            return sum(sum(c.values()) for c in counters)
        name = _name(record_type)
        return sum(c.get(name, 0) for c in counters)

    def when_received(self, n, serial=None, record_type=None):
        """
        Fires once L{count}C{(serial, record_type)} reaches C{n}.
        """
        return self.wait(lambda cloud: cloud.count(serial, record_type) >= n)

    def when_connected(self, serial):
        """
        Fires with the protocol once C{serial} has sent its first packet.
        """
        return self.wait(lambda cloud: serial in cloud.connections).addCallback(
            lambda cloud: cloud.connections[serial])

    def _changed(self):
        if not self._waiters:
            return
        ready = [entry for entry in self._waiters if entry[0](self)]
        for entry in ready:
            self._waiters.remove(entry)
        for _, d in ready:
            d.callback(self)

    def stats(self):
        """
        The JSON-able summary: connections, totals, counts per serial.
        """
        return {
            "connections": {"accepted": self.accepted, "refused": self.refused,
                            "dropped": self.dropped, "closed": self.closed,
                            "open": len(self.open_connections)},
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "garbage_bytes": self.garbage_bytes,
            "acks": self.acks,
            "pings_echoed": self.pings_echoed,
            "unanswered": self.unanswered,
            "commands_sent": self.commands_sent,
            "replies": self.replies,
            "unsolicited_replies": self.unsolicited_replies,
            "bad_replies": self.bad_replies,
            "errors": self.errors,
            "dataloggers": len([s for s in self.counts if s is not None]),
            "by_type": dict(sorted(sum(self.counts.values(), collections.Counter()).items())),
            "per_datalogger": {str(serial): dict(sorted(counter.items()))
                               for serial, counter in self.counts.items()},
        }
