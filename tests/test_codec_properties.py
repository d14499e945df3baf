"""
Properties of the codec under random input (hypothesis): any chunking frames
the same packets, every byte comes out exactly once, hostile bytes only ever
raise CodecError, and every message survives build -> parse.
"""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from grott.codec import (
    FROM_DATALOGGER,
    MAX_LENGTH,
    TO_DATALOGGER,
    CodecError,
    ConfigGetReply,
    ConfigGetRequest,
    ConfigSetReply,
    ConfigSetRequest,
    Framer,
    Garbage,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteMultiReply,
    InverterWriteMultiRequest,
    InverterWriteReply,
    InverterWriteRequest,
    Packet,
    RecordType,
    build,
    build_ack,
    build_packet,
    build_ping,
    frame_all,
    parse_body,
    parse_one,
    parse_packet,
    scramble,
)
from grott.codec.crc import crc16, crc16_python
from grott.codec.packet import packet_size, serial_field_size

#: A modest budget: the whole module runs in a few seconds.
FAST = settings(deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow])
HEAVY = settings(FAST, max_examples=60)

MAX_PACKET = packet_size(6, MAX_LENGTH)
PROTOCOL = st.sampled_from([2, 5, 6])
U16 = st.integers(0, 0xFFFF)
BYTE = st.integers(0, 0xFF)
SERIAL = st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=10)


@st.composite
def packets(draw, sequences=U16, allow_bad_crc=True):
    """
    Wire bytes of one packet: random protocol, header and body; some
    protocol-5/6 packets with a wrong CRC.
    """
    protocol = draw(PROTOCOL)
    data = build_packet(
        draw(st.one_of(st.sampled_from(list(RecordType)), BYTE)),
        draw(st.binary(max_size=300)),
        protocol=protocol, sequence=draw(sequences), device_address=draw(BYTE))
    if allow_bad_crc and protocol != 2 and draw(st.integers(0, 3)) == 0:
        data = data[:-2] + (int.from_bytes(data[-2:], "big") ^ draw(st.integers(1, 0xFFFF))).to_bytes(2, "big")
    return data


@st.composite
def header_like(draw):
    """
    Six or more bytes that look like a header (known protocol id) with any
    length, then a little of anything: the framer's hard cases.
    """
    return (draw(st.binary(min_size=2, max_size=2)) + bytes((0, draw(PROTOCOL)))
            + draw(U16).to_bytes(2, "big") + draw(st.binary(max_size=12)))


#: Arbitrary input biased towards what the framer must decide about.
HOSTILE = st.lists(
    st.one_of(st.binary(max_size=64), packets(), header_like()), max_size=8,
).map(b"".join)


@st.composite
def chunked(draw, data):
    """
    Cut C{data} at random places (empty chunks included).
    """
    bounds = [0, *sorted(draw(st.lists(st.integers(0, len(data)), max_size=12))), len(data)]
    return [data[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]


def feed_chunks(framer, chunks, test=None):
    items = []
    for chunk in chunks:
        items.extend(framer.feed(chunk))
        if test is not None:
            test.assertLessEqual(len(framer.pending), MAX_PACKET)
    return items


def normalised(items):
    """
    Packets as their bytes, runs of garbage merged: what must not depend
    on how the input was chunked.
    """
    out = []
    for item in items:
        if isinstance(item, Garbage):
            if out and out[-1][0] == "garbage":
                out[-1] = ("garbage", out[-1][1] + item.data)
            else:
                out.append(("garbage", item.data))
        else:
            out.append(("packet", item.raw))
    return out


class FramingProperties(SynchronousTestCase):
    @FAST
    @given(st.lists(packets(), max_size=8), st.data())
    def test_valid_stream_any_chunking(self, wires, data):
        """
        Valid packets (bad CRCs included), chunked anywhere, come back
        exactly, in order, with their CRC verdicts; nothing else.
        """
        stream = b"".join(wires)
        framer = Framer()
        items = feed_chunks(framer, data.draw(chunked(stream)), self)
        self.assertEqual([i.raw for i in items], wires)
        for item in items:
            self.assertIsInstance(item, Packet)
            if item.protocol == 2:
                self.assertIsNone(item.crc_ok)
            else:
                self.assertEqual(item.crc_ok, crc16(item.raw[:-2]) == item.crc)
        self.assertEqual(framer.pending, b"")

    @HEAVY
    @given(st.lists(packets(), max_size=4))
    def test_one_byte_at_a_time(self, wires):
        stream = b"".join(wires)
        framer = Framer()
        items = feed_chunks(framer, [stream[i:i + 1] for i in range(len(stream))])
        self.assertEqual([i.raw for i in items], wires)

    @FAST
    @given(HOSTILE, st.data())
    def test_bytes_in_bytes_out(self, stream, data):
        """
        For any input and chunking, every byte comes out once, in order:
        the items' bytes plus what is pending are the input.  The buffer
        never holds more than one maximum-size packet.
        """
        framer = Framer()
        items = feed_chunks(framer, data.draw(chunked(stream)), self)
        self.assertEqual(b"".join(i.raw for i in items) + framer.pending, stream)
        for item in items:
            self.assertIsInstance(item, (Packet, Garbage))
            self.assertTrue(item.raw)
            if isinstance(item, Garbage):
                self.assertIsInstance(item.reason, str)

    @FAST
    @given(HOSTILE, st.data())
    def test_chunking_does_not_matter(self, stream, data):
        """
        The same packets and the same garbage bytes come out however the
        input is cut.
        """
        whole = Framer()
        at_once = whole.feed(stream)
        pieces = Framer()
        chunks = feed_chunks(pieces, data.draw(chunked(stream)))
        self.assertEqual(normalised(chunks), normalised(at_once))
        self.assertEqual(pieces.pending, whole.pending)

    @FAST
    @given(HOSTILE)
    def test_frame_all_never_raises(self, stream):
        items = frame_all(stream)
        self.assertEqual(b"".join(i.raw for i in items), stream)
        try:
            parse_one(stream)
        except CodecError:
            pass

    @FAST
    @given(st.lists(st.tuples(st.binary(min_size=1, max_size=40).filter(lambda b: 0 not in b),
                              packets(sequences=st.integers(0x100, 0xFFFF), allow_bad_crc=False)),
                    min_size=1, max_size=5),
           st.data())
    def test_garbage_reported_and_resync(self, pairs, data):
        """
        Garbage before packets is reported, byte for byte, and the next
        packet is found.  (The garbage holds no zero byte and the sequences
        are >= 0x100, so no false header straddles the boundary; the CRC
        must verify, the policy for the first packet after garbage.)
        """
        stream = b"".join(junk + wire for junk, wire in pairs)
        framer = Framer()
        items = feed_chunks(framer, data.draw(chunked(stream)), self)
        expected = []
        for junk, wire in pairs:
            expected += [("garbage", junk), ("packet", wire)]
        self.assertEqual(normalised(items), expected)
        self.assertEqual(framer.pending, b"")

    @FAST
    @given(st.binary(min_size=1, max_size=20).filter(lambda b: 0 not in b),
           st.sampled_from([5, 6]), st.binary(min_size=10, max_size=100).filter(lambda b: 0 not in b),
           st.integers(1, 0xFFFF), packets(sequences=st.integers(0x1000, 0xFFFF), allow_bad_crc=False),
           st.data())
    def test_bad_crc_after_garbage(self, junk, protocol, body, flip, wire, data):
        """
        Right after garbage, a protocol-5/6 packet whose CRC fails is not
        believed: it is garbage too, and the packet after it is found.
        (Zero-free bodies and large sequences keep false headers out.)
        """
        bad = build_packet(RecordType.DATA, body, protocol=protocol, sequence=0x1234)
        bad = bad[:-2] + (int.from_bytes(bad[-2:], "big") ^ flip).to_bytes(2, "big")
        framer = Framer()
        items = feed_chunks(framer, data.draw(chunked(junk + bad + wire)), self)
        self.assertEqual(normalised(items), [("garbage", junk + bad), ("packet", wire)])

    @FAST
    @given(PROTOCOL, st.one_of(st.integers(0, 1), st.integers(MAX_LENGTH + 1, 0xFFFF)),
           st.binary(min_size=5, max_size=10).map(lambda b: bytes(x | 0x80 for x in b)),
           packets(sequences=st.integers(0x100, 0xFFFF), allow_bad_crc=False))
    def test_absurd_length_does_not_wait(self, protocol, length, tail, wire):
        """
        A header with an impossible length is garbage at once: the framer
        does not wait for the body it announces, and finds the next packet.
        (Five or more high tail bytes and a large sequence keep a false
        header from straddling the end of the garbage.)
        """
        header = b"\x00\x01" + bytes((0, protocol)) + length.to_bytes(2, "big")
        framer = Framer()
        items = framer.feed(header + tail)
        self.assertIsInstance(items[0], Garbage)
        self.assertEqual(items[0].data[:1], b"\x00")
        self.assertLessEqual(len(framer.pending), 5)
        later = framer.feed(wire)
        self.assertEqual(later[-1].raw, wire)
        self.assertEqual(framer.pending, b"")


class HostileInputProperties(SynchronousTestCase):
    """
    Nothing but CodecError ever escapes, whatever the bytes.
    """

    @FAST
    @given(st.one_of(st.binary(max_size=80), header_like(),
                     packets().flatmap(lambda w: st.integers(0, len(w)).map(lambda n: w[:n]))))
    def test_parse_packet(self, data):
        try:
            packet = parse_packet(data)
        except CodecError as e:
            self.assertTrue(str(e))
            return
        self.assertEqual(packet.raw, data)
        packet.as_dict()
        repr(packet)

    @FAST
    @given(PROTOCOL, st.sampled_from(sorted(RecordType)), st.binary(max_size=60),
           st.sampled_from([TO_DATALOGGER, FROM_DATALOGGER]))
    def test_parse_body(self, protocol, record_type, payload, direction):
        """
        Any body under any record type: a message or a PacketError; a
        message parsed from bytes lays itself out again the same way.
        """
        packet = parse_packet(build_packet(record_type, payload, protocol=protocol))
        packet.as_dict()
        try:
            message = parse_body(packet, direction)
        except CodecError as e:
            self.assertTrue(str(e))
            return
        self.assertEqual(message.direction, direction)
        self.assertEqual(message.record_type, record_type)
        body = payload[serial_field_size(protocol):]
        try:
            relaid = message.to_body()
        except CodecError:
            return
        self.assertEqual(type(message).from_body(relaid), message)
        if type(message) not in (ConfigGetReply, ConfigSetReply):
            # Everything but the two lenient replies must be the whole body.
            self.assertEqual(relaid, body)


#: Field values a careless caller might pass, in range or not.
FIELD = st.one_of(st.integers(-2, 0x1_0001), st.none(), st.text(max_size=3),
                  st.binary(max_size=3))
ANY_CLASS = st.sampled_from([
    InverterReadRequest, InverterReadReply, InverterWriteRequest, InverterWriteReply,
    InverterWriteMultiRequest, InverterWriteMultiReply, ConfigGetRequest, ConfigGetReply,
    ConfigSetRequest, ConfigSetReply,
])


class BuilderProperties(SynchronousTestCase):
    @FAST
    @given(ANY_CLASS, st.data(), PROTOCOL)
    def test_bad_fields(self, cls, data, protocol):
        """
        A message with out-of-range or wrong-typed fields is a CodecError
        when made or built, never struct.error, TypeError or OverflowError.
        """
        count = len(cls.__dataclass_fields__)
        fields = [data.draw(FIELD) for _ in range(count)]
        if cls in (InverterWriteMultiRequest, InverterReadReply):
            fields[-1] = data.draw(st.one_of(st.none(), st.lists(FIELD, max_size=3).map(tuple)))
        try:
            build(cls(*fields), "SERIAL", protocol=protocol)
        except CodecError as e:
            self.assertTrue(str(e))

    def test_text_values(self):
        """
        Text given as str travels as latin-1 bytes and compares equal to
        what is parsed back.
        """
        message = ConfigSetRequest(31, "2021-02-09 12:15:00")
        self.assertEqual(message.value, b"2021-02-09 12:15:00")
        self.assertEqual(message.text, "2021-02-09 12:15:00")
        packet = parse_packet(build(message, "JPC281833B", protocol=6))
        self.assertEqual(parse_body(packet, TO_DATALOGGER), message)
        self.assertRaises(CodecError, ConfigGetReply, 21, "\u20ac")
        self.assertRaises(CodecError, ConfigGetReply(21, bytes(0x10000)).to_body)


@st.composite
def messages(draw):
    """
    One valid message of any class.
    """
    first = draw(st.integers(0, 0xFFFF - 124))
    count = draw(st.integers(1, 125))
    last = first + count - 1
    values = tuple(draw(st.lists(U16, min_size=count, max_size=count)))
    text = st.one_of(st.binary(max_size=100),
                     st.text(st.characters(max_codepoint=255), max_size=100))
    return draw(st.sampled_from([
        InverterReadRequest(first, last),
        InverterReadReply(first, last, values),
        InverterReadReply(first, last, None),
        InverterWriteRequest(first, values[0]),
        InverterWriteReply(first, draw(BYTE), values[0]),
        InverterWriteMultiRequest(first, values),
        InverterWriteMultiReply(first, last, draw(BYTE)),
        ConfigGetRequest(first, last),
        ConfigGetReply(first, draw(text)),
        ConfigSetRequest(first, draw(text)),
        ConfigSetReply(first, draw(BYTE)),
    ]))


class RoundTripProperties(SynchronousTestCase):
    @FAST
    @given(messages(), SERIAL, PROTOCOL, U16, BYTE)
    def test_build_then_parse(self, message, serial, protocol, sequence, address):
        """
        Every message class, both directions, protocols 2, 5 and 6: building
        then parsing gives back the message, and rebuilding the bytes.
        """
        wire = build(message, serial, protocol=protocol, sequence=sequence,
                     device_address=address)
        [packet] = Framer().feed(wire)
        self.assertEqual((packet.protocol, packet.sequence, packet.device_address),
                         (protocol, sequence, address))
        self.assertEqual(packet.record_type, message.record_type)
        self.assertIsNot(packet.crc_ok, False)
        self.assertEqual(packet.datalogger_serial, serial)
        self.assertEqual(packet.payload[len(serial):serial_field_size(protocol)],
                         bytes(serial_field_size(protocol) - len(serial)))
        parsed = parse_body(packet, message.direction)
        self.assertEqual(parsed, message)
        self.assertEqual(build(parsed, serial, protocol=protocol, sequence=sequence,
                               device_address=address), wire)

    @FAST
    @given(packets(allow_bad_crc=False))
    def test_ack(self, wire):
        packet = parse_packet(wire)
        ack = parse_packet(build_ack(packet))
        self.assertEqual((ack.sequence, ack.protocol, ack.device_address, ack.record_type),
                         (packet.sequence, packet.protocol, packet.device_address,
                          packet.record_type))
        self.assertEqual(ack.payload, b"\x00")
        self.assertIsNot(ack.crc_ok, False)

    @FAST
    @given(SERIAL, PROTOCOL, U16, BYTE)
    def test_ping(self, serial, protocol, sequence, address):
        packet = parse_packet(build_ping(serial, protocol=protocol, sequence=sequence,
                                         device_address=address))
        self.assertEqual(packet.record_type, RecordType.PING)
        self.assertEqual(packet.datalogger_serial, serial)
        self.assertEqual(len(packet.payload), serial_field_size(protocol))
        self.assertEqual(packet.length, serial_field_size(protocol) + 2)

    @FAST
    @given(st.sampled_from(sorted(RecordType)), st.binary(max_size=MAX_LENGTH - 2), PROTOCOL)
    def test_packet(self, record_type, payload, protocol):
        packet = parse_packet(build_packet(record_type, payload, protocol=protocol))
        self.assertEqual(packet.payload, payload)
        self.assertEqual(packet.length, len(payload) + 2)


class PrimitiveProperties(SynchronousTestCase):
    @FAST
    @given(st.binary(max_size=3000))
    def test_crc_implementations_agree(self, data):
        self.assertEqual(crc16_python(data), crc16(data))
        self.assertEqual(crc16_python(bytearray(data)), crc16(memoryview(data)))

    def test_crc_check_value(self):
        self.assertEqual(crc16(b"123456789"), 0x4B37)
        self.assertEqual(crc16_python(b"123456789"), 0x4B37)
        self.assertEqual(crc16_python(b""), 0xFFFF)

    def test_crc_unaligned_view(self):
        """
        The word-table CRC on a view starting at an odd offset.
        """
        data = bytes(range(256)) * 3
        for start in range(4):
            self.assertEqual(crc16_python(memoryview(data)[start:]), crc16(data[start:]))

    @FAST
    @given(st.binary(max_size=2000))
    def test_scramble(self, body):
        key = b"Growatt"
        self.assertEqual(scramble(body), bytes(b ^ key[i % 7] for i, b in enumerate(body)))
        self.assertEqual(scramble(scramble(body)), body)
