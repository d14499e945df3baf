"""
The decoding keys of config.yaml (registers, families, dtc_filter): what is
accepted, and the messages for what is not.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from grott.config import config_from_string
from grott.registers import Decoder
from grott.registers.userconfig import parse_dtc_filter, parse_families, parse_registers

CONFIG_YAML = os.path.join(os.path.dirname(__file__), os.pardir, "config.yaml")


class RegisterEntryTests(SynchronousTestCase):
    def assertRejected(self, entries, *fragments):
        error = self.assertRaises(ValueError, parse_registers, entries)
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_full_entry(self):
        (user,) = parse_registers([{
            "name": "batpower", "register": 1009, "unit": "W", "scale": 10.0, "bits": 32,
            "signed": True, "family": ["sph", "storage"], "table": "input"}])
        self.assertEqual(user.field.name, "batpower")
        self.assertEqual(user.field.scale, 10)
        self.assertIsInstance(user.field.scale, int)
        self.assertEqual(user.field.width, 2)
        self.assertEqual(user.families, frozenset({"storage"}))
        self.assertTrue(user.applies_to("storage", "input"))
        self.assertFalse(user.applies_to("storage", "holding"))
        self.assertFalse(user.applies_to("tlx", "input"))

    def test_text_entry(self):
        (user,) = parse_registers([{"name": "fw", "register": 9, "type": "text", "length": 3,
                                    "table": "holding"}])
        self.assertTrue(user.field.is_text)
        self.assertEqual(list(user.field.registers), [9, 10, 11])
        self.assertIsNone(user.families)

    def test_rejections(self):
        self.assertRejected("nope", "registers: expected a list")
        self.assertRejected([5], "registers[0]", "expected a mapping")
        self.assertRejected([{"register": 3}], "registers[0]", "name must be")
        self.assertRejected([{"name": "a b", "register": 3}], "name must be")
        self.assertRejected([{"name": "reg_12", "register": 3}], "reserved")
        self.assertRejected([{"name": "x", "register": 70000}], "registers[0] (x)", "0..65535")
        self.assertRejected([{"name": "x", "register": True}], "register must be")
        self.assertRejected([{"name": "x", "register": 1, "scale": 0}], "scale")
        self.assertRejected([{"name": "x", "register": 1, "scale": "10"}], "scale")
        self.assertRejected([{"name": "x", "register": 1, "scale": float("nan")}], "scale")
        self.assertRejected([{"name": "x", "register": 1, "bits": 8}], "bits must be 16 or 32")
        self.assertRejected([{"name": "x", "register": 1, "signed": "yes"}], "signed")
        self.assertRejected([{"name": "x", "register": 1, "unit": 5}], "unit")
        self.assertRejected([{"name": "x", "register": 1, "type": "float"}], "type must be")
        self.assertRejected([{"name": "x", "register": 1, "type": "text"}], "needs length")
        self.assertRejected([{"name": "x", "register": 1, "type": "text", "length": 2,
                              "scale": 10}], "scale makes no sense")
        self.assertRejected([{"name": "x", "register": 1, "length": 2}], "only for type: text")
        self.assertRejected([{"name": "x", "register": 65535, "bits": 32}], "run past 65535")
        self.assertRejected([{"name": "x", "register": 1, "family": "inverter"}],
                            "unknown family 'inverter'", "classic")
        self.assertRejected([{"name": "x", "register": 1, "family": []}], "family must be")
        self.assertRejected([{"name": "x", "register": 1, "table": "coils"}], "table must be")
        self.assertRejected([{"name": "x", "register": 1, "divide": 10}],
                            "unknown key divide", "allowed:")
        self.assertRejected([{"name": "x", "register": 1}, {"name": "x", "register": 2}],
                            "registers[1] (x): defined twice", "registers[0]")

    def test_same_name_in_other_family_or_table(self):
        users = parse_registers([{"name": "x", "register": 1, "family": "tlx"},
                                 {"name": "x", "register": 2, "family": "classic"},
                                 {"name": "x", "register": 3, "table": "holding"}])
        self.assertEqual(len(users), 3)


class FamiliesAndFilterTests(SynchronousTestCase):
    def test_families(self):
        self.assertEqual(parse_families({"QMB2823261": "MIN", 1234567890: "sph"}),
                         {"QMB2823261": "tlx", "1234567890": "storage"})
        self.assertEqual(parse_families(None), {})
        error = self.assertRaises(ValueError, parse_families, {"ABC": "growatt"})
        self.assertIn("families.ABC: unknown family 'growatt'", str(error))
        self.assertRaises(ValueError, parse_families, ["ABC"])
        self.assertRaises(ValueError, parse_families, {"": "min"})

    def test_dtc_filter(self):
        self.assertEqual(parse_dtc_filter({5100: [3001, "pvstatus"], "3601": []}),
                         {5100: frozenset({3001, "pvstatus"}), 3601: frozenset()})
        error = self.assertRaises(ValueError, parse_dtc_filter, {"min": [1]})
        self.assertIn("dtc_filter: key 'min'", str(error))
        error = self.assertRaises(ValueError, parse_dtc_filter, {5100: "pvstatus"})
        self.assertIn("dtc_filter.5100: expected a list", str(error))
        error = self.assertRaises(ValueError, parse_dtc_filter, {5100: [1.5]})
        self.assertIn("1.5 is neither", str(error))
        self.assertRaises(ValueError, parse_dtc_filter, [5100])


class ConfigFileTests(SynchronousTestCase):
    def test_yaml_to_decoder(self):
        """The keys as YAML parses them build a Decoder as they are."""
        config = config_from_string("""
registers:
  - {name: bat_power, register: 1009, bits: 32, signed: true, scale: 10, unit: W, family: sph}
  - name: fw
    register: 9
    type: text
    length: 3
    table: holding
families:
  QMB2823261: spf
  1234567890: min
dtc_filter:
  5100: [3001, pvstatus, reg_3100]
""")
        decoder = Decoder(config.registers, config.dtc_filter, config.families)
        self.assertEqual(decoder.override_for("1234567890", None), "tlx")
        self.assertEqual(decoder.override_for("X", "QMB2823261"), "spf")
        self.assertEqual([f.name for f in decoder.fields("storage", "input")][-1], "bat_power")

    def test_shipped_config_builds_a_decoder(self):
        with open(CONFIG_YAML, encoding="utf-8") as f:
            config = config_from_string(f.read(), "config.yaml")
        Decoder(config.registers, config.dtc_filter, config.families)

    def test_commented_examples_in_config_yaml_are_valid(self):
        """
        The examples config.yaml shows (commented out) are accepted when
        uncommented, so users copying them get a working setup.
        """
        with open(CONFIG_YAML, encoding="utf-8") as f:
            lines = f.read().splitlines()
        example = []
        capturing = False
        for line in lines:
            if line in ("# registers:", "# families:", "# dtc_filter:"):
                capturing = True
            elif not line.startswith("#   "):
                capturing = False
            if capturing:
                example.append(line[2:])
        config = config_from_string("\n".join(example), "config.yaml examples")
        self.assertEqual(len(config.registers), 3)
        self.assertEqual(len(config.families), 2)
        self.assertEqual(list(config.dtc_filter), [5100])
        decoder = Decoder(config.registers, config.dtc_filter, config.families)
        self.assertEqual(decoder.override_for(None, "JPC281833B"), "spf")
