"""
One Growatt packet: the header, the (un)scrambled body and the CRC trailer.

Wire layout (all big-endian)::

    0  sequence (2)   2  protocol id (2)   4  length L (2)
    6  device address (1)   7  record type (1)   8  body (L - 2)
    6+L  CRC-16/MODBUS (2, protocols 5 and 6 only)

The length counts from the device address to the end of the body, never the
CRC.  Protocols 5 and 6 scramble the body; protocol 2 sends it plain and has
no CRC.
"""

import enum
import struct

from grott.codec.crc import crc16
from grott.codec.errors import FramingError, PacketError
from grott.codec.scramble import scramble

__all__ = [
    "HEADER_SIZE",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "PROTOCOLS",
    "REGISTER_RECORDS",
    "SCRAMBLED_PROTOCOLS",
    "Packet",
    "RecordType",
    "build_packet",
    "check_header",
    "packet_size",
    "parse_packet",
    "serial_field",
    "serial_field_size",
]

HEADER_SIZE = 8
#: Smallest legal length field: device address and record type, no body.
MIN_LENGTH = 2
#: The largest length seen on real dataloggers is 834 (three 125-register
#: blocks); four blocks would need 1083.  Anything above this is garbage.
MAX_LENGTH = 2048

PLAIN_PROTOCOLS = frozenset({2})
SCRAMBLED_PROTOCOLS = frozenset({5, 6})
PROTOCOLS = PLAIN_PROTOCOLS | SCRAMBLED_PROTOCOLS

_header = struct.Struct(">HHHBB")
_prefix = struct.Struct(">HH")


class RecordType(enum.IntEnum):
    """
    The record types (header byte 7) grott knows by name.  Unknown types
    are still framed and relayed; L{Packet.record_type} is then a plain int.
    """

    ANNOUNCE = 0x03
    DATA = 0x04
    INVERTER_READ = 0x05
    INVERTER_WRITE = 0x06
    INVERTER_WRITE_MULTI = 0x10
    PING = 0x16
    CONFIG_SET = 0x18
    CONFIG_GET = 0x19
    METER_LOG = 0x1B
    METER_DATA = 0x20
    BUFFERED_DATA = 0x50


#: Records the server acknowledges with a one-byte body.
ACKNOWLEDGED = frozenset({
    RecordType.ANNOUNCE, RecordType.DATA, RecordType.BUFFERED_DATA,
    RecordType.METER_DATA, RecordType.METER_LOG,
})

#: Records that carry inverter registers (what the register decoder reads).
REGISTER_RECORDS = frozenset({RecordType.ANNOUNCE, RecordType.DATA, RecordType.BUFFERED_DATA})

#: Records with an inverter serial after the datalogger's serial field.
_INVERTER_SERIAL_RECORDS = REGISTER_RECORDS | {RecordType.METER_DATA}

#: Records a server sends as commands (the datalogger answers with the same type).
COMMANDS = frozenset({
    RecordType.INVERTER_READ, RecordType.INVERTER_WRITE,
    RecordType.INVERTER_WRITE_MULTI, RecordType.CONFIG_SET, RecordType.CONFIG_GET,
})


def serial_field_size(protocol):
    """
    Protocol 6 pads the 10-character serial to 30 bytes; 2 and 5 do not.
    """
    return 30 if protocol == 6 else 10


def serial_field(serial, protocol):
    """
    Encode a datalogger serial as the serial field of C{protocol}.
    """
    if isinstance(serial, str):
        try:
            serial = serial.encode("ascii")
        except UnicodeEncodeError:
            raise PacketError(f"serial {serial!r} is not ASCII") from None
    if not 1 <= len(serial) <= 10:
        raise PacketError(f"serial {serial!r} must be 1 to 10 characters")
    return serial.ljust(serial_field_size(protocol), b"\x00")


def packet_size(protocol, length):
    """
    Total bytes on the wire for a packet with this protocol and length field.
    """
    return 6 + length + (2 if protocol in SCRAMBLED_PROTOCOLS else 0)


def check_header(protocol, length, max_length=MAX_LENGTH):
    """
    Raise L{FramingError} unless C{protocol} and C{length} can start a packet.
    """
    if protocol not in PROTOCOLS:
        raise FramingError(f"unknown protocol id 0x{protocol:04x}")
    if length < MIN_LENGTH:
        raise FramingError(f"length field {length} is below the minimum {MIN_LENGTH}")
    if length > max_length:
        raise FramingError(f"length field {length} exceeds the maximum {max_length}")


def _text(raw):
    """
    Decode a serial: ASCII up to the first NUL; None when it is not text.
    """
    raw = raw.split(b"\x00", 1)[0]
    if not raw or not raw.isascii() or not raw.isalnum():
        return None
    return raw.decode("ascii")


class Packet:
    """
    A framed packet.

    @ivar raw: the bytes exactly as they travelled (what a relay forwards).
    @ivar payload: the body after unscrambling (offset 8 up to the CRC).
    @ivar crc_ok: C{True}/C{False} for protocols 5 and 6, C{None} for 2.
    """

    __slots__ = (
        "crc",
        "crc_ok",
        "device_address",
        "length",
        "payload",
        "protocol",
        "raw",
        "record_type",
        "sequence",
    )

    def __init__(self, raw, sequence, protocol, length, device_address,
                 record_type, payload, crc, crc_ok):
        self.raw = raw
        self.sequence = sequence
        self.protocol = protocol
        self.length = length
        self.device_address = device_address
        self.record_type = record_type
        self.payload = payload
        self.crc = crc
        self.crc_ok = crc_ok

    def __repr__(self):
        return (f"<Packet seq={self.sequence} protocol={self.protocol} "
                f"type=0x{self.record_type:02x} addr=0x{self.device_address:02x} "
                f"length={self.length} crc_ok={self.crc_ok}>")

    def __eq__(self, other):
        if not isinstance(other, Packet):
            return NotImplemented
        return self.raw == other.raw

    def __hash__(self):
        return hash(self.raw)

    @property
    def serial_field_size(self):
        return serial_field_size(self.protocol)

    @property
    def datalogger_serial(self):
        """
        The datalogger serial at the start of every body, or C{None}.
        """
        return _text(self.payload[:10])

    @property
    def inverter_serial(self):
        """
        The inverter serial of register-carrying records, or C{None}.
        """
        if self.record_type not in _INVERTER_SERIAL_RECORDS:
            return None
        start = self.serial_field_size
        return _text(self.payload[start:start + 10])

    @property
    def record_name(self):
        try:
            return RecordType(self.record_type).name.lower()
        except ValueError:
            return f"unknown_0x{self.record_type:02x}"

    def as_dict(self):
        """
        The header fields and unscrambled body, as C{grott decode} prints them.
        """
        return {
            "protocol": self.protocol,
            "record_type": self.record_type,
            "record_name": self.record_name,
            "sequence": self.sequence,
            "length": self.length,
            "device_address": self.device_address,
            "crc_ok": self.crc_ok,
            "datalogger_serial": self.datalogger_serial,
            "inverter_serial": self.inverter_serial,
            "payload_hex": self.payload.hex(),
        }


def parse_packet(raw, max_length=MAX_LENGTH):
    """
    Parse exactly one packet; C{raw} must hold that packet and nothing else.

    @raise FramingError: the header cannot start a packet.
    @raise PacketError: C{raw} is shorter or longer than the header says.
    """
    raw = bytes(raw)
    if len(raw) < HEADER_SIZE:
        raise PacketError(f"{len(raw)} bytes is shorter than the {HEADER_SIZE}-byte header")
    sequence, protocol, length, address, record_type = _header.unpack_from(raw)
    check_header(protocol, length, max_length)
    size = packet_size(protocol, length)
    if len(raw) != size:
        raise PacketError(
            f"length field {length} means {size} bytes for protocol {protocol}, got {len(raw)}")
    return _make(raw, sequence, protocol, length, address, record_type)


#: Record type number -> L{RecordType}; numbers it lacks stay plain ints.
_RECORD_TYPES = {member.value: member for member in RecordType}


def _make(raw, sequence, protocol, length, address, record_type):
    end = 6 + length
    if protocol in SCRAMBLED_PROTOCOLS:
        payload = scramble(raw[8:end])
        crc = (raw[end] << 8) | raw[end + 1]
        crc_ok = crc16(raw[:end]) == crc
    else:
        payload = raw[8:end]
        crc = None
        crc_ok = None
    # A dict lookup: the enum's own call is a fifth of a microsecond more
    # per packet, twice per relayed record.
    record_type = _RECORD_TYPES.get(record_type, record_type)
    return Packet(raw, sequence, protocol, length, address, record_type, payload, crc, crc_ok)


def build_packet(record_type, payload, *, protocol, sequence=1, device_address=1):
    """
    Build the wire bytes of a packet from its plain payload.
    """
    if protocol not in PROTOCOLS:
        raise PacketError(f"cannot build protocol {protocol}")
    for name, value, top in (("sequence", sequence, 0xFFFF), ("device address", device_address, 0xFF),
                             ("record type", record_type, 0xFF)):
        if not 0 <= value <= top:
            raise PacketError(f"{name} {value} out of range 0..{top}")
    length = len(payload) + 2
    if length > MAX_LENGTH:
        raise PacketError(f"payload of {len(payload)} bytes exceeds the maximum length")
    header = _header.pack(sequence, protocol, length, device_address, record_type)
    if protocol in SCRAMBLED_PROTOCOLS:
        head = header + scramble(payload)
        crc = crc16(head)
        return head + bytes((crc >> 8, crc & 0xFF))
    return header + bytes(payload)
