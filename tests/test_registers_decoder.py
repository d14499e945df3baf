"""
The Decoder: real vectors to named values, announces to identification,
family detection and overrides, the DTC filter, configured registers, and
properties of scaling, widths and signs.
"""

import json
import operator
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from grott.codec import CodecError, RecordType, build_packet, parse_packet
from grott.registers import FAMILIES, TEXTS, Decoder, Record, build_register_record
from tests.vectors import BY_ID, VECTORS, raw

DATA_VECTORS = [v for v in VECTORS if "values" in v["expected"]
                and "register_blocks" in v["expected"]]
ANNOUNCE_VECTORS = [v for v in VECTORS if "holding_registers_decoded" in v["expected"]]


def _record(blocks, record_type=RecordType.DATA, protocol=6, logger="LOG0000001",
            inverter="INV0000001", **kw):
    return parse_packet(build_register_record(record_type, logger, inverter, blocks,
                                              protocol=protocol, **kw))


class VectorTests(SynchronousTestCase):
    def setUp(self):
        self.decoder = Decoder()

    def test_data_vectors(self):
        """
        Every value the reference decoders found in the real data records,
        under Grott's names, with the same unit.
        """
        self.assertEqual(len(DATA_VECTORS), 13)
        for vector in DATA_VECTORS:
            expected = vector["expected"]
            record = self.decoder.decode(parse_packet(raw(vector["id"])))
            where = vector["id"]
            self.assertIsInstance(record, Record)
            for name, want in expected["values"].items():
                self.assertIn(name, record.values, where)
                got = record.values[name]
                if want["divide"] == 1:
                    self.assertEqual(got, want["value"], f"{where} {name}")
                else:
                    # the reference rounds to 4 decimals (totworktime / 7200)
                    self.assertAlmostEqual(got, want["value"], places=4, msg=f"{where} {name}")
                    self.assertEqual(got, want["raw"] / want["divide"], f"{where} {name}")
                self.assertEqual(record.units[name], want["unit"], f"{where} {name}")
            self.assertEqual(record.datalogger_serial, expected["datalogger_serial"], where)
            self.assertEqual(record.inverter_serial, expected["inverter_serial"], where)
            self.assertEqual(record.timestamp, expected["timestamp"], where)
            self.assertEqual(record.timestamp_raw, expected["timestamp_raw_hex"], where)
            self.assertEqual(record.buffered, expected["buffered"], where)
            self.assertEqual(record.buffered, vector["record_type"] == 0x50, where)
            self.assertEqual([b.as_dict() for b in record.blocks], expected["register_blocks"])
            self.assertEqual(record.protocol, vector["protocol"])
            self.assertEqual(record.record_type, vector["record_type"])
            self.assertEqual(record.device_address, vector["device_address"])
            self.assertIsNone(record.identification)
            self.assertIsNone(record.warning)

    def test_families_of_vectors(self):
        """The vectors' families are recognised from their blocks alone."""
        names = {"classic-0-89": "classic", "min-tlx": "tlx"}
        for vector in DATA_VECTORS + ANNOUNCE_VECTORS:
            record = self.decoder.decode(parse_packet(raw(vector["id"])))
            self.assertEqual(record.family, names[vector["family"]], vector["id"])

    def test_unknown_registers_are_raw(self):
        record = self.decoder.decode(parse_packet(raw("grott-p6-0104-classic-3blocks-jelte")))
        third = record.blocks[2]
        for offset, value in enumerate(third.values):
            self.assertEqual(record.values[f"reg_{90 + offset}"], value)
        self.assertNotIn("reg_0", record.values)
        self.assertNotIn("reg_1", record.values)    # inside pvpowerin
        self.assertNotIn("reg_90", record.units)

    def test_min_announce(self):
        vector = BY_ID["grott-p5-5103-min-announce"]
        holding = vector["expected"]["holding_registers_decoded"]
        record = self.decoder.decode(parse_packet(raw(vector["id"])))
        ident = record.identification
        self.assertEqual(record.device_type_code, 5100)
        self.assertEqual(ident.dtc, holding["device_type_code_43"])
        self.assertEqual(ident.firmware, holding["firmware_9_11"])
        self.assertEqual(ident.control_firmware, holding["control_firmware_12_14"])
        self.assertEqual(ident.serial, holding["serial_23_27"])
        self.assertEqual(ident.manufacturer, holding["manufacturer_34_41"])
        self.assertEqual(ident.modbus_version, holding["modbus_version_88"])
        self.assertEqual((ident.trackers, ident.phases), (2, 1))
        self.assertEqual(ident.rated_power, 3600.0)
        self.assertEqual(record.values["modbusaddress"], holding["com_address_30"])
        self.assertEqual(record.values["trackerphase"], int(holding["tracker_phase_44_hex"], 16))
        self.assertEqual([record.values[n] for n in ("invyear", "invmonth", "invday", "invhour",
                                                     "invminute", "invsecond")],
                         holding["system_time_45_50"])
        self.assertEqual(record.values["serialnumberlong"], "DDF0A09112" + "0" * 20)
        self.assertFalse(record.buffered)

    def test_classic_announce_has_no_dtc(self):
        """
        Register 43 of the old protocol is not a device type code (134 in
        the capture): no DTC is reported, so no filter or family follows it.
        """
        vector = BY_ID["grott-p6-0103-classic"]
        holding = vector["expected"]["holding_registers_decoded"]
        record = self.decoder.decode(parse_packet(raw(vector["id"])))
        self.assertEqual(record.family, "classic")
        self.assertIsNone(record.device_type_code)
        self.assertIsNone(record.identification.dtc)
        self.assertEqual(record.values["reg_43"], holding["device_type_code_43"])
        self.assertEqual(record.identification.firmware, holding["firmware_9_11"])
        self.assertEqual(record.identification.serial, holding["serial_23_27"])
        self.assertEqual(record.identification.manufacturer, "Growatt Inverter")

    def test_non_register_packets(self):
        for vector in VECTORS:
            if "register_blocks" in vector["expected"]:
                continue
            self.assertIsNone(self.decoder.decode(parse_packet(raw(vector["id"]))), vector["id"])

    def test_as_dict_is_json(self):
        record = self.decoder.decode(parse_packet(raw("grott-p5-5103-min-announce")))
        data = json.loads(json.dumps(record.as_dict()))
        self.assertEqual(data["family"], "tlx")
        self.assertEqual(data["device_type_code"], 5100)
        self.assertEqual(data["blocks"][1]["start"], 3000)
        self.assertEqual(len(data["blocks"][1]["values"]), 125)
        self.assertEqual(data["identification"]["firmware"], "AL1.0")
        self.assertEqual(data["values"]["devicetypecode"], 5100)

    def test_record_is_immutable(self):
        record = self.decoder.decode(parse_packet(raw("grott-p6-0104-classic")))
        self.assertRaises(AttributeError, setattr, record, "family", "spf")
        self.assertRaises(TypeError, operator.setitem, record.values, "pvstatus", 3)
        self.assertRaises(TypeError, operator.setitem, record.units, "pvstatus", "x")
        copy = record.as_dict()
        copy["values"]["pvstatus"] = 3
        self.assertEqual(record.values["pvstatus"], 1)


class DetectionTests(SynchronousTestCase):
    def setUp(self):
        self.decoder = Decoder()

    def family(self, blocks, dtc=None, **kw):
        return self.decoder.decode(_record(blocks, **kw), dtc).family

    def test_ranges(self):
        self.assertEqual(self.family([(0, [0] * 125), (1000, [0] * 125)]), "storage")
        self.assertEqual(self.family([(1000, [0] * 125), (2000, [0] * 125)]), "storage")
        self.assertEqual(self.family([(0, [0] * 125), (125, [0] * 125)]), "tl3x")
        self.assertEqual(self.family([(875, [0] * 125)]), "tl3x")
        self.assertEqual(self.family([(3125, [0] * 125)]), "tlx")

    def test_dtc_when_ranges_do_not_say(self):
        self.assertEqual(self.family([(0, [0] * 125)]), "tl3x")
        self.assertEqual(self.family([(0, [0] * 125)], dtc=3601), "storage")
        self.assertEqual(self.family([(500, [0] * 10)], dtc=5100), "tlx")
        self.assertEqual(self.family([(500, [0] * 10)], dtc=5601), None)

    def test_ranges_beat_dtc(self):
        self.assertEqual(self.family([(3000, [0] * 125)], dtc=3601), "tlx")

    def test_unknown_family_decodes_raw(self):
        record = self.decoder.decode(_record([(500, [7, 8])]))
        self.assertIsNone(record.family)
        self.assertEqual(dict(record.values), {"reg_500": 7, "reg_501": 8})
        self.assertEqual(dict(record.units), {})

    def test_45_register_blocks_classic_or_spf(self):
        """
        The same blocks: a grid frequency in register 13 means classic; a
        zero there and frequencies in 21/23 mean SPF.  A record that cannot
        tell is classic for an inverter never seen, and keeps the family
        decided before for one that was (tests.test_registers_coverage has
        the night-time cases).
        """
        classic = [0] * 135
        classic[13] = 5002
        self.assertEqual(self.family([(0, classic[:45]), (45, classic[45:90])]), "classic")
        spf = [0] * 135
        spf[21] = spf[23] = 5000
        blocks = [(0, spf[:45]), (45, spf[45:90]), (90, spf[90:])]
        self.assertEqual(self.family(blocks), "spf")
        self.assertEqual(self.family([(0, [0] * 45)]), "spf")
        self.assertEqual(self.family([(0, [0] * 45)], inverter="INV0000002"), "classic")

    def test_spa_alternates(self):
        """
        Without 0-124, an SPA's inverter side at 2000.. is published under
        the usual names; with 0-124 present those win and 2000.. stay raw.
        """
        side = [0] * 125
        side[0], side[38], side[35], side[36] = 1, 2301, 0xFFFF, 0xFFF6
        record = self.decoder.decode(_record([(1000, [0] * 125), (2000, side)]))
        self.assertEqual(record.values["pvstatus"], 1)
        self.assertEqual(record.values["pvgridvoltage"], 230.1)
        self.assertEqual(record.values["pvpowerout"], -1.0)
        first = [0] * 125
        first[0] = 6
        record = self.decoder.decode(_record([(0, first), (1000, [0] * 125), (2000, side)]))
        self.assertEqual(record.values["pvstatus"], 6)
        self.assertEqual(record.values["reg_2000"], 1)

    def test_override_by_inverter_serial(self):
        decoder = Decoder(families={"QMB2823261": "SPF"})
        record = decoder.decode(parse_packet(raw("grott-p6-0104-classic")))
        self.assertEqual(record.family, "spf")
        self.assertIn("vpv1", record.values)
        self.assertIn("op_watt", record.values)
        self.assertNotIn("pv1voltage", record.values)

    def test_override_by_datalogger_serial(self):
        decoder = Decoder(families={"NAC49410AF": "max"})
        record = decoder.decode(parse_packet(raw("grott-p5-5104-min-data")))
        self.assertEqual(record.family, "tl3x")
        self.assertNotIn("pvpowerin", record.values)
        self.assertEqual(record.values["reg_3000"], 1)

    def test_inverter_override_beats_datalogger_override(self):
        decoder = Decoder(families={"JPC281833B": "spf", "QMB2823261": "classic"})
        record = decoder.decode(parse_packet(raw("grott-p6-0104-classic")))
        self.assertEqual(record.family, "classic")


class FilterAndUserRegisterTests(SynchronousTestCase):
    def test_dtc_filter(self):
        decoder = Decoder(dtc_filter={5100: [3001, "pvgridvoltage", 3100, 3085, "reg_3200"]})
        packet = parse_packet(raw("grott-p6-0104-min-xdavidx93-a"))
        record = decoder.decode(packet, 5100)
        self.assertEqual(set(record.values),
                         {"pvpowerin", "pvgridvoltage", "ipf", "reg_3085", "reg_3200"})
        self.assertEqual(record.values["pvpowerin"], 4449.7)
        self.assertEqual(record.device_type_code, 5100)
        self.assertEqual(set(record.units), {"pvpowerin", "pvgridvoltage", "ipf"})
        self.assertEqual(len(record.blocks), 2)   # the raw blocks stay whole
        other = decoder.decode(packet, 5200)
        self.assertGreater(len(other.values), 150)
        self.assertGreater(len(decoder.decode(packet).values), 150)

    def test_dtc_filter_string_keys(self):
        decoder = Decoder(dtc_filter={"5100": ["pvstatus"]})
        record = decoder.decode(parse_packet(raw("grott-p5-5104-min-data")), 5100)
        self.assertEqual(dict(record.values), {"pvstatus": 1})

    def test_override_builtin_by_name(self):
        decoder = Decoder(registers=[
            {"name": "pvpowerout", "register": 3023, "bits": 32, "unit": "dW", "family": "tlx"},
            {"name": "mytemp", "register": 3093, "scale": 10, "unit": "C"},
        ])
        record = decoder.decode(parse_packet(raw("grott-p6-0104-min-xdavidx93-a")))
        self.assertEqual(record.values["pvpowerout"], 43609)
        self.assertEqual(record.units["pvpowerout"], "dW")
        self.assertEqual(record.values["mytemp"], 40.0)
        self.assertEqual(record.values["pvtemperature"], 40.0)    # built-ins stay
        classic = decoder.decode(parse_packet(raw("grott-p6-0104-classic")))
        self.assertEqual(classic.values["pvpowerout"], 195.7)    # family: tlx only

    def test_user_text_holding_register(self):
        decoder = Decoder(registers=[{"name": "fw", "register": 9, "type": "text", "length": 3,
                                      "table": "holding"}])
        announce = decoder.decode(parse_packet(raw("grott-p5-5103-min-announce")))
        self.assertEqual(announce.values["fw"], "AL1.0")
        self.assertEqual(announce.units["fw"], "")
        data = decoder.decode(parse_packet(raw("grott-p5-0104-classic")))
        self.assertNotIn("fw", data.values)

    def test_user_register_on_unknown_family(self):
        decoder = Decoder(registers=[{"name": "thing", "register": 501, "scale": 2}])
        record = decoder.decode(_record([(500, [7, 9])]))
        self.assertEqual(dict(record.values), {"thing": 4.5, "reg_500": 7})

    def test_config_errors_are_value_errors(self):
        self.assertRaises(ValueError, Decoder, registers=[{"name": "x"}])
        self.assertRaises(ValueError, Decoder, families={"A": "nope"})
        self.assertRaises(ValueError, Decoder, dtc_filter={"x": [1]})


_widths = st.sampled_from([(16, False), (16, True), (32, False), (32, True)])
_scales = st.sampled_from([1, 10, 100, 1000, 7200, 0.5, 2.5])


class ScalingPropertyTests(SynchronousTestCase):
    @settings(deadline=None, max_examples=150)
    @given(_widths, _scales, st.integers(0, 120), st.binary(min_size=4, max_size=4),
           st.sampled_from([2, 5, 6]))
    def test_scaled_widths_and_signs(self, width, scale, offset, word_bytes, protocol):
        """
        A configured field decodes exactly as struct reads the same bytes
        (big-endian, 32-bit high word first), divided by the scale.
        """
        bits, signed = width
        register = 4000 + offset
        words = list(struct.unpack(">HH", word_bytes))
        values = [0] * 125
        values[offset:offset + 2] = words
        values = values[:125]
        decoder = Decoder(registers=[{"name": "x", "register": register, "bits": bits,
                                      "signed": signed, "scale": scale}])
        record = decoder.decode(_record([(4000, values)], protocol=protocol))
        if bits == 32 and offset == 124:
            self.assertNotIn("x", record.values)    # the low word is not in the record
            return
        code = {(16, False): ">H", (16, True): ">h", (32, False): ">I", (32, True): ">i"}[width]
        integer = struct.unpack(code, word_bytes[:bits // 8])[0]
        expected = integer if scale == 1 else integer / scale
        self.assertEqual(record.values["x"], expected)
        self.assertEqual(type(record.values["x"]), type(expected))

    @settings(deadline=None, max_examples=60)
    @given(st.sampled_from(sorted(FAMILIES)), st.sampled_from(["input", "holding"]), st.data())
    def test_builtin_fields_decode_like_struct(self, family, table, data):
        """
        Every built-in field of a family, fed random words, decodes as
        struct reads them (through an override naming that family).
        """
        fields = FAMILIES[family].fields(table)
        field = data.draw(st.sampled_from(fields))
        values = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=field.width,
                                    max_size=field.width))
        decoder = Decoder(families={"INV0000001": family})
        record_type = RecordType.ANNOUNCE if table == "holding" else RecordType.DATA
        record = decoder.decode(_record([(field.register, values)], record_type=record_type))
        raw_bytes = struct.pack(f">{len(values)}H", *values)
        if field.table is not None:
            expected = TEXTS[field.table](values[0])
        elif field.is_text:
            expected = raw_bytes.rstrip(b"\x00").decode("latin-1")
        else:
            code = {16: "h", 32: "i"}[field.bits]
            code = ">" + (code if field.signed else code.upper())
            integer = struct.unpack(code, raw_bytes)[0]
            expected = integer if field.scale == 1 else integer / field.scale
        self.assertEqual(record.values[field.name], expected)


class GarbageTests(SynchronousTestCase):
    @settings(deadline=None, max_examples=200)
    @given(st.sampled_from([0x03, 0x04, 0x50]), st.sampled_from([2, 5, 6]),
           st.binary(max_size=900))
    def test_garbage_payloads(self, record_type, protocol, payload):
        """
        Whatever the body, decode returns a record or None, or raises a
        codec error; never anything else.
        """
        packet = parse_packet(build_packet(record_type, payload, protocol=protocol))
        try:
            record = Decoder().decode(packet, 5100)
        except CodecError:
            return
        if record is not None:
            json.dumps(record.as_dict())

    @settings(deadline=None, max_examples=150)
    @given(st.sampled_from([0x03, 0x04, 0x50]), st.sampled_from([2, 5, 6]),
           st.lists(st.tuples(st.integers(0, 3300), st.integers(1, 130)), max_size=4),
           st.binary(max_size=40), st.one_of(st.none(), st.integers(0, 0xFFFF)))
    def test_plausible_headers_with_garbage(self, record_type, protocol, blocks, tail, dtc):
        """Real serials and block headers, random values and a random tail."""
        decoder = Decoder(families={"ZZ": "spf"}, dtc_filter={1: [0, "pvstatus"]})
        block_list = [(start, [(start * 7 + i) & 0xFFFF for i in range(count)])
                      for start, count in blocks]
        try:
            wire = build_register_record(record_type, "LOG0000001", "INV0000001", block_list,
                                         protocol=protocol)
        except CodecError:
            return   # too long for one packet
        packet = parse_packet(wire)
        body = packet.payload + tail
        try:
            packet = parse_packet(build_packet(record_type, body, protocol=protocol))
            record = decoder.decode(packet, dtc)
        except CodecError:
            return
        json.dumps(record.as_dict())
