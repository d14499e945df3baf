"""
The Home Assistant entities of the named settings: the discovery configs
and state document (pure), and end to end against a real mosquitto: a
command on an entity's command topic changes the simulated inverter's
register and the entity's state shows the value read back.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from grott import settings
from grott.controlhass import (
    ControlEntities,
    _read_plan,
    discovery_configs,
    state_document,
)
from tests.test_control_mqtt import MqttControlBase


class BuilderTests(SynchronousTestCase):
    def test_storageEntities(self):
        items = settings.SETTINGS["storage"]
        registers = {r: 0 for s in items for r in s.registers}
        registers.update({3: 80, 123: 0x10000 - 125, 1100: 0x0130, 1101: 0x0500, 1102: 1})
        document = state_document(items, registers)
        self.assertEqual(document["active_power_rate"], 80)
        self.assertEqual(document["export_limit_rate"], -12.5)
        self.assertEqual(document["battery_first_slot_1"],
                         {"start": "01:48", "end": "05:00", "enabled": "on"})
        self.assertNotIn("inverter_clock", document)
        configs = discovery_configs(items, document, "INV/1", "DL1", "grott", "homeassistant")
        number = configs["homeassistant/number/grott_INV_1/setting_export_limit_rate/config"]
        self.assertEqual(number["command_topic"], "grott/DL1/setting/export_limit_rate/set")
        self.assertEqual(number["state_topic"], "grott/DL1/settings")
        self.assertEqual((number["min"], number["max"], number["step"]), (-100, 100, 0.1))
        self.assertEqual(number["device"], {"identifiers": ["grott_INV_1"]})
        self.assertEqual(number["unique_id"], "grott_INV_1_setting_export_limit_rate")
        start = configs["homeassistant/text/grott_INV_1/setting_battery_first_slot_1_start/config"]
        self.assertEqual(start["command_topic"], "grott/DL1/setting/battery_first_slot_1/start/set")
        self.assertEqual(start["value_template"], "{{ value_json.battery_first_slot_1.start }}")
        select = configs["homeassistant/select/grott_INV_1/setting_priority/config"]
        self.assertEqual(select["options"], ["load", "battery", "grid"])
        button = configs["homeassistant/button/grott_INV_1/setting_inverter_clock/config"]
        self.assertEqual(button["payload_press"], "now")
        components = {topic.split("/")[1] for topic in configs}
        self.assertEqual(components, {"number", "select", "switch", "text", "button"})
        # Nothing read: only the button.
        self.assertEqual(len(discovery_configs(items, {}, "I", "D", "g", "h")), 1)

    def test_readPlan(self):
        self.assertEqual(_read_plan(settings.SETTINGS["storage"]),
                         [(0, 4), (122, 2), (1044, 1), (1070, 39)])
        self.assertEqual(_read_plan(settings.SETTINGS["tlx"]),
                         [(0, 4), (122, 2), (3036, 14)])


class EntityBase(MqttControlBase):
    topics = ("grott/#", "homeassistant/#")

    async def setUp(self):
        await MqttControlBase.setUp(self)
        self.entityClock = Clock()
        self.entities = ControlEntities(self.control, self.host.runners[0].plugin,
                                        self.registry, self.entityClock, prefix="grott",
                                        poll_interval=600)
        self.entities.startService()
        self.addCleanup(self.entities.stopService)

    def configs(self):
        return {t: json.loads(p) for t, p, _, _ in self.user.messages
                if t.startswith("homeassistant/") and p}

    async def state(self, serial, predicate):
        topic = f"grott/{serial}/settings"

        def ready(messages):
            docs = [json.loads(p) for t, p, _, _ in messages if t == topic]
            return docs and predicate(docs[-1])
        await self.user.wait_for(ready)
        return [json.loads(p) for t, p, _, _ in self.user.messages if t == topic][-1]



class EntityTests(EntityBase):
    async def test_numberCommandChangesTheRegister(self):
        logger = await self.online("SIMS000001", family="storage")
        self.entityClock.advance(0)
        doc = await self.state("SIMS000001", lambda d: "export_limit_rate" in d)
        self.assertEqual(doc["battery_first_stop_soc"], 100)
        await self.user.wait_for(lambda m: any(
            "setting_export_limit_rate" in t for t, *_ in m))
        config = self.configs()[
            "homeassistant/number/grott_IVMS000001/setting_export_limit_rate/config"]
        self.user.send(config["command_topic"], b"50")
        doc = await self.state("SIMS000001", lambda d: d["export_limit_rate"] == 50)
        self.assertEqual(logger.state.inverter.holding[123], 500)
        self.assertEqual(self.dispatcher.outcomes[("hass", "set", "ok")], 1)
        # A slot part: the whole slot in one multi-register write.
        start = self.configs()[
            "homeassistant/text/grott_IVMS000001/setting_battery_first_slot_1_start/config"]
        self.user.send(start["command_topic"], b"07:15")
        doc = await self.state("SIMS000001",
                               lambda d: d["battery_first_slot_1"]["start"] == "07:15")
        self.assertEqual(logger.state.inverter.holding[1100], 7 << 8 | 15)
        self.assertEqual(logger.state.stats.commands["inverter_write_multi"], 1)
        # A write from another front end shows up too (its read-back).
        await self.user.ask("SIMS000001", {"id": "x", "op": "set",
                                           "setting": "ac_charge", "value": "on"})
        await self.state("SIMS000001", lambda d: d["ac_charge"] == "on")
        # A change behind grott's back shows after the next poll.
        logger.state.inverter.holding[1091] = 55
        self.entityClock.advance(600)
        await self.state("SIMS000001", lambda d: d["battery_first_stop_soc"] == 55)
        # A refused value leaves the register and puts the state back out.
        count = len([m for m in self.user.messages if m[0] == "grott/SIMS000001/settings"])
        self.user.send(config["command_topic"], b"250")
        await self.user.wait_for(lambda m: len(
            [x for x in m if x[0] == "grott/SIMS000001/settings"]) > count)
        self.assertEqual(logger.state.inverter.holding[123], 500)
        self.assertTrue(any("home assistant grott/SIMS000001/setting/export_limit_rate/set"
                            in line and "refused" in line for line in self.audit()))
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()


class RetainedCommandTests(EntityBase):
    async def beforeGrott(self):
        self.user.send("grott/SIMS000001/setting/active_power_rate/set", b"1", retain=True)
        await self.user.wait_for(lambda m: any(t.endswith("/set") for t, *_ in m))

    async def test_retainedCommandIsNotCarriedOut(self):
        """
        A retained command is replayed on subscribing: it is not carried out
        (not even tried: that would be a refused write, no datalogger being
        connected yet).
        """
        logger = await self.online("SIMS000001", family="storage")
        self.entityClock.advance(0)
        doc = await self.state("SIMS000001", lambda d: "active_power_rate" in d)
        self.assertEqual(doc["active_power_rate"], 100)
        self.assertEqual(logger.state.inverter.holding[3], 100)
        self.assertEqual(self.audit(), [])
