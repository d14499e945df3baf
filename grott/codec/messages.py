"""
The bodies of acknowledgements, commands and their replies.

Each message is a small frozen dataclass that knows its record type and
direction, how to lay itself out after the serial field (L{to_body}) and how
to read itself back (L{from_packet}).  L{build} wraps one into a packet for a
given datalogger serial and protocol; protocol 6 pads the serial field to 30
bytes, 2 and 5 do not (see protocol.md section 7.1).

Direction matters: an inverter read request (server to datalogger) carries
first and last register; its reply (datalogger to server) adds the values.
Both have record type 0x05, so each class here is one (type, direction).
"""

import dataclasses
import struct

from grott.codec.errors import PacketError
from grott.codec.packet import RecordType, build_packet, serial_field, serial_field_size

__all__ = [
    "FROM_DATALOGGER",
    "TO_DATALOGGER",
    "ConfigGetReply",
    "ConfigGetRequest",
    "ConfigSetReply",
    "ConfigSetRequest",
    "InverterReadReply",
    "InverterReadRequest",
    "InverterWriteMultiReply",
    "InverterWriteMultiRequest",
    "InverterWriteReply",
    "InverterWriteRequest",
    "build",
    "build_ack",
    "build_ping",
    "parse_body",
]

TO_DATALOGGER = "server->datalogger"
FROM_DATALOGGER = "datalogger->server"

_u16 = struct.Struct(">H")
_u16u16 = struct.Struct(">HH")


def _check_u16(name, value):
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise PacketError(f"{name} {value!r} is not an unsigned 16-bit number")


def _check_u8(name, value):
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise PacketError(f"{name} {value!r} is not a byte")


def _need(body, size, what):
    if len(body) < size:
        raise PacketError(f"{what}: body after the serial field has {len(body)} bytes, needs {size}")


def _exact(body, size, what):
    if len(body) != size:
        raise PacketError(f"{what}: body after the serial field has {len(body)} bytes, expected {size}")


@dataclasses.dataclass(frozen=True)
class InverterReadRequest:
    """Read holding registers C{first}..C{last} (0x05, to the datalogger)."""
    first: int
    last: int
    record_type = RecordType.INVERTER_READ
    direction = TO_DATALOGGER

    def to_body(self):
        _check_u16("first register", self.first)
        _check_u16("last register", self.last)
        if self.last < self.first:
            raise PacketError(f"last register {self.last} is below first {self.first}")
        return _u16u16.pack(self.first, self.last)

    @classmethod
    def from_body(cls, body):
        _exact(body, 4, "inverter read request")
        return cls(*_u16u16.unpack(body))


@dataclasses.dataclass(frozen=True)
class InverterReadReply:
    """
    The values of C{first}..C{last}; C{values} is C{None} when the inverter
    answered with the register words only (a failed read).
    """
    first: int
    last: int
    values: tuple = None
    record_type = RecordType.INVERTER_READ
    direction = FROM_DATALOGGER

    def to_body(self):
        head = InverterReadRequest(self.first, self.last).to_body()
        if self.values is None:
            return head
        if len(self.values) != self.last - self.first + 1:
            raise PacketError(f"{len(self.values)} values for registers {self.first}..{self.last}")
        for value in self.values:
            _check_u16("value", value)
        return head + struct.pack(f">{len(self.values)}H", *self.values)

    @classmethod
    def from_body(cls, body):
        _need(body, 4, "inverter read reply")
        first, last = _u16u16.unpack_from(body)
        if last < first:
            raise PacketError(f"inverter read reply: last register {last} below first {first}")
        if len(body) == 4:
            return cls(first, last, None)
        count = last - first + 1
        _exact(body, 4 + 2 * count, "inverter read reply")
        return cls(first, last, struct.unpack_from(f">{count}H", body, 4))


@dataclasses.dataclass(frozen=True)
class InverterWriteRequest:
    """Write one holding register (0x06, to the datalogger)."""
    register: int
    value: int
    record_type = RecordType.INVERTER_WRITE
    direction = TO_DATALOGGER

    def to_body(self):
        _check_u16("register", self.register)
        _check_u16("value", self.value)
        return _u16u16.pack(self.register, self.value)

    @classmethod
    def from_body(cls, body):
        _exact(body, 4, "inverter write request")
        return cls(*_u16u16.unpack(body))


@dataclasses.dataclass(frozen=True)
class InverterWriteReply:
    """The inverter's answer to a single write: register, status, stored value."""
    register: int
    status: int
    value: int
    record_type = RecordType.INVERTER_WRITE
    direction = FROM_DATALOGGER

    def to_body(self):
        _check_u16("register", self.register)
        _check_u16("value", self.value)
        _check_u8("status", self.status)
        return _u16.pack(self.register) + bytes((self.status,)) + _u16.pack(self.value)

    @classmethod
    def from_body(cls, body):
        _exact(body, 5, "inverter write reply")
        return cls(_u16.unpack_from(body)[0], body[2], _u16.unpack_from(body, 3)[0])


@dataclasses.dataclass(frozen=True)
class InverterWriteMultiRequest:
    """Write C{values} to consecutive registers from C{first} (0x10)."""
    first: int
    values: tuple
    record_type = RecordType.INVERTER_WRITE_MULTI
    direction = TO_DATALOGGER

    @property
    def last(self):
        return self.first + len(self.values) - 1

    def to_body(self):
        if not self.values:
            raise PacketError("a multiple write needs at least one value")
        _check_u16("first register", self.first)
        _check_u16("last register", self.last)
        for value in self.values:
            _check_u16("value", value)
        return _u16u16.pack(self.first, self.last) + struct.pack(f">{len(self.values)}H", *self.values)

    @classmethod
    def from_body(cls, body):
        _need(body, 4, "inverter multiple write request")
        first, last = _u16u16.unpack_from(body)
        if last < first:
            raise PacketError(f"multiple write: last register {last} below first {first}")
        count = last - first + 1
        _exact(body, 4 + 2 * count, "inverter multiple write request")
        return cls(first, struct.unpack_from(f">{count}H", body, 4))


@dataclasses.dataclass(frozen=True)
class InverterWriteMultiReply:
    """Answer to a multiple write: the range and a status byte (layout per grottserver)."""
    first: int
    last: int
    status: int
    record_type = RecordType.INVERTER_WRITE_MULTI
    direction = FROM_DATALOGGER

    def to_body(self):
        _check_u8("status", self.status)
        return InverterReadRequest(self.first, self.last).to_body() + bytes((self.status,))

    @classmethod
    def from_body(cls, body):
        _exact(body, 5, "inverter multiple write reply")
        first, last = _u16u16.unpack_from(body)
        if last < first:
            raise PacketError(f"multiple write reply: last register {last} below first {first}")
        return cls(first, last, body[4])


@dataclasses.dataclass(frozen=True)
class ConfigGetRequest:
    """Read datalogger configuration registers C{first}..C{last} (0x19)."""
    first: int
    last: int
    record_type = RecordType.CONFIG_GET
    direction = TO_DATALOGGER

    def to_body(self):
        return InverterReadRequest(self.first, self.last).to_body()

    @classmethod
    def from_body(cls, body):
        _exact(body, 4, "datalogger config get request")
        return cls(*_u16u16.unpack(body))


def _text_bytes(value):
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise PacketError(f"value {value!r} is not latin-1 text") from None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise PacketError(f"value {value!r} is neither text nor bytes")
    return bytes(value)


@dataclasses.dataclass(frozen=True)
class ConfigGetReply:
    """One configuration register and its value (ASCII text, bytes here)."""
    register: int
    value: bytes
    record_type = RecordType.CONFIG_GET
    direction = FROM_DATALOGGER

    def __post_init__(self):
        # Text given as str is kept as the bytes that go on the wire, so a
        # built message equals the one parsed back and .text always works.
        object.__setattr__(self, "value", _text_bytes(self.value))

    @property
    def text(self):
        return self.value.decode("latin-1")

    def to_body(self):
        _check_u16("register", self.register)
        value = _text_bytes(self.value)
        if len(value) > 0xFFFF:
            raise PacketError(f"value of {len(value)} bytes does not fit its 16-bit length")
        return _u16u16.pack(self.register, len(value)) + value

    @classmethod
    def from_body(cls, body):
        _need(body, 4, "datalogger config reply")
        register, size = _u16u16.unpack_from(body)
        _need(body, 4 + size, "datalogger config reply")
        return cls(register, bytes(body[4:4 + size]))


@dataclasses.dataclass(frozen=True)
class ConfigSetRequest:
    """Set one configuration register to a text value (0x18)."""
    register: int
    value: bytes
    record_type = RecordType.CONFIG_SET
    direction = TO_DATALOGGER

    def __post_init__(self):
        # Text given as str is kept as the bytes that go on the wire, so a
        # built message equals the one parsed back and .text always works.
        object.__setattr__(self, "value", _text_bytes(self.value))

    @property
    def text(self):
        return self.value.decode("latin-1")

    def to_body(self):
        return ConfigGetReply(self.register, self.value).to_body()

    @classmethod
    def from_body(cls, body):
        reply = ConfigGetReply.from_body(body)
        _exact(body, 4 + len(reply.value), "datalogger config set request")
        return cls(reply.register, reply.value)


@dataclasses.dataclass(frozen=True)
class ConfigSetReply:
    """The datalogger's answer to a set: register and status (0 = OK)."""
    register: int
    status: int
    record_type = RecordType.CONFIG_SET
    direction = FROM_DATALOGGER

    def to_body(self):
        _check_u16("register", self.register)
        _check_u8("status", self.status)
        return _u16.pack(self.register) + bytes((self.status,))

    @classmethod
    def from_body(cls, body):
        _need(body, 3, "datalogger config set reply")
        return cls(_u16.unpack_from(body)[0], body[2])


_BY_KEY = {
    (cls.record_type, cls.direction): cls
    for cls in (InverterReadRequest, InverterReadReply, InverterWriteRequest,
                InverterWriteReply, InverterWriteMultiRequest, InverterWriteMultiReply,
                ConfigGetRequest, ConfigGetReply, ConfigSetRequest, ConfigSetReply)
}


def build(message, serial, *, protocol, sequence=1, device_address=1):
    """
    The wire bytes of C{message} for datalogger C{serial} in C{protocol}.
    """
    body = serial_field(serial, protocol) + message.to_body()
    return build_packet(message.record_type, body, protocol=protocol,
                        sequence=sequence, device_address=device_address)


def parse_body(packet, direction):
    """
    Read the message in C{packet}, which travelled in C{direction}.

    @raise PacketError: not a command/reply type, or the body does not fit.
    """
    cls = _BY_KEY.get((packet.record_type, direction))
    if cls is None:
        raise PacketError(f"record type 0x{packet.record_type:02x} carries no command ({direction})")
    body = packet.payload[serial_field_size(packet.protocol):]
    if len(packet.payload) < serial_field_size(packet.protocol):
        raise PacketError("body is shorter than the serial field")
    return cls.from_body(body)


def build_ack(packet):
    """
    The server's acknowledgement of C{packet} (announce, data, buffered
    data, meter records): same sequence, protocol, address and type, a
    one-byte zero body.
    """
    return build_packet(packet.record_type, b"\x00", protocol=packet.protocol,
                        sequence=packet.sequence, device_address=packet.device_address)


def build_ping(serial, *, protocol, sequence=1, device_address=1):
    """
    A ping (0x16): the serial field alone.  The server echoes it unchanged.
    """
    return build_packet(RecordType.PING, serial_field(serial, protocol), protocol=protocol,
                        sequence=sequence, device_address=device_address)
