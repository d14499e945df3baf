"""
Which messages the mqtt output makes for a record (no broker: the routing
is pure apart from the clock): topics per record kind, discovery once per
device and version, expire_after following the datalogger's interval.
"""

import dataclasses
import json
import types

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from grott.config import config_from_dict
from grott.logs import Logger
from grott.outputs.mqtt import MqttOutput
from grott.registers import Decoder
from grott.service import makeService
from tests.pluginhelpers import (
    meter_log_packet,
    meter_packet_and_record,
    packet_and_record,
)


def _output(**mqtt):
    config = config_from_dict({"outputs": {"mqtt": dict({"discovery": True}, **mqtt)}})
    clock = Clock()
    clock.advance(1_700_000_000)
    return MqttOutput(config.outputs.mqtt, clock), clock


class RoutingTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.output, self.clock = _output()
        _, self.record = packet_and_record("grott-p6-0104-classic")
        self.serial = self.record.inverter_serial
        self.log = Logger()

    def topics(self, record):
        return [t for t, _, _, _ in self.output._route(record, self.log)]

    def test_kinds_go_to_their_topics(self):
        live = self.topics(self.record)
        self.assertEqual(live[-1], f"energy/growatt/{self.serial}")
        self.assertIn("energy/growatt", live)
        self.assertTrue(any(t.startswith("homeassistant/") for t in live))
        buffered = dataclasses.replace(self.record, buffered=True, record_type=0x50)
        self.assertEqual(self.topics(buffered),
                         ["energy/growatt", f"energy/growatt/{self.serial}/buffered"])
        announce = dataclasses.replace(self.record, record_type=0x03)
        self.assertEqual(self.topics(announce)[-1], f"energy/growatt/{self.serial}/announce")

    def test_discovery_once_per_version(self):
        first = self.topics(self.record)
        self.clock.advance(300)
        later = dataclasses.replace(self.record, timestamp="2099-01-01T00:00:00")
        self.assertEqual(self.topics(later)[-1], f"energy/growatt/{self.serial}/held")
        self.assertEqual(self.topics(self.record),
                         ["energy/growatt", f"energy/growatt/{self.serial}"])
        self.assertGreater(len(first), 20)

    def test_expire_after_follows_the_interval(self):
        def expire():
            config = json.loads(self.output.devices[self.serial].published[
                f"homeassistant/sensor/grott_{self.serial}/pvpowerin/config"])
            return config["expire_after"]

        self.topics(self.record)
        self.assertEqual(expire(), 900)
        for _ in range(3):
            self.clock.advance(60)
            self.topics(self.record)
        self.assertEqual(expire(), 180)
        # A burst (seconds apart) does not count as an interval.
        before = self.output.counts["discovery_configs"]
        for _ in range(3):
            self.clock.advance(1)
            self.topics(self.record)
        self.assertEqual(self.output.counts["discovery_configs"], before)

    def test_without_discovery_or_serial_topics_only_the_shared_topic(self):
        output, _ = _output(discovery=False)
        self.assertEqual([t for t, _, _, _ in output._route(self.record, self.log)],
                         ["energy/growatt"])
        output, _ = _output(discovery=False, serial_in_topic=True)
        self.assertEqual([t for t, _, _, _ in output._route(self.record, self.log)],
                         [f"energy/growatt/{self.record.datalogger_serial}/availability",
                          f"energy/growatt/{self.serial}"])


def meter_record(case_id="meter-0x20-capture-grott-352"):
    return meter_packet_and_record(case_id)[1]


class MeterRoutingTests(unittest.SynchronousTestCase):
    """
    A smart meter's records make a device of their own: its own topic and
    discovery node, never the inverter it reports for.
    """

    def setUp(self):
        self.output, self.clock = _output()
        self.meter = meter_record()
        self.log = Logger()
        # The inverter the meter reports for, behind the same datalogger at
        # the same device address (1, as in the capture).
        _, record = packet_and_record("grott-p6-0104-classic")
        self.inverter = dataclasses.replace(
            record, datalogger_serial=self.meter.datalogger_serial,
            inverter_serial=self.meter.inverter_serial, device_id=self.meter.inverter_serial,
            timestamp=self.meter.timestamp, device_address=self.meter.device_address)

    def route(self, record):
        return self.output._route(record, self.log)

    def test_meter_record_goes_to_the_meter_topic(self):
        inverter_topics = [t for t, _, _, _ in self.route(self.inverter)]
        self.assertEqual(inverter_topics[-1], "energy/growatt/QDL1CKK028")
        messages = self.route(self.meter)
        topics = [t for t, _, _, _ in messages]
        self.assertEqual(topics[-1], "energy/growatt/QDL1CKK028-meter-01")
        self.assertNotIn("energy/growatt/QDL1CKK028", topics)
        configs = [t for t in topics if t.startswith("homeassistant/")]
        self.assertTrue(configs)
        self.assertTrue(all(t.startswith("homeassistant/sensor/grott_QDL1CKK028-meter-01/")
                            for t in configs), configs)
        live = json.loads(messages[-1][1])
        self.assertEqual((live["device"], live["kind"], live["values"]["voltage_l1"]),
                         ("QDL1CKK028-meter-01", "meter", 238.9))
        # The shared Grott-compatible topic tells the two apart.
        shared = [json.loads(p) for t, p, _, _ in messages if t == "energy/growatt"]
        self.assertEqual([d["device"] for d in shared], ["QDL1CKK028-meter-01"])
        # Two devices; the inverter's configs name none of the meter's values.
        self.assertEqual(sorted(self.output.devices), ["QDL1CKK028", "QDL1CKK028-meter-01"])
        inverter = self.output.devices["QDL1CKK028"]
        self.assertNotIn("voltage_l1", inverter.input_units)
        self.assertFalse(any(b"voltage_l1" in c for c in inverter.published.values()))
        self.assertEqual(self.output.counts["held_serial_changed"], 0)

    def test_meter_energy_is_guarded(self):
        self.route(self.meter)
        self.clock.advance(300)
        values = dict(self.meter.values, pos_act_energy=self.meter.values["pos_act_energy"] - 5)
        lower = dataclasses.replace(self.meter, values=types.MappingProxyType(values),
                                    timestamp="2023-06-14T00:29:55")
        topics = [t for t, _, _, _ in self.route(lower)]
        self.assertEqual(topics[-1], "energy/growatt/QDL1CKK028-meter-01/held")
        self.assertEqual(self.output.counts["held_decrease"], 1)
        # A 100,000 kWh slip is a jump, even for a meter.
        values = dict(self.meter.values, rev_act_energy=100000.0)
        jump = dataclasses.replace(self.meter, values=types.MappingProxyType(values),
                                   timestamp="2023-06-14T00:34:55")
        self.assertEqual([t for t, _, _, _ in self.route(jump)][-1],
                         "energy/growatt/QDL1CKK028-meter-01/held")
        self.assertEqual(self.output.counts["held_jump"], 1)

    def test_single_phase_meter_learns_its_phases(self):
        single = meter_record("meter-0x20-capture-grott-47")
        self.route(single)
        device = self.output.devices["HMG3A510SC-meter-01"]
        self.assertEqual(device.phases, 1)
        config = json.loads(device.published[
            "homeassistant/sensor/grott_HMG3A510SC-meter-01/voltage_l2/config"])
        self.assertIs(config["enabled_by_default"], False)
        self.route(self.meter)
        self.assertEqual(self.output.devices["QDL1CKK028-meter-01"].phases, 3)

    def test_meter_log_record_is_a_meter_device_too(self):
        log = meter_record("meter-0x1b-sdm630-documented")
        topics = [t for t, _, _, _ in self.route(log)]
        self.assertEqual(topics[-1], "energy/growatt/DYD0BGW043-meter-22/log")
        device = self.output.devices["DYD0BGW043-meter-22"]
        config = json.loads(device.published[
            "homeassistant/sensor/grott_DYD0BGW043-meter-22/posiActivePower/config"])
        self.assertEqual(config["state_topic"], "energy/growatt/DYD0BGW043-meter-22/log")

    def test_one_meter_from_both_record_kinds(self):
        """
        The decoder gives a datalogger's 0x1b records its 0x20 meter's id:
        one device, the 0x1b values on its log topic, each guarded on its
        own, neither taken for a changed serial.
        """
        decoder = Decoder()
        data = decoder.decode(meter_packet_and_record()[0])
        log = decoder.decode(meter_log_packet(data.datalogger_serial))
        self.assertEqual(log.device_id, data.device_id)
        first = [t for t, _, _, _ in self.route(data)]
        self.assertEqual(first[-1], "energy/growatt/QDL1CKK028-meter-01")
        messages = self.route(log)
        self.assertEqual(messages[-1][0], "energy/growatt/QDL1CKK028-meter-01/log")
        self.assertEqual(json.loads(messages[-1][1])["values"]["activePowerL1"], -44.5)
        self.assertEqual(list(self.output.devices), ["QDL1CKK028-meter-01"])
        device = self.output.devices["QDL1CKK028-meter-01"]
        self.assertEqual(device.reports_for, "QDL1CKK028")
        power = json.loads(device.published[
            "homeassistant/sensor/grott_QDL1CKK028-meter-01/activePowerL1/config"])
        self.assertEqual(power["state_topic"], "energy/growatt/QDL1CKK028-meter-01/log")
        self.assertIs(power["enabled_by_default"], False)
        # Interleaved for a while: every record reaches its own topic.
        for minutes in range(1, 4):
            self.clock.advance(300)
            later = f"2023-06-14T00:{24 + 5 * minutes}:55"
            self.assertEqual(self.route(dataclasses.replace(data, timestamp=later))[-1][0],
                             "energy/growatt/QDL1CKK028-meter-01")
            self.assertEqual(self.route(dataclasses.replace(log, timestamp=later))[-1][0],
                             "energy/growatt/QDL1CKK028-meter-01/log")
        held = {k: v for k, v in self.output.counts.items() if k.startswith("held_")}
        self.assertFalse(any(held.values()), held)
        # The log topic is retained and comes back after Home Assistant's birth.
        self.assertTrue(messages[-1][3])
        self.assertEqual(device.log[0], "energy/growatt/QDL1CKK028-meter-01/log")


class ServiceWiringTests(unittest.SynchronousTestCase):

    def test_the_service_hands_the_output_its_registry_and_report(self):
        config = config_from_dict({
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "upstream": "none"},
            "command": {"listen": "none"}, "metrics": {"listen": "none"},
            "plugins": {"directory": self.mktemp()},
            "outputs": {"mqtt": {"discovery": True}}})
        top = makeService(config, MemoryReactorClock())
        # The output runs behind the spool (outputs.mqtt.spool), which passes
        # the observer calls through.
        [observer] = [o for o in top.registry.observers if o.name == "mqtt"]
        plugin = observer.sink.output
        self.assertIsInstance(plugin, MqttOutput)
        self.assertTrue(any(line.startswith("  mqtt: not connected") for line in top.report()))
        self.assertEqual(top.report_json()["observers"]["mqtt"]["held"],
                         {"timestamp": 0, "decrease": 0, "jump": 0, "serial_changed": 0})
        self.assertEqual(plugin.status(), {"dataloggers": 0, "local_acks": 0,
                                           "records_dropped": 0, "records_held": 0,
                                           "cloud_reachable": None})
