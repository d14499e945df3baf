"""
The mqtt output behind the spool, against a real mosquitto: the broker
down for a while, grott restarted meanwhile, the broker back: every record
reaches a QoS 1 subscriber once, in order per inverter.
"""

import json

from twisted.internet import reactor
from twisted.trial import unittest

from grott.interfaces import IGrottObserver
from grott.outputs.mqttspool import MqttSink, decode_messages, encode_messages
from grott.pluginhost import PluginHost
from grott.spool import SpooledOutput
from tests import mosquitto
from tests.pluginhelpers import make_config, numbered
from tests.spoolhelpers import until


class EncodingTests(unittest.SynchronousTestCase):

    def test_messages_round_trip(self):
        messages = [("energy/growatt", b'{"a":1}', 1, False),
                    ("homeassistant/sensor/x/config", b"\x00\xffbinary", 1, True)]
        self.assertEqual(decode_messages(encode_messages(messages)), messages)

    def test_a_shared_payload_is_stored_once(self):
        document = b'{"values":{"pv1_watt":1234.5}}' * 20
        messages = [("energy/growatt", document, 1, False),
                    ("energy/growatt/INV1", document, 1, True),
                    ("energy/growatt/datalogger/DL1", b"online", 1, True),
                    ("homeassistant/sensor/grott_inv1/x/config", b"", 1, True),
                    ("energy/growatt/\u00e9", b"\xff", 0, False)]
        data = encode_messages(messages)
        self.assertEqual(data.count(document), 1)
        self.assertEqual(decode_messages(data), messages)

    def test_records_spooled_by_an_older_version_are_read(self):
        # The first format: a JSON list of [topic, base64 payload, qos, retain].
        older = (b'[["energy/growatt","eyJhIjoxfQ==",1,false],'
                 b'["energy/growatt/INV1","eyJhIjoxfQ==",1,true]]')
        self.assertEqual(decode_messages(older), [("energy/growatt", b'{"a":1}', 1, False),
                                                  ("energy/growatt/INV1", b'{"a":1}', 1, True)])


class SpooledMqttTests(unittest.TestCase):

    skip = mosquitto.SKIP
    timeout = 60

    def host(self, spool, port):
        config = make_config(self.mktemp(), outputs={
            "mqtt": {"port": port, "qos": 1, "reconnect_min": 0.1, "reconnect_max": 0.3},
            "spool": {"directory": spool}})
        host = PluginHost(config, reactor)
        [runner] = host.runners
        self.assertIsInstance(runner.plugin, SpooledOutput)
        self.assertIsInstance(runner.plugin.sink, MqttSink)
        self.assertTrue(IGrottObserver.providedBy(runner.plugin))
        return host, runner.plugin

    async def test_broker_down_grott_restarted_broker_back(self):
        broker = mosquitto.Broker(self.mktemp())
        self.addCleanup(broker.stop)
        await broker.start()
        # A subscriber with a persistent session: the broker keeps its QoS 1
        # messages while it is away, and across the broker's restart.
        subscriber = mosquitto.Subscriber(broker.port, ["energy/growatt"],
                                          client_id="grott-spool-test", clean=False)
        self.addCleanup(subscriber.stop)
        await subscriber.subscribed
        await broker.stop()

        # Two inverters, ten records each, interleaved.
        first = numbered(10, "grott-p6-0104-classic")
        second = numbered(10, "grott-p6-0104-min-xdavidx93-a")
        records = [pair for both in zip(first, second) for pair in both]
        spool = self.mktemp()
        host, output = self.host(spool, broker.port)
        host.startService()
        for packet, record in records:
            host.deliver(packet, record)
        await until(lambda: output.spool_stats()["queued"] == 20, "20 records on disk")
        self.assertEqual(subscriber.messages, [])
        await host.stopService()  # grott restarts while the broker is down

        host, output = self.host(spool, broker.port)
        host.startService()
        self.addCleanup(lambda: host.stopService() if host.running else None)
        await until(lambda: output.spool_stats()["queued"] == 20, "the spool reopened")
        await broker.start()
        await subscriber.wait_for(lambda m: len(m) >= 20)
        await until(lambda: output.spool_stats()["queued"] == 0, "the spool to empty")
        self.assertEqual(output.spool_stats()["delivered"], 20)
        await host.stopService()
        seen = {}
        for topic, payload, _ in subscriber.messages:
            document = json.loads(payload)
            seen.setdefault(document["inverter"], []).append(document["values"]["seq"])
        self.assertEqual(seen, {first[0][1].inverter_serial: list(range(10)),
                                second[0][1].inverter_serial: list(range(10))})
