"""
Home Assistant discovery configs (snapshots per family), the entity tables
and the data guards: pure functions, no broker.

The snapshots in tests/data/hass/ are the configs an inverter of each family
gets when its records carry every value of the family's map.  After a
deliberate change, regenerate them with GROTT_UPDATE_SNAPSHOTS=1 and review
the diff like code.
"""

import json
import os

from twisted.trial import unittest

from grott.outputs import guards, hass, hass_entities
from grott.registers.maps import FAMILIES
from grott.registers.meter import METER_LOG_FIELDS, METER_VALUE_FIELDS

SNAPSHOTS = os.path.join(os.path.dirname(__file__), "data", "hass")


def _units(family, table):
    return {field.name: field.unit for field in FAMILIES[family].fields(table)}


def _discovery(discovery_all=False):
    return hass.Discovery("homeassistant", hass.Topics("energy/growatt"),
                          "energy/growatt/availability", discovery_all)


def _configs(family, discovery_all=False, expire_after=900):
    inverter = hass.Inverter(serial="INV0000001", datalogger="DLG0000001", family=family,
                             dtc=5100 if family == "tlx" else None, firmware="AL1.0",
                             control_firmware="ZABA11", manufacturer="MIN 3600TL-XE")
    return _discovery(discovery_all).inverter(inverter, _units(family, "input"),
                                              _units(family, "holding"), expire_after)


def _meter_units(fields=METER_VALUE_FIELDS):
    return {field.name: field.unit for field in fields}


def _meter_configs(discovery_all=False, phases=3, fields=METER_VALUE_FIELDS, log_fields=()):
    meter = hass.Meter(device_id="INV0000001-meter-01", datalogger="DLG0000001", address=1,
                       reports_for="INV0000001", phases=phases)
    return _discovery(discovery_all).meter(meter, _meter_units(fields), 900,
                                           _meter_units(log_fields))


class SnapshotTests(unittest.SynchronousTestCase):

    def check_snapshot(self, family, configs=None):
        configs = _configs(family) if configs is None else configs
        path = os.path.join(SNAPSHOTS, f"{family}.json")
        text = json.dumps(configs, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        if os.environ.get("GROTT_UPDATE_SNAPSHOTS"):
            os.makedirs(SNAPSHOTS, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        with open(path, encoding="utf-8") as f:
            self.assertEqual(json.loads(f.read()), json.loads(text))

    def test_classic(self):
        self.check_snapshot("classic")

    def test_tlx(self):
        self.check_snapshot("tlx")

    def test_tl3x(self):
        self.check_snapshot("tl3x")

    def test_storage(self):
        self.check_snapshot("storage")

    def test_spf(self):
        self.check_snapshot("spf")

    def test_meter(self):
        self.check_snapshot("meter", _meter_configs())


class TableTests(unittest.SynchronousTestCase):

    def test_enabled_at_most_60_per_family(self):
        for family in FAMILIES:
            configs = _configs(family)
            enabled = [c for c in configs.values() if c.get("enabled_by_default", True)]
            self.assertLessEqual(len(enabled), hass_entities.MAX_ENABLED, family)
            self.assertGreaterEqual(len(enabled), 10, family)

    def test_every_row_names_a_value_of_its_family(self):
        holding = set().union(*(_units(family, "holding") for family in FAMILIES))
        for family in FAMILIES:
            for entity in hass_entities.entities_for(family):
                known = _units(family, "input") if entity.source == "input" else holding
                self.assertIn(entity.key, known, f"{family}: {entity.source} {entity.key}")

    def test_unique_ids_never_collide(self):
        for family in FAMILIES:
            configs = _configs(family, discovery_all=True)
            ids = [c["unique_id"] for c in configs.values()]
            self.assertEqual(len(ids), len(set(ids)), family)
        # A raw register of the same number in both tables gets two ids.
        inverter = hass.Inverter(serial="S1", datalogger="D1", family="tlx")
        configs = _discovery(True).inverter(inverter, {"reg_67": ""}, {"reg_67": ""})
        self.assertEqual(sorted(c["unique_id"] for c in configs.values()),
                         ["grott_S1_holding_reg_67", "grott_S1_reg_67"])
        self.assertTrue(all(c["enabled_by_default"] is False for c in configs.values()))

    def test_no_entity_reads_a_missing_field(self):
        inverter = hass.Inverter(serial="S1", datalogger="D1", family="tlx")
        configs = _discovery().inverter(inverter, {"pvpowerin": "W"}, {"firmware": ""})
        by_topic = {c["state_topic"]: c["value_template"] for c in configs.values()}
        self.assertEqual(by_topic, {
            "energy/growatt/S1": "{{ value_json['values'][\"pvpowerin\"] }}",
            "energy/growatt/S1/announce": "{{ value_json['values'][\"firmware\"] }}"})

    def test_metadata(self):
        configs = {c["unique_id"]: c for c in _configs("classic").values()}
        power = configs["grott_INV0000001_pvpowerin"]
        self.assertEqual((power["name"], power["unit_of_measurement"], power["device_class"],
                          power["state_class"], power["suggested_display_precision"]),
                         ("PV power", "W", "power", "measurement", 0))
        self.assertEqual(power["expire_after"], 900)
        self.assertEqual(power["availability_mode"], "all")
        self.assertEqual([a["topic"] for a in power["availability"]],
                         ["energy/growatt/availability", "energy/growatt/DLG0000001/availability"])
        total = configs["grott_INV0000001_pvenergytotal"]
        self.assertEqual((total["name"], total["device_class"], total["state_class"]),
                         ("Energy total", "energy", "total_increasing"))
        kvarh = configs["grott_INV0000001_eractotal"]
        self.assertEqual((kvarh["state_class"], kvarh["enabled_by_default"]),
                         ("total_increasing", False))
        self.assertNotIn("device_class", kvarh)
        rated = configs["grott_INV0000001_holding_ratedpower"]
        self.assertNotIn("state_class", rated)
        self.assertNotIn("expire_after", rated)
        self.assertEqual(rated["entity_category"], "diagnostic")
        self.assertEqual(rated["state_topic"], "energy/growatt/INV0000001/announce")
        tlx = {c["unique_id"]: c for c in _configs("tlx").values()}
        soc = tlx["grott_INV0000001_holding_gridfirststopsoc"]
        self.assertNotIn("device_class", soc)
        self.assertEqual(tlx["grott_INV0000001_pf"]["device_class"], "power_factor")
        self.assertEqual(tlx["grott_INV0000001_bdc1_soc"]["device_class"], "battery")

    def test_trackers_and_phases_from_the_announce(self):
        inverter = hass.Inverter(serial="S1", datalogger="D1", family="tlx", trackers=2,
                                 phases=1)
        configs = _discovery().inverter(inverter, _units("tlx", "input"), {})
        enabled = {c["unique_id"] for c in configs.values()
                   if c.get("enabled_by_default", True)}
        self.assertIn("grott_S1_pv2watt", enabled)
        for key in ("pv3watt", "pv4voltage", "pvgridvoltage2", "pvgridcurrent3"):
            self.assertIn(f"grott_S1_{key}", {c["unique_id"] for c in configs.values()})
            self.assertNotIn(f"grott_S1_{key}", enabled)

    def test_battery_rows_only_with_a_battery(self):
        def enabled(battery):
            inverter = hass.Inverter(serial="S1", datalogger="D1", family="tlx",
                                     battery=battery)
            configs = _discovery().inverter(inverter, _units("tlx", "input"), {})
            return {c["unique_id"] for c in configs.values()
                    if c.get("enabled_by_default", True)}

        self.assertIn("grott_S1_bdc1_soc", enabled(True))
        self.assertIn("grott_S1_bdc1_soc", enabled(None))
        self.assertNotIn("grott_S1_bdc1_soc", enabled(False))
        self.assertNotIn("grott_S1_echrtotal", enabled(False))
        self.assertIn("grott_S1_pvpowerin", enabled(False))

    def test_device(self):
        config = next(iter(_configs("tlx").values()))
        self.assertEqual(config["device"], {
            "identifiers": ["grott_INV0000001"], "name": "Growatt INV0000001",
            "manufacturer": "Growatt", "model": "MIN / TL-X 2500-6000 (DTC 5100)",
            "serial_number": "INV0000001", "sw_version": "AL1.0 / ZABA11",
            "hw_version": "MIN 3600TL-XE", "via_device": "grott_dl_DLG0000001"})
        self.assertEqual(hass.Inverter("S", "D", family="classic", dtc=134).model(),
                         "Classic (S / MTL-S / TL3-S)")

    def test_datalogger_and_proxy_devices(self):
        discovery = _discovery()
        [(topic, config)] = discovery.datalogger("DLG0000001").items()
        self.assertEqual(topic, "homeassistant/binary_sensor/grott_dl_DLG0000001/connected/config")
        self.assertEqual(config["state_topic"], "energy/growatt/DLG0000001/availability")
        self.assertEqual(config["device"]["via_device"], "grott_proxy_energy_growatt")
        proxy = discovery.proxy()
        self.assertEqual(sorted(c["unique_id"] for c in proxy.values()), [
            "grott_proxy_energy_growatt_cloud", "grott_proxy_energy_growatt_dataloggers",
            "grott_proxy_energy_growatt_local_acks", "grott_proxy_energy_growatt_records_dropped",
            "grott_proxy_energy_growatt_records_held"])
        self.assertTrue(all(c["device"]["name"] == "grott proxy" for c in proxy.values()))


class MeterTests(unittest.SynchronousTestCase):
    """
    A smart meter is a device of its own: its device, rows and ids.
    """

    def test_device(self):
        configs = _meter_configs()
        devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
        self.assertEqual([json.loads(d) for d in devices], [{
            "identifiers": ["grott_INV0000001-meter-01"],
            "name": "Smart meter INV0000001-meter-01", "model": "Smart meter",
            "via_device": "grott_dl_DLG0000001"}])
        for config in configs.values():
            self.assertEqual(config["state_topic"], "energy/growatt/INV0000001-meter-01")
            self.assertEqual([a["topic"] for a in config["availability"]],
                             ["energy/growatt/availability",
                              "energy/growatt/DLG0000001/availability"])
            self.assertEqual(config["expire_after"], 900)

    def test_curated_rows(self):
        for fields, log_fields in ((METER_VALUE_FIELDS, ()), ((), METER_LOG_FIELDS)):
            configs = {c["name"]: c for c in _meter_configs(fields=fields,
                                                            log_fields=log_fields).values()
                       if c.get("enabled_by_default", True)}
            self.assertEqual(sorted(configs), sorted([
                "Voltage L1", "Voltage L2", "Voltage L3", "Current L1", "Current L2",
                "Current L3", "Power L1", "Power L2", "Power L3", "Power", "Power factor",
                "Frequency", "Energy imported", "Energy exported"]))
            for name in ("Energy imported", "Energy exported"):
                energy = configs[name]
                self.assertEqual((energy["unit_of_measurement"], energy["device_class"],
                                  energy["state_class"], energy["suggested_display_precision"]),
                                 ("kWh", "energy", "total_increasing", 1))
            power = configs["Power"]
            self.assertEqual((power["unit_of_measurement"], power["device_class"],
                              power["state_class"]), ("W", "power", "measurement"))
            self.assertEqual(configs["Power factor"]["device_class"], "power_factor")
            self.assertNotIn("unit_of_measurement", configs["Power factor"])
            self.assertEqual(configs["Frequency"]["unit_of_measurement"], "Hz")
        # Every row names a value of its meter record kind.
        names = {"input": {f.name for f in METER_VALUE_FIELDS},
                 "log": {f.name for f in METER_LOG_FIELDS}}
        for entity in hass_entities.entities_for("meter"):
            self.assertIn(entity.key, names[entity.source])

    def test_log_values_read_the_log_topic(self):
        configs = _meter_configs(fields=(), log_fields=METER_LOG_FIELDS)
        for topic, config in configs.items():
            self.assertEqual(config["state_topic"], "energy/growatt/INV0000001-meter-01/log",
                             topic)
        # The ids a 0x1b-only meter had before its values moved topic.
        self.assertIn("grott_INV0000001-meter-01_voltageL1",
                      {c["unique_id"] for c in configs.values()})
        self.assertIn("grott_INV0000001-meter-01_frequency",
                      {c["unique_id"] for c in configs.values()})

    def test_one_meter_both_record_kinds(self):
        """
        A meter whose datalogger sends 0x20 and 0x1b: one device, ids that
        never collide, each entity on the topic whose messages carry its
        value, and the 0x1b duplicates of the 0x20 quantities disabled.
        """
        for discovery_all in (False, True):
            configs = _meter_configs(discovery_all, log_fields=METER_LOG_FIELDS)
            ids = [c["unique_id"] for c in configs.values()]
            self.assertEqual(len(ids), len(set(ids)))
            self.assertEqual({c["device"]["identifiers"][0] for c in configs.values()},
                             {"grott_INV0000001-meter-01"})
            log_names = {f.name for f in METER_LOG_FIELDS} - {"frequency"}
            for config in configs.values():
                key = json.loads(config["value_template"].split("[")[2].split("]")[0])
                if key in log_names:
                    self.assertEqual(config["state_topic"],
                                     "energy/growatt/INV0000001-meter-01/log", key)
                    self.assertIs(config["enabled_by_default"], False, key)
                else:
                    self.assertEqual(config["state_topic"],
                                     "energy/growatt/INV0000001-meter-01", key)
        alone = _meter_configs()
        both = _meter_configs(log_fields=METER_LOG_FIELDS)
        # The 0x20 entities are exactly what they were without the log.
        self.assertEqual({t: c for t, c in both.items() if t in alone}, alone)
        self.assertEqual(
            [c["name"] for c in both.values() if c.get("enabled_by_default", True)],
            [c["name"] for c in alone.values() if c.get("enabled_by_default", True)])

    def test_single_phase_meter_disables_l2_l3(self):
        enabled = {c["unique_id"] for c in _meter_configs(phases=1).values()
                   if c.get("enabled_by_default", True)}
        self.assertIn("grott_INV0000001-meter-01_voltage_l1", enabled)
        self.assertNotIn("grott_INV0000001-meter-01_voltage_l2", enabled)
        self.assertNotIn("grott_INV0000001-meter-01_act_power_l3", enabled)

    def test_the_rest_only_disabled_or_with_discovery_all(self):
        curated = _meter_configs()
        everything = _meter_configs(discovery_all=True)
        self.assertGreater(len(everything), len(curated))
        for topic in set(everything) - set(curated):
            self.assertIs(everything[topic]["enabled_by_default"], False, topic)
        unnamed = everything[
            "homeassistant/sensor/grott_INV0000001-meter-01/app_energy_kvar/config"]
        self.assertEqual((unnamed["entity_category"], unnamed["state_class"]),
                         ("diagnostic", "total_increasing"))

    def test_ids_never_meet_the_inverters(self):
        meter = _meter_configs(discovery_all=True)
        inverter = {}
        for family in FAMILIES:
            inverter.update(_configs(family, discovery_all=True))
        meter_ids = [c["unique_id"] for c in meter.values()]
        self.assertEqual(len(meter_ids), len(set(meter_ids)))
        self.assertFalse(set(meter_ids) & {c["unique_id"] for c in inverter.values()})
        self.assertFalse(set(meter) & set(inverter))
        self.assertTrue(all(c["state_topic"] != "energy/growatt/INV0000001"
                            for c in meter.values()))


_NOW = 1_764_000_000.0   # 2025-11-24 16:00 UTC


class GuardTests(unittest.SynchronousTestCase):

    def guard(self):
        return guards.DeviceGuard({"pvenergytotal": "kWh", "pvenergytoday": "kWh",
                                   "totworktime": "h"})

    def test_accepts_growth_and_midnight_reset(self):
        guard = self.guard()
        self.assertIsNone(guard.check("2025-11-24T23:55:00", {"pvenergytotal": 100.0,
                                                              "pvenergytoday": 9.0}, _NOW))
        self.assertIsNone(guard.check("2025-11-25T00:00:00", {"pvenergytotal": 100.1,
                                                              "pvenergytoday": 0.0}, _NOW))

    def test_holds_decrease_jump_and_bad_times(self):
        cases = [("2025-11-24T12:05:00", {"pvenergytotal": 99.0}, "decrease"),
                 ("2025-11-24T12:05:00", {"pvenergytoday": 4.0}, "decrease"),
                 ("2025-11-24T12:10:00", {"pvenergytotal": 100000.0}, "jump"),
                 ("2025-11-24T09:00:00", {"pvenergytotal": 100.0}, "timestamp"),
                 ("2031-01-01T00:00:00", {"pvenergytotal": 100.0}, "timestamp"),
                 (None, {"pvenergytotal": 100.0}, "timestamp"),
                 ("1999-12-31T00:00:00", {}, "timestamp")]
        for when, values, reason in cases:
            guard = self.guard()
            self.assertIsNone(guard.check("2025-11-24T12:00:00", {"pvenergytotal": 100.0,
                                                                  "pvenergytoday": 5.0}, _NOW))
            self.assertEqual(guard.check(when, values, _NOW), reason, (when, values))

    def test_rated_power_sets_the_cap(self):
        guard = self.guard()
        guard.rated_power = 100000.0     # 100 kW: 150 kW x 1 h + 1 kWh
        guard.check("2025-11-24T12:00:00", {"pvenergytotal": 100.0}, _NOW)
        self.assertIsNone(guard.check("2025-11-24T13:00:00", {"pvenergytotal": 250.0}, _NOW))
        self.assertEqual(guard.check("2025-11-24T14:00:00", {"pvenergytotal": 402.0}, _NOW),
                         "jump")

    def test_believes_three_in_a_row(self):
        guard = self.guard()
        guard.check("2025-11-24T12:00:00", {"pvenergytotal": 100.0}, _NOW)
        self.assertEqual(guard.check("2025-11-24T12:05:00", {"pvenergytotal": 1.0}, _NOW),
                         "decrease")
        self.assertEqual(guard.check("2025-11-24T12:10:00", {"pvenergytotal": 1.1}, _NOW),
                         "decrease")
        self.assertIsNone(guard.check("2025-11-24T12:15:00", {"pvenergytotal": 1.2}, _NOW))
        self.assertIsNone(guard.check("2025-11-24T12:20:00", {"pvenergytotal": 1.3}, _NOW))
        # An impossible time is never believed.
        for _ in range(5):
            self.assertEqual(guard.check("2099-01-01T00:00:00", {}, _NOW), "timestamp")
