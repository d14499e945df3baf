"""
The codec against real packets (tests/data/vectors.json) and the computed
frames of protocol.md section 8: every header field, CRC verdict and serial
as captured, every server-side frame rebuilt byte for byte.
"""

from twisted.trial.unittest import SynchronousTestCase

from grott.codec import (
    FROM_DATALOGGER,
    TO_DATALOGGER,
    ConfigGetReply,
    ConfigGetRequest,
    ConfigSetRequest,
    Framer,
    Garbage,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteMultiRequest,
    InverterWriteReply,
    InverterWriteRequest,
    Packet,
    RecordType,
    build,
    build_ack,
    build_packet,
    build_ping,
    crc16,
    parse_body,
    parse_packet,
    unscramble,
)
from grott.codec.crc import crc16_python
from tests.vectors import BY_ID, VECTORS, raw

#: What each command vector must parse to (values from the vector's "expected").
COMMAND_VECTORS = {
    "jonasmh-p6-0105-resp-reg8": InverterReadReply(8, 8, (3600,)),
    "jonasmh-p6-0106-resp-spf": InverterWriteReply(register=1, status=0, value=0),
    "jonasmh-p6-0106-cmd-spf": InverterWriteRequest(register=1, value=0),
    "grott-p6-0119-query": ConfigGetRequest(4, 21),
    "stefa-p6-0119-resp-reg21": ConfigGetReply(21, b"1.0.5.9"),
}

#: protocol.md 8.3-8.6, computed (not captured) frames: hex, message, protocol.
COMPUTED = {
    "8.3 read register 15, protocol 6": (
        "00010006002401050d222c4559454c74412d7761747447726f7761747447726f7761747447726f78617b9368",
        InverterReadRequest(15, 15), 6),
    "8.3 read register 15, protocol 5": (
        "00010005001001050d222c4559454c74412d776e747bcf7c",
        InverterReadRequest(15, 15), 5),
    # "Protocol 5/2: identical but the SF is the bare 10-character serial":
    # protocol 2 is neither scrambled nor CRC-protected.
    "8.3 read register 15, protocol 2": (
        "00010002001001054a504332383138333342000f000f",
        InverterReadRequest(15, 15), 2),
    "8.4 write register 1 := 0 (SPF)": (
        "00010006002401060a252847233c4377415f7761747447726f7761747447726f7761747447726f766174c399",
        InverterWriteRequest(1, 0), 6),
    "8.5 get registers 4..21": (
        "00010006002401190d222c4559454c74412d7761747447726f7761747447726f7761747447726f7361615995",
        ConfigGetRequest(4, 21), 6),
    "8.5 set the clock": (
        "00010006003701180d222c4559454c74412d7761747447726f7761747447726f7761747447726f6861674677405e5a514659774b4f46534e4572485f4723f8",
        ConfigSetRequest(31, b"2021-02-09 12:15:00"), 6),
    "8.6 multiple write 1100..1102": (
        "00010006002a01100d222c4559454c74412d7761747447726f7761747447726f7761747447726b3b653a7c47626f776079e0",
        InverterWriteMultiRequest(1100, (0x0800, 0x1000, 1)), 6),
}

COMPUTED_SERIALS = {
    "8.4 write register 1 := 0 (SPF)": "MWG0BH7030",
}


def _packet(vector):
    return parse_packet(bytes.fromhex(vector["hex"]))


class EveryVectorTests(SynchronousTestCase):
    """
    Checks that hold for each vector; one test method per check, each
    naming the vector that fails.
    """

    def test_header_fields(self):
        for vector in VECTORS:
            with self.subTest(vector=vector["id"]):
                packet = _packet(vector)
                self.assertEqual(
                    (packet.sequence, packet.protocol, packet.length,
                     packet.device_address, packet.record_type, len(packet.raw)),
                    (vector["sequence"], vector["protocol"], vector["length_field"],
                     vector["device_address"], vector["record_type"], vector["total_bytes"]))
                self.assertEqual(packet.raw, bytes.fromhex(vector["hex"]))
                self.assertIsInstance(packet.record_type, RecordType)

    def test_crc(self):
        for vector in VECTORS:
            with self.subTest(vector=vector["id"]):
                packet = _packet(vector)
                self.assertIs(packet.crc_ok, vector["crc_ok"])
                if vector["crc_present"]:
                    self.assertEqual(packet.crc, int.from_bytes(packet.raw[-2:], "big"))
                    self.assertEqual(crc16(packet.raw[:-2]), packet.crc)
                    self.assertEqual(crc16_python(packet.raw[:-2]), packet.crc)
                else:
                    self.assertIsNone(packet.crc)

    def test_serials(self):
        for vector in VECTORS:
            expected = vector["expected"]
            if "datalogger_serial" not in expected:
                continue
            with self.subTest(vector=vector["id"]):
                packet = _packet(vector)
                self.assertEqual(packet.datalogger_serial, expected["datalogger_serial"])
                self.assertEqual(packet.inverter_serial, expected.get("inverter_serial"))

    def test_protocol_6_padding(self):
        """
        Protocol 6 pads every serial field with 20 zero bytes.
        """
        for vector in VECTORS:
            if vector["protocol"] != 6 or "datalogger_serial" not in vector["expected"]:
                continue
            with self.subTest(vector=vector["id"]):
                payload = _packet(vector).payload
                self.assertEqual(payload[10:30], bytes(20))

    def test_framed_alone(self):
        """
        The framer gives back each vector as the one packet it is.
        """
        for vector in VECTORS:
            with self.subTest(vector=vector["id"]):
                data = bytes.fromhex(vector["hex"])
                framer = Framer()
                items = framer.feed(data)
                self.assertEqual(items, [parse_packet(data)])
                self.assertIsInstance(items[0], Packet)
                self.assertEqual(framer.pending, b"")

    def test_reencode(self):
        """
        Rebuilding a packet from its header fields and unscrambled payload
        gives back the captured bytes.
        """
        for vector in VECTORS:
            with self.subTest(vector=vector["id"]):
                packet = _packet(vector)
                rebuilt = build_packet(packet.record_type, packet.payload,
                                       protocol=packet.protocol, sequence=packet.sequence,
                                       device_address=packet.device_address)
                self.assertEqual(rebuilt.hex(), vector["hex"])

    def test_acks(self):
        acked = [v for v in VECTORS if "server_ack_hex" in v["expected"]]
        self.assertGreaterEqual(len(acked), 15)
        for vector in acked:
            with self.subTest(vector=vector["id"]):
                packet = _packet(vector)
                self.assertEqual(build_ack(packet).hex(), vector["expected"]["server_ack_hex"])


class SpecialVectorTests(SynchronousTestCase):
    def test_real_ack(self):
        """
        The captured ack has the one-byte zero body, and the ack rule (copy
        sequence, protocol, address and type) reproduces it.
        """
        packet = parse_packet(raw("grott-p6-ack-0104"))
        self.assertEqual(packet.payload, b"\x00")
        self.assertEqual(packet.raw[8], 0x47)
        self.assertEqual(packet.record_type, RecordType.DATA)
        self.assertEqual(build_ack(packet), packet.raw)

    def test_ack_protocol_2(self):
        """
        A protocol-2 ack is 9 bytes: no scrambling, no CRC (protocol.md 8.1).
        """
        packet = parse_packet(raw("grott-p2-0404-gitborter-a"))
        self.assertEqual(build_ack(packet), bytes.fromhex("000100020003040400"))

    def test_ping_reply(self):
        """
        The server echoes a ping; build_ping makes the identical bytes.
        """
        vector = BY_ID["grott-p6-0116-ping"]
        packet = _packet(vector)
        self.assertEqual(packet.record_type, RecordType.PING)
        reply = build_ping(packet.datalogger_serial, protocol=packet.protocol,
                           sequence=packet.sequence, device_address=packet.device_address)
        self.assertEqual(reply.hex(), vector["expected"]["server_reply_hex"])
        self.assertEqual(reply, packet.raw)
        self.assertEqual(packet.payload[10:].hex(), vector["expected"]["body_after_serial_hex"])

    def test_crc_examples(self):
        """
        protocol.md 3: the check value, and the ping's CRC over 38 bytes.
        """
        self.assertEqual(crc16(b"123456789"), 0x4B37)
        self.assertEqual(crc16_python(b"123456789"), 0x4B37)
        ping = raw("grott-p6-0116-ping")
        self.assertEqual(crc16(ping[:38]), 0x0864)
        self.assertEqual(ping[-2:], b"\x08\x64")

    def test_scramble_example(self):
        """
        protocol.md 4: the ping's wire bytes 8..17 unscramble to the serial.
        """
        ping = raw("grott-p6-0116-ping")
        self.assertEqual(ping[8:18].hex(), "0d222c4559454c74412d")
        self.assertEqual(unscramble(ping[8:18]), b"JPC281833B")
        # Padding comes out as the key itself.
        self.assertEqual(ping[18:25], b"wattGro")

    def test_record_types_named(self):
        names = {v["record_type"] for v in VECTORS}
        for value in names:
            self.assertIsInstance(RecordType(value), RecordType)
        self.assertEqual(RecordType.BUFFERED_DATA, 0x50)
        self.assertEqual(RecordType.CONFIG_GET, 0x19)

    def test_stream_of_all_vectors(self):
        """
        All vectors back to back, as one stream, frame to the same packets.
        """
        data = b"".join(raw(v["id"]) for v in VECTORS)
        framer = Framer()
        items = framer.feed(data)
        self.assertFalse([i for i in items if isinstance(i, Garbage)])
        self.assertEqual([i.raw for i in items], [raw(v["id"]) for v in VECTORS])
        self.assertEqual(framer.pending, b"")


class CommandVectorTests(SynchronousTestCase):
    def test_parse(self):
        for vector_id, message in COMMAND_VECTORS.items():
            with self.subTest(vector=vector_id):
                vector = BY_ID[vector_id]
                packet = _packet(vector)
                self.assertEqual(parse_body(packet, vector["direction"]), message)
                self.assertEqual(message.direction, vector["direction"])

    def test_expected_fields(self):
        """
        The parsed messages agree with the vectors' own decoded fields.
        """
        reply = parse_body(_packet(BY_ID["stefa-p6-0119-resp-reg21"]), FROM_DATALOGGER)
        self.assertEqual(reply.text, BY_ID["stefa-p6-0119-resp-reg21"]["expected"]["value"])
        self.assertEqual(len(reply.value), 7)
        read = parse_body(_packet(BY_ID["jonasmh-p6-0105-resp-reg8"]), FROM_DATALOGGER)
        expected = BY_ID["jonasmh-p6-0105-resp-reg8"]["expected"]
        self.assertEqual((read.first, read.last, list(read.values)),
                         (expected["first_register"], expected["last_register"], expected["values"]))
        query = parse_body(_packet(BY_ID["grott-p6-0119-query"]), TO_DATALOGGER)
        expected = BY_ID["grott-p6-0119-query"]["expected"]
        self.assertEqual((query.first, query.last),
                         (expected["first_register"], expected["last_register"]))

    def test_rebuild(self):
        for vector_id, message in COMMAND_VECTORS.items():
            with self.subTest(vector=vector_id):
                vector = BY_ID[vector_id]
                packet = _packet(vector)
                rebuilt = build(message, vector["expected"]["datalogger_serial"],
                                protocol=packet.protocol, sequence=packet.sequence,
                                device_address=packet.device_address)
                self.assertEqual(rebuilt.hex(), vector["hex"])

    def test_wrong_direction(self):
        """
        A request read as a reply (or the reverse) is a PacketError, not a
        misread.
        """
        from grott.codec import PacketError
        packet = _packet(BY_ID["jonasmh-p6-0106-resp-spf"])
        self.assertRaises(PacketError, parse_body, packet, TO_DATALOGGER)
        ping = _packet(BY_ID["grott-p6-0116-ping"])
        error = self.assertRaises(PacketError, parse_body, ping, TO_DATALOGGER)
        self.assertIn("0x16", str(error))


class ComputedExampleTests(SynchronousTestCase):
    """
    protocol.md 8.3-8.6: frames built by the documented rule.
    """

    def test_build(self):
        for name, (wire, message, protocol) in COMPUTED.items():
            with self.subTest(example=name):
                serial = COMPUTED_SERIALS.get(name, "JPC281833B")
                self.assertEqual(build(message, serial, protocol=protocol).hex(), wire)

    def test_parse_back(self):
        for name, (wire, message, protocol) in COMPUTED.items():
            with self.subTest(example=name):
                packet = parse_packet(bytes.fromhex(wire))
                self.assertEqual(packet.protocol, protocol)
                self.assertIsNot(packet.crc_ok, False)
                self.assertEqual(parse_body(packet, TO_DATALOGGER), message)
