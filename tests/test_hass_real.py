"""
grott, a real mosquitto and a real Home Assistant core (2024.3): what a user
sees after switching discovery on, with nothing else configured.

Two simulated dataloggers (a MIN/TL-X and a classic inverter), each with a
burst of buffered records before its live data, and a third datalogger
sending a captured smart-meter record and a meter log record of the same
meter, go through grott in cloud-free mode; Home Assistant's states, entity and device registries
(websocket API) and its log are then read back.  Skipped with the reason
when there is no Home Assistant venv (see tests/homeassistant.py) or no
mosquitto.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.python.log import msg
from twisted.trial import unittest

from grott.testing.simulator import DataloggerFactory, DataloggerSpec
from tests import homeassistant, mosquitto, relayhelpers
from tests.pluginhelpers import meter_log_packet, meter_packet_and_record

BUFFERED = 5
#: The smart meter the MIN's datalogger simulates (device address 0x22).
SIM_METER = "HAINVMIN01-meter-22"
#: Live records per inverter: the classic one sends a single live record, so
#: Home Assistant shows the first state after discovery or nothing.
LIVE = {"HAINVMIN01": 4, "HAINVCLS01": 1}


async def _until(predicate, what, poll=0.25, seconds=120.0):
    """
    Poll C{predicate} (a coroutine function) until it returns something
    true; fail naming C{what} after C{seconds}.
    """
    deadline = reactor.seconds() + seconds
    while True:
        result = await predicate()
        if result:
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting until {what}")
        await deferLater(reactor, poll, lambda: None)


def _numeric_history(path, entity_ids):
    """
    entity id -> the numeric states it went through, from the watcher's file.
    """
    history = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            change = json.loads(line)
            if change.get("entity_id") in entity_ids:
                try:
                    history.setdefault(change["entity_id"], []).append(float(change["state"]))
                except (TypeError, ValueError):
                    pass
    return history


class HomeAssistantTests(unittest.TestCase):

    skip = mosquitto.SKIP or homeassistant.SKIP
    timeout = 240

    def test_what_home_assistant_shows(self):
        return defer.Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        broker, hass = await homeassistant.broker_and_home_assistant(self)
        changes = os.path.abspath(self.mktemp())
        await hass.watch(changes)

        subscriber = mosquitto.Subscriber(broker.port, ["energy/growatt/#"])
        self.addCleanup(subscriber.stop)
        await subscriber.subscribed

        _, endpoint = homeassistant.grott_for(self, broker)
        specs = [DataloggerSpec("HADLMIN001", inverter_serial="HAINVMIN01", family="min",
                                interval=2.0, ping_interval=0, buffered=BUFFERED,
                                meter_address=0x22,
                                records=BUFFERED + LIVE["HAINVMIN01"]),
                 DataloggerSpec("HADLCLS001", inverter_serial="HAINVCLS01", family="classic",
                                interval=2.0, ping_interval=0, buffered=BUFFERED,
                                records=BUFFERED + LIVE["HAINVCLS01"])]
        loggers = {}
        for spec in specs:
            loggers[spec.inverter_serial] = factory = DataloggerFactory(spec, reactor)
            factory.connect(endpoint)
            self.addCleanup(factory.disconnect)
        for factory in loggers.values():
            await factory.state.when_done()

        # What grott published live (the last record of each inverter; a
        # record may come twice, republished for Home Assistant's birth
        # message) and what went to the buffered topic.
        def last_live(serial):
            live = [json.loads(p) for p, _ in subscriber.on(f"energy/growatt/{serial}")]
            if len({record["time"] for record in live}) < LIVE[serial]:
                return None
            return live[-1]["values"]

        await subscriber.wait_for(lambda m: all(last_live(s) for s in loggers))
        for serial in loggers:
            self.assertEqual(len(subscriber.on(f"energy/growatt/{serial}/buffered")), BUFFERED)

        async def settled():
            log = hass.log()
            if any(bad in log for bad in ("Setup failed for 'mqtt'", "recovery mode",
                                          "Error setting up entry")):
                self.fail("Home Assistant could not set up MQTT:\n" + hass.log()[-3000:])
            seen = await hass.query()
            ids = {e["unique_id"]: e["entity_id"] for e in seen["entities"]}
            states = {s["entity_id"]: s["state"] for s in seen["states"]}
            for serial in loggers:
                want = last_live(serial)
                for key in ("pvpowerin", "pvenergytotal"):
                    entity = ids.get(f"grott_{serial}_{key}")
                    if entity is None or states.get(entity) in (None, "unknown", "unavailable"):
                        return None
                    if float(states[entity]) != float(want[key]):
                        return None
            # The MIN's simulated meter: its last live record shows.
            meter = subscriber.on(f"energy/growatt/{SIM_METER}")
            entity = ids.get(f"grott_{SIM_METER}_pos_act_energy")
            if not meter or entity is None or states.get(entity) in (None, "unknown"):
                return None
            if float(states[entity]) != json.loads(meter[-1][0])["values"]["pos_act_energy"]:
                return None
            return seen

        seen = await _until(settled, "Home Assistant shows the last live values")
        entities = seen["entities"]
        devices = {d["id"]: d for d in seen["devices"]}
        states = {s["entity_id"]: s for s in seen["states"]}
        by_unique = {e["unique_id"]: e for e in entities}

        for serial, logger in loggers.items():
            want = last_live(serial)
            [device] = [d for d in devices.values()
                        if ["mqtt", f"grott_{serial}"] in d["identifiers"]]
            mine = [e for e in entities if e["device_id"] == device["id"]]
            enabled = [e for e in mine if e["disabled_by"] is None]
            msg(f"HA device {device['name']} ({device['model']}, sw {device['sw_version']}): "
                f"{len(mine)} entities, {len(enabled)} enabled; " + ", ".join(
                    f"{states[e['entity_id']]['attributes'].get('friendly_name')}="
                    f"{states[e['entity_id']]['state']}" for e in enabled))
            self.assertLessEqual(len(enabled), 60, serial)
            self.assertGreaterEqual(len(enabled), 15, serial)
            # Every enabled live entity shows a value from the last record.
            for entry in enabled:
                state = states[entry["entity_id"]]["state"]
                self.assertNotIn(state, ("unknown", "unavailable", ""), entry["entity_id"])
            energy = states[by_unique[f"grott_{serial}_pvenergytotal"]["entity_id"]]
            self.assertEqual(float(energy["state"]), float(want["pvenergytotal"]))
            self.assertEqual(energy["attributes"]["state_class"], "total_increasing")
            self.assertEqual(energy["attributes"]["unit_of_measurement"], "kWh")
            self.assertEqual(energy["attributes"]["friendly_name"], f"Growatt {serial} Energy total")
            # The datalogger is a device of its own, between grott and the inverter.
            datalogger = devices[device["via_device_id"]]
            self.assertEqual(datalogger["name"], f"Growatt datalogger {logger.spec.serial}")
            self.assertEqual(devices[datalogger["via_device_id"]]["name"], "grott proxy")
            self.assertEqual(device["serial_number"], serial)
        [sim_meter] = [d for d in devices.values() if ["mqtt", f"grott_{SIM_METER}"]
                       in d["identifiers"]]
        self.assertEqual(devices[sim_meter["via_device_id"]]["name"],
                         "Growatt datalogger HADLMIN001")
        self.assertEqual(sim_meter["model"], "Smart meter")
        min_device = next(d for d in devices.values()
                          if ["mqtt", "grott_HAINVMIN01"] in d["identifiers"])
        self.assertIn("DTC 5100", min_device["model"])
        self.assertEqual(min_device["sw_version"], "AL1.0 / ZABA11")
        classic = next(d for d in devices.values()
                       if ["mqtt", "grott_HAINVCLS01"] in d["identifiers"])
        self.assertEqual(classic["model"], "Classic (S / MTL-S / TL3-S)")
        proxy_states = {e["unique_id"]: states[e["entity_id"]]["state"] for e in entities
                        if e["unique_id"].startswith("grott_proxy_")}
        self.assertEqual(proxy_states["grott_proxy_energy_growatt_dataloggers"], "2")
        self.assertIn("grott_proxy_energy_growatt_cloud", proxy_states)

        await self._meter(hass, endpoint)

        # No energy sensor ever went backwards (the buffered burst older
        # than the live data never reached them).
        energy_ids = {s["entity_id"] for s in states.values()
                      if s["attributes"].get("device_class") == "energy"}
        history = _numeric_history(changes, energy_ids)
        self.assertTrue(history)
        for entity_id, values in history.items():
            self.assertEqual(values, sorted(values), entity_id)

        # The datalogger goes away: its inverter's entities go unavailable,
        # the other inverter's stay.
        await loggers["HAINVMIN01"].disconnect()
        min_power = by_unique["grott_HAINVMIN01_pvpowerin"]["entity_id"]
        classic_power = by_unique["grott_HAINVCLS01_pvpowerin"]["entity_id"]

        async def min_unavailable():
            now = await hass.states()
            return now if now[min_power]["state"] == "unavailable" else None

        now = await _until(min_unavailable, "the MIN inverter goes unavailable")
        # Its meter with it.
        sim_meter = by_unique[f"grott_{SIM_METER}_pos_rev_act_power"]["entity_id"]
        await _until(lambda: self._state_is(hass, sim_meter, "unavailable"),
                     "the MIN's meter goes unavailable")
        self.assertNotEqual(now[classic_power]["state"], "unavailable")
        connected = by_unique["grott_dl_HADLMIN001_connected"]["entity_id"]
        self.assertEqual(now[connected]["state"], "off")
        dataloggers = by_unique["grott_proxy_energy_growatt_dataloggers"]["entity_id"]

        async def one_left():
            return (await hass.states())[dataloggers]["state"] == "1"

        await _until(one_left, "grott counts one datalogger")

        log = hass.log()
        # (No recorder here: its statistics compile every 5 minutes, so the
        # state stream above stands for "no new cycle".)
        for bad in ("Template variable warning", "Template variable error", "has no attribute",
                    "Traceback"):
            self.assertNotIn(bad, log)
        self.assertNotIn("mqtt", "\n".join(line for line in log.splitlines()
                                           if " ERROR " in line).lower())

    async def _state_is(self, hass, entity_id, state):
        return (await hass.states())[entity_id]["state"] == state

    async def _meter(self, hass, endpoint):
        """
        A datalogger stand-in sends a captured smart-meter record (0x20,
        grott issue #352) and a meter log record (0x1b) of the same
        datalogger: Home Assistant shows the meter as one device of its
        own, beside the inverter devices, with the record's values; it goes
        unavailable when its datalogger disconnects.
        """
        packet, record = meter_packet_and_record()
        client = await endpoint.connect(Factory.forProtocol(relayhelpers.Client))
        self.addCleanup(lambda: client.transport.loseConnection())
        client.transport.write(packet.raw)
        client.transport.write(meter_log_packet(record.datalogger_serial).raw)
        node = "grott_QDL1CKK028-meter-01"
        want = {"voltage_l1": 238.9, "Current_l3": 1.6, "act_power_l1": -44.5,
                "pos_rev_act_power": -46.2, "powerfactor": -0.055, "frequency": 50.0,
                "pos_act_energy": 269.6, "rev_act_energy": 67.9}

        async def shown():
            seen = await hass.query()
            ids = {e["unique_id"]: e["entity_id"] for e in seen["entities"]}
            states = {s["entity_id"]: s["state"] for s in seen["states"]}
            for key, value in want.items():
                state = states.get(ids.get(f"{node}_{key}"))
                if state in (None, "unknown", "unavailable") or float(state) != value:
                    return None
            return seen

        seen = await _until(shown, "Home Assistant shows the meter's values")
        devices = {d["id"]: d for d in seen["devices"]}
        states = {s["entity_id"]: s for s in seen["states"]}
        [meter] = [d for d in devices.values() if ["mqtt", node] in d["identifiers"]]
        self.assertEqual((meter["name"], meter["model"]),
                         ("Smart meter QDL1CKK028-meter-01", "Smart meter"))
        self.assertEqual(devices[meter["via_device_id"]]["name"],
                         f"Growatt datalogger {record.datalogger_serial}")
        mine = [e for e in seen["entities"] if e["device_id"] == meter["id"]]
        enabled = [e for e in mine if e["disabled_by"] is None]
        msg(f"HA device {meter['name']} ({meter['model']}): {len(mine)} entities, "
            f"{len(enabled)} enabled; " + ", ".join(
                f"{states[e['entity_id']]['attributes'].get('friendly_name')}="
                f"{states[e['entity_id']]['state']}" for e in enabled))
        self.assertEqual(len(enabled), 14)
        self.assertTrue(all(e["unique_id"].startswith(node + "_") for e in mine))
        # The log record's values are entities of the same device (disabled:
        # the same quantities as the 0x20 ones), and no second meter device.
        self.assertIn(f"{node}_activePowerL1",
                      {e["unique_id"] for e in mine if e["disabled_by"] == "integration"})
        self.assertFalse([d for d in devices.values() if "meter-22" in str(d["identifiers"])
                          and record.datalogger_serial in str(d["identifiers"])])
        for entry in enabled:
            self.assertNotIn(states[entry["entity_id"]]["state"], ("unknown", "unavailable", ""))
        energy = {e["unique_id"]: states[e["entity_id"]]["attributes"] for e in enabled}
        for key, name in (("pos_act_energy", "Energy imported"),
                          ("rev_act_energy", "Energy exported")):
            attributes = energy[f"{node}_{key}"]
            self.assertEqual((attributes["device_class"], attributes["state_class"],
                              attributes["unit_of_measurement"], attributes["friendly_name"]),
                             ("energy", "total_increasing", "kWh",
                              f"Smart meter QDL1CKK028-meter-01 {name}"))
        # Every meter entity sits on its own meter's device, none on an inverter's.
        for entry in seen["entities"]:
            if "-meter-" in entry["unique_id"]:
                device = devices[entry["device_id"]]
                self.assertEqual(device["model"], "Smart meter", entry["unique_id"])
                [(_, identifier)] = device["identifiers"]
                self.assertTrue(entry["unique_id"].startswith(identifier + "_"))

        power = {e["unique_id"]: e["entity_id"] for e in mine}[f"{node}_pos_rev_act_power"]
        client.transport.loseConnection()

        async def unavailable():
            return (await hass.states())[power]["state"] == "unavailable"

        await _until(unavailable, "the meter goes unavailable with its datalogger")
