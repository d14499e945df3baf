"""
The register blocks of announce (0x03), data (0x04) and buffered data (0x50)
records: walking them out of an unscrambled payload and building them back.

Payload layout (protocol.md section 7.2; SF = 10 bytes for protocols 2 and
5, 30 for protocol 6)::

    datalogger serial (SF)  inverter serial (SF)  timestamp (6)
    block count (1)  then per block: first (2)  last (2)  values (2 each)

The walk trusts nothing: every block header must fit, every block must fit,
and the blocks must end exactly where the body ends.  The block count byte
is only a cross-check: a body that the blocks consume exactly is accepted
even when the count disagrees (grott-async ignores the count altogether),
and the disagreement is reported in L{RegisterBody.warning}.
"""

import datetime
import struct

from grott.codec import (
    REGISTER_RECORDS,
    PacketError,
    build_packet,
    serial_field,
    serial_field_size,
)

__all__ = [
    "REGISTER_RECORDS",
    "Block",
    "BlockError",
    "RegisterBody",
    "build_register_record",
    "encode_register_record",
    "encode_timestamp",
    "parse_timestamp",
    "walk",
]

_HEADER_OFFSET = 8          # payload offset 0 is packet offset 8
_TIMESTAMP_SIZE = 6
_u16u16 = struct.Struct(">HH")
_words = {}
#: The bytes a serial may hold (printable ASCII, no space).
_PRINTABLE = bytes(range(0x21, 0x7F))


def _unpacker(count):
    unpacker = _words.get(count)
    if unpacker is None:
        unpacker = _words[count] = struct.Struct(f">{count}H")
    return unpacker


class BlockError(PacketError):
    """
    A register record whose blocks do not add up; the message says where
    (offsets are packet offsets, as in protocol.md).
    """


class Block:
    """
    One block of consecutive registers C{start}..C{end} (inclusive) and
    their unsigned 16-bit values.  Immutable.
    """

    __slots__ = ("end", "start", "values")

    def __init__(self, start, end, values):
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "values", tuple(values))

    def __setattr__(self, name, value):
        raise AttributeError(f"Block is immutable (cannot set {name})")

    def __delattr__(self, name):
        raise AttributeError(f"Block is immutable (cannot delete {name})")

    def __repr__(self):
        return f"Block({self.start}, {self.end}, <{len(self.values)} values>)"

    def __eq__(self, other):
        if not isinstance(other, Block):
            return NotImplemented
        return (self.start, self.end, self.values) == (other.start, other.end, other.values)

    def __hash__(self):
        return hash((self.start, self.end, self.values))

    def as_dict(self):
        return {"start": self.start, "end": self.end, "values": list(self.values)}


class RegisterBody:
    """
    What the walk found: serials, timestamp, blocks, and a warning when the
    block count byte disagrees with the blocks actually present.
    """

    __slots__ = (
        "block_count",
        "blocks",
        "datalogger_serial",
        "inverter_serial",
        "timestamp",
        "timestamp_raw",
        "warning",
    )

    def __init__(self, datalogger_serial, inverter_serial, timestamp, timestamp_raw,
                 block_count, blocks, warning):
        self.datalogger_serial = datalogger_serial
        self.inverter_serial = inverter_serial
        self.timestamp = timestamp
        self.timestamp_raw = timestamp_raw
        self.block_count = block_count
        self.blocks = blocks
        self.warning = warning

    @property
    def layout(self):
        """The block ranges, the key decode plans are compiled for."""
        return tuple((block.start, block.end) for block in self.blocks)


def _serial(raw, what, offset):
    """
    The text of a serial field up to its first NUL; None when empty.
    """
    text = raw.split(b"\x00", 1)[0]
    if not text:
        return None
    if text.translate(None, _PRINTABLE):    # bytes left: not all printable ASCII
        raise BlockError(f"{what} at packet offset {offset} is not ASCII text "
                         f"({raw[:10].hex()}): not a register record, or an encrypted one "
                         f"from new datalogger firmware")
    return text.decode("ascii")


def parse_timestamp(raw):
    """
    The datalogger's timestamp (year - 2000, month, day, hour, minute,
    second) as an ISO 8601 string, or None when the bytes are not a date:
    ShineLAN-X style loggers send zeros, some loggers garbage.
    """
    if len(raw) != _TIMESTAMP_SIZE or not any(raw):
        return None
    year, month, day, hour, minute, second = raw
    try:
        return datetime.datetime(2000 + year, month, day, hour, minute, second).isoformat()
    except ValueError:
        return None


def walk(payload, protocol):
    """
    Walk the register blocks of an unscrambled register-record payload.

    @raise BlockError: the payload does not add up; the message says where.
    """
    sf = serial_field_size(protocol)
    head = 2 * sf + _TIMESTAMP_SIZE + 1
    end = len(payload)
    if end < head:
        raise BlockError(f"body of {end} bytes ends before the block count byte "
                         f"(packet offset {_HEADER_OFFSET + head - 1})")
    datalogger = _serial(payload[:sf], "datalogger serial", _HEADER_OFFSET)
    if datalogger is None:
        raise BlockError(f"datalogger serial at packet offset {_HEADER_OFFSET} is empty")
    inverter = _serial(payload[sf:2 * sf], "inverter serial", _HEADER_OFFSET + sf)
    stamp_raw = payload[2 * sf:2 * sf + _TIMESTAMP_SIZE]
    count = payload[head - 1]
    blocks = []
    pos = head
    while pos < end:
        at = _HEADER_OFFSET + pos
        number = len(blocks) + 1
        if end - pos < 4:
            raise BlockError(f"{end - pos} stray bytes at packet offset {at} where block "
                             f"{number}'s 4-byte header would start")
        first, last = _u16u16.unpack_from(payload, pos)
        if last < first:
            raise BlockError(f"block {number} at packet offset {at}: last register {last} "
                             f"is below first register {first}")
        n = last - first + 1
        if pos + 4 + 2 * n > end:
            raise BlockError(f"block {number} at packet offset {at} (registers {first}..{last}) "
                             f"needs {2 * n} bytes of values, only {end - pos - 4} remain")
        blocks.append(Block(first, last, _unpacker(n).unpack_from(payload, pos + 4)))
        pos += 4 + 2 * n
    warning = None
    if count != len(blocks):
        warning = (f"block count byte says {count}, the body holds {len(blocks)} "
                   f"block{'s' if len(blocks) != 1 else ''}")
    return RegisterBody(datalogger, inverter, parse_timestamp(stamp_raw), stamp_raw.hex(),
                        count, tuple(blocks), warning)


# ---------------------------------------------------------------- encoding

def encode_timestamp(timestamp):
    """
    Six timestamp bytes from None (zeros), a datetime, an ISO 8601 string,
    or the six raw bytes themselves.
    """
    if timestamp is None:
        return bytes(_TIMESTAMP_SIZE)
    if isinstance(timestamp, (bytes, bytearray)):
        if len(timestamp) != _TIMESTAMP_SIZE:
            raise BlockError(f"a raw timestamp has 6 bytes, not {len(timestamp)}")
        return bytes(timestamp)
    if isinstance(timestamp, str):
        try:
            timestamp = datetime.datetime.fromisoformat(timestamp)
        except ValueError:
            raise BlockError(f"timestamp {timestamp!r} is not ISO 8601") from None
    if not isinstance(timestamp, datetime.datetime):
        raise BlockError(f"cannot encode timestamp {timestamp!r}")
    if not 2000 <= timestamp.year <= 2255:
        raise BlockError(f"year {timestamp.year} cannot be sent (2000..2255)")
    return bytes((timestamp.year - 2000, timestamp.month, timestamp.day,
                  timestamp.hour, timestamp.minute, timestamp.second))


def _as_block(item):
    if isinstance(item, Block):
        return item
    if len(item) == 2:
        start, values = item
        values = tuple(values)
        return Block(start, start + len(values) - 1, values)
    start, end, values = item
    return Block(start, end, values)


def _encode_block(block):
    values = block.values
    if not values:
        raise BlockError(f"block starting at register {block.start} has no values")
    if block.end - block.start + 1 != len(values):
        raise BlockError(f"block {block.start}..{block.end} needs "
                         f"{block.end - block.start + 1} values, got {len(values)}")
    if not 0 <= block.start <= block.end <= 0xFFFF:
        raise BlockError(f"block {block.start}..{block.end} is outside registers 0..65535")
    for value in values:
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise BlockError(f"value {value!r} in block {block.start}..{block.end} is not "
                             f"an unsigned 16-bit number")
    return _u16u16.pack(block.start, block.end) + _unpacker(len(values)).pack(*values)


def encode_register_record(datalogger_serial, inverter_serial, blocks, *, protocol,
                           timestamp=None, block_count=None):
    """
    The unscrambled payload of a register record (the inverse of L{walk}).

    C{blocks} holds L{Block}s, C{(start, values)} or C{(start, end, values)};
    C{block_count} overrides the count byte (to build inconsistent records
    in tests).
    """
    blocks = [_as_block(item) for item in blocks]
    count = len(blocks) if block_count is None else block_count
    if not 0 <= count <= 0xFF:
        raise BlockError(f"block count {count} does not fit in one byte")
    parts = [serial_field(datalogger_serial, protocol), serial_field(inverter_serial, protocol),
             encode_timestamp(timestamp), bytes((count,))]
    parts.extend(_encode_block(block) for block in blocks)
    return b"".join(parts)


def build_register_record(record_type, datalogger_serial, inverter_serial, blocks, *, protocol,
                          timestamp=None, sequence=1, device_address=1, block_count=None):
    """
    The wire bytes of an announce, data or buffered-data record.
    """
    if record_type not in REGISTER_RECORDS:
        raise BlockError(f"record type 0x{record_type:02x} carries no register blocks")
    payload = encode_register_record(datalogger_serial, inverter_serial, blocks,
                                     protocol=protocol, timestamp=timestamp,
                                     block_count=block_count)
    return build_packet(record_type, payload, protocol=protocol, sequence=sequence,
                        device_address=device_address)
