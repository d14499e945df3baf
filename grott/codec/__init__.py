"""
The Growatt datalogger protocol: framing, (un)scrambling, CRC, packets and
the commands a server sends.  Pure Python, no I/O, no Twisted: everything
else in grott builds on this.
"""

from grott.codec.crc import crc16
from grott.codec.errors import CodecError, FramingError, PacketError
from grott.codec.framer import Framer, Garbage, frame_all, parse_one
from grott.codec.messages import (
    FROM_DATALOGGER,
    TO_DATALOGGER,
    ConfigGetReply,
    ConfigGetRequest,
    ConfigSetReply,
    ConfigSetRequest,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteMultiReply,
    InverterWriteMultiRequest,
    InverterWriteReply,
    InverterWriteRequest,
    build,
    build_ack,
    build_ping,
    parse_body,
)
from grott.codec.packet import (
    ACKNOWLEDGED,
    COMMANDS,
    MAX_LENGTH,
    PROTOCOLS,
    REGISTER_RECORDS,
    Packet,
    RecordType,
    build_packet,
    parse_packet,
    serial_field,
    serial_field_size,
)
from grott.codec.scramble import scramble, unscramble

__all__ = [
    "ACKNOWLEDGED",
    "COMMANDS",
    "FROM_DATALOGGER",
    "MAX_LENGTH",
    "PROTOCOLS",
    "REGISTER_RECORDS",
    "TO_DATALOGGER",
    "CodecError",
    "ConfigGetReply",
    "ConfigGetRequest",
    "ConfigSetReply",
    "ConfigSetRequest",
    "Framer",
    "FramingError",
    "Garbage",
    "InverterReadReply",
    "InverterReadRequest",
    "InverterWriteMultiReply",
    "InverterWriteMultiRequest",
    "InverterWriteReply",
    "InverterWriteRequest",
    "Packet",
    "PacketError",
    "RecordType",
    "build",
    "build_ack",
    "build_packet",
    "build_ping",
    "crc16",
    "frame_all",
    "parse_body",
    "parse_one",
    "parse_packet",
    "scramble",
    "serial_field",
    "serial_field_size",
    "unscramble",
]
