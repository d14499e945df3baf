"""
The settings catalogue (grott.settings) and the dispatcher's multiple
write: values to words and back, the writable lists, the generated docs.
"""

import os
from zoneinfo import ZoneInfo

from twisted.trial.unittest import SynchronousTestCase

from grott import settings
from grott.codec import InverterWriteMultiReply, InverterWriteMultiRequest
from grott.commands import CommandError, CommandRefused
from grott.registers.maps import FAMILIES
from tests.test_commands_unit import SERIAL, Fixture

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CatalogueTests(SynchronousTestCase):
    def test_docs_are_current(self):
        with open(os.path.join(_ROOT, "docs", "settings.md"), encoding="utf-8") as f:
            self.assertEqual(f.read(), settings.render(),
                             "run: python -m grott.settings > docs/settings.md")

    def test_families_and_lists(self):
        self.assertEqual(set(settings.SETTINGS), set(FAMILIES))
        for family, items in settings.SETTINGS.items():
            names = [s.name for s in items]
            self.assertEqual(len(names), len(set(names)), family)
            self.assertEqual(settings.find(family, "active_power_rate").register, 3)
            taken = {}
            for s in items:
                for register in s.registers:
                    self.assertNotIn(register, taken, (family, s.name, taken.get(register)))
                    taken[register] = s.name
            self.assertLessEqual(set(taken), settings.writable(family))
        self.assertEqual(settings.writable(None), frozenset({3}))
        self.assertNotIn(30, settings.writable("tlx"))
        self.assertIn(3040, settings.writable("tlx"))
        self.assertEqual(settings.datalogger_writable(), frozenset({4, 31}))

    def test_values(self):
        rate = settings.find("tlx", "export_limit_rate")
        self.assertEqual(rate.encode("-12.5"), [0x10000 - 125])
        self.assertEqual(rate.decode([0x10000 - 125]), -12.5)
        self.assertEqual(rate.decode([500]), 50)
        for bad in ("101", "x", True, None):
            self.assertRaises(settings.SettingError, rate.encode, bad)
        switch = settings.find("tlx", "on_off")
        self.assertEqual([switch.encode(v)[0] for v in ("on", "OFF", True, 0)], [1, 0, 1, 0])
        self.assertEqual(switch.decode([7]), 7)
        mode = settings.find("tlx", "export_limit_mode")
        self.assertEqual(mode.encode("CT"), [3])
        self.assertEqual(mode.encode(1), [1])
        self.assertEqual(mode.decode([2]), "rs232")
        self.assertRaises(settings.SettingError, mode.encode, "meter")
        slot = settings.find("storage", "grid_first_slot_3")
        self.assertEqual(slot.registers, range(1086, 1089))
        self.assertEqual(slot.encode("23:00-05:59 off"), [23 << 8, 5 << 8 | 59, 0])
        self.assertEqual(slot.encode({"start": "1:05", "end": "2:00"}), [261, 512, 1])
        self.assertEqual(slot.decode([261, 512, 1]), "01:05-02:00 on")
        for bad in ("24:00-01:00", "01:00", "01:00-02:00 maybe", {"start": 1}):
            self.assertRaises(settings.SettingError, slot.encode, bad)
        clock = settings.find("tlx", "inverter_clock")
        self.assertEqual(clock.encode("2025-01-02 03:04:05"), [2025, 1, 2, 3, 4, 5])
        self.assertEqual(clock.decode([2025, 1, 2, 3, 4, 5]), "2025-01-02 03:04:05")
        self.assertEqual(len(clock.encode("now", now=1.7e9)), 6)
        self.assertEqual(clock.encode("now", now=0, tz=ZoneInfo("Europe/Amsterdam")),
                         [1970, 1, 1, 1, 0, 0])
        self.assertRaises(settings.SettingError, clock.encode, "yesterday")
        self.assertTrue(settings.clock_matches([2025, 1, 2, 3, 4, 5], [2025, 1, 2, 3, 5, 0]))
        self.assertFalse(settings.clock_matches([2025, 1, 2, 3, 4, 5], [2025, 1, 2, 4, 4, 5]))
        self.assertRaises(settings.SettingError, settings.find, "classic", "on_off")


class MultipleWriteTests(SynchronousTestCase):
    def test_oneCommandMatchedOnItsRange(self):
        f = Fixture()
        d = f.dispatcher.write_registers(SERIAL, 1100, [1, 2, 3])
        self.assertEqual(f.request()[1], InverterWriteMultiRequest(1100, (1, 2, 3)))
        # A reply for another range is not ours.
        self.assertFalse(f.consume(f.reply(InverterWriteMultiReply(1100, 1101, 0))))
        self.assertNoResult(d)
        self.assertTrue(f.consume(f.reply(InverterWriteMultiReply(1100, 1102, 0))))
        self.assertEqual(self.successResultOf(d), (1100, 1102))

    def test_refusedAndBadArguments(self):
        f = Fixture()
        d = f.dispatcher.write_registers(SERIAL, 1100, [1])
        self.assertTrue(f.consume(f.reply(InverterWriteMultiReply(1100, 1100, 1))))
        self.assertIsInstance(self.failureResultOf(d).value, CommandRefused)
        for first, values in ((1, []), (1, [70000]), (65535, [1, 2]), (1, [0] * 124)):
            self.assertRaises(CommandError, f.dispatcher.write_registers, SERIAL, first, values)
        self.assertEqual(len(f.sent), 1)
