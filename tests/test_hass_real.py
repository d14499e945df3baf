"""
grott, a real mosquitto and a real Home Assistant core (2024.3): what a user
sees after switching discovery on, with nothing else configured.

Two simulated dataloggers (a MIN/TL-X and a classic inverter), each with a
burst of buffered records before its live data, go through grott in
cloud-free mode; Home Assistant's states, entity and device registries
(websocket API) and its log are then read back.  Skipped with the reason
when there is no Home Assistant venv (see tests/homeassistant.py) or no
mosquitto.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.python.log import msg
from twisted.trial import unittest

from grott.config import config_from_dict
from grott.service import makeService
from grott.testing.simulator import DataloggerFactory, DataloggerSpec
from tests import homeassistant, mosquitto

BUFFERED = 5
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
        broker = mosquitto.Broker(self.mktemp())
        await broker.start()
        self.addCleanup(broker.stop)
        hass = homeassistant.HomeAssistant(self.mktemp(), broker.port)
        self.addCleanup(hass.stop)
        await hass.start()
        changes = os.path.abspath(self.mktemp())
        await hass.watch(changes)

        subscriber = mosquitto.Subscriber(broker.port, ["energy/growatt/#"])
        self.addCleanup(subscriber.stop)
        await subscriber.subscribed

        config = config_from_dict({
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "upstream": "none"},
            "command": {"listen": "none"}, "metrics": {"listen": "none"},
            "plugins": {"directory": os.path.abspath(self.mktemp())},
            "outputs": {"mqtt": {"host": "127.0.0.1", "port": broker.port,
                                 "discovery": True}},
        }, "ha-test.yaml")
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        port = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        specs = [DataloggerSpec("HADLMIN001", inverter_serial="HAINVMIN01", family="min",
                                interval=2.0, ping_interval=0, buffered=BUFFERED,
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
