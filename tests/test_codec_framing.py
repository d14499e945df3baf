"""
The framer and the packet parser on hand-made streams: splits, coalesced
packets, bad CRCs, garbage and absurd headers, one case at a time (the
randomised versions live in test_codec_properties).
"""

from twisted.trial.unittest import SynchronousTestCase

from grott.codec import (
    MAX_LENGTH,
    CodecError,
    Framer,
    FramingError,
    Garbage,
    Packet,
    PacketError,
    build_packet,
    frame_all,
    parse_one,
    parse_packet,
)
from grott.codec.packet import packet_size
from tests.vectors import raw

BIG = raw("grott-p6-0104-min-xdavidx93-a")
PING = raw("grott-p6-0116-ping")
PLAIN = raw("grott-p2-0104-classic-ghust")
QUERY = raw("grott-p6-0119-query")
#: The largest packet the framer ever has to hold.
MAX_PACKET = packet_size(6, MAX_LENGTH)


def _bad_crc(packet):
    return packet[:-2] + bytes((packet[-2] ^ 0xFF, packet[-1]))


def _feed_all(framer, chunks):
    items = []
    for chunk in chunks:
        items.extend(framer.feed(chunk))
    return items


class SplittingTests(SynchronousTestCase):
    def test_one_byte_at_a_time(self):
        """
        Fed a byte at a time, each packet appears once, whole, on the feed
        that completes it; nothing comes out before.
        """
        stream = PING + BIG + PLAIN + QUERY
        ends = {len(PING), len(PING + BIG), len(PING + BIG + PLAIN), len(stream)}
        framer = Framer()
        seen = []
        for i in range(len(stream)):
            items = framer.feed(stream[i:i + 1])
            if i + 1 in ends:
                self.assertEqual(len(items), 1)
                self.assertIsInstance(items[0], Packet)
            else:
                self.assertEqual(items, [])
            seen.extend(items)
        self.assertEqual([p.raw for p in seen], [PING, BIG, PLAIN, QUERY])
        self.assertEqual(framer.pending, b"")

    def test_several_in_one_chunk(self):
        items = Framer().feed(PING + QUERY + PING + PLAIN)
        self.assertEqual([i.raw for i in items], [PING, QUERY, PING, PLAIN])

    def test_split_anywhere(self):
        """
        Two packets cut into two chunks at every possible place.
        """
        stream = PING + PLAIN
        for cut in range(len(stream) + 1):
            with self.subTest(cut=cut):
                framer = Framer()
                items = _feed_all(framer, [stream[:cut], stream[cut:]])
                self.assertEqual([i.raw for i in items], [PING, PLAIN])
                self.assertEqual(framer.pending, b"")

    def test_pending(self):
        """
        An incomplete packet stays pending until the rest arrives, and can
        be flushed at the end of a stream.
        """
        framer = Framer()
        self.assertEqual(framer.feed(BIG[:100]), [])
        self.assertEqual(framer.pending, BIG[:100])
        self.assertEqual(framer.flush(), BIG[:100])
        self.assertEqual(framer.pending, b"")
        self.assertEqual(framer.feed(PING), [parse_packet(PING)])

    def test_empty_feed(self):
        framer = Framer()
        self.assertEqual(framer.feed(b""), [])
        framer.feed(PING[:3])
        self.assertEqual(framer.feed(b""), [])
        self.assertEqual(framer.pending, PING[:3])

    def test_bytes_like(self):
        """
        bytearray and memoryview chunks (what transports may hand over)
        frame the same.
        """
        framer = Framer()
        items = framer.feed(bytearray(PING[:10])) + framer.feed(memoryview(PING[10:]))
        self.assertEqual(items, [parse_packet(PING)])
        self.assertIsInstance(items[0].raw, bytes)

    def test_counters(self):
        framer = Framer()
        framer.feed(PING + b"\xff\xff\xff" + QUERY)
        self.assertEqual((framer.packets, framer.garbage_bytes), (2, 3))


class CrcTests(SynchronousTestCase):
    def test_bad_crc_in_step_is_framed(self):
        """
        The CRC is advisory while in step: the packet comes out, marked.
        """
        bad = _bad_crc(PING)
        items = Framer().feed(PING + bad + QUERY)
        self.assertEqual([i.raw for i in items], [PING, bad, QUERY])
        self.assertEqual([i.crc_ok for i in items], [True, False, True])
        self.assertIsNone(parse_packet(PLAIN).crc_ok)

    def test_bad_crc_first_packet(self):
        items = Framer().feed(_bad_crc(BIG))
        self.assertEqual(len(items), 1)
        self.assertIs(items[0].crc_ok, False)
        self.assertEqual(items[0].payload, parse_packet(BIG).payload)

    def test_bad_crc_after_garbage_is_garbage(self):
        """
        Right after garbage a protocol-6 candidate must prove itself by its
        CRC; one that does not is garbage too, and the next good packet is
        found.
        """
        bad = _bad_crc(PING)
        items = Framer().feed(b"\xfe\xfe\xfe" + bad + QUERY)
        self.assertEqual([type(i) for i in items], [Garbage, Garbage, Packet])
        self.assertEqual(items[1].reason, "candidate header after garbage failed its CRC")
        self.assertEqual(items[0].data + items[1].data, b"\xfe\xfe\xfe" + bad)
        self.assertEqual(items[2].raw, QUERY)


class GarbageTests(SynchronousTestCase):
    def test_garbage_between_packets(self):
        junk = b"hello, not a packet"
        items = Framer().feed(PING + junk + BIG)
        self.assertEqual([type(i) for i in items], [Packet, Garbage, Packet])
        self.assertEqual(items[1].data, junk)
        self.assertEqual(items[1].raw, junk)
        self.assertIn("protocol", items[1].reason)
        self.assertEqual(items[2].raw, BIG)

    def test_garbage_first(self):
        items = Framer().feed(b"\x01\x02\x03\x04\x05\x06\x07" + PING)
        self.assertEqual([type(i) for i in items], [Garbage, Packet])
        self.assertEqual(items[0].data, b"\x01\x02\x03\x04\x05\x06\x07")

    def test_garbage_split_across_feeds(self):
        """
        Garbage arriving in pieces is reported in pieces, and every byte of
        it exactly once.
        """
        junk = bytes(range(0x80, 0xC0))
        framer = Framer()
        items = _feed_all(framer, [PING, junk[:20], junk[20:], QUERY])
        garbage = b"".join(i.data for i in items if isinstance(i, Garbage))
        self.assertEqual(garbage, junk)
        self.assertEqual([i.raw for i in items if isinstance(i, Packet)], [PING, QUERY])

    def test_unknown_protocol(self):
        clone = b"\x00\x01\x00\x07\x00\x04\x01\x04\x00\x00"
        items = Framer().feed(clone)
        self.assertIsInstance(items[0], Garbage)
        self.assertIn("0x0007", items[0].reason)

    def test_resync_with_small_chunks(self):
        """
        A packet split into tiny pieces after garbage still comes out.
        """
        framer = Framer()
        stream = b"\xaa" * 9 + PING + QUERY
        items = _feed_all(framer, [stream[i:i + 3] for i in range(0, len(stream), 3)])
        self.assertEqual([i.raw for i in items if isinstance(i, Packet)], [PING, QUERY])
        self.assertEqual(b"".join(i.raw for i in items), stream)


class BoundTests(SynchronousTestCase):
    """
    A length field beyond the protocol's maximum is an error at once, not a
    64 KiB wait.
    """

    def test_absurd_length(self):
        for protocol in (2, 5, 6):
            for length in (0, 1, MAX_LENGTH + 1, 0xFFFF):
                with self.subTest(protocol=protocol, length=length):
                    header = bytes((0, 1, 0, protocol)) + length.to_bytes(2, "big") + b"\x01\x04"
                    framer = Framer()
                    items = framer.feed(header)
                    self.assertIsInstance(items[0], Garbage)
                    self.assertIn(str(length), items[0].reason)
                    self.assertLess(len(framer.pending), 6)
                    # and the stream resynchronises on the next real packet
                    later = framer.feed(PING)
                    self.assertEqual([i.raw for i in later if isinstance(i, Packet)], [PING])

    def test_maximum_length_waits(self):
        """
        The largest legal length is awaited; the buffer never holds more
        than one maximum-size packet.
        """
        framer = Framer()
        header = b"\x00\x01\x00\x06" + MAX_LENGTH.to_bytes(2, "big") + b"\x01\x04"
        self.assertEqual(framer.feed(header + bytes(MAX_PACKET - 9)), [])
        self.assertEqual(len(framer.pending), MAX_PACKET - 1)
        items = framer.feed(b"\x00" + PING)
        self.assertEqual(len(items[0].raw), MAX_PACKET)
        self.assertIs(items[0].crc_ok, False)
        self.assertEqual(items[1].raw, PING)

    def test_smaller_maximum(self):
        framer = Framer(max_length=100)
        items = framer.feed(BIG + PING)
        self.assertIsInstance(items[0], Garbage)
        self.assertIn("100", items[0].reason)
        self.assertEqual(items[-1].raw, PING)


class WholeInputTests(SynchronousTestCase):
    def test_frame_all(self):
        items = frame_all(PING + QUERY[:20])
        self.assertEqual(items[0].raw, PING)
        self.assertIsInstance(items[1], Garbage)
        self.assertEqual(items[1].data, QUERY[:20])
        self.assertIn("incomplete", items[1].reason)

    def test_parse_one(self):
        self.assertEqual(parse_one(QUERY), parse_packet(QUERY))
        error = self.assertRaises(FramingError, parse_one, QUERY + PING)
        self.assertIn("more than one", str(error))
        self.assertRaises(FramingError, parse_one, QUERY[:-1])
        self.assertRaises(FramingError, parse_one, b"\xff" + QUERY)


class ParsePacketTests(SynchronousTestCase):
    """
    Errors say what is wrong and with which numbers.
    """

    def test_short(self):
        error = self.assertRaises(PacketError, parse_packet, b"\x00\x01\x00")
        self.assertIn("3 bytes", str(error))

    def test_unknown_protocol(self):
        error = self.assertRaises(FramingError, parse_packet, b"\x00\x01\x00\x09\x00\x02\x01\x04")
        self.assertIn("0x0009", str(error))

    def test_length_mismatch(self):
        error = self.assertRaises(PacketError, parse_packet, PING + b"\x00")
        self.assertIn("41", str(error))
        self.assertIn("40", str(error))
        self.assertRaises(PacketError, parse_packet, PING[:-1])

    def test_length_out_of_range(self):
        error = self.assertRaises(FramingError, parse_packet,
                                  b"\x00\x01\x00\x06\xff\xff\x01\x04" + bytes(100))
        self.assertIn("65535", str(error))

    def test_errors_are_codec_errors(self):
        self.assertTrue(issubclass(FramingError, CodecError))
        self.assertTrue(issubclass(PacketError, CodecError))
        self.assertTrue(issubclass(CodecError, ValueError))

    def test_unknown_record_type(self):
        """
        Unknown record types are framed and relayed; the type stays an int.
        """
        packet = parse_packet(build_packet(0x29, b"ABCDEFGHIJ", protocol=6))
        self.assertEqual(packet.record_type, 0x29)
        self.assertEqual(packet.record_name, "unknown_0x29")
        self.assertEqual(packet.as_dict()["record_name"], "unknown_0x29")

    def test_non_ascii_serial(self):
        """
        Encrypted new-firmware bodies have no readable serial: None, not
        mojibake.
        """
        packet = parse_packet(build_packet(0x04, b"\x81\x92" * 40, protocol=6))
        self.assertIsNone(packet.datalogger_serial)
        self.assertIsNone(packet.inverter_serial)
