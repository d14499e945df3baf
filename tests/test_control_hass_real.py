"""
The settings entities in a real Home Assistant core (2024.3), with grott
built by makeService, a real mosquitto and a simulated SPH: they appear on
the inverter's device with the values grott read, and changing the export
limit in Home Assistant (a service call, as the UI makes) changes the
inverter's register, after which the entity shows the value read back.
Skipped with the reason when there is no Home Assistant venv (see
tests/homeassistant.py) or no mosquitto.
"""

from twisted.internet import reactor
from twisted.trial import unittest

from grott.testing.simulator import DataloggerFactory, DataloggerSpec
from tests import homeassistant, mosquitto
from tests.test_hass_real import _until

INVERTER = "HAINVSPH01"


class ControlEntitiesInHomeAssistant(unittest.TestCase):

    skip = mosquitto.SKIP or homeassistant.SKIP
    timeout = 240

    async def test_exportLimitFromHomeAssistant(self):
        broker, hass = await homeassistant.broker_and_home_assistant(self)

        _, endpoint = homeassistant.grott_for(self, broker, control={"mqtt": True})
        logger = DataloggerFactory(DataloggerSpec("HADLSPH001", inverter_serial=INVERTER,
                                                  family="storage", interval=5.0,
                                                  ping_interval=0), reactor)
        logger.connect(endpoint)
        self.addCleanup(logger.disconnect)
        holding = logger.state.inverter.holding

        def entity(seen, key):
            ids = {e["unique_id"]: e for e in seen["entities"]}
            return ids.get(f"grott_{INVERTER}_setting_{key}")

        async def shown(key, value):
            seen = await hass.query()
            entry = entity(seen, key)
            if entry is None:
                return None
            state = {s["entity_id"]: s["state"] for s in seen["states"]}.get(entry["entity_id"])
            if isinstance(value, float):
                try:
                    return seen if float(state) == value else None
                except (TypeError, ValueError):
                    return None
            return seen if state == value else None

        seen = await _until(lambda: shown("export_limit_rate", 0.0),
                            "the export limit entity shows the value read at connect")
        # On the inverter's own device, beside its sensors.
        [device] = [d for d in seen["devices"] if ["mqtt", f"grott_{INVERTER}"] in d["identifiers"]]
        number = entity(seen, "export_limit_rate")
        self.assertEqual(number["device_id"], device["id"])
        self.assertTrue(number["entity_id"].startswith("number."))
        self.assertEqual(number["entity_category"], "config")
        kinds = {e["unique_id"][len(f"grott_{INVERTER}_setting_"):]: e["entity_id"].split(".")[0]
                 for e in seen["entities"]
                 if e["unique_id"].startswith(f"grott_{INVERTER}_setting_")}
        self.assertEqual(kinds["battery_first_stop_soc"], "number")
        self.assertEqual(kinds["ac_charge"], "switch")
        self.assertEqual(kinds["priority"], "select")
        self.assertEqual(kinds["battery_first_slot_1_start"], "text")
        self.assertEqual(kinds["battery_first_slot_1_enabled"], "switch")
        self.assertEqual(kinds["inverter_clock"], "button")
        states = {s["entity_id"]: s for s in seen["states"]}
        self.assertEqual(states[number["entity_id"]]["attributes"]["max"], 100)
        self.assertEqual(states[number["entity_id"]]["attributes"]["unit_of_measurement"], "%")

        # The user sets 45.5 % in Home Assistant.
        await hass.call("number", "set_value", {"entity_id": number["entity_id"],
                                                "value": 45.5})
        await _until(lambda: shown("export_limit_rate", 45.5),
                     "the entity shows the read-back value")
        self.assertEqual(holding[123], 455)
        # And a slot's start, written with its end and enable in one 0x10.
        start = entity(seen, "battery_first_slot_1_start")["entity_id"]
        await hass.call("text", "set_value", {"entity_id": start, "value": "02:30"})
        await _until(lambda: shown("battery_first_slot_1_start", "02:30"),
                     "the slot start shows the read-back value")
        self.assertEqual(holding[1100], 2 << 8 | 30)
        self.assertEqual(logger.state.stats.commands["inverter_write_multi"], 1)
