"""
The register-block walk and its inverse: real vectors, hand-made records
that do not add up, and hypothesis round trips.
"""

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from grott.codec import PacketError, RecordType, parse_packet
from grott.registers import (
    Block,
    BlockError,
    build_register_record,
    encode_register_record,
    encode_timestamp,
    parse_timestamp,
    walk,
)
from tests.vectors import VECTORS, raw

REGISTER_VECTORS = [v for v in VECTORS if "register_blocks" in v["expected"]]

_serials = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=10)
_timestamps = st.one_of(st.none(), st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                                                max_value=datetime.datetime(2255, 12, 31)))


@st.composite
def _blocks(draw, max_blocks=4, max_words=120):
    count = draw(st.integers(0, max_blocks))
    blocks = []
    for _ in range(count):
        size = draw(st.integers(1, max_words))
        start = draw(st.integers(0, 0x10000 - size))
        values = draw(st.lists(st.integers(0, 0xFFFF), min_size=size, max_size=size))
        blocks.append(Block(start, start + size - 1, values))
    return blocks


class VectorWalkTests(SynchronousTestCase):
    def test_every_register_vector(self):
        """
        Serials, timestamp, block count and every block of the real records
        come out as the reference decoder found them.
        """
        self.assertEqual(len(REGISTER_VECTORS), 15)
        for vector in REGISTER_VECTORS:
            expected = vector["expected"]
            packet = parse_packet(raw(vector["id"]))
            body = walk(packet.payload, packet.protocol)
            self.assertEqual(body.datalogger_serial, expected["datalogger_serial"], vector["id"])
            self.assertEqual(body.inverter_serial, expected["inverter_serial"], vector["id"])
            self.assertEqual(body.timestamp, expected["timestamp"], vector["id"])
            self.assertEqual(body.timestamp_raw, expected["timestamp_raw_hex"], vector["id"])
            self.assertEqual(body.block_count, expected["block_count_byte"], vector["id"])
            self.assertIsNone(body.warning, vector["id"])
            self.assertEqual([b.as_dict() for b in body.blocks], expected["register_blocks"],
                             vector["id"])

    def test_reencode_is_byte_exact(self):
        """
        Encoding what the walk found rebuilds the original packet exactly
        (header, scrambling and CRC included).
        """
        for vector in REGISTER_VECTORS:
            original = raw(vector["id"])
            packet = parse_packet(original)
            body = walk(packet.payload, packet.protocol)
            rebuilt = build_register_record(
                packet.record_type, body.datalogger_serial, body.inverter_serial, body.blocks,
                protocol=packet.protocol, timestamp=bytes.fromhex(body.timestamp_raw),
                sequence=packet.sequence, device_address=packet.device_address)
            self.assertEqual(rebuilt, original, vector["id"])


class TimestampTests(SynchronousTestCase):
    def test_valid(self):
        self.assertEqual(parse_timestamp(bytes((20, 3, 24, 10, 20, 11))), "2020-03-24T10:20:11")

    def test_zero_and_garbage(self):
        self.assertIsNone(parse_timestamp(bytes(6)))
        self.assertIsNone(parse_timestamp(bytes.fromhex("210000274d4d")))
        self.assertIsNone(parse_timestamp(bytes((21, 2, 30, 0, 0, 0))))
        self.assertIsNone(parse_timestamp(bytes((21, 1, 1, 24, 0, 0))))

    def test_future_years_are_dates(self):
        """Clocks decades ahead are reported as they are; callers judge them."""
        self.assertEqual(parse_timestamp(bytes((51, 1, 2, 3, 4, 5))), "2051-01-02T03:04:05")

    def test_encode_forms(self):
        expected = bytes((21, 2, 9, 12, 14, 10))
        self.assertEqual(encode_timestamp("2021-02-09T12:14:10"), expected)
        self.assertEqual(encode_timestamp(datetime.datetime(2021, 2, 9, 12, 14, 10)), expected)
        self.assertEqual(encode_timestamp(expected), expected)
        self.assertEqual(encode_timestamp(None), bytes(6))
        self.assertRaises(BlockError, encode_timestamp, "yesterday")
        self.assertRaises(BlockError, encode_timestamp, datetime.datetime(1999, 1, 1))
        self.assertRaises(BlockError, encode_timestamp, b"\x01")


def _payload(blocks, protocol=6, **kw):
    return encode_register_record("JPC281833B", "QMB2823261", blocks, protocol=protocol, **kw)


class BadRecordTests(SynchronousTestCase):
    def assertBlockError(self, payload, *fragments, protocol=6):
        error = self.assertRaises(BlockError, walk, payload, protocol)
        self.assertIsInstance(error, PacketError)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def test_short_body(self):
        self.assertBlockError(_payload([])[:60], "ends before the block count byte",
                              "packet offset 74")

    def test_short_body_protocol_5(self):
        self.assertBlockError(_payload([], protocol=5)[:20], "packet offset 34", protocol=5)

    def test_block_runs_past_body(self):
        payload = _payload([(0, range(45))])[:-2]
        self.assertBlockError(payload, "block 1 at packet offset 75", "registers 0..44",
                              "needs 90 bytes", "only 88 remain")

    def test_stray_bytes(self):
        payload = _payload([(0, range(45))]) + b"\x00\x01"
        self.assertBlockError(payload, "2 stray bytes at packet offset 169", "block 2")

    def test_last_below_first(self):
        payload = bytearray(_payload([(10, range(5))]))
        payload[69:71] = (3).to_bytes(2, "big")
        self.assertBlockError(bytes(payload), "last register 3 is below first register 10")

    def test_not_text_serial(self):
        payload = b"\x9c\x01" + _payload([(0, [1])])[2:]
        self.assertBlockError(payload, "datalogger serial at packet offset 8", "not ASCII")

    def test_inverter_serial_not_text(self):
        payload = bytearray(_payload([(0, [1])]))
        payload[30] = 0x07
        self.assertBlockError(bytes(payload), "inverter serial at packet offset 38")

    def test_empty_datalogger_serial(self):
        payload = bytes(30) + _payload([(0, [1])])[30:]
        self.assertBlockError(payload, "datalogger serial", "empty")

    def test_count_mismatch_is_a_warning(self):
        """
        Blocks that consume the body exactly are accepted whatever the count
        byte says; the record carries the disagreement.
        """
        payload = _payload([(0, range(45)), (45, range(45))], block_count=3)
        body = walk(payload, 6)
        self.assertEqual(len(body.blocks), 2)
        self.assertEqual(body.block_count, 3)
        self.assertEqual(body.warning, "block count byte says 3, the body holds 2 blocks")

    def test_encoder_rejects_nonsense(self):
        self.assertRaises(BlockError, _payload, [Block(0, 3, [1, 2])])
        self.assertRaises(BlockError, _payload, [(0, [0x10000])])
        self.assertRaises(BlockError, _payload, [(0, [])])
        self.assertRaises(BlockError, _payload, [(0xFFFF, [1, 2])])
        self.assertRaises(BlockError, build_register_record, RecordType.PING, "A", "B", [],
                          protocol=6)

    def test_block_is_immutable(self):
        block = Block(0, 1, [1, 2])
        self.assertRaises(AttributeError, setattr, block, "start", 5)
        self.assertEqual(block, Block(0, 1, (1, 2)))
        self.assertEqual(hash(block), hash(Block(0, 1, (1, 2))))


class PropertyTests(SynchronousTestCase):
    @settings(deadline=None, max_examples=80)
    @given(st.sampled_from([2, 5, 6]), _serials, _serials, _timestamps, _blocks())
    def test_encode_walk_round_trip(self, protocol, logger, inverter, stamp, blocks):
        payload = encode_register_record(logger, inverter, blocks, protocol=protocol,
                                         timestamp=stamp)
        body = walk(payload, protocol)
        self.assertEqual(body.datalogger_serial, logger)
        self.assertEqual(body.inverter_serial, inverter)
        self.assertEqual(body.timestamp, stamp.replace(microsecond=0).isoformat() if stamp else None)
        self.assertEqual(list(body.blocks), blocks)
        self.assertEqual(body.block_count, len(blocks))
        self.assertIsNone(body.warning)

    @settings(deadline=None, max_examples=80)
    @given(st.sampled_from([2, 5, 6]), _blocks(max_blocks=3, max_words=60).filter(bool),
           st.data())
    def test_truncated_records_are_rejected(self, protocol, blocks, data):
        """
        Cutting the body anywhere inside the blocks is an error, except at a
        block boundary, where the shorter walk is accepted with a warning.
        """
        payload = encode_register_record("A1", "B2", blocks, protocol=protocol)
        head = len(payload) - sum(4 + 2 * len(b.values) for b in blocks)
        boundaries = set()
        position = head
        for block in blocks:
            boundaries.add(position)
            position += 4 + 2 * len(block.values)
        cut = data.draw(st.integers(head, len(payload) - 1))
        if cut in boundaries:
            body = walk(payload[:cut], protocol)
            self.assertLess(len(body.blocks), len(blocks))
            self.assertIsNotNone(body.warning)
        else:
            self.assertRaises(BlockError, walk, payload[:cut], protocol)

    @settings(deadline=None, max_examples=80)
    @given(st.sampled_from([2, 5, 6]), _blocks(max_blocks=3, max_words=60),
           st.binary(min_size=1, max_size=3))
    def test_trailing_bytes_are_rejected(self, protocol, blocks, extra):
        payload = encode_register_record("A1", "B2", blocks, protocol=protocol)
        self.assertRaises(BlockError, walk, payload + extra, protocol)

    @settings(deadline=None, max_examples=80)
    @given(st.sampled_from([2, 5, 6]), _blocks(max_blocks=3, max_words=60).filter(bool),
           st.integers(1, 300))
    def test_last_block_claiming_more_is_rejected(self, protocol, blocks, more):
        payload = bytearray(encode_register_record("A1", "B2", blocks, protocol=protocol))
        last = blocks[-1]
        if last.end + more > 0xFFFF:
            more = -(last.end - last.start + 1)   # below first instead
        at = len(payload) - 2 * len(last.values) - 2
        payload[at:at + 2] = (last.end + more).to_bytes(2, "big")
        self.assertRaises(BlockError, walk, bytes(payload), protocol)

    @settings(deadline=None, max_examples=150)
    @given(st.sampled_from([2, 5, 6]), st.binary(max_size=700))
    def test_garbage_raises_only_block_errors(self, protocol, payload):
        """
        Any bytes either walk into blocks that consume the body exactly or
        raise BlockError; nothing else escapes.
        """
        try:
            body = walk(payload, protocol)
        except BlockError:
            return
        head = 2 * (30 if protocol == 6 else 10) + 7
        consumed = sum(4 + 2 * len(b.values) for b in body.blocks)
        self.assertEqual(head + consumed, len(payload))
