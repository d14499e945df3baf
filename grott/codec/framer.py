"""
Cut a TCP byte stream into packets.

A datalogger's bytes arrive in arbitrary chunks: a packet split anywhere, or
several glued together.  L{Framer} buffers at most one packet's worth of
bytes (the header's length field is checked before any body is awaited) and
hands back, in order, every complete packet and every run of bytes that
could not start one.

Garbage policy
==============

 - When the bytes at the start of the buffer cannot be a header (protocol id
   not 2, 5 or 6, or a length outside C{MIN_LENGTH..max_length}), the framer
   looks for the next offset where a plausible header starts and reports the
   bytes before it as one L{Garbage} item, with the reason.  Nothing is ever
   dropped silently: the bytes of a L{Garbage} item are exactly the skipped
   bytes, so a relay can forward them unchanged.
 - While the stream is in step (the previous item was a packet, or this is
   the start of the stream) the CRC is advisory: a packet with a wrong CRC is
   still a packet, with C{crc_ok} false.
 - Right after garbage, a candidate header of protocol 5 or 6 is only
   believed when its CRC verifies; otherwise its first byte is garbage too and
   the search goes on.  This keeps a stray C{00 06} inside noise from
   swallowing the real packets that follow it.
 - Bytes still buffered when the stream ends are available from
   L{Framer.pending} so a relay can flush them.

Every byte fed in comes out exactly once, in order, as part of a L{Packet} or
a L{Garbage} item, or stays in the buffer (at most one maximum-size packet).
"""

import re
import struct

from grott.codec.crc import crc16
from grott.codec.errors import FramingError
from grott.codec.packet import (
    MAX_LENGTH,
    MIN_LENGTH,
    PROTOCOLS,
    SCRAMBLED_PROTOCOLS,
    _make,
    packet_size,
)

__all__ = ["Framer", "Garbage"]

_prefix = struct.Struct(">HHHBB")
#: Bytes 2-3 of a plausible header: a zero byte, then a known protocol id.
_MARKER = re.compile(b"\\x00[" + bytes(sorted(PROTOCOLS)) + b"]")


class Garbage:
    """
    Bytes that could not be framed, with the reason.
    """

    __slots__ = ("data", "reason")

    def __init__(self, data, reason):
        self.data = data
        self.reason = reason

    @property
    def raw(self):
        return self.data

    def __repr__(self):
        return f"<Garbage {len(self.data)} bytes: {self.reason}>"

    def __eq__(self, other):
        if not isinstance(other, Garbage):
            return NotImplemented
        return (self.data, self.reason) == (other.data, other.reason)


class Framer:
    """
    Incremental packet framer; feed it chunks, get packets and garbage back.
    """

    # Two per relayed connection: slots keep thousands of them small.
    __slots__ = ("_buffer", "_in_step", "garbage_bytes", "max_length", "packets")

    def __init__(self, max_length=MAX_LENGTH):
        self.max_length = max_length
        self._buffer = b""
        self._in_step = True
        self.packets = 0
        self.garbage_bytes = 0

    @property
    def pending(self):
        """
        Bytes received but not yet returned (an incomplete packet at most).
        """
        return self._buffer

    def _header_problem(self, buf, at):
        """
        Why C{buf[at:]} cannot start a packet, or None if it may.
        """
        protocol = (buf[at + 2] << 8) | buf[at + 3]
        if protocol not in PROTOCOLS:
            return f"unknown protocol id 0x{protocol:04x}"
        length = (buf[at + 4] << 8) | buf[at + 5]
        if length < MIN_LENGTH or length > self.max_length:
            return f"length field {length} outside {MIN_LENGTH}..{self.max_length}"
        return None

    def feed(self, data):
        """
        Add C{data}; return the list of complete L{Packet}s and L{Garbage}s.
        """
        buf = self._buffer + data if self._buffer else bytes(data)
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 6:
            problem = self._header_problem(buf, pos)
            if problem is None:
                protocol = (buf[pos + 2] << 8) | buf[pos + 3]
                length = (buf[pos + 4] << 8) | buf[pos + 5]
                size = packet_size(protocol, length)
                if end - pos < size:
                    break
                raw = buf[pos:pos + size]
                if (not self._in_step and protocol in SCRAMBLED_PROTOCOLS
                        and crc16(raw[:-2]) != int.from_bytes(raw[-2:], "big")):
                    problem = "candidate header after garbage failed its CRC"
                if problem is None:
                    sequence, protocol, length, address, record_type = _prefix.unpack_from(raw)
                    out.append(_make(raw, sequence, protocol, length, address, record_type))
                    self.packets += 1
                    self._in_step = True
                    pos += size
                    continue
            # Not a packet here: skip to the next plausible header.
            start = pos
            pos = self._next_candidate(buf, pos + 1, end)
            self.garbage_bytes += pos - start
            out.append(Garbage(buf[start:pos], problem))
            self._in_step = False
        self._buffer = buf[pos:] if pos < end else b""
        return out

    def _next_candidate(self, buf, start, end):
        """
        The first offset >= start that may begin a header, or where the
        remaining bytes are too few to tell (they stay buffered).

        One left-to-right scan that stops at the first plausible header:
        each byte of a garbage run is looked at a bounded number of times,
        so hostile input costs linear time, not quadratic.
        """
        # The last 5 bytes may be the start of a header still arriving.
        tail = max(start, end - 5)
        search = _MARKER.search
        match = search(buf, start + 2)
        while match is not None:
            candidate = match.start() - 2
            if candidate >= tail:
                break
            if self._header_problem(buf, candidate) is None:
                return candidate
            match = search(buf, match.start() + 1)
        return tail

    def flush(self):
        """
        Return and forget what is buffered (at the end of a stream).
        """
        data, self._buffer = self._buffer, b""
        return data


def frame_all(data, max_length=MAX_LENGTH):
    """
    Frame a complete byte string; trailing incomplete bytes are garbage.
    """
    framer = Framer(max_length)
    items = framer.feed(data)
    rest = framer.flush()
    if rest:
        items.append(Garbage(rest, "incomplete packet at end of input"))
    return items


def parse_one(data, max_length=MAX_LENGTH):
    """
    Frame C{data} that must be exactly one packet.
    """
    items = frame_all(data, max_length)
    if len(items) == 1 and not isinstance(items[0], Garbage):
        return items[0]
    reason = next((i.reason for i in items if isinstance(i, Garbage)), "more than one packet")
    raise FramingError(reason)
