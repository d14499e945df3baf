"""
A smart meter through the whole service to a real mosquitto: a datalogger
stand-in on a loopback socket sends an inverter's data record and then a
captured meter record (0x20, grott issue #352) for that inverter, from the
same device address, then a meter log record (0x1b, device address 0x22) of
the same datalogger; grott (cloud-free) publishes them with Home Assistant
discovery.  What a subscriber sees: the meter on its own topic and device
(one device for both record kinds, the log values on the meter's log
topic), nothing of it on the inverter's, and the meter's availability
following the datalogger's connection.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from grott.codec import RecordType
from grott.config import config_from_dict
from grott.registers import build_register_record
from grott.service import makeService
from tests import mosquitto, relayhelpers
from tests.pluginhelpers import meter_log_packet, meter_packet_and_record

METER_TOPIC = "energy/growatt/QDL1CKK028-meter-01"
LOG_TOPIC = METER_TOPIC + "/log"
INVERTER_TOPIC = "energy/growatt/QDL1CKK028"
NODE = "homeassistant/sensor/grott_QDL1CKK028-meter-01/"


def _json(payload):
    return json.loads(payload.decode("utf-8"))


class MeterThroughGrottTests(unittest.TestCase):

    skip = mosquitto.SKIP
    timeout = 60

    def test_meter_is_its_own_device(self):
        return defer.Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        broker = mosquitto.Broker(self.mktemp())
        await broker.start()
        self.addCleanup(broker.stop)
        subscriber = mosquitto.Subscriber(broker.port, ["#"])
        self.addCleanup(subscriber.stop)
        await subscriber.subscribed

        config = config_from_dict({
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "upstream": "none"},
            "command": {"listen": "none"}, "metrics": {"listen": "none"},
            "plugins": {"directory": os.path.abspath(self.mktemp())},
            "outputs": {"mqtt": {"host": "127.0.0.1", "port": broker.port,
                                 "discovery": True}},
        }, "meter-test.yaml")
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        port = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result

        meter_packet, meter = meter_packet_and_record()
        inverter_packet = build_register_record(
            RecordType.DATA, meter.datalogger_serial, meter.inverter_serial,
            [(0, [0, 0, 1234] + [0] * 42)], protocol=6, timestamp="2023-06-14T00:24:00",
            device_address=meter.device_address)
        client = await relayhelpers.connect(reactor, port)
        self.addCleanup(lambda: client.transport.loseConnection())
        client.transport.write(inverter_packet)
        client.transport.write(meter_packet.raw)
        client.transport.write(meter_log_packet(meter.datalogger_serial).raw)

        await subscriber.wait_for(lambda m: subscriber.on(METER_TOPIC)
                                  and subscriber.on(INVERTER_TOPIC)
                                  and subscriber.on(LOG_TOPIC))
        # The meter's values on its own topic, as decoded.
        [(live, _)] = subscriber.on(METER_TOPIC)
        document = _json(live)
        self.assertEqual((document["device"], document["kind"], document["datalogger"]),
                         ("QDL1CKK028-meter-01", "meter", "XGD6CML0ES"))
        for key in ("voltage_l1", "act_power_l1", "pos_act_energy", "rev_act_energy",
                    "frequency"):
            self.assertEqual(document["values"][key], meter.values[key], key)
        self.assertEqual(document["values"]["pos_act_energy"], 269.6)
        # Nothing of the meter on the inverter's topic.
        [(payload, _)] = subscriber.on(INVERTER_TOPIC)
        inverter = _json(payload)
        self.assertEqual((inverter["device"], inverter["kind"]), ("QDL1CKK028", "inverter"))
        self.assertFalse(set(inverter["values"]) & set(meter.values))

        # Its own Home Assistant device, between the datalogger and nothing else.
        configs = {t: _json(p) for t, p, _ in subscriber.messages
                   if t.startswith("homeassistant/") and p}
        mine = {t: c for t, c in configs.items() if t.startswith(NODE)}
        energy = mine[NODE + "pos_act_energy/config"]
        self.assertEqual((energy["state_topic"], energy["device_class"], energy["state_class"],
                          energy["unit_of_measurement"], energy["unique_id"]),
                         (METER_TOPIC, "energy", "total_increasing", "kWh",
                          "grott_QDL1CKK028-meter-01_pos_act_energy"))
        self.assertEqual(energy["device"]["model"], "Smart meter")
        self.assertEqual(energy["device"]["via_device"], "grott_dl_XGD6CML0ES")
        for topic, config in configs.items():
            if topic.startswith("homeassistant/sensor/grott_QDL1CKK028/"):
                self.assertEqual(config["state_topic"], INVERTER_TOPIC)
                self.assertNotIn("meter", config["unique_id"])
        self.assertEqual(top.report_json()["observers"]["mqtt"]["held"]["serial_changed"], 0)

        # The meter log (0x1b) is the same meter: its device, its log topic.
        [(payload, _)] = subscriber.on(LOG_TOPIC)
        log = _json(payload)
        self.assertEqual((log["device"], log["kind"], log["record_type"]),
                         ("QDL1CKK028-meter-01", "meter", 0x1b))
        self.assertEqual(log["values"]["activePowerL1"], -44.5)
        power = mine[NODE + "activePowerL1/config"]
        self.assertEqual((power["state_topic"], power["unique_id"], power["device"]),
                         (LOG_TOPIC, "grott_QDL1CKK028-meter-01_activePowerL1",
                          energy["device"]))
        self.assertIs(power["enabled_by_default"], False)
        # Every meter entity reads a topic whose messages carry its value.
        for topic, config in mine.items():
            key = json.loads(config["value_template"].split("[")[2].split("]")[0])
            carried = _json(subscriber.on(config["state_topic"])[-1][0])["values"]
            self.assertIn(key, carried, topic)
        # No second meter device from the log record's own address.
        self.assertFalse([t for t, _, _ in subscriber.messages if "meter-22" in t])
        # Retained, so Home Assistant never misses the first state.
        late = mosquitto.Subscriber(broker.port, [METER_TOPIC])
        self.addCleanup(late.stop)
        await late.wait_for(lambda m: late.on(METER_TOPIC))
        self.assertEqual(late.on(METER_TOPIC), [(live, True)])

        # The datalogger goes away: what the meter's entities read as
        # availability says offline.
        datalogger_topic = "energy/growatt/XGD6CML0ES/availability"
        self.assertIn({"topic": datalogger_topic}, energy["availability"])
        client.transport.loseConnection()
        await subscriber.wait_for(lambda m: (b"offline", True) in subscriber.on(datalogger_topic)
                                  or (b"offline", False) in subscriber.on(datalogger_topic))
