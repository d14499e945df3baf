"""
What grott knows about each connected datalogger, and the registry of them.

Pure state, no I/O: the proxy updates a L{Session} as packets pass, and the
command socket, the stats report and plugins read it.  Keeping it out of the
protocol classes lets the report and the command socket work on sessions
without touching transports.
"""

import collections
import itertools
import sys
import types

from grott.codec import REGISTER_RECORDS, RecordType
from grott.counters import Totals
from grott.logs import Logger

__all__ = ["TAKEOVER_SILENCE", "Registry", "Session", "takeover_refusal"]

#: In the reason of garbage that was a frame whose CRC did not match.
_CRC = "crc"

_ids = itertools.count(1)

#: Session.device_type_codes until its first entry.
_NO_CODES = types.MappingProxyType({})

#: upstream states
CONNECTING = "connecting"
CONNECTED = "connected"
FAILED = "failed"
CLOSED = "closed"
NONE = "none"


class Session:
    """
    One datalogger connection: plain data, updated by the relay.

    Slotted: a grott may hold thousands of these for hours, and with slots
    each is a fixed block of references, never a per-instance dict.

    @ivar link: the connection itself as an
        L{grott.interfaces.IDataloggerLink} (set by the proxy), or None;
        L{send} and L{disconnect} go through it, so nothing here holds a
        callable into the protocol.
    """

    __slots__ = (
        "bytes_in", "bytes_out", "closed_by", "commands", "commands_dropped",
        "connected_since", "datalogger_serial", "device_type_codes", "family",
        "garbage_bytes", "host", "id", "inverters", "last_packet_at", "last_record_at",
        "link", "local_acks", "local_bytes", "longest_gap", "mode", "packets_in",
        "packets_out", "parse_errors", "peer", "protocol", "records", "totals",
        "upstream_state",
    )

    def __init__(self, peer, now, link=None, host=None, totals=None):
        self.id = next(_ids)
        self.peer = peer
        #: the peer's address without the port (None for unix sockets)
        self.host = host
        self.connected_since = now
        self.link = link
        self.datalogger_serial = None
        #: device address -> inverter serial, in the order first seen
        self.inverters = {}
        #: inverter serial -> device type code from its last announce (a
        #: shared empty mapping until the first one: not every datalogger
        #: announces one)
        self.device_type_codes = _NO_CODES
        self.protocol = None
        self.upstream_state = CONNECTING
        self.mode = "relaying"
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.parse_errors = 0
        self.garbage_bytes = 0
        self.records = 0
        #: packets and bytes grott answered itself (no cloud, or cloud away)
        self.local_acks = 0
        self.local_bytes = 0
        self.commands = 0
        self.commands_dropped = 0
        self.last_packet_at = None
        #: the longest silence between two of its packets so far, seconds
        self.longest_gap = 0.0
        self.last_record_at = None
        #: inverter family of the last decoded record
        self.family = None
        self.closed_by = None
        #: process-wide counters: the registry's (the proxy passes them in,
        #: L{Registry.add} hands them over otherwise)
        self.totals = Totals() if totals is None else totals

    def send(self, data):
        """
        Write whole packets grott built to this datalogger; False when its
        connection is gone or closing.
        """
        link = self.link
        return link is not None and link.send(data)

    def disconnect(self, why):
        """Close this datalogger's connection (and its upstream)."""
        if self.link is not None:
            self.link.disconnect(why)

    @property
    def name(self):
        """The datalogger as log lines name it, before and after it said its serial."""
        return self.datalogger_serial or "unidentified"

    @property
    def inverter_serial(self):
        """The first inverter seen (most dataloggers have exactly one)."""
        return next(iter(self.inverters.values()), None)

    @property
    def device_type_code(self):
        serial = self.inverter_serial
        return self.device_type_codes.get(serial) if serial else None

    def inverter_address(self, serial=None):
        """
        The device address an inverter announced itself under (commands must
        use it), defaulting to 1.
        """
        for address, known in self.inverters.items():
            if serial is None or known == serial:
                return address
        return 1

    def saw_datalogger_packet(self, packet, now):
        """
        Update what we know from a packet the datalogger sent.

        @return: the datalogger serial if this packet made it known.
        """
        self.packets_in += 1
        last = self.last_packet_at
        if last is not None and now - last > self.longest_gap:
            self.longest_gap = now - last
        self.last_packet_at = now
        entry = self.totals.traffic_in.get(packet.record_type)
        if entry is None:
            entry = self.totals.traffic_in[packet.record_type] = [0, 0]
        entry[0] += 1
        entry[1] += len(packet.raw)
        if packet.crc_ok is False:
            self.totals.crc_failures += 1
        self.protocol = packet.protocol
        learned = None
        if self.datalogger_serial is None:
            serial = packet.datalogger_serial
            if serial is not None:
                # Interned, as the inverter serial below and the decoder's
                # keys: one string per serial however many keep it.
                self.datalogger_serial = learned = sys.intern(serial)
        if packet.record_type in REGISTER_RECORDS:
            if packet.record_type != RecordType.ANNOUNCE:
                self.last_record_at = now
            inverter = packet.inverter_serial
            if inverter is not None and self.inverters.get(packet.device_address) != inverter:
                self.inverters[packet.device_address] = sys.intern(inverter)
        return learned

    def saw_server_packet(self, packet):
        """
        Count a packet relayed from the cloud to the datalogger.
        """
        entry = self.totals.traffic_out.get(packet.record_type)
        if entry is None:
            entry = self.totals.traffic_out[packet.record_type] = [0, 0]
        entry[0] += 1
        entry[1] += len(packet.raw)

    def saw_garbage(self, garbage):
        """
        Count bytes from the datalogger that were not a packet (relayed all
        the same) when they were a frame whose CRC failed.
        """
        if _CRC in garbage.reason.lower():
            self.totals.crc_failures += 1

    def saw_record(self, record):
        """
        Remember what a decoded record says about the inverter.
        """
        self.records += 1
        self.family = record.family if getattr(record, "kind", None) != "meter" else self.family
        if record.record_type == RecordType.ANNOUNCE and record.device_type_code is not None:
            if self.device_type_codes is _NO_CODES:
                self.device_type_codes = {}
            self.device_type_codes[record.inverter_serial] = record.device_type_code

    def describe(self, now):
        """
        A JSON-able summary, as the stats report and the command socket show it.
        """
        return {
            "datalogger": self.datalogger_serial,
            "inverters": list(self.inverters.values()),
            "protocol": self.protocol,
            "device_type_code": self.device_type_code,
            "peer": self.peer,
            "age": round(now - self.connected_since, 1),
            "upstream": self.upstream_state,
            "mode": self.mode,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "records": self.records,
            "parse_errors": self.parse_errors,
            "garbage_bytes": self.garbage_bytes,
            "local_acks": self.local_acks,
            "local_bytes": self.local_bytes,
            "commands_dropped": self.commands_dropped,
            "last_packet_age": None if self.last_packet_at is None
            else round(now - self.last_packet_at, 1),
        }


#: The least silence after which an older connection of a datalogger may be
#: taken over from another address (seconds).
TAKEOVER_SILENCE = 60.0


def takeover_refusal(old, new, now):
    """
    Why C{new} may not take over the serial of the live session C{old}, or
    None when it may: it comes from the same address (the same datalogger
    reconnecting, also behind NAT), or C{old} has been silent for more than
    twice its longest gap between packets so far (at least
    L{TAKEOVER_SILENCE}), as a datalogger that went away is.  Anything else
    is another device claiming a live serial: refusing it keeps a spoofed
    serial from cutting off the real datalogger.
    """
    if old.host is None or old.host == new.host:
        return None
    last = old.last_packet_at if old.last_packet_at is not None else old.connected_since
    expected = max(2 * old.longest_gap, TAKEOVER_SILENCE)
    silent = now - last
    if silent > expected:
        return None
    return f"it sent a packet {silent:.0f} s ago (taken over after {expected:.0f} s of silence)"


#: Session counters the registry keeps totals of past the session's end.
SUMMED = ("packets_in", "packets_out", "bytes_in", "bytes_out", "records", "parse_errors",
          "garbage_bytes", "local_acks", "local_bytes", "commands", "commands_dropped")


class Registry:
    """
    The live sessions, by connection and by datalogger serial.

    @ivar observers: told C{dataloggerConnected(session)} when a datalogger
        claims its serial and C{dataloggerDisconnected(session)} when its
        current session goes (L{grott.interfaces.IGrottObserver}).
    """

    log = Logger()

    def __init__(self):
        self.observers = []
        self._sessions = {}
        self._by_serial = {}
        self.total_connections = 0
        self.closed = 0
        self.rejected = 0
        self.replaced = 0
        self.refused_takeovers = 0
        self.totals = Totals()
        #: what closed sessions counted (see L{sum})
        self._gone = collections.Counter()

    def __len__(self):
        return len(self._sessions)

    def __iter__(self):
        return iter(list(self._sessions.values()))

    def add(self, session):
        self._sessions[session.id] = session
        session.totals = self.totals
        self.total_connections += 1

    def remove(self, session):
        if self._sessions.pop(session.id, None) is not None:
            self.closed += 1
            gone = self._gone
            for name in SUMMED:
                gone[name] += getattr(session, name)
        serial = session.datalogger_serial
        if serial is not None and self._by_serial.get(serial) is session:
            del self._by_serial[serial]
            self._tell("dataloggerDisconnected", session)

    def _tell(self, event, session):
        for observer in list(self.observers):
            try:
                getattr(observer, event)(session)
            except Exception:  # noqa: BLE001 - an observer must not break the proxy
                self.log.failure("{event} observer failed", event=event)

    def claim(self, session):
        """
        Record that C{session} belongs to its (now known) datalogger serial.

        @return: the older session of the same datalogger, if one is still
            open; the caller closes it.
        """
        serial = session.datalogger_serial
        old = self._by_serial.get(serial)
        self._by_serial[serial] = session
        if old is not session:
            self._tell("dataloggerConnected", session)
        if old is not None and old is not session:
            self.replaced += 1
            return old
        return None

    def sum(self, name):
        """
        A session counter (one of L{SUMMED}) over every session since
        start: the open ones now plus what the closed ones had.
        """
        return self._gone[name] + sum(getattr(s, name) for s in self._sessions.values())

    def by_serial(self, serial):
        return self._by_serial.get(serial)

    def sorted(self):
        """
        Sessions in a stable order: known serials alphabetically, then the
        not yet identified by connection order.
        """
        return sorted(self._sessions.values(),
                      key=lambda s: (s.datalogger_serial is None, s.datalogger_serial or "", s.id))
