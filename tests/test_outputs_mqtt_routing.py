"""
Which messages the mqtt output makes for a record (no broker: the routing
is pure apart from the clock): topics per record kind, discovery once per
device and version, expire_after following the datalogger's interval.
"""

import dataclasses
import json

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from grott.config import config_from_dict
from grott.logs import Logger
from grott.outputs.mqtt import MqttOutput
from grott.service import makeService
from tests.pluginhelpers import packet_and_record


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
